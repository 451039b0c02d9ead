"""Composition: from a MarkRequest to a Layout, everything positioned in millimetres.

Steps (ARCHITECTURE.md "The flow of one mark"): resolve the rule profile, machine profile,
material and process model; validate the content (a broken field raises
:class:`~markctl.errors.ComplianceError` naming its rule and field: nothing half-made); build the
text lines from the profile's templates in the profile's order (ISACS-FMT); choose a character
height whose *impression-bottom* height meets the profile minimum; set the lines and the optional
Data Matrix side by side in a block; and place the block in the free part of the marking zone
(zone shrunk by the margin, minus keep-outs and existing marks with their clearance). Import-style
marks are placed as close to the existing marks as the "distinct" gap allows (ISACS-IMP).

When the block does not fit, the error names the field to change and the smallest height or
zone that would work.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from markctl.errors import ComplianceError, LayoutError, ProfileError
from markctl.layouts import _geom as g
from markctl.layouts import _shared
from markctl.layouts.content import raise_content_errors, validate_content
from markctl.layouts.datamatrix import DataMatrixSymbol, encode_datamatrix
from markctl.layouts.findings import Finding
from markctl.layouts.fonts import DEFAULT_DOT_FONT, DEFAULT_STROKE_FONT, Font, get_font
from markctl.layouts.materials import Material, Process, get_material, plan_process
from markctl.layouts.request import MarkRequest
from markctl.layouts.rules import RuleBook, RuleProfile, bundled_rules
from markctl.profiles import FirmwareProfile, MachineKind, load_profile

__all__ = ["Layout", "PlacedCode", "PlacedGlyph", "TextLine", "compose"]

FloatArray = npt.NDArray[np.float64]

# Aim the default character height this far above the largest minimum, so that the measured
# bottom height clears the rule with room for process scatter.
_HEIGHT_MARGIN = 1.05
_HEIGHT_STEP_MM = 0.05
# Boundary samples per rectangle side for the fast erosion (the result is verified exactly).
_EDGE_SAMPLES = 4
# Continuous dot peen of a stroke font: dots at least this far apart, else the stylus re-strikes one spot.
MIN_DOT_PITCH_MM = 0.2


@dataclass(frozen=True, slots=True)
class PlacedGlyph:
    """One character in the component frame: polylines (stroke font) or dot centres (dot font)."""

    char: str
    strokes: tuple[FloatArray, ...]
    kind: Literal["line", "dots"]
    centre_extent_mm: float  # extent of the stroke centre lines / dot centres along the text's "up"


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of text, its fields and its glyphs."""

    index: int
    text: str
    fields: tuple[str, ...]
    height_mm: float  # nominal cap height (font size)
    origin: tuple[float, float]  # baseline start in the component frame
    angle_deg: float
    glyphs: tuple[PlacedGlyph, ...]

    @property
    def centre_extent_mm(self) -> float:
        """The smallest letter/digit height of the line, measured on the composed centre lines.

        The smallest one counts: every character must meet the minimum (a hyphen or full stop is
        not a character height, so they are left out).
        """
        heights = [gl.centre_extent_mm for gl in self.glyphs if gl.char.isalnum()]
        return min(heights) if heights else 0.0

    def strokes(self) -> list[FloatArray]:
        """Every stroke of the line."""
        return [s for gl in self.glyphs for s in gl.strokes]


@dataclass(frozen=True, slots=True)
class PlacedCode:
    """The Data Matrix in the component frame."""

    symbol: DataMatrixSymbol
    module_mm: float
    quiet_zone_modules: int
    origin: tuple[float, float]  # top-left corner of the symbol (without quiet zone), component frame
    angle_deg: float

    @property
    def symbol_mm(self) -> float:
        """Side of the symbol without quiet zone."""
        return max(self.symbol.size) * self.module_mm

    def module_centres(self, dark: bool = True) -> FloatArray:
        """Centres of the dark (or light) modules, row by row from the top, in the component frame."""
        rows, cols = np.nonzero(self.symbol.modules if dark else ~self.symbol.modules)
        local = np.column_stack(((cols + 0.5) * self.module_mm, -(rows + 0.5) * self.module_mm))
        return g.to_world(local.astype(np.float64), self.angle_deg, self.origin)

    def corners(self, quiet: bool = False) -> FloatArray:
        """The symbol's outline (with the quiet zone if asked), component frame, counter-clockwise."""
        rows, cols = self.symbol.size
        q = self.quiet_zone_modules * self.module_mm if quiet else 0.0
        w, h = cols * self.module_mm, rows * self.module_mm
        local = np.array([[-q, -h - q], [w + q, -h - q], [w + q, q], [-q, q]], dtype=np.float64)
        return g.to_world(local, self.angle_deg, self.origin)


