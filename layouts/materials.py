"""Materials table and the process model: how deep a given machine and setting cuts.

COMPLIANCE.md Part 1 "Depth": depth comes from the process model of the machine and material,
never from a wish. Laser: passes x depth per pass from the table (scaled by power and speed).
Dot peen: the depth grows as sqrt(force / hardness) (a cone stops where its contact area carries
the load), calibrated by the maker's stated depth in the machine profile
(``DotPeenSpec.depth_mm``, shared with the simulator). Colour-change
laser modes (anneal on metal, foam/carbonise on polymer) count as depth 0 (TECH-POLY).

The same model gives the impression geometry that the height check needs: the wall angle of the
groove and the width of the stroke at the surface.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from markctl.errors import LayoutError
from markctl.layouts.request import MarkOptions
from markctl.layouts.rules import MeasuringPoint
from markctl.profiles import FirmwareProfile, MachineKind

__all__ = ["Material", "Process", "get_material", "material_names", "plan_process"]

# Aim this far above the minimum depth when choosing passes or force, so that process scatter does
# not drop a mark under the legal minimum; the wall-thickness limit still caps it.
_DEPTH_MARGIN = 1.15
_MAX_AUTO_PASSES = 400


@dataclass(frozen=True, slots=True)
class Material:
    """One row of the materials table."""

    key: str
    label: str
    metal: bool
    hardness_hv: float
    laser_wall_angle_deg: float
    laser: dict[str, dict[str, float]]  # mode -> laser source -> depth per pass (mm)
    dot_peen_ok: bool = True


@cache
def _table() -> dict[str, Any]:
    text = (resources.files("markctl.layouts.data") / "materials.toml").read_text("utf-8")
    return tomllib.loads(text)


def material_names() -> tuple[str, ...]:
    """Keys of the materials table."""
    return tuple(k for k, v in _table().items() if isinstance(v, dict) and "hardness_hv" in v)


@cache
def get_material(key: str) -> Material:
    """A material by key.

    Raises:
        LayoutError: unknown key (``field="component.material"``).
    """
    row = _table().get(key)
    if not isinstance(row, dict) or "hardness_hv" not in row:
        raise LayoutError(
            f"unknown material {key!r}",
            field="component.material",
            hint="known: " + ", ".join(material_names()),
        )
    return Material(
        key=key,
        label=str(row["label"]),
        metal=bool(row["metal"]),
        hardness_hv=float(row["hardness_hv"]),
        laser_wall_angle_deg=float(row["laser_wall_angle_deg"]),
        laser={
            mode: {src: float(d) for src, d in by_src.items()}
            for mode, by_src in row.get("laser", {}).items()
        },
        dot_peen_ok=bool(row.get("dot_peen_ok", True)),
    )


@dataclass(frozen=True, slots=True)
class Process:
    """The settings and the modelled result of cutting one mark."""

    method: Literal["laser", "dot-peen"]
    mode: str  # laser mode (ablate, anneal, foam, carbonise) or "peen"
    passes: int
    speed_mm_min: float
    depth_mm: float
    wall_angle_deg: float  # groove wall from the surface normal (cone half-angle for dot peen)
    stroke_width_mm: float  # laser spot, or dot diameter at the surface
    removes_material: bool
    power_pct: float | None = None
    pulse_khz: float | None = None
    force_pct: float | None = None
    force_n: float | None = None
    dot_pitch_mm: float | None = None

    def bottom_height(self, centre_extent_mm: float) -> float:
        """Character height at the impression bottom, from the extent of the stroke centre lines.

        Laser: the opening at the surface is the centre-line extent plus one spot width; the walls
        lean in by the wall angle, so bottom = top - 2 * depth * tan(wall angle) (US-SIZE measures
        at the bottom; COMPLIANCE Part 1 "Height"). Dot peen: the bottom of each cone is a point,
        so the height is the dot-centre extent (COMPLIANCE §10.1).
        """
        if self.method == "dot-peen":
            return centre_extent_mm
        top = self.surface_height(centre_extent_mm)
        bottom = top - 2.0 * self.depth_mm * math.tan(math.radians(self.wall_angle_deg))
        return bottom

    def surface_height(self, centre_extent_mm: float) -> float:
        """Character height at the surface: the opening of the impression, what the eye reads.

        The centre-line (or dot-centre) extent plus one stroke width (laser spot, or the dot's
        diameter at the surface): half a stroke beyond each end.
        """
        return centre_extent_mm + self.stroke_width_mm

    def height_at(self, point: MeasuringPoint, centre_extent_mm: float, nominal_mm: float) -> float:
        """Character height at a rule's measuring point (``nominal`` is the font size set)."""
        if point is MeasuringPoint.IMPRESSION_BOTTOM:
            return self.bottom_height(centre_extent_mm)
        if point is MeasuringPoint.SURFACE:
            return self.surface_height(centre_extent_mm)
        return nominal_mm

    def nominal_for(self, point: MeasuringPoint, height_mm: float, extent_em: float) -> float:
        """The smallest nominal font size whose height at ``point`` is ``height_mm``.

        Every measured height is linear in the nominal size h with slope ``extent_em`` (the
        smallest letter's centre-line extent in em): bottom = k*h (dot peen) or k*h + spot -
        2*depth*tan(wall) (laser); surface = k*h + stroke width; nominal = h.
        """
        if point is MeasuringPoint.NOMINAL:
            return height_mm
        offset = self.surface_height(0.0) if point is MeasuringPoint.SURFACE else self.bottom_height(0.0)
        return (height_mm - offset) / extent_em


