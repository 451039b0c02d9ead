"""MarkRequest: what to mark, on which component and surface, with which machine.

A request is pure data (pydantic, frozen, unknown keys refused). It is built from a TOML or JSON
text (:meth:`MarkRequest.from_toml`, :meth:`MarkRequest.from_json`), from a dict, or from CLI
flags (:func:`request_from_flags`). Any validation failure becomes a
:class:`~markctl.errors.LayoutError` whose ``field`` is the dotted path of the culprit
(``component.wall_thickness_mm``), which the CLI reports on one line with exit code 2.

Coordinates are millimetres in the component's own frame, +X right, +Y up. ``options.origin_mm``
places that frame in the machine's work frame when a program is made.

Example (TOML)::

    profile = "iti-import"
    machine = "grbl-1.1"
    [fields]
    import_country = "UG"
    import_year = "26"
    [component]
    name = "frame"
    material = "steel"
    wall_thickness_mm = 3.0
    zone = [[0, 0], [40, 0], [40, 12], [0, 12]]
    existing_marks = [[[0, 8], [18, 8], [18, 12], [0, 12]]]
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from markctl.errors import LayoutError
from markctl.layouts.rules import ComponentName

__all__ = ["Component", "Exemption", "MarkOptions", "MarkRequest", "request_from_flags"]

Point = tuple[float, float]
Ring = tuple[Point, ...]

# Nothing on a firearm is a metre long; a coordinate beyond this is a unit mistake, not a part.
_MAX_COORD_MM = 1000.0


def _check_ring(ring: Sequence[Point], what: str) -> None:
    if len(ring) < 3:
        raise ValueError(f"{what} needs at least 3 points, got {len(ring)}")
    for x, y in ring:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{what} has a non-finite coordinate")
        if abs(x) > _MAX_COORD_MM or abs(y) > _MAX_COORD_MM:
            raise ValueError(f"{what} has a coordinate beyond {_MAX_COORD_MM:g} mm (units must be mm)")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(_Frozen):
    """The component and the surface the mark goes on."""

    name: ComponentName
    material: str = Field(
        min_length=1, description="A key of the materials table (layouts/data/materials.toml)."
    )
    wall_thickness_mm: float = Field(gt=0, le=100, description="Wall thickness under the marking zone.")
    zone: Ring = Field(description="Marking zone polygon (exposed surface), mm.")
    keepouts: tuple[Ring, ...] = Field(
        default=(), description="Areas that must not be marked (stress areas)."
    )
    existing_marks: tuple[Ring, ...] = Field(default=(), description="Outlines of marks already on the part.")
    size_class: Literal["normal", "too-small"] = Field(
        default="normal",
        description="'too-small': an essential component too small for the full mark (EU 2019/68, EU-SMALL).",
    )
    modular_subpart: Literal["housing", "housing-half", "other"] | None = Field(
        default=None,
        description=(
            "Multi-piece frame/receiver (27 CFR 478.92, 479.102(a)(3)): this subpart is the housing of the"
            " fire-control/breech-blocking component, one of two housing halves, or another subpart."
        ),
    )

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: Ring) -> Ring:
        _check_ring(value, "zone")
        return value

    @field_validator("keepouts", "existing_marks")
    @classmethod
    def _rings(cls, value: tuple[Ring, ...]) -> tuple[Ring, ...]:
        for i, ring in enumerate(value):
            _check_ring(ring, f"polygon {i}")
        return value


class MarkOptions(_Frozen):
    """How to lay out and cut the mark. ``None`` means: derive from the rule and machine profiles."""

    font: str | None = Field(default=None, description="'hershey:<name>', '5x7' or '7x9'.")
    char_height_mm: float | None = Field(default=None, gt=0, le=50)
    line_spacing: float = Field(default=1.6, ge=1.0, le=5.0, description="Baseline pitch / character height.")
    align: Literal["left", "center", "right"] = "left"
    rotation_deg: float = Field(default=0.0, ge=-360, le=360)
    datamatrix: bool = False
    module_mm: float = Field(default=0.35, gt=0, le=5)
    quiet_zone_modules: int = Field(default=1, ge=0, le=10)
    code_position: Literal["right", "left", "below", "above"] = "right"
    process: str | None = Field(
        default=None, description="Laser mode: ablate (default), anneal, foam, carbonise."
    )
    passes: int | None = Field(default=None, ge=1, le=1000)
    code_passes: int | None = Field(
        default=None, ge=1, le=1000, description="Laser passes for the Data Matrix; default: as the text."
    )
    power_pct: float | None = Field(default=None, gt=0, le=100)
    speed_mm_min: float | None = Field(default=None, gt=0, le=100_000)
    force_pct: float | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Stylus force setting, 1-100 % (a register's 0 means the machine's own default).",
    )
    dot_pitch_mm: float | None = Field(default=None, gt=0, le=5)
    margin_mm: float = Field(default=0.3, ge=0, le=20, description="Clearance from the zone's edge.")
    clearance_mm: float = Field(default=0.5, ge=0, le=20, description="Clearance from keep-outs.")
    origin_mm: Point = Field(default=(0.0, 0.0), description="Component frame origin in the machine frame.")
    today: date | None = Field(default=None, description="Date for year plausibility; default: today.")

    @field_validator("today")
    @classmethod
    def _not_after_today(cls, value: date | None) -> date | None:
        # A request may date its checks in the past (reproducible goldens, re-checking an old
        # record) but never in the future: that would let a future year pass the year check.
        if value is not None and value > date.today():
            raise ValueError(f"{value.isoformat()} is in the future")
        return value

    @field_validator("origin_mm")
    @classmethod
    def _origin(cls, value: Point) -> Point:
        if not all(math.isfinite(v) and abs(v) <= _MAX_COORD_MM * 5 for v in value):
            raise ValueError("origin must be finite and within 5 m")
        return value


class Exemption(_Frozen):
    """A supervisor's recorded waiver of the mark (ITI 8(b): a temporary import for a lawful purpose).

    The weapon is not marked but is still recorded, with these facts.
    """

    kind: Literal["temporary-import"]
    purpose: str = Field(
        min_length=8, description="The verifiable lawful purpose (trade fair, repair, competition)."
    )
    re_export_by: date = Field(description="Expected re-export date.")
    recorded_by: str = Field(min_length=1, description="The supervisor who records the exemption.")
    reference: str = Field(default="", description="Permit or customs reference, if any.")


class MarkRequest(_Frozen):
    """One mark to make: rule profile, field values, component/surface, machine profile, options."""

    profile: str = Field(min_length=1, description="Rule profile id, e.g. 'iti-import'.")
    machine: str = Field(min_length=1, description="Firmware profile id of the target machine.")
    fields: dict[str, str] = Field(default_factory=dict)
    facts: dict[str, bool] = Field(
        default_factory=dict,
        description="Facts that make fields optional: has_unique_mark, serial_contains_year.",
    )
    component: Component
    options: MarkOptions = MarkOptions()
    exemption: Exemption | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> MarkRequest:
        """Validate a dict.

        Raises:
            LayoutError: with ``field`` = dotted path of the first problem.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _layout_error(exc) from None

    @classmethod
    def from_toml(cls, text: str) -> MarkRequest:
        """Parse a TOML text (see the module docstring).

        Raises:
            LayoutError: bad TOML (``field="request"``) or an invalid value.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LayoutError(f"not valid TOML: {exc}", field="request") from exc
        return cls.parse(data)

    @classmethod
    def from_json(cls, text: str) -> MarkRequest:
        """Parse a JSON text with the same structure as the TOML form.

        Raises:
            LayoutError: bad JSON (``field="request"``) or an invalid value.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LayoutError(f"not valid JSON: {exc}", field="request") from exc
        if not isinstance(data, dict):
            raise LayoutError("must be a JSON object", field="request")
        return cls.parse(data)

    def with_fields(self, **values: str) -> MarkRequest:
        """A copy with some field values replaced (e.g. the next serial of a manifest)."""
        return self.model_copy(update={"fields": {**self.fields, **values}})


