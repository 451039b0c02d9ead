"""Fonts: single-stroke Hershey fonts and the 5x7 / 7x9 dot-matrix fonts of dot-peen markers.

A glyph is returned in *em units*: the cap height is 1.0, the baseline is y = 0 (+Y up) and the
glyph's origin is x = 0. Scaling by the character height gives millimetres.

* ``hershey:<name>`` (e.g. ``hershey:futural``, the default for lasers) comes from the
  ``hershey-fonts`` package, the public-domain Hershey vector fonts (US NBS, 1967): centre-line
  strokes, which is what a laser beam or a continuous dot-peen stylus draws. A sans-serif face
  matches MIL-STD-130N's human-readable rule (HRI-130). Greek and Cyrillic capitals (EU 2019/68
  allows them) come from Hershey's simplex Greek and Cyrillic sets in every face. Hershey has no
  capital Ё or Й: they are composed from Hershey's own strokes (see :func:`_composed_capitals`).
* ``5x7`` and ``7x9`` are dot matrices written for markctl (``layouts/data/dotfont_*.toml``);
  one dot per cell, as industrial dot-peen controllers draw them (Part 2 §8): Latin, and the
  Greek and Cyrillic capitals EU 2019/68 allows.

A character a font cannot draw raises :class:`~markctl.errors.LayoutError`; nothing is ever
substituted (COMPLIANCE Part 1 "Content", rule ENG-GLYPH).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from markctl.errors import LayoutError

__all__ = ["DEFAULT_DOT_FONT", "DEFAULT_STROKE_FONT", "Font", "GlyphShape", "font_names", "get_font"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_STROKE_FONT = "hershey:futural"
DEFAULT_DOT_FONT = "5x7"

# Hershey glyph coordinates: y grows downwards; the cap line is at -12 and the baseline at +9 in
# the fonts of the hershey-fonts package (its render_options), so one em is 21 units.
_HERSHEY_CAP, _HERSHEY_BASE = -12.0, 9.0
_HERSHEY_EM = _HERSHEY_BASE - _HERSHEY_CAP
# The Hershey fonts that are upper-case Latin sans-serif or simplex faces suitable for marking.
_HERSHEY_FACES = ("futural", "futuram", "rowmans", "rowmand", "timesr")


@dataclass(frozen=True, slots=True)
class GlyphShape:
    """One glyph in em units: strokes (polylines, or dot lists for a dot font) and its advance."""

    strokes: tuple[FloatArray, ...]
    advance: float
    # How far a diacritic rises above the cap line (Ё, Й), in em: it is not the character's height,
    # so the height rules measure the glyph without it (checks._height).
    accent_em: float = 0.0


@dataclass(frozen=True, slots=True)
class Font:
    """A font: a name, whether it draws lines or dots, and its glyphs."""

    name: str
    kind: Literal["stroke", "dot"]
    glyphs: dict[str, GlyphShape]
    pitch_em: float = 0.0  # dot fonts: centre distance of neighbouring dots, in em

    def can_draw(self, char: str) -> bool:
        """True if the font has a glyph for ``char`` (space always has one)."""
        return char in self.glyphs

    def glyph(self, char: str) -> GlyphShape:
        """The glyph for ``char``.

        Raises:
            LayoutError: the font has no such glyph (``field="options.font"``).
        """
        shape = self.glyphs.get(char)
        if shape is None:
            raise LayoutError(
                f"font {self.name!r} cannot draw {char!r} (U+{ord(char):04X})", field="options.font"
            )
        return shape

    def missing(self, text: str) -> list[str]:
        """The characters of ``text`` this font cannot draw, in order of first appearance."""
        out: list[str] = []
        for ch in text:
            if ch not in self.glyphs and ch not in out:
                out.append(ch)
        return out

    def text_width(self, text: str) -> float:
        """Advance width of ``text`` in em, without the trailing inter-character space of dot fonts."""
        width = sum(self.glyph(ch).advance for ch in text)
        if self.kind == "dot" and text:
            width -= self.pitch_em  # the blank column after the last glyph is not part of the text
        return width


# Hershey's Greek and Cyrillic sets sit on ASCII code points (as the original tapes did): which
# ASCII slot holds which capital, read off the glyphs of the hershey-fonts package. EU 2019/68
# allows Latin, Cyrillic or Greek letters (EU-ALPHA). The Cyrillic set has no capital Ё or Й (its
# 'E' slot repeats И): those two are composed from Hershey's own strokes (_composed_capitals).
_GREEK_FACE, _CYRILLIC_FACE = "greeks", "cyrillic"
_GREEK_SLOTS = dict(zip("ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", "ABCDEFGHIJKLMNOPQRSTUVWX", strict=True))
_CYRILLIC_SLOTS = dict(zip("АБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ", "ABVGD[HZIKLMNOPRSTYFX`JQW]$_CU^", strict=True))


def _hershey_glyphs(face: str) -> dict[str, GlyphShape]:
    # hershey-fonts ships without type information; this adapter is the only place it is touched.
    from HersheyFonts import HersheyFonts  # type: ignore[import-untyped]

    loader: Any = HersheyFonts()
    loader.load_default_font(face)
    glyphs: dict[str, GlyphShape] = {}
    for char, glyph in loader.all_glyphs.items():
        if not isinstance(char, str) or len(char) != 1 or not (" " <= char <= "~"):
            continue
        left = float(glyph.left_offset)
        strokes = tuple(
            np.array([((x - left) / _HERSHEY_EM, (_HERSHEY_BASE - y) / _HERSHEY_EM) for x, y in stroke])
            for stroke in glyph.strokes
            if len(stroke) >= 2
        )
        glyphs[char] = GlyphShape(strokes, float(glyph.char_width) / _HERSHEY_EM)
    return glyphs


def _hershey(face: str) -> Font:
    """A Latin Hershey face, with the Greek and Cyrillic capitals of Hershey's own sets added."""
    glyphs = _hershey_glyphs(face)
    for other, slots in ((_GREEK_FACE, _GREEK_SLOTS), (_CYRILLIC_FACE, _CYRILLIC_SLOTS)):
        source = _hershey_glyphs(other)
        glyphs.update({letter: source[slot] for letter, slot in slots.items()})
    glyphs.update(_composed_capitals(_hershey_glyphs(_CYRILLIC_FACE)))
    return Font(f"hershey:{face}", "stroke", glyphs)


