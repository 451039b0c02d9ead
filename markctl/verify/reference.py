"""What the mark should look like, drawn from what was sent, and the reading of a registered image.

The reference is the program drawn into a raster in the machine frame (mm -> pixels, row 0 at the
top): lines as wide as the laser spot, dots as wide as the stylus's dent, and the Data Matrix as
the program fills it. A photo registered onto this raster (:mod:`markctl.verify.register`) is then
read in three ways:

* **our own glyphs** (the primary judge): at each character position of the recorded layout, every
  glyph of the font the layout used is drawn in turn and compared with the image there (normalised
  cross-correlation). The character that fits best is what the mark says; if it is not the recorded
  one, the check fails and names the line, position and both characters. A matcher that knows the
  font, the height and the position is stronger than a general OCR and never confuses two glyphs
  that the font draws differently (glyphs the font draws identically are reported as such).
* **ink where it should be**: coverage (share of the expected ink that is dark in the image) and
  spill (share of the dark pixels that lie outside the expected ink, i.e. marks that should not be
  there: an extra character, a burn during travel).
* **dots** (dot-peen and dot fonts): each dot of the program is looked for at its position; dark
  blobs the program does not have are extra dots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from markctl.layouts import _geom as g
from markctl.layouts.compose import MIN_DOT_PITCH_MM, Layout, _resample
from markctl.layouts.fonts import Font
from markctl.layouts.program import MotionProgram, StrokeKind

__all__ = ["CharReading", "DotReport", "GlyphSlot", "InkReport", "Reference", "build_reference"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Characters offered as alternatives at every position: what serials and marks are made of.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-./"
# The recorded character must fit at least this well (correlation) to count as legible ...
MIN_GLYPH_SCORE = 0.3
# ... and no other glyph may fit better by more than this (noise between similar glyphs, 8/B).
GLYPH_MARGIN = 0.03
# Two glyphs whose drawings correlate above this are the same shape in this font (0/O in 5x7).
SAME_SHAPE = 0.97


@dataclass(frozen=True, slots=True)
class GlyphSlot:
    """One character of the layout: where its glyph origin (baseline, left) is, in machine mm."""

    line: int
    index: int
    char: str
    origin: tuple[float, float]
    angle_deg: float
    height_mm: float


@dataclass(frozen=True, slots=True)
class CharReading:
    slot: GlyphSlot
    read: str  # best-fitting glyph
    score: float  # correlation of the recorded glyph
    best_score: float  # correlation of the best-fitting glyph
    same_shape: bool  # the best glyph is drawn like the recorded one in this font

    @property
    def ok(self) -> bool:
        if self.score < MIN_GLYPH_SCORE:
            return False
        return self.read == self.slot.char or self.same_shape or self.best_score - self.score <= GLYPH_MARGIN


@dataclass(frozen=True, slots=True)
class InkReport:
    contrast: float  # darkness of the ink minus darkness of the bare surface, 0..1
    coverage: float
    spill: float


@dataclass(frozen=True, slots=True)
class DotReport:
    total: int
    missing: list[tuple[float, float]] = field(default_factory=list)
    extra: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Reference:
    """The expected mark as a raster: ``px_per_mm`` pixels per mm, top-left corner at (x0, y1) mm."""

    px_per_mm: float
    x0: float
    y1: float
    ink: F32
    stroke_px: float  # width of a line, or diameter of a dot, in pixels
    dots: F64  # (N, 2) program dot centres, machine mm (empty for line programs)
    slots: list[GlyphSlot]
    font: Font | None
    dot_glyphs: bool  # glyphs drawn as dots (dot font, or a stroke font resampled for dot peen)
    dot_pitch_mm: float | None
    code_corners_mm: F64 | None  # symbol corners BL, BR, TR, TL (machine mm)
    _templates: dict[tuple[str, int, int], F32] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.ink.shape[0]), int(self.ink.shape[1]))

    def to_px(self, points_mm: F64) -> F64:
        """(N, 2) machine mm -> (N, 2) pixel (column, row) positions, pixel centres at .5."""
        pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
        out: F64 = np.column_stack(
            ((pts[:, 0] - self.x0) * self.px_per_mm, (self.y1 - pts[:, 1]) * self.px_per_mm)
        )
        return out

    # --- drawing ---------------------------------------------------------------------------

    def _draw(self, canvas: F32, strokes_mm: list[F64], dots: bool, shift_px: tuple[float, float]) -> None:
        # cv2 draws at integer positions; 4 fractional bits keep the sub-pixel placement.
        frac = 16.0
        for pts in strokes_mm:
            px = self.to_px(pts) - np.asarray(shift_px) - 0.5
            fixed = np.round(px * frac).astype(np.int32)
            if dots:
                radius = max(1, round(self.stroke_px / 2 * frac))
                for x, y in fixed:
                    cv2.circle(canvas, (int(x), int(y)), radius, 1.0, -1, cv2.LINE_AA, 4)
            elif len(fixed) >= 2:
                cv2.polylines(
                    canvas, [fixed.reshape(-1, 1, 2)], False, 1.0,
                    max(1, round(self.stroke_px)), cv2.LINE_AA, 4,
                )  # fmt: skip

    def glyph_strokes_mm(self, slot: GlyphSlot, char: str) -> list[F64]:
        """The glyph ``char`` placed where ``slot`` is (machine mm)."""
        assert self.font is not None
        shape = self.font.glyphs.get(char)
        if shape is None:
            return []
        strokes = [s * slot.height_mm for s in shape.strokes]
        if self.dot_glyphs and self.font.kind == "stroke" and self.dot_pitch_mm:
            strokes = [_resample(s, self.dot_pitch_mm) for s in strokes]
        return [g.to_world(s, slot.angle_deg, slot.origin) for s in strokes]

    def slot_window(self, slot: GlyphSlot) -> tuple[int, int, int, int] | None:
        """(row0, row1, col0, col1) of the pixels that hold the character cell of ``slot``."""
        assert self.font is not None
        h = slot.height_mm
        advance = self.font.glyphs[slot.char].advance if slot.char in self.font.glyphs else 0.7
        pad = 0.12 * h + self.stroke_px / self.px_per_mm
        cell = np.array(
            [[-pad, -pad], [advance * h + pad, -pad], [advance * h + pad, h + pad], [-pad, h + pad]]
        )
        px = self.to_px(g.to_world(cell, slot.angle_deg, slot.origin))
        c0, r0 = np.floor(px.min(axis=0)).astype(int)
        c1, r1 = np.ceil(px.max(axis=0)).astype(int)
        rows, cols = self.shape
        r0, r1, c0, c1 = max(0, r0), min(rows, r1), max(0, c0), min(cols, c1)
        if r1 - r0 < 3 or c1 - c0 < 3:
            return None
        return int(r0), int(r1), int(c0), int(c1)

    def template(self, slot_no: int, char: str, window: tuple[int, int, int, int]) -> F32:
        key = (char, slot_no, window[0] * 100_000 + window[2])
        if key not in self._templates:
            r0, r1, c0, c1 = window
            canvas = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
            self._draw(canvas, self.glyph_strokes_mm(self.slots[slot_no], char), self.dot_glyphs, (c0, r0))
            self._templates[key] = _soft(canvas, self.stroke_px)
        return self._templates[key]

    # --- reading ---------------------------------------------------------------------------

    def read_glyphs(self, dark: F32) -> list[CharReading]:
        """At every character position, which glyph of the font fits the image best."""
        if self.font is None:
            return []
        soft = _soft(dark, self.stroke_px)
        alphabet = sorted(
            {c for c in _ALPHABET + "".join(s.char for s in self.slots) if c in self.font.glyphs}
        )
        alphabet = [c for c in alphabet if self.font.glyphs[c].strokes]
        out = []
        for n, slot in enumerate(self.slots):
            if not self.font.glyphs.get(slot.char) or not self.font.glyphs[slot.char].strokes:
                continue  # a space: anything marked there shows up as spill
            window = self.slot_window(slot)
            if window is None:
                continue
            r0, r1, c0, c1 = window
            seen = soft[r0:r1, c0:c1]
            scores = {c: _ncc(seen, self.template(n, c, window)) for c in alphabet}
            best = max(scores, key=lambda c: scores[c])
            same = best == slot.char or (
                _ncc(self.template(n, best, window), self.template(n, slot.char, window)) >= SAME_SHAPE
            )
            out.append(CharReading(slot, best, scores[slot.char], scores[best], same))
        return out

    def ink_report(self, dark: F32, tolerance_px: float) -> InkReport:
        """Contrast, coverage and spill of a registered darkness image against the expected ink."""
        expected = self.ink > 0.5
        if not expected.any():
            return InkReport(0.0, 1.0, 0.0)
        radius = max(1, round(tolerance_px))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        near = cv2.dilate(expected.astype(np.uint8), kernel) > 0
        far = ~cv2.dilate(near.astype(np.uint8), kernel).astype(bool)
        # The upper quartile: a pixel of registration error leaves thin strokes' edges bare.
        ink_level = float(np.percentile(dark[expected], 75))
        bare_level = float(np.median(dark[far])) if far.any() else 0.0
        contrast = ink_level - bare_level
        if contrast <= 0.05:
            return InkReport(contrast, 0.0, 0.0)
        # Coverage asks "is the expected ink dark?" leniently; spill asks "is there a mark where none
        # should be?" strictly (as dark as the real marks, bigger than a speck), so surface texture
        # is neither.
        found = dark > bare_level + 0.35 * contrast
        reach = cv2.dilate(found.astype(np.uint8), kernel).astype(bool)
        coverage = float((expected & reach).sum()) / float(expected.sum())
        strong = (dark > bare_level + 0.6 * contrast).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(strong, connectivity=8)
        big = np.zeros(count, dtype=bool)
        big[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(3.0, self.stroke_px**2)
        marked = big[labels]
        n_marked = int(marked.sum())
        spill = 0.0 if n_marked == 0 else float((marked & ~near).sum()) / n_marked
        return InkReport(contrast, coverage, spill)

    def dot_report(self, dark: F32, contrast_floor: float = 0.05) -> DotReport:
        """Each program dot found or not; dark blobs where the program has no dot."""
        if len(self.dots) == 0:
            return DotReport(0)
        soft = cv2.GaussianBlur(dark, (0, 0), max(0.6, self.stroke_px / 4))
        # A dot counts as found within about a dot's radius of where it should be.
        reach = max(1, round(self.stroke_px * 0.6))
        near_max = cv2.dilate(
            soft, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        )
        centres = self.to_px(self.dots) - 0.5
        rows, cols = self.shape
        inside = (centres[:, 0] >= 0) & (centres[:, 0] < cols) & (centres[:, 1] >= 0) & (centres[:, 1] < rows)
        cx = np.clip(np.round(centres[:, 0]).astype(int), 0, cols - 1)
        cy = np.clip(np.round(centres[:, 1]).astype(int), 0, rows - 1)
        levels = np.where(inside, near_max[cy, cx], 0.0)
        expected = self.ink > 0.5
        bare = float(
            np.median(soft[~cv2.dilate(expected.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)])
        )
        ink = float(np.percentile(levels, 75)) if len(levels) else bare
        threshold = bare + max(contrast_floor, (ink - bare) * 0.3)
        missing = [
            (float(x), float(y)) for (x, y), lv in zip(self.dots, levels, strict=True) if lv < threshold
        ]
        # Extra dots: blobs of dark pixels farther than a dot pitch from every program dot (or than
        # a dent's radius, when dents are wider than the pitch: a pattern machine's own force).
        # An extra dot must be about as dark as the real ones, not a streak of surface texture.
        marked = (soft > bare + max(contrast_floor, (ink - bare) * 0.6)).astype(np.uint8)
        reach_px = max(
            2,
            round((self.dot_pitch_mm or self.stroke_px / self.px_per_mm * 2) * self.px_per_mm * 0.6),
            round(self.stroke_px * 0.75 + 1),  # the dent's radius, widened by the blur above
        )
        near = np.zeros_like(marked)
        for x, y in centres:
            cv2.circle(near, (round(x), round(y)), reach_px, 1, -1)
        count, _, stats, blob_centres = cv2.connectedComponentsWithStats(marked & (1 - near), connectivity=8)
        min_area = max(2.0, 0.5 * math.pi * (self.stroke_px / 2) ** 2)
        extra = []
        for i in range(1, count):
            if stats[i, cv2.CC_STAT_AREA] >= min_area:
                c, r = blob_centres[i]
                extra.append((self.x0 + (c + 0.5) / self.px_per_mm, self.y1 - (r + 0.5) / self.px_per_mm))
        return DotReport(len(self.dots), missing, extra)


def _soft(image: F32, stroke_px: float) -> F32:
    # A blur of about half a stroke makes the comparison tolerant to a pixel of registration error.
    out: F32 = np.asarray(cv2.GaussianBlur(image, (0, 0), max(0.8, stroke_px / 2)), dtype=np.float32)
    return out


def _ncc(a: F32, b: F32) -> float:
    am, bm = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((am * am).sum()) * float((bm * bm).sum()))
    return float((am * bm).sum()) / denom if denom > 1e-12 else 0.0


def _slots(layout: Layout, offset: tuple[float, float]) -> list[GlyphSlot]:
    slots = []
    for line in layout.lines:
        advance = 0.0
        for index, char in enumerate(line.text):
            local = g.rotate_points(np.array([[advance * line.height_mm, 0.0]]), line.angle_deg)[0]
            origin = (line.origin[0] + local[0] + offset[0], line.origin[1] + local[1] + offset[1])
            slots.append(GlyphSlot(line.index, index, char, origin, line.angle_deg, line.height_mm))
            advance += layout.font.glyph(char).advance
    return slots


def build_reference(
    program: MotionProgram,
    *,
    stroke_mm: float,
    layout: Layout | None = None,
    px_per_mm: float | None = None,
    pad_mm: float | None = None,
    max_pixels: int = 3_000_000,
) -> Reference:
    """Draw ``program`` (machine frame) as the expected mark; with ``layout``, know its characters."""
    x0, y0, x1, y1 = program.bounds
    char_h = layout.char_height_mm if layout is not None and layout.lines else max(1.0, (y1 - y0) / 3)
    if px_per_mm is None:
        # About 30 pixels per character height, at least 2.5 pixels per stroke.
        px_per_mm = min(40.0, max(8.0, 30.0 / char_h, 2.5 / max(stroke_mm, 1e-3)))
    pad = pad_mm if pad_mm is not None else max(1.5, 0.6 * char_h)
    width_mm, height_mm = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    if width_mm * height_mm * px_per_mm**2 > max_pixels:
        px_per_mm = math.sqrt(max_pixels / (width_mm * height_mm))
    shape = (max(8, math.ceil(height_mm * px_per_mm)), max(8, math.ceil(width_mm * px_per_mm)))
    dots = [s.points for s in program.strokes if s.kind is StrokeKind.DOTS]
    offset = layout.request.options.origin_mm if layout is not None else (0.0, 0.0)
    code_corners = None
    if layout is not None and layout.code is not None:
        code_corners = layout.code.corners() + np.asarray(offset, dtype=np.float64)
    ref = Reference(
        px_per_mm=px_per_mm,
        x0=x0 - pad,
        y1=y1 + pad,
        ink=np.zeros(shape, dtype=np.float32),
        stroke_px=max(1.0, stroke_mm * px_per_mm),
        dots=np.concatenate(dots) if dots else np.empty((0, 2)),
        slots=_slots(layout, offset) if layout is not None else [],
        font=layout.font if layout is not None else None,
        dot_glyphs=layout.stroke_kind == "dots" if layout is not None else bool(dots),
        # The pitch compose resampled stroke fonts with for dot peen (compose._layout_block).
        dot_pitch_mm=(
            layout.process.dot_pitch_mm or max(layout.process.stroke_width_mm, MIN_DOT_PITCH_MM)
            if layout is not None
            else None
        ),
        code_corners_mm=code_corners,
    )
    for kind in (StrokeKind.LINE, StrokeKind.DOTS):
        strokes = [s.points for s in program.strokes if s.kind is kind]
        ref._draw(ref.ink, strokes, kind is StrokeKind.DOTS, (0.0, 0.0))
    np.clip(ref.ink, 0.0, 1.0, out=ref.ink)
    return ref