def _layout_error(exc: ValidationError) -> LayoutError:
    """Every problem of the request at once, one line each, the first one's path as ``field``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "request"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required"
        lines.append((loc, message))
    first_loc, first = lines[0]
    rest = [f"{loc}: {message}" for loc, message in lines[1:]]
    return LayoutError("\n".join([first, *rest]), field=first_loc)


def _parse_ring(text: str, what: str) -> list[list[float]]:
    points: list[list[float]] = []
    for pair in text.replace(";", " ").split():
        parts = pair.split(",")
        if len(parts) != 2:
            raise LayoutError(f"expected 'x,y x,y ...', got {pair!r}", field=what)
        try:
            points.append([float(parts[0]), float(parts[1])])
        except ValueError as exc:
            raise LayoutError(f"not a number in {pair!r}", field=what) from exc
    return points


def _parse_rect_or_ring(text: str, what: str) -> list[list[float]]:
    # "W x H" is a rectangle at the origin, the common case of a flat marking zone.
    compact = text.lower().replace(" ", "")
    if "x" in compact and "," not in compact:
        w, _, h = compact.partition("x")
        try:
            wf, hf = float(w), float(h)
        except ValueError as exc:
            raise LayoutError(f"expected 'WxH' or 'x,y x,y ...', got {text!r}", field=what) from exc
        return [[0.0, 0.0], [wf, 0.0], [wf, hf], [0.0, hf]]
    return _parse_ring(text, what)


def request_from_flags(
    *,
    profile: str,
    machine: str,
    fields: Sequence[str],
    facts: Sequence[str] = (),
    component: str,
    material: str,
    wall_thickness_mm: float,
    zone: str,
    keepouts: Sequence[str] = (),
    existing: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
) -> MarkRequest:
    """Build a request from CLI-style strings.

    ``fields`` are ``name=value``; ``facts`` are fact names that are true; ``zone`` is ``WxH`` or
    ``"x,y x,y x,y ..."``; ``keepouts``/``existing`` are point lists; ``options`` are
    :class:`MarkOptions` keys (``None`` values are left out).

    Raises:
        LayoutError: a malformed flag, named by its field path.
    """
    values: dict[str, str] = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LayoutError(f"expected name=value, got {item!r}", field="fields")
        values[name.strip()] = value.strip()
    data: dict[str, Any] = {
        "profile": profile,
        "machine": machine,
        "fields": values,
        "facts": dict.fromkeys(facts, True),
        "component": {
            "name": component,
            "material": material,
            "wall_thickness_mm": wall_thickness_mm,
            "zone": _parse_rect_or_ring(zone, "component.zone"),
            "keepouts": [_parse_ring(k, "component.keepouts") for k in keepouts],
            "existing_marks": [_parse_ring(e, "component.existing_marks") for e in existing],
        },
        "options": {k: v for k, v in (options or {}).items() if v is not None},
    }
    return MarkRequest.parse(data)
