"""What the chosen machine can mark: checked before anything is cut, naming the capability.

A layout can pass compliance and still be impossible on the machine it is meant for: a Data
Matrix on a pattern marker whose fonts are dot-matrix characters, a character height outside the
stylus head's range, a line longer than the marking window, more fields than the controller has,
a field longer than its buffer. The drivers refuse these too, but only when the job reaches the
machine; the pre-check (:func:`markctl.jobs.runner.prepare`) and ``markctl check``/``layout`` call
:func:`machine_problems` so that the refusal comes first, for the whole batch, with one line each.

Placement: a pattern machine may not take positions from the host at all (the Telesis-style
protocol has no position message, PROTOCOLS.md §5.1; a Modbus map without origin registers,
``field_origins = 0``). The stored pattern then decides where each field lands, so composition
puts each field at the profile's ``[dot_peen] pattern_origins`` (and, where the host cannot send a
height, at ``pattern_char_height_mm``): the compliance check then judges what will be struck. A
program that puts a field elsewhere (made by other means, e.g. a program file) is refused here,
and so is a profile that does not say where its pattern puts the fields.

Laser (motion) programs are not judged here: GRBL machines place every stroke themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markctl.layouts.program import PatternField, PatternProgram, Program
from markctl.profiles import FirmwareProfile, ModbusProtocol, TelesisProtocol

__all__ = ["CapabilityProblem", "machine_problems"]


@dataclass(frozen=True, slots=True)
class CapabilityProblem:
    """One thing the machine cannot do for this program."""

    # data-matrix | font | character-height | window | fields | text-length | parameters | placement
    capability: str
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"[machine:{self.capability}] {self.message}"


def _font_cells(font: str) -> tuple[int, int] | None:
    """(columns, rows) of a dot-matrix font named like '5x7'; None for another kind."""
    cols, sep, rows = font.partition("x")
    return (int(cols), int(rows)) if sep and cols.isdigit() and rows.isdigit() else None


def _extent(f: PatternField) -> list[tuple[float, float]] | None:
    """Corners of the box a dot-matrix field covers, dot centre to dot centre (None: not a dot font)."""
    cells = _font_cells(f.font)
    if cells is None or not f.text:
        return None
    cols, rows = cells
    pitch_y = f.height_mm / (rows - 1)
    pitch_x = f.dot_pitch_mm or pitch_y
    width = (len(f.text) * (cols + 1) - 2) * pitch_x  # the last character has no blank column
    cos, sin = math.cos(math.radians(f.angle_deg)), math.sin(math.radians(f.angle_deg))
    return [
        (f.x_mm + lx * cos - ly * sin, f.y_mm + lx * sin + ly * cos)
        for lx, ly in ((0.0, 0.0), (width, 0.0), (0.0, f.height_mm), (width, f.height_mm))
    ]


def machine_problems(program: Program, profile: FirmwareProfile) -> list[CapabilityProblem]:
    """Everything ``profile``'s machine cannot do for ``program`` (empty: it can mark it)."""
    if not isinstance(program, PatternProgram) or profile.dot_peen is None:
        return []
    spec, machine, proto = profile.dot_peen, profile.machine, profile.protocol
    out: list[CapabilityProblem] = []
    fonts = ", ".join(spec.fonts)
    for i, f in enumerate(program.fields, 1):
        if f.font == "datamatrix" and "datamatrix" not in spec.fonts:
            out.append(
                CapabilityProblem(
                    "data-matrix",
                    f"field {i}: {profile.id} cannot mark a Data Matrix (its fonts: {fonts}); "
                    "leave the code out or choose a machine that marks one",
                )
            )
            continue
        if f.font not in spec.fonts:
            out.append(
                CapabilityProblem(
                    "font", f"field {i}: font {f.font!r} is not one of {profile.id}'s ({fonts})"
                )
            )
            continue
        if not spec.char_height_min_mm - 1e-9 <= f.height_mm <= spec.char_height_max_mm + 1e-9:
            out.append(
                CapabilityProblem(
                    "character-height",
                    f"field {i}: {f.height_mm:g} mm characters, {profile.id} marks "
                    f"{spec.char_height_min_mm:g}-{spec.char_height_max_mm:g} mm",
                )
            )
        corners = _extent(f)
        if corners is not None:
            tol = machine.resolution_mm
            xs, ys = [c[0] for c in corners], [c[1] for c in corners]
            if (
                min(xs) < -tol
                or min(ys) < -tol
                or max(xs) > machine.work_area_x_mm + tol
                or max(ys) > machine.work_area_y_mm + tol
            ):
                out.append(
                    CapabilityProblem(
                        "window",
                        f"field {i} {f.text!r} spans x {min(xs):.1f}..{max(xs):.1f}, y {min(ys):.1f}..{max(ys):.1f} mm; "
                        f"{profile.id}'s marking window is {machine.work_area_x_mm:g} x {machine.work_area_y_mm:g} mm",
                    )
                )
    if isinstance(proto, TelesisProtocol):
        if len(program.fields) > proto.text_fields:
            out.append(
                CapabilityProblem(
                    "fields", f"{len(program.fields)} fields, {profile.id} has {proto.text_fields}"
                )
            )
        for i, f in enumerate(program.fields, 1):
            if len(f.text) > proto.field_chars_max:
                out.append(
                    CapabilityProblem(
                        "text-length",
                        f"field {i}: {len(f.text)} characters, {profile.id} takes {proto.field_chars_max} per field",
                    )
                )
    elif isinstance(proto, ModbusProtocol):
        m = proto.registers
        limit = m.field_block.count if m.field_block is not None else m.placeable_fields
        if limit and len(program.fields) > limit:
            out.append(CapabilityProblem("fields", f"{len(program.fields)} fields, {profile.id} has {limit}"))
        text = m.text_separator.join(f.text for f in program.fields)
        if len(text) > m.text_chars:
            out.append(
                CapabilityProblem(
                    "text-length",
                    f"{len(text)} characters of text, {profile.id}'s text block holds {m.text_chars}",
                )
            )
        first = program.fields[0]
        own_height = m.field_block is not None and m.field_block.height is not None
        if any(f.force_pct != first.force_pct for f in program.fields) or (
            not own_height and any(f.height_mm != first.height_mm for f in program.fields)
        ):
            what = "force" if own_height else "character height and force"
            out.append(
                CapabilityProblem(
                    "parameters", f"{profile.id} has one {what} for the whole job; the fields differ"
                )
            )
    if not profile.places_fields:
        out.extend(_placement(program, profile))
    return out