# Where a composed capital's diacritic goes, in Hershey units (21 to the em, like the cap height):
# the original Hershey character cell reaches 4 units above the cap line, so the accent sits in
# that band, with a gap wider than a typical stroke at marking sizes so it never merges with the
# letter. A capital's accent is flatter than the lower-case one, as in printed Cyrillic.
_ACCENT_GAP, _ACCENT_TOP = 1.5 / _HERSHEY_EM, 4.0 / _HERSHEY_EM
_DIAERESIS_SPACING = 6.0 / _HERSHEY_EM  # centre to centre of the two dots


def _composed_capitals(cyrillic: dict[str, GlyphShape]) -> dict[str, GlyphShape]:
    """Ё and Й from Hershey's own strokes: nothing drawn here is ours but the accent's place.

    * Й: Hershey's capital И (slot ``I``) and the breve of Hershey's lower-case й (slot ``e``, its
      only stroke above the x-height), flattened into the band above the cap line.
    * Ё: Hershey's capital Е (slot ``[``) and two of Hershey's full stops (slot ``.``) as the
      diaeresis, in the same band, centred on the letter.

    Raises:
        LayoutError: the Hershey data is not as described (a newer package): the fonts are refused
            rather than drawn wrong.
    """
    short_i, full_stop = cyrillic["e"], cyrillic["."]
    x_height = float(np.concatenate(cyrillic["j"].strokes)[:, 1].max())  # the top of и
    breves = [s for s in short_i.strokes if float(s[:, 1].min()) > x_height]
    if len(breves) != 1 or len(full_stop.strokes) != 1:
        raise LayoutError(
            "the Hershey Cyrillic set is not the one markctl knows (no breve in й)", field="options.font"
        )
    dot = full_stop.strokes[0] - full_stop.strokes[0].mean(axis=0)
    band = (1.0 + _ACCENT_GAP, 1.0 + _ACCENT_TOP)

    def compose(base: GlyphShape, accent: list[FloatArray]) -> GlyphShape:
        pts = np.concatenate(base.strokes)
        centre = (float(pts[:, 0].min()) + float(pts[:, 0].max())) / 2.0
        acc = np.concatenate(accent)
        x0, y0, y1 = (
            (float(acc[:, 0].min()) + float(acc[:, 0].max())) / 2.0,
            float(acc[:, 1].min()),
            float(acc[:, 1].max()),
        )
        squash = min(1.0, (band[1] - band[0]) / (y1 - y0))
        placed = tuple(
            np.column_stack((a[:, 0] - x0 + centre, (a[:, 1] - y0) * squash + band[0])) for a in accent
        )
        top = max(float(a[:, 1].max()) for a in placed)
        return GlyphShape(base.strokes + placed, base.advance, accent_em=top - float(pts[:, 1].max()))

    offsets = (np.array([-_DIAERESIS_SPACING / 2.0, 0.0]), np.array([_DIAERESIS_SPACING / 2.0, 0.0]))
    return {
        "Й": compose(cyrillic[_CYRILLIC_SLOTS["И"]], breves),
        "Ё": compose(cyrillic[_CYRILLIC_SLOTS["Е"]], [dot + o for o in offsets]),
    }


