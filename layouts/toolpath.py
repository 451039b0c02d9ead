"""From a Layout to a machine-neutral Program, and the Program's estimated cycle time.

* Motion machines (``protocol.kind == "grbl"``): a :class:`MotionProgram` of strokes in the
  machine's work frame: text glyphs (lines, or dots for dot fonts and dot peen), and the Data
  Matrix as fill hatching (laser: rows of dark modules filled with lines one spot apart) or one dot
  per dark module (dot peen). Strokes are ordered by nearest neighbour, then 2-opt and Or-opt
  with perturbation (ordering.py), within a search budget tied to the marking time.
* Pattern machines (Telesis, Modbus markers): a :class:`PatternProgram` with one field per text
  line (text, height, baseline start, angle, font) and, if a Data Matrix is asked for, one field
  with ``font="datamatrix"`` whose text is the symbol content, ``height_mm`` its side and position
  its lower-left corner. The pattern to load is named after the rule profile.

The cycle-time estimate uses the machine profile: trapezoidal velocity per segment (accelerate,
cruise, decelerate; a triangle when the segment is too short to reach speed) for motion machines;
the profile's character rate and dot rate for pattern machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from markctl.errors import LayoutError
from markctl.layouts import _geom as g
from markctl.layouts import ordering
from markctl.layouts.compose import MIN_DOT_PITCH_MM, Layout
from markctl.layouts.program import (
    MotionProgram,
    PatternField,
    PatternProgram,
    ProcessParams,
    Program,
    Stroke,
    StrokeKind,
)
from markctl.profiles import FirmwareProfile, load_profile

__all__ = [
    "ProgramStats",
    "build_program",
    "check_fits",
    "composed_strokes",
    "estimate_cycle_time_s",
    "estimate_layout_cycle_s",
    "program_stats",
]

FloatArray = npt.NDArray[np.float64]

# A laser dot (dot font on a laser) dwells this long per pass; no profile key describes it yet.
_LASER_DOT_DWELL_S = 0.002
_TEXT, _CODE = 0, 1  # indexes into MotionProgram.params
_RawStroke = tuple[StrokeKind, FloatArray, int]  # kind, points, index of its ProcessParams


def composed_strokes(layout: Layout, offset: tuple[float, float] = (0.0, 0.0)) -> list[Stroke]:
    """Every stroke of the layout in composed (reading) order, shifted by ``offset``."""
    return [Stroke(kind, points, params) for kind, points, params in _raw_strokes(layout, offset)]


def _raw_strokes(layout: Layout, offset: tuple[float, float]) -> list[_RawStroke]:
    """:func:`composed_strokes` as plain tuples (a pre-check estimates from them; no Stroke is checked)."""
    shift = np.asarray(offset, dtype=np.float64)
    out: list[_RawStroke] = []
    for line in layout.lines:
        for glyph in line.glyphs:
            for pts in glyph.strokes:
                if glyph.kind == "dots":
                    out.append((StrokeKind.DOTS, pts + shift, _TEXT))
                elif len(pts) >= 2:
                    out.append((StrokeKind.LINE, pts + shift, _TEXT))
    code = layout.code
    if code is not None:
        m = code.module_mm
        mods = code.symbol.modules
        if layout.process.method == "dot-peen" or layout.stroke_kind == "dots":
            for r in range(mods.shape[0]):
                cols = np.nonzero(mods[r])[0]
                if len(cols):
                    local = np.column_stack(((cols + 0.5) * m, np.full(len(cols), -(r + 0.5) * m)))
                    out.append(
                        (StrokeKind.DOTS, g.to_world(local, code.angle_deg, code.origin) + shift, _CODE)
                    )
        else:
            spot = layout.process.stroke_width_mm
            per_row = max(1, math.ceil(m / spot - 1e-9))
            for r in range(mods.shape[0]):
                row = np.concatenate(([False], mods[r], [False])).astype(np.int8)
                edges = np.diff(row)
                for c0, c1 in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True):
                    # Inset by half a spot so the fill stays inside the module edges.
                    x0 = c0 * m + min(spot / 2.0, m / 4.0)
                    x1 = c1 * m - min(spot / 2.0, m / 4.0)
                    for j in range(per_row):
                        y = -(r * m + (j + 0.5) * m / per_row)
                        local = np.array([[x0, y], [x1, y]])
                        out.append(
                            (StrokeKind.LINE, g.to_world(local, code.angle_deg, code.origin) + shift, _CODE)
                        )
    return out


def _parts(layout: Layout, total: int) -> list[int]:
    """How many of :func:`composed_strokes` each text line gives, then the code (the rest)."""
    counts = [
        sum(1 for glyph in line.glyphs for pts in glyph.strokes if glyph.kind == "dots" or len(pts) >= 2)
        for line in layout.lines
    ]
    return [*counts, total - sum(counts)]


# The ordering's perturbation budget: about 1/1000 of the time the machine spends marking (a kick
# costs ~10 us), never more than ordering.DEFAULT_KICKS_PER_STROKE per stroke, which already comes
# within 5 % of LKH-3 (bench/ordering.py); a quick mark gets a quick search.
_KICKS_PER_MARKING_S = 100


def _search_budget(strokes: list[Stroke], params: tuple[ProcessParams, ...], machine: FirmwareProfile) -> int:
    marking_s = 0.0
    for s in strokes:
        p = params[s.params]
        if s.kind is StrokeKind.LINE:
            length = float(np.hypot(*np.diff(s.points, axis=0).T).sum())
            v = min(p.speed_mm_min, machine.machine.max_feed_mm_min) / 60.0
            marking_s += length * p.passes / v
        else:
            marking_s += len(s.points) * _LASER_DOT_DWELL_S
    cap = ordering.DEFAULT_KICKS_PER_STROKE * len(strokes)
    return min(cap, max(len(strokes), round(marking_s * _KICKS_PER_MARKING_S)))


def _process_params(layout: Layout) -> tuple[ProcessParams, ProcessParams]:
    """The process parameters of the text and of the code of a motion program."""
    p = layout.process
    if p.method == "laser":
        text = ProcessParams(
            speed_mm_min=p.speed_mm_min, passes=p.passes, power_pct=p.power_pct, pulse_khz=p.pulse_khz
        )
        # The code is optional (never a required mark), so no depth rule binds it; by default it is
        # cut as deep as the text anyway, for the same durability, unless code_passes says otherwise.
        code = ProcessParams(
            speed_mm_min=p.speed_mm_min,
            passes=layout.request.options.code_passes or p.passes,
            power_pct=p.power_pct,
            pulse_khz=p.pulse_khz,
        )
    else:
        pitch = p.dot_pitch_mm
        if pitch is None:
            # As composed: the dot font's cell pitch, or the resampling pitch of a stroke font.
            pitch = (
                layout.font.pitch_em * layout.char_height_mm
                if layout.font.kind == "dot"
                else max(p.stroke_width_mm, MIN_DOT_PITCH_MM)
            )
        text = ProcessParams(speed_mm_min=p.speed_mm_min, force_pct=p.force_pct, dot_pitch_mm=pitch)
        module = layout.code.module_mm if layout.code is not None else pitch
        code = ProcessParams(speed_mm_min=p.speed_mm_min, force_pct=p.force_pct, dot_pitch_mm=module)
    return text, code


def _motion(
    layout: Layout, machine: FirmwareProfile, offset: tuple[float, float], optimise: bool
) -> MotionProgram:
    text, code = _process_params(layout)
    strokes = composed_strokes(layout, offset)
    if optimise and len(strokes) > 1:
        starts = np.array([s.points[0] for s in strokes])
        ends = np.array([s.points[-1] for s in strokes])
        # Each text line and the code are ordered on their own, within the budget of their own
        # marking time, and remembered: the lines a manifest repeats (maker, country, model) are
        # ordered once; the serial's line and the code are ordered per row, then the tours are
        # joined and mended (ordering.order_parts).
        parts = _parts(layout, len(strokes))
        kicks, at = [], 0
        for count in parts:
            kicks.append(_search_budget(strokes[at : at + count], (text, code), machine))
            at += count
        idx, flip = ordering.order_parts(starts, ends, parts, kicks, origin=(offset[0], offset[1]))
        strokes = [strokes[i].reversed() if f else strokes[i] for i, f in zip(idx, flip, strict=True)]
    params = (text, code) if layout.code is not None else (text,)
    return MotionProgram(strokes=tuple(strokes), params=params)


def _pattern(layout: Layout, offset: tuple[float, float]) -> PatternProgram:
    p = layout.process
    # Only a pitch the request sets is sent. A dot font's own pitch (height / (rows - 1)) is what the
    # machine strikes when given none; sending it would round it to the register's resolution, and
    # the error adds up along a line (0.0033 mm a dot is 0.26 mm over 13 characters).
    pitch = p.dot_pitch_mm
    fields = [
        PatternField(
            text=line.text,
            height_mm=line.height_mm,
            x_mm=line.origin[0] + offset[0],
            y_mm=line.origin[1] + offset[1],
            angle_deg=line.angle_deg,
            font=layout.font.name,
            dot_pitch_mm=pitch,
            force_pct=p.force_pct,
        )
        for line in layout.lines
    ]
    code = layout.code
    if code is not None:
        corners = code.corners()
        fields.append(
            PatternField(
                text=code.symbol.content,
                height_mm=code.symbol_mm,
                x_mm=float(corners[0, 0]) + offset[0],
                y_mm=float(corners[0, 1]) + offset[1],
                angle_deg=code.angle_deg,
                font="datamatrix",
                dot_pitch_mm=code.module_mm,
                force_pct=p.force_pct,
            )
        )
    _ascii_only(fields)
    return PatternProgram(pattern=layout.rules.id, fields=tuple(fields))


def _ascii_only(fields: list[PatternField]) -> None:
    """Pattern machines are sent their fields' text in ASCII (Telesis frames, Modbus registers) and
    draw it with their controller's own fonts: a Greek or Cyrillic letter cannot reach them, even
    when markctl's dot fonts draw it. Refused here, so the pre-check says so before anything is cut."""
    bad = [f"field {i} {f.text!r}" for i, f in enumerate(fields, start=1) if not f.text.isascii()]
    if bad:
        raise LayoutError(
            f"{', '.join(bad)}: letters other than ASCII cannot be sent to a pattern machine "
            "(its controller takes ASCII text and draws it in its own font)",
            field="options.font",
            hint="mark Greek or Cyrillic on a machine markctl drives stroke by stroke (GRBL)",
        )