def _placement(program: PatternProgram, profile: FirmwareProfile) -> list[CapabilityProblem]:
    assert profile.dot_peen is not None
    origins = profile.dot_peen.pattern_origins
    if not origins:
        return [
            CapabilityProblem(
                "placement",
                f"{profile.id} places fields from the pattern stored on the controller and its profile "
                "gives no [dot_peen] pattern_origins: add them (mm, machine frame, field 1 first) from the "
                "pattern, or choose a machine that places fields",
            )
        ]
    out = []
    # A code the machine cannot mark at all is refused as such ([machine:data-matrix]) already.
    fields = [
        (i, f)
        for i, f in enumerate(program.fields, 1)
        if f.font != "datamatrix" or f.font in profile.dot_peen.fonts
    ]
    height = profile.dot_peen.pattern_char_height_mm
    force = profile.dot_peen.pattern_force_pct
    if not profile.sends_parameters:
        for i, f in fields:
            if f.font == "datamatrix":
                continue  # a code's "height" is its side, set by the host
            if height is None or abs(f.height_mm - height) > 1e-6:
                pattern = f"{height:g} mm" if height is not None else "a height its profile does not give"
                out.append(
                    CapabilityProblem(
                        "character-height",
                        f"field {i}: {f.height_mm:g} mm, but {profile.id} strikes its stored pattern's "
                        f"{pattern} ([dot_peen] pattern_char_height_mm)",
                    )
                )
            if f.force_pct is not None and (force is None or abs(f.force_pct - force) > 1e-6):
                pattern = f"{force:g} %" if force is not None else "a force its profile does not give"
                out.append(
                    CapabilityProblem(
                        "parameters",
                        f"field {i}: {f.force_pct:g} % force, but {profile.id} strikes with its stored "
                        f"pattern's {pattern} ([dot_peen] pattern_force_pct)",
                    )
                )
    tol = max(profile.machine.resolution_mm, 0.05)
    for i, f in fields:
        if i > len(origins):
            out.append(
                CapabilityProblem(
                    "placement", f"field {i}: {profile.id}'s pattern has {len(origins)} field(s)"
                )
            )
            continue
        x, y = origins[i - 1]
        if abs(f.x_mm - x) > tol or abs(f.y_mm - y) > tol:
            out.append(
                CapabilityProblem(
                    "placement",
                    f"field {i} is laid out at ({f.x_mm:.2f}, {f.y_mm:.2f}) mm but {profile.id} cannot place "
                    f"fields: its stored pattern strikes it at ({x:g}, {y:g}) mm ([dot_peen] pattern_origins)",
                )
            )
    return out
