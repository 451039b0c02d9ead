"""A streamed pre-check's verdicts, a few dozen bytes per item, however long the manifest.

A plan of a 100,000-row manifest cannot keep every item (its identity and fields, ~2 KB each) or
memory grows with the manifest. It keeps, per item, where its row is in the manifest (byte
offset and a digest of the row's bytes), its line and component, its verdict, an index into the
distinct problem/warning lists (most rows share the same: none) and its estimated cycle time:
about 40 bytes in flat arrays. A verdict asked for by position is made again from its row, read
again from the file; the digest makes sure the row is still the one that was judged.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from markctl.jobs.manifest import COMPONENTS, ManifestError, ManifestReader, RowRef

if TYPE_CHECKING:
    from markctl.jobs.runner import Verdict

__all__ = ["Brief", "VerdictLog"]

_STATES = ("ok", "not compliant", "invalid")  # the usual ones first; another one gets the next code
_COMPONENTS = tuple(sorted(COMPONENTS))


class _Codes:
    """Small codes for a few distinct strings (verdicts, components)."""

    def __init__(self, known: tuple[str, ...]) -> None:
        self.names = list(known)
        self._code = {name: i for i, name in enumerate(known)}

    def code(self, name: str) -> int:
        at = self._code.get(name)
        if at is None:
            at = self._code[name] = len(self.names)
            self.names.append(name)
        return at


# line, component, verdict, problems: what deciding which rows block a batch needs.
Brief = tuple[int, str, str, tuple[str, ...]]


class VerdictLog(Sequence["Verdict"]):
    """The verdicts of a streamed pre-check, in manifest order (append as they are judged)."""

    def __init__(self, reader: ManifestReader) -> None:
        self._reader = reader
        self._offset = array("q")
        self._digest = array("Q")
        self._line = array("l")
        self._component = array("b")
        self._state = array("b")
        self._notes = array("l")
        self._cycle = array("d")
        self._note_ids: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._note_list: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._states, self._components = _Codes(_STATES), _Codes(_COMPONENTS)

    def append(self, verdict: Verdict, ref: RowRef) -> None:
        notes = (verdict.problems, verdict.warnings)
        at = self._note_ids.get(notes)
        if at is None:
            at = self._note_ids[notes] = len(self._note_list)
            self._note_list.append(notes)
        self._offset.append(ref.offset)
        self._digest.append(ref.digest)
        self._line.append(verdict.item.line)
        self._component.append(self._components.code(verdict.item.component))
        self._state.append(self._states.code(verdict.verdict))
        self._notes.append(at)
        self._cycle.append(math.nan if verdict.cycle_s is None else verdict.cycle_s)

    def __len__(self) -> int:
        return len(self._state)

    @overload
    def __getitem__(self, index: int) -> Verdict: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Verdict]: ...
    def __getitem__(self, index: int | slice) -> Verdict | Sequence[Verdict]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        from markctl.jobs.runner import Verdict

        if index < 0:
            index += len(self)
        ref = RowRef(self._offset[index], self._line[index], self._digest[index])
        component = self._components.names[self._component[index]]
        item = next((i for i in self._reader.row_at(ref) if i.component == component), None)
        if item is None:  # the same bytes give the same items: only a changed reader gets here
            raise ManifestError(f"line {ref.line}: no {component} on the row any more: pre-check again")
        problems, warnings = self._note_list[self._notes[index]]
        cycle = self._cycle[index]
        return Verdict(
            item,
            self._states.names[self._state[index]],
            problems,
            warnings,
            None if math.isnan(cycle) else cycle,
        )

    def __iter__(self) -> Iterator[Verdict]:
        return (self[i] for i in range(len(self)))

    def brief(self) -> Iterator[Brief]:
        """Line, component, verdict and problems of each item, without reading any row again."""
        for i in range(len(self)):
            yield (self._line[i], self._components.names[self._component[i]], self._states.names[self._state[i]],
                   self._note_list[self._notes[i]][0])  # fmt: skip

    def cycle_s(self) -> Iterator[tuple[int, str, float | None]]:
        """Line, verdict and estimated cycle seconds of each item, without reading any row again."""
        for i in range(len(self)):
            cycle = self._cycle[i]
            yield self._line[i], self._states.names[self._state[i]], None if math.isnan(cycle) else cycle