def _resolve_machine(layout: Layout, machine_profile: FirmwareProfile | str | None) -> FirmwareProfile:
    if machine_profile is None:
        return layout.machine
    machine = load_profile(machine_profile) if isinstance(machine_profile, str) else machine_profile
    if machine.machine.kind is not layout.machine.machine.kind:
        raise LayoutError(
            f"the layout was composed for a {layout.machine.machine.kind.value} machine "
            f"({layout.machine.id}); {machine.id} is {machine.machine.kind.value}: compose again",
            field="machine",
        )
    return machine


def check_fits(layout: Layout, machine_profile: FirmwareProfile | str | None = None) -> FirmwareProfile:
    """The machine the program would be made for, once the mark is known to fit it (no toolpath is made).

    A pre-check judges every item this way without ordering strokes; ``build_program`` makes the
    same check first.

    Raises:
        LayoutError: as ``build_program``.
    """
    machine = _resolve_machine(layout, machine_profile)
    offset = layout.request.options.origin_mm
    x0, y0, x1, y1 = g.bounds(layout.footprint)
    area = machine.machine
    if (
        x0 + offset[0] < 0
        or y0 + offset[1] < 0
        or x1 + offset[0] > area.work_area_x_mm
        or y1 + offset[1] > area.work_area_y_mm
    ):
        raise LayoutError(
            f"the mark spans ({x0 + offset[0]:.1f}, {y0 + offset[1]:.1f})-({x1 + offset[0]:.1f}, {y1 + offset[1]:.1f}) mm, "
            f"outside the {area.work_area_x_mm:g} x {area.work_area_y_mm:g} mm work area of {machine.id}",
            field="options.origin_mm",
        )
    return machine


