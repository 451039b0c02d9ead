"""Typed adapter over shapely 2 (which ships without type information) and small affine helpers.

Every shapely call of ``layouts`` goes through here, so the rest of the package is type-checked
and the ``Any`` stays in one file (STYLE.md §8: untyped vendor libraries go behind typed adapters).
Geometry is in millimetres; shapely has no units of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely  # type: ignore[import-untyped]
from shapely.ops import nearest_points  # type: ignore[import-untyped]

__all__ = [
    "Geom",
    "contains",
    "empty",
    "make_polygon",
    "nearest_point",
    "rect",
    "rotate_points",
    "to_world",
    "union_all",
]

Geom = Any  # a shapely geometry; shapely 2 has no type stubs
FloatArray = npt.NDArray[np.float64]


def make_polygon(points: Sequence[tuple[float, float]]) -> Geom:
    """A polygon from a ring of points (closed automatically)."""
    return shapely.Polygon(points)


def rect(x0: float, y0: float, x1: float, y1: float) -> Geom:
    """An axis-aligned rectangle."""
    return shapely.box(x0, y0, x1, y1)


def empty() -> Geom:
    """The empty geometry."""
    return shapely.Polygon()


def union_all(geoms: Iterable[Geom]) -> Geom:
    """Union of geometries (empty for none)."""
    items = list(geoms)
    return shapely.union_all(items) if items else empty()


def is_valid_reason(geom: Geom) -> str | None:
    """``None`` if valid, else shapely's explanation (e.g. 'Self-intersection[3 1]')."""
    if shapely.is_valid(geom):
        return None
    return str(shapely.is_valid_reason(geom))


def rotate_points(points: FloatArray, angle_deg: float) -> FloatArray:
    """Rotate (N, 2) points about the origin, counter-clockwise."""
    if angle_deg == 0:
        return points
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    out: FloatArray = points @ np.array([[c, s], [-s, c]])
    return out


def to_world(points: FloatArray, angle_deg: float, offset: tuple[float, float]) -> FloatArray:
    """Text frame -> component frame: rotate, then translate."""
    return rotate_points(points, angle_deg) + np.asarray(offset, dtype=np.float64)


def polygon_from_array(points: FloatArray) -> Geom:
    """A polygon from an (N, 2) array."""
    return shapely.Polygon(points)


def contains(container: Geom, geoms: Any) -> npt.NDArray[np.bool_]:
    """Vectorised ``container.contains(g)`` over an array of geometries."""
    return np.asarray(shapely.contains(container, geoms), dtype=np.bool_)


def point_array(coords: FloatArray) -> Any:
    """An array of points, one per row of ``coords``."""
    return shapely.points(coords)


def linestring_array(strokes: Sequence[FloatArray]) -> Any:
    """An array of line strings, one per stroke (each with at least 2 points)."""
    if not strokes:
        return np.empty(0, dtype=object)
    coords = np.concatenate(strokes)
    indices = np.repeat(np.arange(len(strokes)), [len(s) for s in strokes])
    return shapely.linestrings(coords, indices=indices)


def buffer_each(geoms: Any, distance: float) -> Any:
    """Buffer every geometry of an array separately (no union: parts may overlap)."""
    return shapely.buffer(geoms, distance, quad_segs=4)


def covers_each(container: Geom, geoms: Any) -> npt.NDArray[np.bool_]:
    """Vectorised ``container.covers(g)``."""
    return np.asarray(shapely.covers(container, geoms), dtype=np.bool_)


def intersection_area(geoms: Any, other: Geom) -> float:
    """Total area of each geometry's intersection with ``other`` (overlaps between parts count twice)."""
    if len(geoms) == 0:
        return 0.0
    return float(np.sum(shapely.area(shapely.intersection(geoms, other))))


def min_distance(geoms: Any, other: Geom) -> float:
    """Smallest distance from any geometry of the array to ``other`` (inf for an empty array)."""
    if len(geoms) == 0:
        return math.inf
    return float(np.min(shapely.distance(geoms, other)))


def distances(geoms: Any, other: Geom) -> npt.NDArray[np.float64]:
    """Distance from each geometry of the array to ``other``."""
    return np.asarray(shapely.distance(geoms, other), dtype=np.float64)


def covers(a: Geom, b: Geom) -> bool:
    """True if no point of ``b`` lies outside ``a``."""
    return bool(shapely.covers(a, b))


def polygons(rings: FloatArray) -> Any:
    """An array of polygons from a (K, N, 2) array of rings."""
    return shapely.polygons(rings)


def translate(geom: Geom, dx: float, dy: float) -> Geom:
    """A translated copy."""
    return shapely.transform(geom, lambda c: c + np.array([dx, dy]))


def nearest_point(geom: Geom, x: float, y: float) -> tuple[float, float]:
    """The point of ``geom`` nearest to (x, y)."""
    p, _ = nearest_points(geom, shapely.Point(x, y))
    return float(p.x), float(p.y)


def prepare(geom: Geom) -> Geom:
    """Prepare a geometry for repeated predicates (in place) and return it."""
    shapely.prepare(geom)
    return geom


def line_strings(strokes: Sequence[FloatArray]) -> Geom:
    """A MultiLineString of polylines (strokes with one point become points)."""
    parts = [shapely.LineString(s) if len(s) >= 2 else shapely.Point(s[0]) for s in strokes]
    return shapely.GeometryCollection(parts) if parts else empty()


def points(coords: FloatArray) -> Geom:
    """A MultiPoint."""
    return shapely.MultiPoint(coords) if len(coords) else empty()


def buffer(geom: Geom, distance: float) -> Geom:
    """Buffer (round joins)."""
    return shapely.buffer(geom, distance, quad_segs=4)


def buffer_outer(geom: Geom, distance: float) -> Geom:
    """Buffer whose polygonal arcs lie outside the true offset curve (never closer than ``distance``).

    With 4 segments per quarter circle each chord spans pi/8, and its midpoint lies at
    r * cos(pi/16) from the centre; scaling r by 1/cos(pi/16) puts the chords on or outside r.
    """
    return shapely.buffer(geom, distance / math.cos(math.pi / 16), quad_segs=4)


def bounds(geom: Geom) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy)."""
    b = shapely.bounds(geom)
    return float(b[0]), float(b[1]), float(b[2]), float(b[3])


def distance(a: Geom, b: Geom) -> float:
    """Euclidean distance between two geometries (0 if they touch or overlap)."""
    return float(shapely.distance(a, b))


def area(geom: Geom) -> float:
    """Area in mm^2."""
    return float(shapely.area(geom))


def is_empty(geom: Geom) -> bool:
    """True for an empty geometry."""
    return bool(shapely.is_empty(geom))


def exterior_coords(geom: Geom) -> list[FloatArray]:
    """Exterior rings of a (multi)polygon as arrays, for drawing."""
    out: list[FloatArray] = []
    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type == "Polygon" and not part.is_empty:
            out.append(np.asarray(part.exterior.coords, dtype=np.float64))
    return out
