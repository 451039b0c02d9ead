"""Fault injection specs, shared by every simulator.

A spec is a comma-separated list of ``kind@trigger:value[=arg]``::

    disconnect@line:40            drop the link when the 40th host line arrives
    garble@byte:1200              flip bits of the 1200th byte the machine sends
    silence@line:12               swallow the reply to host line 12 (a lost ``ok``)
    alarm@t:2.5=1                 raise alarm 1 at simulated time 2.5 s
    door@t:1.0                    open the safety door at 1.0 s
    fault@cycle:1=2               fault code 2 during the first marking cycle
    nak@msg:3                     answer the third framed message with NAK
    slow@t:0=0.25                 from t=0, add 0.25 s latency to every reply

Which kinds a machine supports is its own business: it calls :func:`parse_faults` with its set
of kinds, and a spec naming anything else is refused with the list of known kinds.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TRIGGERS", "Fault", "FaultSpecError", "parse_faults"]

TRIGGERS = frozenset({"line", "byte", "t", "cycle", "msg", "poll"})
_ITEM = re.compile(r"(?P<kind>[a-z][a-z-]*)@(?P<trigger>[a-z]+):(?P<at>\d+(?:\.\d+)?)(?:=(?P<arg>[\w.-]+))?")


class FaultSpecError(ValueError):
    """A fault spec that does not parse; the message names the item."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: ``kind`` happens when ``trigger`` reaches ``at``."""

    kind: str
    trigger: str
    at: float
    arg: str | None = None

    def arg_float(self, default: float) -> float:
        return default if self.arg is None else float(self.arg)

    def arg_int(self, default: int) -> int:
        return default if self.arg is None else int(self.arg)

    def __str__(self) -> str:
        at = f"{self.at:g}"
        return f"{self.kind}@{self.trigger}:{at}" + (f"={self.arg}" if self.arg is not None else "")


def parse_faults(spec: str, kinds: Iterable[str]) -> tuple[Fault, ...]:
    """Parse ``spec``; every kind must be in ``kinds``. Empty spec, no faults."""
    known = frozenset(kinds)
    faults = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = _ITEM.fullmatch(item)
        if match is None:
            raise FaultSpecError(
                f"fault {item!r}: expected kind@trigger:value[=arg], e.g. disconnect@line:40"
            )
        kind, trigger = match["kind"], match["trigger"]
        if kind not in known:
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise FaultSpecError(
                f"fault {item!r}: unknown kind {kind!r} (known: {', '.join(sorted(known))}){hint}"
            )
        if trigger not in TRIGGERS:
            raise FaultSpecError(
                f"fault {item!r}: unknown trigger {trigger!r} (known: {', '.join(sorted(TRIGGERS))})"
            )
        arg = match["arg"]
        if arg is not None and kind in ("alarm", "fault", "slow") and not re.fullmatch(r"\d+(\.\d+)?", arg):
            raise FaultSpecError(f"fault {item!r}: argument {arg!r} must be a number")
        faults.append(Fault(kind, trigger, float(match["at"]), arg))
    return tuple(faults)