def build_program(
    layout: Layout, machine_profile: FirmwareProfile | str | None = None, *, optimise: bool = True
) -> Program:
    """The machine-neutral program for a layout.

    Args:
        layout: a composed layout (check it first; this function does not judge compliance).
        machine_profile: the target machine (profile or id); the layout's own machine by default.
        optimise: order strokes to minimise travel (motion machines); False keeps reading order.

    Raises:
        LayoutError: the machine is of another kind than the layout was composed for
            (``field="machine"``), or the mark falls outside its work area (``field="options.origin_mm"``).
    """
    machine = check_fits(layout, machine_profile)
    offset = layout.request.options.origin_mm
    if machine.family == "grbl":
        return _motion(layout, machine, offset, optimise)
    return _pattern(layout, offset)


def _trapezoid_each(distance: FloatArray, v_mm_s: float, a_mm_s2: float) -> FloatArray:
    """Seconds to cover each distance from rest to rest with speed limit v and acceleration a
    (a trapezoid, or a triangle when the distance is too short to reach v)."""
    d = np.maximum(distance, 0.0)
    ramp = v_mm_s * v_mm_s / a_mm_s2
    t = np.where(d >= ramp, d / v_mm_s + v_mm_s / a_mm_s2, 2.0 * np.sqrt(d / a_mm_s2))
    return np.asarray(t, dtype=np.float64)


