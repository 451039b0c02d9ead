"""The machine-neutral Program: what ``layouts`` hands to a driver.

Marking machines come in two families (ARCHITECTURE.md "The flow of one mark"):

* **motion machines** (GRBL lasers, XY dot-peen tables driven by G-code) get a
  :class:`MotionProgram`: ordered strokes in millimetres, each with process parameters.
* **pattern machines** (industrial dot-peen and laser markers that own their fonts and motion) get a
  :class:`PatternProgram`: a pattern name and the text fields to fill.

Both are frozen, hold numpy arrays that are read-only, serialise to JSON and have a SHA-256
``digest`` of their canonical content, which records store so a mark can be traced to the exact
program that cut it. Coordinates are in the machine's work frame, millimetres, +X right, +Y up.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "MotionProgram",
    "PatternField",
    "PatternProgram",
    "ProcessParams",
    "Program",
    "Stroke",
    "StrokeKind",
    "program_from_json",
]

FloatArray = npt.NDArray[np.float64]


class StrokeKind(StrEnum):
    """How a stroke's points are marked."""

    LINE = "line"  # a polyline, marked continuously from point to point
    DOTS = "dots"  # each point is one dot (dot-peen, or a pulsed laser dot); no marking in between


@dataclass(frozen=True, slots=True)
class ProcessParams:
    """Process parameters of a group of strokes.

    Laser: ``power_pct`` of the source, ``speed_mm_min`` while marking, ``passes`` over the same path,
    ``pulse_khz`` for pulsed (fiber) sources. Dot-peen: ``force_pct`` of the stylus range and
    ``dot_pitch_mm`` between dot centres; ``speed_mm_min`` is the head speed between dots.
    """

    speed_mm_min: float
    passes: int = 1
    power_pct: float | None = None
    pulse_khz: float | None = None
    force_pct: float | None = None
    dot_pitch_mm: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed_mm_min) and self.speed_mm_min > 0):
            raise ValueError(f"speed_mm_min must be positive, got {self.speed_mm_min}")
        if self.passes < 1:
            raise ValueError(f"passes must be at least 1, got {self.passes}")
        for name in ("power_pct", "force_pct"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} must be 0-100 %, got {value}")
        if self.power_pct is None and self.force_pct is None:
            raise ValueError("give power_pct (laser) or force_pct (dot-peen)")


@dataclass(frozen=True, slots=True)
class Stroke:
    """One continuous mark (``LINE``) or a run of dots (``DOTS``), in mm."""

    kind: StrokeKind
    points: FloatArray
    params: int = 0  # index into MotionProgram.params

    def __post_init__(self) -> None:
        pts = np.array(self.points, dtype=np.float64, copy=True)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
        minimum = 2 if self.kind is StrokeKind.LINE else 1
        if len(pts) < minimum:
            raise ValueError(f"a {self.kind.value} stroke needs at least {minimum} point(s)")
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite")
        pts.setflags(write=False)
        object.__setattr__(self, "points", pts)

    @property
    def start(self) -> tuple[float, float]:
        return float(self.points[0, 0]), float(self.points[0, 1])

    @property
    def end(self) -> tuple[float, float]:
        return float(self.points[-1, 0]), float(self.points[-1, 1])

    @property
    def length_mm(self) -> float:
        if self.kind is StrokeKind.DOTS or len(self.points) < 2:
            return 0.0
        return float(np.hypot(*np.diff(self.points, axis=0).T).sum())

    def reversed(self) -> Stroke:
        return Stroke(self.kind, self.points[::-1], self.params)


