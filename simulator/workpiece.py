"""The simulated workpiece: a height map of what was marked, renderable to PNG.

Coordinates are millimetres in the machine's work frame (+X right, +Y up); the map is a numpy
array of material removed (mm, ``depth``) plus a ``shade`` map for surface marks that remove no
material (laser annealing / colour change, polymer foaming). Row 0 is the top edge (largest Y),
as in an image. Simulators call :meth:`Workpiece.burn_segment` for laser strokes and
:meth:`Workpiece.strike_dot` for stylus strikes; tests assert on the result, not on mocks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["Workpiece"]

FloatMap = npt.NDArray[np.float32]


class Workpiece:
    """A ``width_mm`` x ``height_mm`` plate starting at ``origin`` (mm), sampled ``px_per_mm``."""

    def __init__(
        self,
        width_mm: float,
        height_mm: float,
        *,
        px_per_mm: float = 20.0,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if width_mm <= 0 or height_mm <= 0 or px_per_mm <= 0:
            raise ValueError("workpiece size and resolution must be positive")
        self.width_mm = width_mm
        self.height_mm = height_mm
        self.px_per_mm = px_per_mm
        self.origin = origin
        self.shape = (max(1, round(height_mm * px_per_mm)), max(1, round(width_mm * px_per_mm)))
        self.depth: FloatMap = np.zeros(self.shape, dtype=np.float32)
        self.shade: FloatMap = np.zeros(self.shape, dtype=np.float32)
        self.strikes = 0
        self.burns = 0

    # --- coordinates -----------------------------------------------------------------------

    def to_px(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """Pixel (column, row) of a point, as floats (pixel centres at .5)."""
        col = (x_mm - self.origin[0]) * self.px_per_mm
        row = (self.origin[1] + self.height_mm - y_mm) * self.px_per_mm
        return col, row

    def _window(
        self, x0: float, y0: float, x1: float, y1: float, pad_mm: float
    ) -> tuple[slice, slice] | None:
        c0, r0 = self.to_px(min(x0, x1) - pad_mm, max(y0, y1) + pad_mm)
        c1, r1 = self.to_px(max(x0, x1) + pad_mm, min(y0, y1) - pad_mm)
        rows = slice(max(0, math.floor(r0)), min(self.shape[0], math.ceil(r1) + 1))
        cols = slice(max(0, math.floor(c0)), min(self.shape[1], math.ceil(c1) + 1))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        return rows, cols

    def _centres_mm(
        self, rows: slice, cols: slice
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        xs = self.origin[0] + (np.arange(cols.start, cols.stop) + 0.5) / self.px_per_mm
        ys = self.origin[1] + self.height_mm - (np.arange(rows.start, rows.stop) + 0.5) / self.px_per_mm
        return np.meshgrid(xs, ys)

    # --- marking ---------------------------------------------------------------------------

    def burn_segment(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        *,
        width_mm: float,
        depth_mm: float,
        shade: float = 1.0,
    ) -> None:
        """A laser pass along a segment: every point within ``width_mm / 2`` loses ``depth_mm``.

        One call covers the footprint once (no double count where the capsule overlaps itself);
        successive calls (passes, crossing strokes) add up, as repeated laser passes do.
        """
        window = self._window(x0, y0, x1, y1, width_mm / 2)
        if window is None:
            return
        rows, cols = window
        gx, gy = self._centres_mm(rows, cols)
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        if length2 == 0:
            dist = np.hypot(gx - x0, gy - y0)
        else:
            t = np.clip(((gx - x0) * dx + (gy - y0) * dy) / length2, 0.0, 1.0)
            dist = np.hypot(gx - (x0 + t * dx), gy - (y0 + t * dy))
        hit = dist <= width_mm / 2
        if not hit.any():
            return
        self.depth[rows, cols][hit] += np.float32(depth_mm)
        np.maximum(
            self.shade[rows, cols],
            np.where(hit, np.float32(shade), np.float32(0)),
            out=self.shade[rows, cols],
        )
        self.burns += 1

    def strike_dot(self, x: float, y: float, *, depth_mm: float, cone_deg: float = 90.0) -> None:
        """A stylus strike: a conical dent ``depth_mm`` deep with the stylus's included angle."""
        radius = depth_mm * math.tan(math.radians(cone_deg / 2))
        radius = max(radius, 0.5 / self.px_per_mm)
        window = self._window(x, y, x, y, radius)
        self.strikes += 1
        if window is None:
            return
        rows, cols = window
        gx, gy = self._centres_mm(rows, cols)
        profile = depth_mm * (1.0 - np.hypot(gx - x, gy - y) / radius)
        profile = np.clip(profile, 0.0, None).astype(np.float32)
        np.maximum(self.depth[rows, cols], profile, out=self.depth[rows, cols])
        np.maximum(self.shade[rows, cols], (profile > 0).astype(np.float32), out=self.shade[rows, cols])

    # --- reading ---------------------------------------------------------------------------

    def marked(self, min_depth_mm: float = 0.0) -> npt.NDArray[np.bool_]:
        """Pixels that were marked (shaded), optionally only those at least ``min_depth_mm`` deep."""
        mask = self.shade > 0
        if min_depth_mm > 0:
            mask &= self.depth >= min_depth_mm
        return mask

    def marked_bbox_mm(self) -> tuple[float, float, float, float] | None:
        """(min_x, min_y, max_x, max_y) of marked pixels, or None if nothing was marked."""
        rows, cols = np.nonzero(self.shade > 0)
        if rows.size == 0:
            return None
        x0 = self.origin[0] + cols.min() / self.px_per_mm
        x1 = self.origin[0] + (cols.max() + 1) / self.px_per_mm
        y1 = self.origin[1] + self.height_mm - rows.min() / self.px_per_mm
        y0 = self.origin[1] + self.height_mm - (rows.max() + 1) / self.px_per_mm
        return (float(x0), float(y0), float(x1), float(y1))

    def image(self) -> Image.Image:
        """Greyscale picture: bare metal light, marks dark (deeper = darker)."""
        deepest = float(self.depth.max()) or 1.0
        tone = 0.35 * self.shade + 0.55 * np.clip(self.depth / deepest, 0.0, 1.0) * (self.shade > 0)
        pixels = np.clip(225.0 * (1.0 - tone), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="L")

    def save_png(self, path: str | Path) -> Path:
        out = Path(path)
        self.image().save(out)
        return out
