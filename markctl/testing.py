"""Test helpers for driver authors (public API, also for external driver packs).

:class:`ScriptedTransport` checks the *exact bytes* a driver writes and replays the machine's
scripted replies, in the spirit of InstrumentKit's ``expected_protocol``::

    t = ScriptedTransport([(b"?", b"<Idle|MPos:0.000,0.000,0.000|FS:0,0>\\r\\n"), (b"$I\\n", b"...ok\\r\\n")],
                          greeting=b"\\r\\nGrbl 1.1h ['$' for help]\\r\\n")
    ... drive it ...
    t.assert_done()
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from markctl.drivers.transports.base import TransportOptions
from markctl.errors import MachineConnectionError

__all__ = ["ScriptedTransport"]


class ScriptedTransport:
    """A ByteTransport that expects ``steps[i][0]`` to be written and answers ``steps[i][1]``.

    Writes may arrive in any chunking; they are compared as one stream. A divergence is stored
    (not raised into the driver, which would turn it into a job error) and reported by
    :meth:`assert_done`, with the offset of the first differing byte.
    """

    options_model: ClassVar[type[TransportOptions]] = TransportOptions

    def __init__(self, steps: Sequence[tuple[bytes, bytes]], *, greeting: bytes = b"") -> None:
        self._steps = list(steps)
        self._index = 0
        self._greeting = greeting
        self._pending = b""
        self._written = b""
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._open = False
        self.mismatch: str | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def description(self) -> str:
        return "scripted"

    async def open(self) -> None:
        self._open = True
        if self._greeting:
            self._inbox.put_nowait(self._greeting)

    async def close(self) -> None:
        self._open = False

    async def write(self, data: bytes) -> None:
        if not self._open:
            raise MachineConnectionError("scripted: not open")
        self._written += data
        self._pending += data
        while self._index < len(self._steps) and self.mismatch is None:
            expected, reply = self._steps[self._index]
            if self._pending.startswith(expected):
                self._pending = self._pending[len(expected) :]
                self._index += 1
                if reply:
                    self._inbox.put_nowait(reply)
                continue
            if not expected.startswith(self._pending):
                at = _first_difference(self._pending, expected)
                self.mismatch = f"step {self._index}: expected {expected!r}, got {self._pending!r} (first difference at byte {at})"
            break
        if self._index >= len(self._steps) and self._pending and self.mismatch is None:
            self.mismatch = f"unexpected bytes after the last step: {self._pending!r}"

    async def read(self, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._inbox.get()
        except TimeoutError:
            return b""

    @property
    def written(self) -> bytes:
        """Every byte the driver wrote, in order."""
        return self._written

    def assert_done(self) -> None:
        """Every step was written exactly, and nothing else."""
        if self.mismatch is not None:
            raise AssertionError(self.mismatch)
        if self._index < len(self._steps):
            raise AssertionError(
                f"script stopped at step {self._index} of {len(self._steps)}: {self._steps[self._index][0]!r}"
            )
        if self._pending:
            raise AssertionError(f"unexpected trailing bytes: {self._pending!r}")


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