def plan_process(
    material: Material,
    machine: FirmwareProfile,
    options: MarkOptions,
    *,
    min_depth_mm: float,
    max_depth_mm: float,
) -> Process:
    """Choose the process settings (or take them from ``options``) and model the depth they give.

    Unset passes (laser) or force (dot peen) are chosen to reach ``min_depth_mm`` with a margin,
    without exceeding ``max_depth_mm`` (the wall-thickness limit) when both can hold.

    Raises:
        LayoutError: a laser mode the material table does not know for this material or source.
    """
    if machine.machine.kind is MachineKind.LASER:
        laser = machine.laser
        assert laser is not None  # FirmwareProfile guarantees a [laser] table for laser machines
        mode = options.process or "ablate"
        by_source = material.laser.get(mode)
        if by_source is None or laser.source not in by_source:
            known = ", ".join(m for m, s in material.laser.items() if laser.source in s) or "none"
            raise LayoutError(
                f"material {material.key!r} has no {laser.source} laser mode {mode!r} in the materials table",
                field="options.process",
                hint=f"modes for this material and source: {known}",
            )
        reference = float(_table()["reference"][laser.source])
        speed = options.speed_mm_min or min(reference, machine.machine.max_feed_mm_min)
        power = options.power_pct if options.power_pct is not None else 100.0
        per_pass = by_source[laser.source] * (power / 100.0) * (reference / speed)
        if options.passes is not None:
            passes = options.passes
        elif per_pass > 0:
            target = min(min_depth_mm * _DEPTH_MARGIN, max(max_depth_mm, min_depth_mm))
            passes = min(_MAX_AUTO_PASSES, max(1, math.ceil(target / per_pass - 1e-9)))
        else:
            passes = 1
        pulse = None
        if laser.pulse_khz_min is not None and laser.pulse_khz_max is not None:
            pulse = math.sqrt(laser.pulse_khz_min * laser.pulse_khz_max)
        return Process(
            method="laser",
            mode=mode,
            passes=passes,
            speed_mm_min=speed,
            depth_mm=passes * per_pass,
            wall_angle_deg=material.laser_wall_angle_deg,
            stroke_width_mm=laser.spot_mm,
            removes_material=per_pass > 0,
            power_pct=power,
            pulse_khz=pulse,
        )
    peen = machine.dot_peen
    assert peen is not None  # FirmwareProfile guarantees a [dot_peen] table for dot-peen machines
    if options.process not in (None, "peen"):
        raise LayoutError(
            f"a dot-peen machine has no process mode {options.process!r}", field="options.process"
        )
    half = peen.stylus_cone_deg / 2.0
    if options.force_pct is not None:
        force_pct = options.force_pct
    else:
        target = min(min_depth_mm * _DEPTH_MARGIN, max(max_depth_mm, min_depth_mm))
        # A whole percent from 1 (a setting an operator can type and a register holds exactly; on
        # register maps 0 means the machine's own default, not the lightest strike).
        force_pct = min(100.0, max(1.0, math.ceil(peen.force_pct_for(target, material.hardness_hv) - 1e-9)))
    force_n = peen.force_n(force_pct)
    depth = peen.depth_mm(force_pct, material.hardness_hv)
    diameter = 2.0 * depth * math.tan(math.radians(half))
    return Process(
        method="dot-peen",
        mode="peen",
        passes=1,
        speed_mm_min=machine.machine.max_feed_mm_min,
        depth_mm=depth,
        wall_angle_deg=half,
        stroke_width_mm=diameter,
        removes_material=True,
        force_pct=force_pct,
        force_n=force_n,
        dot_pitch_mm=options.dot_pitch_mm,
    )