@dataclass(frozen=True)
class Layout:
    """A composed mark: pure data in the component frame (mm), ready to check, preview and program."""

    request: MarkRequest
    rules: RuleProfile
    machine: FirmwareProfile
    material: Material
    process: Process
    font: Font
    values: dict[str, str]
    lines: tuple[TextLine, ...]
    code: PlacedCode | None
    footprint: g.Geom  # the placed block (text + code with its quiet zone), component frame
    content_findings: tuple[Finding, ...]
    zone: g.Geom
    keepouts: tuple[g.Geom, ...]
    existing: tuple[g.Geom, ...]
    today: date
    _cache: dict[str, g.Geom] = field(default_factory=dict, repr=False, compare=False)

    @property
    def char_height_mm(self) -> float:
        """Nominal character height of the text."""
        return self.lines[0].height_mm if self.lines else 0.0

    @property
    def stroke_kind(self) -> Literal["line", "dots"]:
        """Whether text is drawn as lines or dots."""
        return "dots" if self.font.kind == "dot" or self.process.method == "dot-peen" else "line"

    @property
    def half_width_mm(self) -> float:
        """Half the stroke width (laser spot) or the dot radius at the surface."""
        return max(self.process.stroke_width_mm / 2.0, 1e-3)

    def text_centres(self) -> g.Geom:
        """The text as an array of centre lines (one per stroke) or dot centres (one per dot).

        A stroke marks everything within :attr:`half_width_mm` of its centre line, so distances
        to the centres minus the half width are exact clearances, with no polygon approximation.
        """
        if "centres" not in self._cache:
            strokes = [s for line in self.lines for s in line.strokes()]
            if not strokes:
                centres = np.empty(0, dtype=object)
            elif self.stroke_kind == "dots":
                centres = g.point_array(np.concatenate(strokes))
            else:
                centres = g.linestring_array(strokes)
            self._cache["centres"] = centres
        return self._cache["centres"]

    def text_parts(self) -> g.Geom:
        """The marked areas of the text as an array of parts: one buffered stroke or dot each."""
        if "text" not in self._cache:
            self._cache["text"] = g.buffer_each(self.text_centres(), self.half_width_mm)
        return self._cache["text"]

    def clearance_to(self, other: g.Geom) -> float:
        """Smallest distance from anything marked to ``other`` (negative or 0: they overlap)."""
        text = g.min_distance(self.text_centres(), other) - self.half_width_mm
        return min(text, g.min_distance(self.code_parts(), other))

    def code_parts(self) -> g.Geom:
        """The dark modules of the code as an array of squares (empty without a code)."""
        if "code" not in self._cache:
            if self.code is None:
                self._cache["code"] = np.empty(0, dtype=object)
            else:
                m = self.code.module_mm
                square = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * m
                square = g.rotate_points(square, self.code.angle_deg)
                centres = self.code.module_centres()
                self._cache["code"] = g.polygons(centres[:, None, :] + square[None, :, :])
        return self._cache["code"]

    def mark_parts(self) -> g.Geom:
        """Every marked part (text strokes or dots, code modules) as one array."""
        if "parts" not in self._cache:
            self._cache["parts"] = np.concatenate([self.text_parts(), self.code_parts()])
        return self._cache["parts"]

    def mark_geometry(self) -> g.Geom:
        """Everything the machine marks, as one geometry (a union: for previews and tests)."""
        if "mark" not in self._cache:
            self._cache["mark"] = g.union_all(list(self.mark_parts()))
        return self._cache["mark"]


# --- helpers ---------------------------------------------------------------------------------


def _load_machine(machine_id: str) -> FirmwareProfile:
    try:
        return load_profile(machine_id)
    except ProfileError as exc:
        raise LayoutError(str(exc), field="machine") from exc


def _polygon(points: tuple[tuple[float, float], ...], what: str) -> g.Geom:
    poly = g.make_polygon(points)
    reason = g.is_valid_reason(poly)
    if reason is not None:
        raise LayoutError(f"not a simple polygon ({reason})", field=what)
    if g.area(poly) <= 0:
        raise LayoutError("polygon has no area", field=what)
    return poly


