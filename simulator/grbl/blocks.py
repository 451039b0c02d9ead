"""Planner blocks and the block being executed, as plain data shared by the planner, the stepper and the
reports (Grbl's plan_block_t and st_block_t in spirit: numbers, no behaviour beyond geometry)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _Motion:
    """One planner block: a straight move (arcs are cut into these), a jog or a homing move."""

    kind: str  # "rapid" | "line" | "jog" | "home"
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    feed_mm_min: float  # programmed rate (rapid: max rate)
    spindle: str  # "M3" | "M4" | "M5"
    s: float
    line: int
    junction_v: float = 0.0  # max entry speed from the junction with the previous block, mm/s
    length: float = field(init=False)

    def __post_init__(self) -> None:
        self.length = math.dist(self.start, self.end)

    def unit(self) -> tuple[float, float, float]:
        if self.length == 0:
            return (0.0, 0.0, 0.0)
        return _p3([(e - s) / self.length for s, e in zip(self.start, self.end, strict=True)])


@dataclass
class _Exec:
    """The block being executed: when it started and its speed profile."""

    block: _Motion
    t0: float
    segments: list[tuple[float, float, float]]  # (duration, start speed, acceleration)
    v_exit: float
    s_burned: float = 0.0  # distance already burned into the workpiece
    t_burned: float = 0.0
    alone: bool = False  # planned to stop because nothing followed it in the planner

    @property
    def duration(self) -> float:
        return sum(d for d, _, _ in self.segments)

    def at(self, t: float) -> tuple[float, float]:
        """(distance travelled, speed) at ``t`` seconds into the block."""
        s = 0.0
        for dur, v0, acc in self.segments:
            if t <= dur:
                return s + v0 * t + 0.5 * acc * t * t, v0 + acc * t
            s += v0 * dur + 0.5 * acc * dur * dur
            t -= dur
        last_v = self.segments[-1][1] + self.segments[-1][2] * self.segments[-1][0] if self.segments else 0.0
        return min(s, self.block.length), last_v


@dataclass(frozen=True, slots=True)
class BurnRecord:
    """One burned piece of motion (or a dwell dot), in machine mm and simulated seconds."""

    t0: float
    t1: float
    x0: float
    y0: float
    x1: float
    y1: float
    line_energy_j_per_mm: float
    line: int


def _p3(values: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _profile(
    length: float, v0: float, vn: float, v1: float, a: float
) -> tuple[list[tuple[float, float, float]], float]:
    """Trapezoid (or triangle) segments covering ``length`` from ``v0`` to at most ``v1``."""
    if length <= 1e-12:
        return [], v0
    v1 = min(v1, math.sqrt(v0 * v0 + 2 * a * length))
    if v0 * v0 - 2 * a * length > v1 * v1:
        v_end = math.sqrt(v0 * v0 - 2 * a * length)
        return [((v0 - v_end) / a, v0, -a)], v_end
    peak = math.sqrt((2 * a * length + v0 * v0 + v1 * v1) / 2)
    # The entry may be above the nominal speed (a feed override lowered it mid-block): slow down
    # to it first. Either way the first segment runs from v0 to vp.
    vp = max(min(vn, peak), v1)
    d_first = abs(vp * vp - v0 * v0) / (2 * a)
    d_dec = max(0.0, (vp * vp - v1 * v1) / (2 * a))
    cruise = max(0.0, length - d_first - d_dec)
    segs = []
    if vp > v0:
        segs.append(((vp - v0) / a, v0, a))
    elif v0 > vp:
        segs.append(((v0 - vp) / a, v0, -a))
    if cruise > 0 and vp > 0:
        segs.append((cruise / vp, vp, 0.0))
    if vp > v1:
        segs.append(((vp - v1) / a, vp, -a))
    return segs, v1