def _dot_order(points: FloatArray) -> FloatArray:
    # Strike the dots of one glyph in nearest-neighbour order so the head does not zig-zag.
    if len(points) <= 2:
        return points
    remaining = list(range(1, len(points)))
    order = [0]
    while remaining:
        last = points[order[-1]]
        dists = np.hypot(*(points[remaining] - last).T)
        order.append(remaining.pop(int(np.argmin(dists))))
    return points[order]


_MAX_ACCENT_ROWS = 3


def _dot_font(name: str) -> Font:
    data = tomllib.loads(
        (resources.files("markctl.layouts.data") / f"dotfont_{name}.toml").read_text("utf-8")
    )
    rows, cols, advance = int(data["rows"]), int(data["columns"]), int(data["advance"])
    pitch = 1.0 / (rows - 1)  # the outer dot centres span exactly one em (the cap height)
    glyphs: dict[str, GlyphShape] = {" ": GlyphShape((), advance * pitch)}
    for char, bitmap in data["glyphs"].items():
        # Up to _MAX_ACCENT_ROWS rows beyond the font's own sit above the cap line: a diacritic (Ё, Й).
        extra = len(bitmap) - rows
        if (
            not 0 <= extra <= _MAX_ACCENT_ROWS
            or any(len(r) != cols for r in bitmap)
            or (extra and "#" not in bitmap[0])
        ):
            raise LayoutError(f"dot font {name}: glyph {char!r} is not {cols}x{rows}", field="options.font")
        dots = [
            (c * pitch, (len(bitmap) - 1 - r) * pitch)
            for r, row in enumerate(bitmap)
            for c, cell in enumerate(row)
            if cell == "#"
        ]
        strokes = (_dot_order(np.array(dots, dtype=np.float64)),) if dots else ()
        glyphs[char] = GlyphShape(strokes, advance * pitch, accent_em=extra * pitch)
    return Font(name, "dot", glyphs, pitch_em=pitch)


def font_names() -> tuple[str, ...]:
    """Every font name :func:`get_font` accepts."""
    return (*(f"hershey:{f}" for f in _HERSHEY_FACES), "5x7", "7x9")


@cache
def get_font(name: str) -> Font:
    """Load a font by name (cached).

    Raises:
        LayoutError: unknown font name (``field="options.font"``).
    """
    if name in ("5x7", "7x9"):
        return _dot_font(name)
    face = name.removeprefix("hershey:")
    if name.startswith("hershey:") and face in _HERSHEY_FACES:
        return _hershey(face)
    raise LayoutError(
        f"unknown font {name!r}", field="options.font", hint="known: " + ", ".join(font_names())
    )