@dataclass(frozen=True, slots=True)
class MotionProgram:
    """Ordered strokes for a motion machine."""

    strokes: tuple[Stroke, ...]
    params: tuple[ProcessParams, ...]
    kind: Literal["motion"] = field(default="motion", init=False)

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError("a motion program needs at least one ProcessParams")
        for i, stroke in enumerate(self.strokes):
            if not 0 <= stroke.params < len(self.params):
                raise ValueError(f"stroke {i} refers to params {stroke.params}, which does not exist")

    @property
    def marking_length_mm(self) -> float:
        return sum(s.length_mm * self.params[s.params].passes for s in self.strokes)

    @property
    def travel_length_mm(self) -> float:
        """Non-marking travel between strokes (and between dots), from the first stroke's start."""
        total = 0.0
        for prev, nxt in zip(self.strokes, self.strokes[1:], strict=False):
            total += math.dist(prev.end, nxt.start)
        for s in self.strokes:
            if s.kind is StrokeKind.DOTS and len(s.points) > 1:
                total += float(np.hypot(*np.diff(s.points, axis=0).T).sum())
        return total

    @property
    def dot_count(self) -> int:
        return sum(len(s.points) for s in self.strokes if s.kind is StrokeKind.DOTS)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) of every point; zeros for an empty program."""
        if not self.strokes:
            return (0.0, 0.0, 0.0, 0.0)
        allpts = np.concatenate([s.points for s in self.strokes])
        lo, hi = allpts.min(axis=0), allpts.max(axis=0)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": [_params_dict(p) for p in self.params],
            "strokes": [
                {"kind": s.kind.value, "params": s.params, "points": [[_r(x), _r(y)] for x, y in s.points]}
                for s in self.strokes
            ],
        }

    @property
    def digest(self) -> str:
        return _digest(self.to_dict())


@dataclass(frozen=True, slots=True)
class PatternField:
    """One text field that a pattern machine's own controller draws."""

    text: str
    height_mm: float
    x_mm: float
    y_mm: float
    angle_deg: float = 0.0
    font: str = "5x7"
    dot_pitch_mm: float | None = None
    force_pct: float | None = None

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("a pattern field needs text")
        if not (math.isfinite(self.height_mm) and self.height_mm > 0):
            raise ValueError(f"height_mm must be positive, got {self.height_mm}")
        if not all(math.isfinite(v) for v in (self.x_mm, self.y_mm, self.angle_deg)):
            raise ValueError("position and angle must be finite")


@dataclass(frozen=True, slots=True)
class PatternProgram:
    """Load ``pattern``, fill ``fields`` in order, start the cycle."""

    pattern: str
    fields: tuple[PatternField, ...]
    kind: Literal["pattern"] = field(default="pattern", init=False)

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("a pattern program needs a pattern name")
        if not self.fields:
            raise ValueError("a pattern program needs at least one field")

    @property
    def char_count(self) -> int:
        return sum(len(f.text.replace(" ", "")) for f in self.fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pattern": self.pattern,
            "fields": [
                {k: (_r(v) if isinstance(v, float) else v) for k, v in _field_dict(f).items()}
                for f in self.fields
            ],
        }

    @property
    def digest(self) -> str:
        return _digest(self.to_dict())


Program = MotionProgram | PatternProgram


def program_from_json(data: dict[str, Any]) -> Program:
    """Rebuild a program from :meth:`to_dict` output (e.g. a program JSON file)."""
    kind = data.get("kind")
    if kind == "motion":
        return MotionProgram(
            strokes=tuple(
                Stroke(StrokeKind(s["kind"]), np.asarray(s["points"], dtype=np.float64), int(s["params"]))
                for s in data["strokes"]
            ),
            params=tuple(ProcessParams(**p) for p in data["params"]),
        )
    if kind == "pattern":
        return PatternProgram(
            pattern=data["pattern"], fields=tuple(PatternField(**f) for f in data["fields"])
        )
    raise ValueError(f"kind must be 'motion' or 'pattern', got {kind!r}")


def _r(value: float) -> float:
    # Canonical rounding (1 nm) so that digests do not depend on float noise.
    return round(float(value), 6)


def _params_dict(p: ProcessParams) -> dict[str, Any]:
    return {
        "speed_mm_min": p.speed_mm_min,
        "passes": p.passes,
        "power_pct": p.power_pct,
        "pulse_khz": p.pulse_khz,
        "force_pct": p.force_pct,
        "dot_pitch_mm": p.dot_pitch_mm,
    }


def _field_dict(f: PatternField) -> dict[str, Any]:
    return {
        "text": f.text,
        "height_mm": f.height_mm,
        "x_mm": f.x_mm,
        "y_mm": f.y_mm,
        "angle_deg": f.angle_deg,
        "font": f.font,
        "dot_pitch_mm": f.dot_pitch_mm,
        "force_pct": f.force_pct,
    }


def _digest(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