def _lines_text(rules: RuleProfile, values: dict[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for template in rules.lines:
        names = rules.line_fields(template)
        text = template.format_map({n: values.get(n, "") for n in names})
        text = " ".join(text.split())  # optional fields left out leave no double spaces
        if text:
            out.append((text, tuple(n for n in names if values.get(n))))
    return out


def _default_font(machine: FirmwareProfile) -> str:
    return DEFAULT_DOT_FONT if machine.machine.kind is MachineKind.DOT_PEEN else DEFAULT_STROKE_FONT


@lru_cache(maxsize=4096)
def _glyph_extent_em(font_name: str, char: str) -> float | None:
    strokes = get_font(font_name).glyph(char).strokes
    if not strokes:
        return None
    ys = np.concatenate(strokes)[:, 1]
    return float(ys.max() - ys.min())


def _min_alnum_extent_em(font: Font, texts: list[str]) -> float:
    extents = [
        e
        for text in texts
        for ch in set(text)
        if ch.isalnum() and (e := _glyph_extent_em(font.name, ch)) is not None
    ]
    return min(extents) if extents else 1.0


def _default_height(
    rules: RuleProfile, font: Font, process: Process, texts: list[str], margin: float = _HEIGHT_MARGIN
) -> float:
    """Smallest height (a multiple of 0.05 mm) that meets every height rule x margin at its measuring point.

    Each measured height is linear in the nominal height h (:meth:`Process.nominal_for`), k being
    the smallest letter/digit extent of the font in em.
    """
    k = _min_alnum_extent_em(font, texts)
    h = max((process.nominal_for(t.measured_at, t.min_mm * margin, k) for t in rules.height), default=0.0)
    return math.ceil(max(h, 0.1) / _HEIGHT_STEP_MM - 1e-9) * _HEIGHT_STEP_MM


def _resample(stroke: FloatArray, pitch: float) -> FloatArray:
    """Dots every ``pitch`` mm along a polyline (continuous dot peen of a stroke font)."""
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    total = float(seg.sum())
    if total == 0:
        return stroke[:1]
    n = max(1, round(total / pitch))
    at = np.linspace(0.0, total, n + 1)
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    xs = np.interp(at, cum, stroke[:, 0])
    ys = np.interp(at, cum, stroke[:, 1])
    return np.column_stack((xs, ys))


@dataclass(frozen=True, slots=True)
class _Glyph:
    """One character's strokes at ``height``, at the origin of its cell (read-only, shared by rows)."""

    char: str
    strokes: tuple[FloatArray, ...]
    lo: tuple[float, float] | None  # the bounds of its points, None without strokes (space)
    hi: tuple[float, float] | None


# (char, glyph, shift): the glyph's strokes go to ``strokes + shift`` in the text frame.
_SetGlyph = tuple[str, _Glyph, tuple[float, float]]


@dataclass(frozen=True, slots=True)
class _Block:
    """The text lines and code laid out in the text frame (before rotation and placement)."""

    lines: list[tuple[str, tuple[str, ...], tuple[float, float], tuple[_SetGlyph, ...]]]
    code_origin: tuple[float, float] | None
    bounds: tuple[float, float, float, float]
    widest: tuple[str, tuple[str, ...], float]
    height: float
    font: Font
    pitch: float | None  # stroke font resampled into dots every ``pitch`` mm (dot peen), else None


_GLYPH_CACHE_SIZE = 4096  # characters x heights x fonts of a depot's marks (~1 KB each)
_LINE_CACHE_SIZE = 1024  # lines (maker, country, model ... at their place); full: ~6.5 MB with the orders


def _glyph_at(font: Font, char: str, height: float, pitch: float | None) -> _Glyph:
    """The strokes of ``char`` scaled to ``height`` (and resampled into dots every ``pitch`` mm).

    Shared by every line and row that draws the character at that height (_shared.py): the
    serial's characters are the only ones a new row composes.
    """
    cache = _shared.lru("compose.glyphs", _GLYPH_CACHE_SIZE)
    key = (font.name, char, height, pitch)
    hit = cache.get(key)
    if isinstance(hit, tuple) and hit[0] is font:  # this very font (a user font may reuse a name)
        glyph: _Glyph = hit[1]
        return glyph
    strokes = [s * height for s in font.glyph(char).strokes]
    if pitch is not None:
        strokes = [_resample(s, pitch) for s in strokes]
    for s in strokes:
        s.setflags(write=False)
    lo = hi = None
    if strokes:
        pts = np.concatenate(strokes)
        lo = (float(pts[:, 0].min()), float(pts[:, 1].min()))
        hi = (float(pts[:, 0].max()), float(pts[:, 1].max()))
    glyph = _Glyph(char, tuple(strokes), lo, hi)
    cache.put(key, (font, glyph))
    return glyph


def _line_glyphs(
    font: Font, text: str, height: float, pitch: float | None, x: float, y: float
) -> tuple[_SetGlyph, ...]:
    """The glyphs of a line starting at (x, y), each with the shift that sets it in its place."""
    cache = _shared.lru("compose.line-glyphs", _LINE_CACHE_SIZE)
    key = (font.name, text, height, pitch, x, y)
    hit = cache.get(key)
    if isinstance(hit, tuple) and hit[0] is font:
        found: tuple[_SetGlyph, ...] = hit[1]
        return found
    glyphs: list[_SetGlyph] = []
    cx = x
    for ch in text:
        glyphs.append((ch, _glyph_at(font, ch, height, pitch), (cx, y)))
        cx += font.glyph(ch).advance * height
    cache.put(key, (font, tuple(glyphs)))
    return tuple(glyphs)


def _layout_block(
    texts: list[tuple[str, tuple[str, ...]]],
    font: Font,
    height: float,
    request: MarkRequest,
    process: Process,
    symbol: DataMatrixSymbol | None,
) -> _Block:
    opts = request.options
    pitch = opts.line_spacing * height
    widths = [font.text_width(t) * height for t, _ in texts]
    block_w = max(widths)
    resample: float | None = None
    if font.kind == "stroke" and process.method == "dot-peen":
        resample = process.dot_pitch_mm or max(process.stroke_width_mm, MIN_DOT_PITCH_MM)
    lines = []
    # Bounds of every point: a glyph's points land at fl(p + shift), and rounding is monotonic, so
    # the bounds of the moved points are fl(bound + shift), exactly.
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for i, ((text, names), width) in enumerate(zip(texts, widths, strict=True)):
        y = -i * pitch - height  # first line's cap line at y = 0
        x = {"left": 0.0, "center": (block_w - width) / 2.0, "right": block_w - width}[opts.align]
        glyphs = _line_glyphs(font, text, height, resample, x, y)
        for _, glyph, (cx, _) in glyphs:
            if glyph.lo is not None and glyph.hi is not None:
                x0, y0 = min(x0, glyph.lo[0] + cx), min(y0, glyph.lo[1] + y)
                x1, y1 = max(x1, glyph.hi[0] + cx), max(y1, glyph.hi[1] + y)
        lines.append((text, names, (x, y), glyphs))
    if x0 > x1:  # no line draws anything
        x0 = y0 = x1 = y1 = 0.0
    half = process.stroke_width_mm / 2.0
    x0, y0, x1, y1 = x0 - half, y0 - half, x1 + half, y1 + half
    code_origin: tuple[float, float] | None = None
    if symbol is not None:
        m = opts.module_mm
        rows, cols = symbol.size
        q = opts.quiet_zone_modules * m
        w, h = cols * m, rows * m
        tx0, ty0, tx1, ty1 = float(x0), float(y0), float(x1), float(y1)
        mid_y = (ty0 + ty1) / 2.0
        if opts.code_position == "right":
            code_origin = (tx1 + q, mid_y + h / 2.0)
        elif opts.code_position == "left":
            code_origin = (tx0 - q - w, mid_y + h / 2.0)
        elif opts.code_position == "below":
            code_origin = (tx0 + q, ty0 - q)
        else:
            code_origin = (tx0 + q, ty1 + q + h)
        cx0, cy1 = code_origin
        x0, y0 = min(x0, cx0 - q), min(y0, cy1 - h - q)
        x1, y1 = max(x1, cx0 + w + q), max(y1, cy1 + q)
    wi = int(np.argmax(widths))
    return _Block(
        lines,
        code_origin,
        (float(x0), float(y0), float(x1), float(y1)),
        (texts[wi][0], texts[wi][1], widths[wi]),
        height,
        font,
        resample,
    )


_Ring = tuple[tuple[float, float], ...]
_PartKey = tuple[_Ring, tuple[_Ring, ...], tuple[_Ring, ...], float, float, float]


def _part_key(request: MarkRequest, rules: RuleProfile) -> _PartKey:
    """What the free region depends on: the part's geometry, margins and the gap to existing marks."""
    opts = request.options
    comp = request.component
    # Existing marks keep the "visibly distinct" gap of ISACS-IMP (or the plain clearance).
    gap = max(rules.adjacent.min_gap_mm if rules.adjacent else 0.0, opts.clearance_mm)
    return (comp.zone, comp.keepouts, comp.existing_marks, opts.margin_mm, opts.clearance_mm, gap)


def _free_region(request: MarkRequest, rules: RuleProfile) -> g.Geom:
    """Zone minus margin, keep-outs and existing marks with their clearances.

    Cached on the part geometry: a manifest marks the same part over and over.
    """
    key = _part_key(request, rules)
    # One cache per thread: a prepared GEOS geometry keeps internal indexes that must not be used
    # from two threads at once (the API service may compose in a thread pool).
    cache: dict[_PartKey, g.Geom] = _FREE_CACHE.__dict__.setdefault("regions", {})
    free = cache.get(key)
    if free is None:
        if len(cache) >= _FREE_CACHE_SIZE:
            cache.clear()
        free = cache[key] = _free_geometry(*key)
    return free


def _place_shared(
    request: MarkRequest,
    rules: RuleProfile,
    free: g.Geom,
    zone: g.Geom,
    existing: list[g.Geom],
    block: _Block,
) -> tuple[float, float] | None:
    """:func:`_place`, shared by every item whose block has the same extent on the same part.

    Placement reads only the block's bounds, the part (zone, existing marks, free region), the
    rotation, alignment and the profile's adjacency rule; rows of a manifest with the same surface,
    profile and text extent get the same translation, so it is computed once. The key holds
    exactly those inputs and the profile object itself (compared by identity), so a hit returns
    what computing it again would.
    """
    opts = request.options
    key = (_part_key(request, rules), rules.id, opts.rotation_deg, opts.align, block.bounds)
    cache: dict[tuple[object, ...], tuple[RuleProfile, tuple[float, float] | None]] = (
        _FREE_CACHE.__dict__.setdefault("placements", {})
    )
    hit = cache.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    if len(cache) >= _PLACE_CACHE_SIZE:
        cache.clear()
    offset = _place(request, rules, free, zone, existing, block)
    cache[key] = (rules, offset)
    return offset


_FREE_CACHE = threading.local()
_FREE_CACHE_SIZE = 64
_PLACE_CACHE_SIZE = 4096


def _free_geometry(
    zone_pts: tuple[tuple[float, float], ...],
    keepout_pts: tuple[tuple[tuple[float, float], ...], ...],
    existing_pts: tuple[tuple[tuple[float, float], ...], ...],
    margin: float,
    clearance: float,
    gap: float,
) -> g.Geom:
    zone = g.make_polygon(zone_pts)
    free = g.buffer(zone, -margin) if margin > 0 else zone
    blocked = [
        g.buffer(g.make_polygon(k), clearance) if clearance > 0 else g.make_polygon(k) for k in keepout_pts
    ]
    # Outer buffer: the polygonal arcs must not cut inside the true offset, or a mark placed on the
    # edge of the free region would sit a few micrometres closer than the ISACS-IMP gap.
    blocked += [
        g.buffer_outer(g.make_polygon(e), gap) if gap > 0 else g.make_polygon(e) for e in existing_pts
    ]
    if blocked:
        free = free.difference(g.union_all(blocked))
    return g.prepare(free)


def _block_ring(bounds: tuple[float, float, float, float], angle: float) -> FloatArray:
    x0, y0, x1, y1 = bounds
    ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return g.rotate_points(ring, angle)


def _place(
    request: MarkRequest,
    rules: RuleProfile,
    free: g.Geom,
    zone: g.Geom,
    existing: list[g.Geom],
    block: _Block,
) -> tuple[float, float] | None:
    """A translation that puts the rotated block wholly inside ``free``, or None.

    The set of valid translations is the erosion of ``free`` by the block. Intersecting ``free``
    shifted by each of a few boundary points of the block gives a superset of it: if that is
    empty, nothing fits. Otherwise candidates from it are verified exactly; sampling gets denser,
    and an exact grid search is the last resort (a notch narrower than the sample spacing).
    """
    if g.is_empty(free):
        return None
    angle = request.options.rotation_deg
    ring = _block_ring(block.bounds, angle)
    centre = ring.mean(axis=0)
    target = _target(request, rules, zone, existing, ring)
    for per_side in (1, _EDGE_SAMPLES):
        eroded = free
        for i in range(4):
            a, b = ring[i], ring[(i + 1) % 4]
            for t in np.linspace(0.0, 1.0, per_side, endpoint=False):
                s = a + (b - a) * t
                eroded = eroded.intersection(g.translate(free, -float(s[0]), -float(s[1])))
        if g.is_empty(eroded):
            return None  # a superset of the valid translations is empty
        candidates = [g.nearest_point(eroded, target[0] - centre[0], target[1] - centre[1])]
        for part in g.exterior_coords(eroded):
            candidates.extend((float(x), float(y)) for x, y in part[:: max(1, len(part) // 16)])
        cand = np.array(candidates)
        ok = g.contains(free, g.polygons(ring[None, :, :] + cand[:, None, :]))
        if ok.any():
            good = cand[ok]
            best = good[int(np.argmin(np.hypot(*(good + centre - target).T)))]
            return float(best[0]), float(best[1])
    # Last resort: an exact grid over the eroded superset's bounds, at most ~20,000 positions.
    ex0, ey0, ex1, ey1 = g.bounds(eroded)
    step = max(0.05, math.sqrt(max((ex1 - ex0) * (ey1 - ey0), 1e-6) / 20_000))
    xs = np.arange(ex0, ex1 + 1e-9, step)
    ys = np.arange(ey0, ey1 + 1e-9, step)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    ok = g.contains(free, g.polygons(ring[None, :, :] + grid[:, None, :]))
    if not ok.any():
        return None
    good = grid[ok]
    best = good[int(np.argmin(np.hypot(*(good + centre - target).T)))]
    return float(best[0]), float(best[1])


def _target(
    request: MarkRequest, rules: RuleProfile, zone: g.Geom, existing: list[g.Geom], ring: FloatArray
) -> FloatArray:
    """Where the block's centre should go: by the existing marks (import-style), else by alignment."""
    zx0, zy0, zx1, zy1 = g.bounds(zone)
    half_w = (ring[:, 0].max() - ring[:, 0].min()) / 2.0
    half_h = (ring[:, 1].max() - ring[:, 1].min()) / 2.0
    if rules.adjacent is not None and existing:
        ex0, ey0, ex1, ey1 = g.bounds(g.union_all(existing))
        return np.array([(ex0 + ex1) / 2.0, (ey0 + ey1) / 2.0])
    align = request.options.align
    y = zy1 - half_h
    x = {"left": zx0 + half_w, "center": (zx0 + zx1) / 2.0, "right": zx1 - half_w}[align]
    return np.array([x, y])


def _no_fit_error(
    rules: RuleProfile,
    block: _Block,
    angle: float,
    height: float,
    free: g.Geom,
    fits_at: float | None,
) -> LayoutError:
    ring = _block_ring(block.bounds, angle)
    x0, y0 = ring.min(axis=0)
    x1, y1 = ring.max(axis=0)
    text, names, width = block.widest
    if fits_at is not None:
        return LayoutError(
            f"the mark does not fit the zone at the requested height; the largest height that fits is {fits_at:.2f} mm "
            f"(profile minimum: {rules.height_summary()})",
            field="options.char_height_mm",
        )
    fx0, fy0, fx1, fy1 = g.bounds(free) if not g.is_empty(free) else (0.0, 0.0, 0.0, 0.0)
    who = ", ".join(f"fields.{n}" for n in names) or "text"
    return LayoutError(
        f"the mark needs a clear area of at least {x1 - x0:.1f} x {y1 - y0:.1f} mm at the minimum height "
        f"{height:.2f} mm (widest line {text!r} from {who}: {width:.1f} mm); the zone's clear part spans "
        f"{fx1 - fx0:.1f} x {fy1 - fy0:.1f} mm",
        field="component.zone",
        hint="enlarge the zone, move keep-outs, shorten the fields or turn off the Data Matrix",
    )


def _fit(
    request: MarkRequest,
    rules: RuleProfile,
    free: g.Geom,
    zone: g.Geom,
    existing: list[g.Geom],
    texts: list[tuple[str, tuple[str, ...]]],
    font: Font,
    process: Process,
    symbol: DataMatrixSymbol | None,
    height: float,
    legal: float,
) -> tuple[_Block, tuple[float, float]]:
    """Lay out and place the block at ``height``; if it does not fit, find the largest height >= ``legal`` that does.

    An automatic height shrinks to that height silently (it still meets the rule); a requested
    height is never changed: the error names the height that would fit.

    Raises:
        LayoutError: no fit (``options.char_height_mm`` with the height that fits, or ``component.zone``
            with the clear area needed at the legal minimum).
    """

    def attempt(h: float) -> tuple[_Block, tuple[float, float] | None]:
        block = _layout_block(texts, font, h, request, process, symbol)
        return block, _place_shared(request, rules, free, zone, existing, block)

    block, offset = attempt(height)
    if offset is not None:
        return block, offset
    smallest, smallest_at = attempt(min(legal, height))
    fits_at: float | None = None
    if legal < height and smallest_at is not None:
        lo, hi = legal, height  # lo fits, hi does not
        while hi - lo > _HEIGHT_STEP_MM + 1e-9:
            mid = math.floor((lo + hi) / 2.0 / _HEIGHT_STEP_MM + 1e-9) * _HEIGHT_STEP_MM
            if mid <= lo + 1e-9:
                break
            if attempt(mid)[1] is not None:
                lo = mid
            else:
                hi = mid
        fits_at = lo
    if fits_at is not None and request.options.char_height_mm is None:
        block, offset = attempt(fits_at)
        if offset is not None:
            return block, offset
    raise _no_fit_error(rules, smallest, request.options.rotation_deg, min(legal, height), free, fits_at)


def _check_glyphs(
    rules: RuleProfile, font: Font, texts: list[tuple[str, tuple[str, ...]]], values: dict[str, str]
) -> None:
    """Every character is drawn by the font; a missing glyph is an error, never a substitute (ENG-GLYPH)."""
    for text, names in texts:
        missing = font.missing(text)
        if missing:
            culprit = next(
                (n for n in names if any(ch in values[n] for ch in missing)), names[0] if names else ""
            )
            raise ComplianceError(
                f"font {font.name!r} cannot draw {''.join(missing)!r}; no substitution is made",
                rule=rules.glyph.rule,
                field=f"fields.{culprit}",
            )


def _place_glyphs(
    glyphs: tuple[_SetGlyph, ...],
    angle: float,
    offset: tuple[float, float],
    up: FloatArray,
    kind: Literal["line", "dots"],
) -> list[PlacedGlyph]:
    """A line's glyphs in the component frame, all points moved in one array operation."""
    strokes = [(k, s) for k, (_, glyph, _) in enumerate(glyphs) for s in glyph.strokes]
    if not strokes:
        return [PlacedGlyph(ch, (), kind, 0.0) for ch, _, _ in glyphs]
    counts = np.array([len(s) for _, s in strokes])
    shifts = np.repeat(np.array([glyphs[k][2] for k, _ in strokes], dtype=np.float64), counts, axis=0)
    world = g.to_world(np.concatenate([s for _, s in strokes]) + shifts, angle, offset)
    world.setflags(write=False)  # shared between rows (_placed_lines): nobody may change it
    parts = np.split(world, np.cumsum(counts)[:-1])
    # The extent along the text's "up" direction, on the geometry that will be cut, per glyph.
    along = world @ up
    owner = np.repeat(np.array([k for k, _ in strokes]), counts)
    top = np.full(len(glyphs), -np.inf)
    bottom = np.full(len(glyphs), np.inf)
    np.maximum.at(top, owner, along)
    np.minimum.at(bottom, owner, along)
    placed: list[PlacedGlyph] = []
    at = 0
    for k, (ch, glyph, _) in enumerate(glyphs):
        n = len(glyph.strokes)
        mine = tuple(parts[at : at + n])
        at += n
        placed.append(PlacedGlyph(ch, mine, kind, float(top[k] - bottom[k]) if n else 0.0))
    return placed


def _placed_lines(
    block: _Block,
    angle: float,
    offset: tuple[float, float],
    kind: Literal["line", "dots"],
    per_line: Sequence[tuple[float, float]] | None = None,
) -> list[TextLine]:
    """The block's lines moved into the component frame, each glyph's height measured there.

    ``per_line`` moves each line by its own offset instead (a pattern machine's fields).

    A line that another row already placed at the same spot (the maker, the country, the model:
    the same text, font, height, position in the block, rotation and placement) is that row's
    line, shared (_shared.py); only the lines that differ, the serial's, are computed.
    """
    up = g.rotate_points(np.array([[0.0, 1.0]]), angle)[0]
    cache = _shared.lru("compose.lines", _LINE_CACHE_SIZE)
    lines = []
    for i, (text, names, (lx, ly), glyphs) in enumerate(block.lines):
        if per_line is not None:
            offset = per_line[i]
        key = (block.font.name, block.pitch, block.height, text, names, i, lx, ly, angle, offset, kind)
        hit = cache.get(key)
        if isinstance(hit, tuple) and hit[0] is block.font:
            lines.append(hit[1])
            continue
        placed = _place_glyphs(glyphs, angle, offset, up, kind)
        origin = g.to_world(np.array([[lx, ly]]), angle, offset)[0]
        line = TextLine(
            i, text, names, block.height, (float(origin[0]), float(origin[1])), angle, tuple(placed)
        )
        cache.put(key, (block.font, line))
        lines.append(line)
    return lines


# --- pattern machines: the stored pattern places the fields ---------------------------------

_NEXT_STEP = (
    "change the pattern on the controller and its profile to match, or choose a machine that places fields"
)


def _from_pattern(
    machine: FirmwareProfile, request: MarkRequest, what: str, key: str, option: str, unit: str = ""
) -> Any:
    """A setting the stored pattern decides, for machines the host cannot send it to: the
    profile's ``[dot_peen] key`` (``pattern_char_height_mm``, ``pattern_font``, ``pattern_force_pct``).

    Raises:
        LayoutError: the profile does not say it, or the request asks (``options.option``) for another.
    """
    assert machine.dot_peen is not None
    value = getattr(machine.dot_peen, key)
    if value is None:
        raise LayoutError(
            f"{machine.id} strikes the {what} of its stored pattern and its profile gives no "
            f"[dot_peen] {key}: add it from the pattern",
            field="machine",
        )
    asked = getattr(request.options, option)
    if asked is None or asked == value or (not isinstance(value, str) and abs(asked - value) <= 1e-6):
        return value
    shown = {v: f"{v}" if isinstance(v, str) else f"{v:g}{unit}" for v in (asked, value)}
    raise LayoutError(
        f"{shown[asked]} {what} asked, but {machine.id} strikes its stored pattern's {shown[value]} "
        f"([dot_peen] {key})",
        field=f"options.{option}",
        hint=f"leave the {what} out, or {_NEXT_STEP}",
    )


def _at_pattern_origins(
    request: MarkRequest,
    machine: FirmwareProfile,
    block: _Block,
    symbol: DataMatrixSymbol | None,
    process: Process,
    kind: Literal["line", "dots"],
    free: g.Geom,
) -> tuple[list[TextLine], PlacedCode | None, g.Geom]:
    """Lines (and code) at the profile's ``pattern_origins``: field i's first lower-left dot at origin i.

    The controller puts field i there whatever the host wants, so this is the geometry to check.
    A field that lands off the part's clear zone (the zone less its margin, keep-outs and existing
    marks with their clearances: what a search would keep clear) is refused here, naming the
    field, the origin and the profile key: only the stored pattern can move it.

    Raises:
        LayoutError: no origins in the profile, too few of them, a rotation asked for, or a field
            that does not fit where the pattern puts it.
    """
    assert machine.dot_peen is not None
    origins = machine.dot_peen.pattern_origins
    key = "[dot_peen] pattern_origins"
    if not origins:
        raise LayoutError(
            f"{machine.id} places fields from the pattern stored on the controller and its profile gives "
            f"no {key}: add them (mm, machine frame, field 1 first) from the pattern",
            field="machine",
            hint="or choose a machine that places fields",
        )
    opts = request.options
    if abs(opts.rotation_deg) % 360 > 1e-9:
        raise LayoutError(
            f"{machine.id} strikes its stored pattern's fields along +X; it cannot turn them",
            field="options.rotation_deg",
            hint=f"leave the rotation out, or {_NEXT_STEP}",
        )
    # A code this machine cannot mark stays beside the text (the pre-check refuses it as
    # [machine:data-matrix]); one it can mark is a field of the pattern like the lines.
    code_is_field = symbol is not None and "datamatrix" in machine.dot_peen.fonts
    needed = len(block.lines) + code_is_field
    if needed > len(origins):
        raise LayoutError(
            f"the mark needs {needed} fields, {machine.id}'s stored pattern has {len(origins)} ({key})",
            field="fields",
            hint=_NEXT_STEP,
        )
    ox, oy = opts.origin_mm
    shifts = [
        (origins[i][0] - ox - lx, origins[i][1] - oy - ly)
        for i, (_, _, (lx, ly), _) in enumerate(block.lines)
    ]
    lines = _placed_lines(block, 0.0, (0.0, 0.0), kind, per_line=shifts)
    half = process.stroke_width_mm / 2.0
    parts: list[tuple[int, str, g.Geom]] = []
    for line in lines:
        pts = np.concatenate(line.strokes())
        (x0, y0), (x1, y1) = pts.min(axis=0) - half, pts.max(axis=0) + half
        who = ", ".join(f"fields.{n}" for n in line.fields) or f"line {line.index + 1}"
        parts.append((line.index, who, g.rect(float(x0), float(y0), float(x1), float(y1))))
    code = None
    if symbol is not None and block.code_origin is not None and not code_is_field:
        cx, cy = block.code_origin
        code = PlacedCode(
            symbol, opts.module_mm, opts.quiet_zone_modules, (cx + shifts[0][0], cy + shifts[0][1]), 0.0
        )
    elif symbol is not None:
        i = len(lines)
        rows = symbol.size[0]
        # The code field's origin is the symbol's lower-left corner (toolpath._pattern).
        top_left = (origins[i][0] - ox, origins[i][1] - oy + rows * opts.module_mm)
        code = PlacedCode(symbol, opts.module_mm, opts.quiet_zone_modules, top_left, 0.0)
        parts.append((i, "options.datamatrix", g.make_polygon([tuple(c) for c in code.corners(quiet=True)])))
    for (i, who, part), (j, other, later) in itertools.combinations(parts, 2):
        if g.area(part.intersection(later)) > 0:
            raise LayoutError(
                f"{machine.id}'s stored pattern strikes field {i + 1} ({who}) and field {j + 1} ({other}) "
                f"{math.dist(origins[i], origins[j]):g} mm apart ({key}); at {block.height:g} mm they overlap",
                field="options.char_height_mm",
                hint=f"a smaller height, or {_NEXT_STEP}",
            )
    for i, who, part in parts:
        if not g.covers(free, part):
            x, y = origins[i]
            raise LayoutError(
                f"{machine.id}'s stored pattern strikes field {i + 1} ({who}) at ({x:g}, {y:g}) mm "
                f"({key}[{i}]), where it {_why_not(request, part)}",
                field="component.zone",
                hint=f"move the part under the head (options.origin_mm), or {_NEXT_STEP}",
            )
    return lines, code, g.union_all([p for _, _, p in parts])


def _why_not(request: MarkRequest, part: g.Geom) -> str:
    """Why a part does not fit the clear zone: off the part, in a keep-out, or over an existing mark."""
    opts, comp = request.options, request.component
    zone = g.make_polygon(comp.zone)
    inner = g.buffer(zone, -opts.margin_mm) if opts.margin_mm > 0 else zone
    if not g.covers(inner, part):
        return f"runs off the zone less its {opts.margin_mm:g} mm margin"
    for k, pts in enumerate(comp.keepouts):
        if g.distance(g.make_polygon(pts), part) < opts.clearance_mm:
            return f"comes within {opts.clearance_mm:g} mm of keep-out {k + 1}"
    return "comes closer to an existing mark than the gap the rules keep"


# --- the entry point -------------------------------------------------------------------------


def compose(
    request: MarkRequest, rules: RuleBook | None = None, *, machine: FirmwareProfile | None = None
) -> Layout:
    """Compose a mark: validate content, fit text (and code) into the zone, return the Layout.

    Args:
        request: the mark to make.
        rules: a rule book with user profiles; the bundled one by default.
        machine: the loaded profile of ``request.machine``, to spare a manifest re-reading it per item.

    Raises:
        LayoutError: bad input (unknown profile/field/material/font, bad polygon, no fit), naming the field.
        ComplianceError: a field breaks its rule (missing, not ISO 3166-1, future year, charset...).
    """
    book = rules or bundled_rules()
    profile = book.get(request.profile).for_component(too_small=request.component.size_class == "too-small")
    if request.exemption is not None:
        raise LayoutError(
            "the request records an exemption: nothing is marked",
            field="exemption",
            hint="`markctl check` reports the exemption; the weapon is recorded, not marked",
        )
    if machine is None:
        machine = _load_machine(request.machine)
    elif machine.id != request.machine:
        raise LayoutError(
            f"request names {request.machine!r}, the profile given is {machine.id!r}", field="machine"
        )
    material = get_material(request.component.material)
    today = request.options.today or date.today()

    zone = _polygon(request.component.zone, "component.zone")
    keepouts = [_polygon(k, "component.keepouts") for k in request.component.keepouts]
    existing = [_polygon(e, "component.existing_marks") for e in request.component.existing_marks]

    values, findings = validate_content(profile, request.fields, request.facts, today)
    raise_content_errors(findings)
    texts = _lines_text(profile, values)
    if not texts:
        raise LayoutError("the mark has no text", field="fields")

    if not machine.places_fields and not machine.sends_parameters:
        font = get_font(_from_pattern(machine, request, "font", "pattern_font", "font"))
    else:
        font = get_font(request.options.font or _default_font(machine))
    if machine.family != "grbl" and machine.dot_peen is not None and font.name not in machine.dot_peen.fonts:
        raise LayoutError(
            f"pattern machine {machine.id!r} has fonts {', '.join(machine.dot_peen.fonts)}, not {font.name!r}",
            field="options.font",
        )
    _check_glyphs(profile, font, texts, values)

    max_depth = profile.integrity.max_depth_fraction * request.component.wall_thickness_mm
    options = request.options
    if not machine.places_fields and not machine.sends_parameters:
        options = options.model_copy(
            update={
                "force_pct": _from_pattern(machine, request, "force", "pattern_force_pct", "force_pct", " %")
            }
        )
    process = plan_process(
        material, machine, options, min_depth_mm=profile.min_depth_mm, max_depth_mm=max_depth
    )

    symbol = None
    if request.options.datamatrix:
        content = (
            profile.code.content.format_map(values) if profile.code.content else " ".join(t for t, _ in texts)
        )
        symbol = encode_datamatrix(content)

    texts_only = [t for t, _ in texts]
    legal = _default_height(profile, font, process, texts_only, margin=1.0)
    height = request.options.char_height_mm or _default_height(profile, font, process, texts_only)
    if machine.dot_peen is not None:
        lo_mm, hi_mm = machine.dot_peen.char_height_min_mm, machine.dot_peen.char_height_max_mm
        if request.options.char_height_mm is None:
            height = max(height, lo_mm)
        if not lo_mm <= height <= hi_mm:
            raise LayoutError(
                f"{height:g} mm is outside the {lo_mm:g}-{hi_mm:g} mm character range of {machine.id}",
                field="options.char_height_mm",
            )
        legal = max(legal, lo_mm)

    free = _free_region(request, profile)
    angle = request.options.rotation_deg
    kind: Literal["line", "dots"] = "dots" if font.kind == "dot" or process.method == "dot-peen" else "line"
    if not machine.places_fields:
        # The controller's stored pattern places each field: compose there, never search.
        if not machine.sends_parameters:
            height = _from_pattern(
                machine, request, "character height", "pattern_char_height_mm", "char_height_mm", " mm"
            )
        block = _layout_block(texts, font, height, request, process, symbol)
        lines, code, footprint = _at_pattern_origins(request, machine, block, symbol, process, kind, free)
    else:
        block, offset = _fit(
            request, profile, free, zone, existing, texts, font, process, symbol, height, legal
        )
        lines = _placed_lines(block, angle, offset, kind)
        code = None
        if symbol is not None and block.code_origin is not None:
            corigin = g.to_world(np.array([block.code_origin]), angle, offset)[0]
            code = PlacedCode(
                symbol,
                request.options.module_mm,
                request.options.quiet_zone_modules,
                (float(corigin[0]), float(corigin[1])),
                angle,
            )
        footprint = g.polygon_from_array(_block_ring(block.bounds, angle) + np.asarray(offset))
    return Layout(
        request=request,
        rules=profile,
        machine=machine,
        material=material,
        process=process,
        font=font,
        values=values,
        lines=tuple(lines),
        code=code,
        footprint=footprint,
        content_findings=tuple(findings),
        zone=zone,
        keepouts=tuple(keepouts),
        existing=tuple(existing),
        today=today,
    )
