"""Previews: the zone, keep-outs, existing marks, the mark itself and highlighted findings.

SVG is returned as a string and PNG is drawn with Pillow; both use the component frame (mm,
+Y up), flipped so the picture looks like the part. In the PNG the Data Matrix modules are drawn
as solid squares with a white quiet zone, so the symbol can be read back by a decoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from markctl.layouts import _geom as g
from markctl.layouts.compose import Layout
from markctl.layouts.findings import Finding
from markctl.layouts.rules import Severity

__all__ = ["render_png", "render_svg"]

_PAD_MM = 2.0
_COLOURS = {
    "zone": "#e8f0ff",
    "zone_edge": "#3060c0",
    "keepout": "#ffd0d0",
    "existing": "#c8c8c8",
    "mark": "#000000",
    Severity.ERROR: "#e00000",
    Severity.WARNING: "#e08000",
}


def _frame(layout: Layout) -> tuple[float, float, float, float]:
    geoms = [layout.zone, layout.footprint, *layout.keepouts, *layout.existing]
    b = np.array([g.bounds(x) for x in geoms])
    return (
        float(b[:, 0].min()) - _PAD_MM,
        float(b[:, 1].min()) - _PAD_MM,
        float(b[:, 2].max()) + _PAD_MM,
        float(b[:, 3].max()) + _PAD_MM,
    )


def _path(ring: np.ndarray) -> str:
    return "M " + " L ".join(f"{x:.4f},{y:.4f}" for x, y in ring) + " Z"


def _highlighted(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.where is not None and f.severity in (Severity.ERROR, Severity.WARNING)]


def render_svg(layout: Layout, findings: Iterable[Finding] = ()) -> str:
    """An SVG document (mm units) of the zone, keep-outs, existing marks, the mark and the findings."""
    x0, y0, x1, y1 = _frame(layout)
    w, h = x1 - x0, y1 - y0
    stroke = max(layout.process.stroke_width_mm, 0.05)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.3f}mm" height="{h:.3f}mm" viewBox="{x0:.4f} {-y1:.4f} {w:.4f} {h:.4f}">',
        f"<title>{escape(layout.rules.id)}: {escape(' / '.join(ln.text for ln in layout.lines))}</title>",
        '<g transform="scale(1,-1)">',
    ]
    for ring in g.exterior_coords(layout.zone):
        parts.append(
            f'<path class="zone" d="{_path(ring)}" fill="{_COLOURS["zone"]}" stroke="{_COLOURS["zone_edge"]}" stroke-width="0.1"/>'
        )
    for k in layout.keepouts:
        for ring in g.exterior_coords(k):
            parts.append(
                f'<path class="keepout" d="{_path(ring)}" fill="{_COLOURS["keepout"]}" stroke="#c00000" stroke-width="0.05"/>'
            )
    for e in layout.existing:
        for ring in g.exterior_coords(e):
            parts.append(
                f'<path class="existing" d="{_path(ring)}" fill="{_COLOURS["existing"]}" stroke="#606060" stroke-width="0.05"/>'
            )
    parts.append(
        f'<g class="mark" stroke="{_COLOURS["mark"]}" fill="none" stroke-width="{stroke:.4f}" stroke-linecap="round" stroke-linejoin="round">'
    )
    for line in layout.lines:
        for glyph in line.glyphs:
            for pts in glyph.strokes:
                if glyph.kind == "dots":
                    parts.extend(
                        f'<circle cx="{x:.4f}" cy="{y:.4f}" r="{stroke / 2:.4f}" fill="#000" stroke="none"/>'
                        for x, y in pts
                    )
                else:
                    parts.append('<polyline points="' + " ".join(f"{x:.4f},{y:.4f}" for x, y in pts) + '"/>')
    parts.append("</g>")
    if layout.code is not None:
        m = layout.code.module_mm
        parts.append(
            f'<g class="datamatrix" fill="#000" transform="rotate({layout.code.angle_deg:.4f} {layout.code.origin[0]:.4f} {layout.code.origin[1]:.4f})">'
        )
        ox, oy = layout.code.origin
        rows, cols = np.nonzero(layout.code.symbol.modules)
        parts.extend(
            f'<rect x="{ox + c * m:.4f}" y="{oy - (r + 1) * m:.4f}" width="{m:.4f}" height="{m:.4f}"/>'
            for r, c in zip(rows, cols, strict=True)
        )
        parts.append("</g>")
    for f in _highlighted(findings):
        assert f.where is not None
        fx0, fy0, fx1, fy1 = f.where
        parts.append(
            f'<rect class="finding {f.severity.value}" x="{fx0 - 0.2:.4f}" y="{fy0 - 0.2:.4f}" width="{fx1 - fx0 + 0.4:.4f}" '
            f'height="{fy1 - fy0 + 0.4:.4f}" fill="none" stroke="{_COLOURS[f.severity]}" stroke-width="0.15" stroke-dasharray="0.5 0.3">'
            f"<title>{escape(f.rule)}: {escape(f.message)}</title></rect>"
        )
    parts.append("</g></svg>")
    return "\n".join(parts) + "\n"


def render_image(layout: Layout, findings: Iterable[Finding] = (), px_per_mm: float = 20.0) -> Image.Image:
    """The preview as a Pillow RGB image."""
    x0, y0, x1, y1 = _frame(layout)
    size = (max(1, round((x1 - x0) * px_per_mm)), max(1, round((y1 - y0) * px_per_mm)))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def px(points: np.ndarray) -> list[tuple[float, float]]:
        return [((x - x0) * px_per_mm, (y1 - y) * px_per_mm) for x, y in points]

    for ring in g.exterior_coords(layout.zone):
        draw.polygon(px(ring), fill=_COLOURS["zone"], outline=_COLOURS["zone_edge"])
    for k in layout.keepouts:
        for ring in g.exterior_coords(k):
            draw.polygon(px(ring), fill=_COLOURS["keepout"], outline="#c00000")
    for e in layout.existing:
        for ring in g.exterior_coords(e):
            draw.polygon(px(ring), fill=_COLOURS["existing"], outline="#606060")
    width = max(1, round(layout.process.stroke_width_mm * px_per_mm))
    for line in layout.lines:
        for glyph in line.glyphs:
            for pts in glyph.strokes:
                if glyph.kind == "dots":
                    r = max(0.5, width / 2)
                    for cx, cy in px(pts):
                        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill="black")
                else:
                    draw.line(px(pts), fill="black", width=width, joint="curve")
    code = layout.code
    if code is not None:
        # White quiet zone first, then each dark module as a solid square (what a reader expects).
        draw.polygon(px(code.corners(quiet=True)), fill="white")
        m = code.module_mm
        square = g.rotate_points(
            np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * m, code.angle_deg
        )
        for centre in code.module_centres():
            draw.polygon(px(square + centre), fill="black")
    for f in _highlighted(findings):
        assert f.where is not None
        fx0, fy0, fx1, fy1 = f.where
        a = px(np.array([[fx0 - 0.2, fy1 + 0.2], [fx1 + 0.2, fy0 - 0.2]]))
        draw.rectangle(
            (a[0][0], a[0][1], a[1][0], a[1][1]),
            outline=_COLOURS[f.severity],
            width=max(1, round(px_per_mm * 0.15)),
        )
    return image


def render_png(
    layout: Layout, findings: Iterable[Finding], path: str | Path, px_per_mm: float = 20.0
) -> Path:
    """Write the preview as a PNG file and return its path (the one place ``layouts`` writes a file)."""
    out = Path(path)
    render_image(layout, findings, px_per_mm).save(out, format="PNG")
    return out
