"""Fonts: single-stroke Hershey fonts and the 5x7 / 7x9 dot-matrix fonts of dot-peen markers.

A glyph is returned in *em units*: the cap height is 1.0, the baseline is y = 0 (+Y up) and the
glyph's origin is x = 0. Scaling by the character height gives millimetres.

* ``hershey:<name>`` (e.g. ``hershey:futural``, the default for lasers) comes from the
  ``hershey-fonts`` package, the public-domain Hershey vector fonts (US NBS, 1967): centre-line
  strokes, which is what a laser beam or a continuous dot-peen stylus draws. A sans-serif face
  matches MIL-STD-130N's human-readable rule (HRI-130). Greek and Cyrillic capitals (EU 2019/68
  allows them) come from Hershey's simplex Greek and Cyrillic sets in every face.
* ``5x7`` and ``7x9`` are dot matrices written for markctl (``layouts/data/dotfont_*.toml``);
  one dot per cell, as industrial dot-peen controllers draw them (Part 2 §8).

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
# 'E' slot repeats И): those two stay undrawable and ENG-GLYPH refuses them, never substitutes.
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
    return Font(f"hershey:{face}", "stroke", glyphs)


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


def _dot_font(name: str) -> Font:
    data = tomllib.loads(
        (resources.files("markctl.layouts.data") / f"dotfont_{name}.toml").read_text("utf-8")
    )
    rows, cols, advance = int(data["rows"]), int(data["columns"]), int(data["advance"])
    pitch = 1.0 / (rows - 1)  # the outer dot centres span exactly one em (the cap height)
    glyphs: dict[str, GlyphShape] = {" ": GlyphShape((), advance * pitch)}
    for char, bitmap in data["glyphs"].items():
        if len(bitmap) != rows or any(len(r) != cols for r in bitmap):
            raise LayoutError(f"dot font {name}: glyph {char!r} is not {cols}x{rows}", field="options.font")
        dots = [
            (c * pitch, (rows - 1 - r) * pitch)
            for r, row in enumerate(bitmap)
            for c, cell in enumerate(row)
            if cell == "#"
        ]
        strokes = (_dot_order(np.array(dots, dtype=np.float64)),) if dots else ()
        glyphs[char] = GlyphShape(strokes, advance * pitch)
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
