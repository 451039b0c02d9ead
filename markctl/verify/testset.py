"""A labelled set of marks and photos the verifier must judge, generated deterministically.

No image is stored: each case is made from a seed when a test or benchmark runs.

* **Records**: stockpile marks (ITI 8(d): owner country, agency, serial, year) with and without a
  Data Matrix, on a GRBL laser (stroke font, or the 5x7 dot font fired as laser dots) and on a
  dot-peen marker (5x7, the dots the layout places).
* **Burned workpieces**: the program cut into the simulator's :class:`Workpiece` model (laser
  segments, conical stylus dents), as the simulators do.
* **Photos** made from them: the mark on a brushed, tinted surface, scaled, rotated up to 15 degrees,
  seen in perspective, unevenly lit, blurred and noisy, saved as PNG or JPEG.
* **Wrong records**: half the cases are checked against a record that is *not* the one shown:
  one digit apart, one letter apart, two digits transposed, another agency or owner country.

Each :class:`Case` says which record the image shows, which it is checked against, and whether the
verifier should accept it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from markctl.layouts import MarkRequest, compose
from markctl.layouts import program as make_program
from markctl.layouts.compose import Layout
from markctl.layouts.program import MotionProgram, Stroke, StrokeKind
from markctl.simulator.workpiece import Workpiece
from markctl.verify import expected_program

__all__ = ["Case", "Mark", "burn", "cases", "make_mark", "synth_photo", "wrong_fields"]

F32 = npt.NDArray[np.float32]

SERIALS = ("AK100202", "PX45123", "NW26A0042", "GB00317", "TR88310", "BX70451", "KR2209", "MZ661804")
MACHINES = ("laser", "laser-dm", "laser-dots", "peen")
WORKPIECE_PX_PER_MM = 20.0


@dataclass(frozen=True)
class Mark:
    """A record's mark: the request fields, its layout and the strokes that cut it (machine frame)."""

    fields: tuple[tuple[str, str], ...]
    machine: str
    layout: Layout
    program: MotionProgram
    code: str | None

    @property
    def label(self) -> str:
        values = dict(self.fields)
        return f"{values['owner_country']}-{values['agency']}-{values['serial']}/{self.machine}"


def _request(fields: dict[str, str], machine: str) -> dict[str, Any]:
    options: dict[str, Any] = {"origin_mm": [5.0, 5.0]}
    if machine == "laser-dm":
        options.update(datamatrix=True, module_mm=0.4)
    if machine == "laser-dots":
        options["font"] = "5x7"
    if machine == "peen":
        # 3 mm, a usual dot-peen size: its dents (about 0.3 mm in steel at the lightest force) stay
        # apart at the 0.5 mm dot pitch, so each dot can be told missing or not.
        options["char_height_mm"] = 3.0
    return {
        "profile": "iti-stockpile",
        "machine": "peen-modbus" if machine == "peen" else "grbl-1.1",
        "fields": fields,
        "component": {
            "name": "receiver",
            "material": "steel",
            "wall_thickness_mm": 2.5,
            "zone": [[0, 0], [60, 0], [60, 14], [0, 14]],
        },
        "options": options,
    }


@cache
def make_mark(fields: tuple[tuple[str, str], ...], machine: str) -> Mark:
    """Compose a record's mark. Pattern machines (dot peen) get the dots the layout places."""
    layout = compose(MarkRequest.parse(_request(dict(fields), machine)))
    program = expected_program(layout, make_program(layout, layout.request.machine))
    code = layout.code.symbol.content if layout.code is not None else None
    return Mark(fields, machine, layout, program, code)


def burn(mark: Mark, *, px_per_mm: float = WORKPIECE_PX_PER_MM) -> Workpiece:
    """The mark cut into a simulated plate (the simulators' model: laser segments, stylus dents)."""
    x0, y0, x1, y1 = mark.program.bounds
    wp = Workpiece(x1 - x0 + 6, y1 - y0 + 6, px_per_mm=px_per_mm, origin=(x0 - 3, y0 - 3))
    width = 2 * mark.layout.half_width_mm
    for stroke in mark.program.strokes:
        _cut(wp, stroke, width, dots=mark.machine == "peen")
    return wp


def _cut(wp: Workpiece, stroke: Stroke, width: float, *, dots: bool) -> None:
    if stroke.kind is StrokeKind.DOTS:
        for x, y in stroke.points:
            if dots:  # a stylus: the dent's surface radius is depth * tan(cone / 2)
                wp.strike_dot(float(x), float(y), depth_mm=width / 2, cone_deg=90.0)
            else:  # a laser dot: a zero-length burn as wide as the spot
                wp.burn_segment(float(x), float(y), float(x), float(y), width_mm=width, depth_mm=0.02)
        return
    pts = stroke.points
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:], strict=True):
        wp.burn_segment(float(ax), float(ay), float(bx), float(by), width_mm=width, depth_mm=0.02)


def wrong_fields(fields: dict[str, str], how: str) -> dict[str, str]:
    """A record one small step away from ``fields`` (the kind of mix-up an inspector must catch)."""
    out = dict(fields)
    serial = fields["serial"]
    digits = [i for i, c in enumerate(serial) if c.isdigit()]
    if how == "digit":  # one digit apart: the last digit + 1
        i = digits[-1]
        out["serial"] = serial[:i] + str((int(serial[i]) + 1) % 10) + serial[i + 1 :]
    elif how == "letter":  # one letter apart
        i = next(i for i, c in enumerate(serial) if c.isalpha())
        swap = {"A": "R", "P": "R", "N": "M", "G": "C", "T": "I", "B": "R", "K": "X", "M": "N"}
        out["serial"] = serial[:i] + swap.get(serial[i], "E") + serial[i + 1 :]
    elif how == "transposed":  # two neighbouring different digits swapped
        for a, b in zip(digits, digits[1:], strict=False):
            if b == a + 1 and serial[a] != serial[b]:
                out["serial"] = serial[:a] + serial[b] + serial[a] + serial[b + 1 :]
                break
    elif how == "maker":  # another agency (or owner) applied the same serial
        out["agency"] = {"UPF": "UPDF", "UPDF": "UPF"}.get(fields["agency"], "UPF")
    else:
        raise ValueError(f"unknown mix-up {how!r}")
    if out == fields:
        raise ValueError(f"{how} leaves {serial} unchanged")
    return out