def _motion_cycle_s(
    strokes: Sequence[_RawStroke], params: Sequence[ProcessParams], machine: FirmwareProfile
) -> float:
    """Estimated seconds of strokes marked in the given order (the model in the module docstring),
    in a few array operations: a pre-check estimates every row of a manifest."""
    if not strokes:
        return 0.0
    spec = machine.machine
    v_travel = spec.max_feed_mm_min / 60.0
    accel = spec.max_accel_mm_s2
    peen = machine.dot_peen
    firsts = np.array([pts[0] for _, pts, _ in strokes])
    lasts = np.array([pts[-1] for _, pts, _ in strokes])
    total = float(_trapezoid_each(np.hypot(*(firsts[1:] - lasts[:-1]).T), v_travel, accel).sum())
    counts = np.array([len(pts) for _, pts, _ in strokes])
    pts = np.concatenate([pts for _, pts, _ in strokes])
    seg = np.hypot(*np.diff(pts, axis=0).T)
    # Segment k joins point k to k+1; those that join two strokes are not marking moves.
    inside = np.ones(len(seg), dtype=bool)
    inside[np.cumsum(counts)[:-1] - 1] = False
    owner = np.repeat(np.arange(len(strokes)), counts)[:-1]
    seg, owner = seg[inside], owner[inside]
    kinds = np.array([kind is StrokeKind.LINE for kind, _, _ in strokes])
    which = np.array([i for _, _, i in strokes])
    for p_index, p in enumerate(params):
        mine = which == p_index
        lines = mine & kinds
        if lines.any():
            v = min(p.speed_mm_min, spec.max_feed_mm_min) / 60.0
            one = float(_trapezoid_each(seg[lines[owner]], v, accel).sum())
            back = float(_trapezoid_each(np.hypot(*(lasts[lines] - firsts[lines]).T), v_travel, accel).sum())
            total += p.passes * one + (p.passes - 1) * back
        dots = mine & ~kinds
        if dots.any():
            moves = np.zeros(len(strokes))
            np.add.at(moves, owner, np.where(dots[owner], _trapezoid_each(seg, v_travel, accel), 0.0))
            if peen is not None:
                # A strike cannot be faster than the stylus rate, whatever the move between dots.
                total += float(np.maximum(moves[dots], counts[dots] / peen.dot_rate_hz).sum())
            else:
                total += float(moves[dots].sum() + counts[dots].sum() * p.passes * _LASER_DOT_DWELL_S)
    return total


def estimate_cycle_time_s(program: Program, machine: FirmwareProfile) -> float:
    """Estimated seconds to mark the program on this machine (see the module docstring)."""
    if isinstance(program, PatternProgram):
        peen = machine.dot_peen
        chars_per_s = peen.chars_per_s if peen else 2.0
        dot_rate = peen.dot_rate_hz if peen else 100.0
        total = 0.0
        for f in program.fields:
            if f.font == "datamatrix":
                # Roughly half the modules of a symbol are dark, one strike each.
                side = max(1, round(f.height_mm / (f.dot_pitch_mm or 0.35)))
                total += side * side * 0.5 / dot_rate
            else:
                total += len(f.text.replace(" ", "")) / chars_per_s
        return total
    return _motion_cycle_s([(s.kind, s.points, s.params) for s in program.strokes], program.params, machine)


def estimate_layout_cycle_s(layout: Layout, machine_profile: FirmwareProfile | str | None = None) -> float:
    """The estimated cycle time of the layout's program, without making it.

    Motion machines: the strokes in reading order, not ordered (ordering them costs tens of
    milliseconds on a large mark and changes the cycle by well under 1 %: bench/precheck.py
    prints the difference on its mix). Pattern machines: their program, which is cheap.

    Raises:
        LayoutError: as :func:`check_fits`.
    """
    machine = check_fits(layout, machine_profile)
    offset = layout.request.options.origin_mm
    if machine.family != "grbl":
        return estimate_cycle_time_s(_pattern(layout, offset), machine)
    return _motion_cycle_s(_raw_strokes(layout, offset), _process_params(layout), machine)


@dataclass(frozen=True, slots=True)
class ProgramStats:
    """What a program costs: marking length, non-marking travel, dots and estimated cycle time."""

    marking_length_mm: float
    travel_length_mm: float
    dot_count: int
    char_count: int
    cycle_time_s: float


def program_stats(program: Program, machine: FirmwareProfile) -> ProgramStats:
    """Metrics of a program on a machine (pattern programs have no geometry: lengths are 0)."""
    if isinstance(program, MotionProgram):
        return ProgramStats(
            program.marking_length_mm,
            program.travel_length_mm,
            program.dot_count,
            0,
            estimate_cycle_time_s(program, machine),
        )
    return ProgramStats(0.0, 0.0, 0, program.char_count, estimate_cycle_time_s(program, machine))