def synth_photo(
    image: Image.Image,
    px_per_mm: float,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (1280, 960),
    rotation_deg: float | None = None,
    jpeg: bool | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """A photo of a burned workpiece image: surface, scale, rotation, perspective, light, blur, noise."""
    out_w, out_h = size
    mark = 1.0 - np.asarray(image, dtype=np.float32) / 225.0
    mark = np.clip(mark / max(float(mark.max()), 1e-3), 0.0, 1.0)
    h, w = mark.shape
    fill = rng.uniform(0.45, 0.8)
    scale = fill * out_w / w
    angle = rng.uniform(-15.0, 15.0) if rotation_deg is None else rotation_deg
    a = math.radians(angle)
    cos, sin = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = out_w / 2 + rng.uniform(-0.08, 0.08) * out_w, out_h / 2 + rng.uniform(-0.08, 0.08) * out_h
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) - [w / 2, h / 2]
    mapped = corners @ np.array([[cos, sin], [-sin, cos]]) + [cx, cy]
    # Perspective: each corner moves by up to 6 % of the mark's width (a photo up to ~10 degrees off square).
    jitter = rng.uniform(-0.06, 0.06, size=(4, 2)) * scale * w
    dst = (mapped + jitter).astype(np.float32)
    homography = cv2.getPerspectiveTransform((corners + [w / 2, h / 2]).astype(np.float32), dst)
    ink = np.asarray(cv2.warpPerspective(mark, homography, (out_w, out_h), flags=cv2.INTER_LINEAR))
    # Brushed metal: noise stretched along one direction, a tint, a little grain.
    grain = rng.normal(0.0, 1.0, size=(out_h, out_w)).astype(np.float32)
    brushed = np.asarray(cv2.GaussianBlur(grain, (0, 0), sigmaX=float(rng.uniform(6, 14)), sigmaY=0.7))
    brushed = (brushed / max(float(brushed.std()), 1e-6) * float(rng.uniform(0.015, 0.045))).astype(
        np.float32
    )
    surface = float(rng.uniform(0.55, 0.85)) + brushed
    contrast = float(rng.uniform(0.45, 0.75))
    photo = surface * (1.0 - contrast * ink)
    # Uneven light: a gradient across the frame and a vignette.
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    gx, gy = rng.uniform(-0.35, 0.35, size=2)
    light = 1.0 + gx * (xx / out_w - 0.5) + gy * (yy / out_h - 0.5)
    r2 = ((xx - out_w / 2) / out_w) ** 2 + ((yy - out_h / 2) / out_h) ** 2
    light *= 1.0 - float(rng.uniform(0.0, 0.5)) * r2
    photo = photo * light
    blur = float(rng.uniform(0.3, 1.6)) * max(1.0, scale / 2)
    photo = np.asarray(cv2.GaussianBlur(photo.astype(np.float32), (0, 0), blur))
    photo = photo + rng.normal(0.0, float(rng.uniform(0.005, 0.03)), size=photo.shape).astype(np.float32)
    pixels = np.clip(photo * 255.0, 0, 255).astype(np.uint8)
    use_jpeg = bool(rng.integers(0, 2)) if jpeg is None else jpeg
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if use_jpeg else "PNG", quality=90)
    truth = {
        "px_per_mm": px_per_mm * scale,
        "rotation_deg": round(angle, 2),
        "blur_px": round(blur, 2),
        "format": "jpeg" if use_jpeg else "png",
    }
    return buffer.getvalue(), truth


@dataclass(frozen=True)
class Case:
    name: str
    shown: Mark
    checked: Mark
    photo: bytes | None  # None: the burned workpiece itself is judged
    workpiece: Workpiece
    expect_pass: bool
    mixup: str | None
    truth: dict[str, Any] = field(default_factory=dict)


_MIXUPS = ("digit", "letter", "transposed", "maker")


def cases(count: int = 64, *, seed: int = 11, size: tuple[int, int] = (1280, 960)) -> Iterator[Case]:
    """``count`` cases, half correct, half against a wrong record; every fourth is a bare workpiece."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        serial = SERIALS[(n // 2) % len(SERIALS)]
        machine = MACHINES[(n // 2 + n // 16) % len(MACHINES)]
        fields = {"owner_country": "UG", "agency": "UPF", "serial": serial, "year": "26"}
        shown = make_mark(tuple(sorted(fields.items())), machine)
        wrong = n % 2 == 1
        mixup = _MIXUPS[(n // 2) % len(_MIXUPS)] if wrong else None
        checked_fields = wrong_fields(fields, mixup) if mixup else fields
        checked = make_mark(tuple(sorted(checked_fields.items())), machine)
        wp = burn(shown)
        bare = n % 8 in (0, 1)
        photo, truth = (None, {}) if bare else synth_photo(wp.image(), wp.px_per_mm, rng, size=size)
        kind = "workpiece" if bare else f"photo-{truth['format']}"
        name = f"{n:02d}-{shown.label}-{kind}" + (f"-vs-{mixup}" if mixup else "")
        yield Case(name, shown, checked, photo, wp, not wrong, mixup, truth)
