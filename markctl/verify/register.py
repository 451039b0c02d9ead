"""Registering a photo onto the reference raster: scale, rotation, position and perspective.

A photo's scale and position are found in the image itself, never assumed:

1. **Data Matrix**: when the layout has a code and zxing-cpp finds it, the four corners it reports
   (in the symbol's own orientation: the L-shaped finder pattern is the left and bottom edges, ISO/IEC
   16022 §5.2) are matched with the recorded symbol's corners: a perspective transform.
2. **Feature matching** (OpenCV ORB, RANSAC homography) between the photo and the rendered layout.
3. **Moments** of the dark pixels: centre, principal axis and spread give a similarity transform
   (both 180-degree readings of the axis are tried).

Each start is refined by enhanced correlation (OpenCV ``findTransformECC``, homography model) on the
photo warped into the reference frame, twice, coarse then fine. The start whose refined result
correlates best with the reference wins; its correlation says how good the registration is.

The photo is first turned into a *darkness* image: 1 - pixel / local background, where the
background is a closing (max filter) of the photo wider than any stroke, so uneven light and a
tinted surface do not change what counts as marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

from markctl.verify.reference import Reference

__all__ = ["Registration", "darkness", "decode_code", "register"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Below this correlation between reference and registered photo, the mark was not found.
MIN_REGISTRATION = 0.3


@dataclass
class Registration:
    homography: F64  # reference pixel -> photo work pixel
    score: float  # correlation of the reference with the registered darkness, -1..1
    method: str  # "data matrix", "features" or "moments"
    dark: F32  # the photo's darkness, warped into the reference frame

    def photo_px_per_ref_px(self, ref: Reference) -> float:
        """Local scale of the homography at the centre of the reference."""
        rows, cols = ref.shape
        c = np.array([[cols / 2, rows / 2], [cols / 2 + 1, rows / 2], [cols / 2, rows / 2 + 1]], np.float64)
        p = cv2.perspectiveTransform(c.reshape(-1, 1, 2), self.homography).reshape(-1, 2)
        jac = np.column_stack((p[1] - p[0], p[2] - p[0]))
        return math.sqrt(abs(float(np.linalg.det(jac))))


def darkness(gray: F32, feature_px: float | None = None) -> F32:
    """How much darker than the surface around it each pixel is: 0 bare surface, 1 black.

    The surface level is a median over a window much wider than a stroke (marks are a minority
    there, so they do not pull it down), which follows uneven light and a tinted surface; surface
    texture brighter or darker than that level by a few percent stays a few percent.
    """
    h, w = gray.shape
    size = int(feature_px) if feature_px else max(15, max(h, w) // 10)
    # The background estimate at quarter resolution is as good and 16x cheaper.
    f = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(gray, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    k = min(255, max(3, (size // f) | 1))
    u8 = np.clip(small * 255.0, 0, 255).astype(np.uint8)
    background = _f32(cv2.medianBlur(u8, k)) / np.float32(255.0)
    background = _blur(background, k / 4)
    background = _f32(cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR))
    ratio = 1.0 - gray / np.maximum(background, 1e-3)
    return _f32(np.clip(ratio, 0.0, 1.0))


def decode_code(gray: F32) -> tuple[str, F64] | None:
    """Text and corners (BL, BR, TR, TL in the symbol's orientation) of the first Data Matrix."""
    image = np.clip(gray * 255.0, 0, 255).astype(np.uint8)
    for result in zxingcpp.read_barcodes(
        image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.DataMatrix)
    ):
        pos = result.position
        corners = np.array(
            [
                [pos.bottom_left.x, pos.bottom_left.y],
                [pos.bottom_right.x, pos.bottom_right.y],
                [pos.top_right.x, pos.top_right.y],
                [pos.top_left.x, pos.top_left.y],
            ],
            dtype=np.float64,
        )
        return result.text, corners
    return None


def _warp(dark: F32, homography: F64, ref: Reference, photo_per_ref: float) -> F32:
    src = dark
    if photo_per_ref > 1.5:
        # Shrinking: blur first so thin strokes are averaged rather than skipped.
        src = _blur(dark, 0.45 * photo_per_ref)
    rows, cols = ref.shape
    out = _f32(cv2.warpPerspective(
        src, homography, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    ))  # fmt: skip
    return out


def _f32(image: Any) -> F32:
    out: F32 = np.asarray(image, dtype=np.float32)
    return out


def _blur(image: F32, sigma: float) -> F32:
    return _f32(cv2.GaussianBlur(image, (0, 0), sigma))


def _scale_of(h: F64, ref: Reference) -> float:
    return Registration(h, 0.0, "", np.zeros((1, 1), np.float32)).photo_px_per_ref_px(ref)


def _ncc(a: F32, b: F32) -> float:
    am, bm = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((am * am).sum()) * float((bm * bm).sum()))
    return float((am * bm).sum()) / denom if denom > 1e-12 else 0.0


def _ecc_step(template: F32, moving: F32, factor: float, iterations: int, eps: float) -> F64 | None:
    """One ECC homography step between same-size images, computed at ``factor`` of their size."""
    if factor < 1.0:
        size = (max(8, round(template.shape[1] * factor)), max(8, round(template.shape[0] * factor)))
        template = _f32(cv2.resize(template, size, interpolation=cv2.INTER_AREA))
        moving = _f32(cv2.resize(moving, size, interpolation=cv2.INTER_AREA))
    try:
        _, found = cv2.findTransformECC(
            template, moving, np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps), np.empty((0, 0), np.uint8), 1,
        )  # fmt: skip
    except cv2.error:
        return None  # no convergence from here
    step = np.asarray(found, dtype=np.float64)
    if factor < 1.0:
        scale = np.diag([factor, factor, 1.0])
        step = np.linalg.inv(scale) @ step @ scale
    return step if np.all(np.isfinite(step)) else None


def _passes(ref: Reference) -> tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]:
    """(blur px, working size factor, iterations) of the coarse and the fine refinement passes.

    Dots repeat at their pitch: a blur of less than a pitch lets the correlation lock one dot
    off, so dotted marks are first aligned as if their dots were strokes.
    """
    stroke = ref.stroke_px
    coarse = [(max(2.0, 1.5 * stroke), 0.5, 40)]
    fine = [(max(1.2, 0.75 * stroke), 1.0, 40), (max(0.8, 0.35 * stroke), 1.0, 40)]
    if ref.dot_glyphs and ref.dot_pitch_mm:
        pitch = ref.dot_pitch_mm * ref.px_per_mm
        coarse = [(max(2.0, 0.9 * pitch), 0.5, 40)]
        fine = [(max(1.5, 0.5 * pitch), 1.0, 40), *fine]
    return coarse, fine


def _refine(dark: F32, ref: Reference, start: F64, passes: list[tuple[float, float, int]]) -> F64:
    """Refine ``start`` pass by pass, keeping a pass only if it improves the match."""
    h = start.copy()
    score = _score(dark, ref, h)[0]
    for blur_px, factor, iterations in passes:
        blur = max(blur_px, 1.0 / factor)
        warped = _warp(dark, h, ref, _scale_of(h, ref))
        step = _ecc_step(_blur(ref.ink, blur), _blur(warped, blur), factor, iterations, 1e-5)
        if step is None:
            continue
        candidate = h @ step
        if abs(candidate[2, 2]) < 1e-9:
            continue
        candidate = candidate / candidate[2, 2]
        new_score = _score(dark, ref, candidate)[0]
        if new_score > score:
            h, score = candidate, new_score
    return h


def _score(dark: F32, ref: Reference, h: F64) -> tuple[float, F32]:
    warped = _warp(dark, h, ref, _scale_of(h, ref))
    blur = max(1.0, ref.stroke_px / 2)
    return _ncc(_blur(ref.ink, blur), _blur(warped, blur)), warped


def _from_code(corners_photo: F64, ref: Reference) -> F64 | None:
    if ref.code_corners_mm is None:
        return None
    # zxing's corner points sit on the symbol's outer module edges, like the layout's corners.
    src = (ref.to_px(ref.code_corners_mm) - 0.5).astype(np.float32)
    h = cv2.getPerspectiveTransform(src, corners_photo.astype(np.float32))
    return h.astype(np.float64)


def _spread(weights: F32) -> tuple[F64, float, float, float] | None:
    rows, cols = np.nonzero(weights)
    if len(rows) < 10:
        return None
    pts = np.column_stack((cols, rows)).astype(np.float64)
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T)
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, 1]
    angle = math.atan2(major[1], major[0])
    return centre, angle, math.sqrt(max(values[1], 1e-9)), math.sqrt(max(values[0], 1e-9))


def _mask(dark: F32) -> F32:
    # Marks are much darker than the surface's texture: a light blur averages the texture out, and
    # Otsu's threshold over the pixels darker than the texture can be separates the mark.
    soft = _blur(dark, 1.0)
    floor = float(np.percentile(soft, 90)) * 2.0 + 0.02
    values = soft[soft > floor]
    if values.size < 10:
        return np.zeros_like(dark)
    u8 = np.clip(values * 255, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(u8.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    threshold = max(floor, float(level) / 255.0 * 0.5)
    mask = (soft > threshold).astype(np.uint8)
    # The mark is one cluster of dark pixels; stray dark specks of the surface lie apart from it.
    reach = max(3, max(dark.shape) // 25) | 1
    joined = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
    count, labels = cv2.connectedComponents(joined)
    if count > 2:
        weight = np.bincount(labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=count)
        weight[0] = 0.0
        mask = mask * (labels == int(np.argmax(weight))).astype(np.uint8)
    out: F32 = mask.astype(np.float32)
    return out


def _from_moments(dark: F32, ref: Reference) -> list[F64]:
    photo, expected = _spread(_mask(dark)), _spread((ref.ink > 0.5).astype(np.float32))
    if photo is None or expected is None:
        return []
    (pc, pa, p1, p2), (ec, ea, e1, e2) = photo, expected
    scale = math.sqrt((p1 * p2) / (e1 * e2))
    starts = []
    for flip in (0.0, math.pi):
        rot = pa - ea + flip
        rot = math.atan2(math.sin(rot), math.cos(rot))
        c, s = math.cos(rot) * scale, math.sin(rot) * scale
        a = np.array([[c, -s], [s, c]])
        t = pc - a @ ec
        starts.append(np.array([[a[0, 0], a[0, 1], t[0]], [a[1, 0], a[1, 1], t[1]], [0, 0, 1]], np.float64))
    return starts


def _u8_light(dark: F32) -> npt.NDArray[np.uint8]:
    # Marks dark on a light field, as a camera sees them.
    out: npt.NDArray[np.uint8] = np.clip(255.0 - dark * 255.0, 0, 255).astype(np.uint8)
    return out


def _from_features(dark: F32, ref: Reference) -> F64 | None:
    orb: Any = getattr(cv2, "ORB_create")(nfeatures=1500)  # noqa: B009  (missing from cv2's stubs)
    kr, dr = orb.detectAndCompute(_u8_light(_blur(ref.ink, 0.8)), None)
    kp, dp = orb.detectAndCompute(_u8_light(dark), None)
    if dr is None or dp is None or len(kr) < 8 or len(kp) < 8:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dr, dp)
    if len(matches) < 8:
        return None
    src = np.array([kr[m.queryIdx].pt for m in matches], dtype=np.float32)
    dst = np.array([kp[m.trainIdx].pt for m in matches], dtype=np.float32)
    h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    if h is None or inliers is None or int(inliers.sum()) < 8:
        return None
    return np.asarray(h, dtype=np.float64)


def register(gray: F32, ref: Reference, *, code_corners: F64 | None = None) -> Registration | None:
    """The best registration of a photo (greyscale work image) onto ``ref``, or None."""
    dark = darkness(gray)
    starts: list[tuple[str, F64]] = []
    if code_corners is not None:
        start = _from_code(code_corners, ref)
        if start is not None:
            starts.append(("data matrix", start))
    starts += [("moments", h) for h in _from_moments(dark, ref)]
    if not starts or code_corners is None:
        features = _from_features(dark, ref)
        if features is not None:
            starts.append(("features", features))
    if not starts:
        return None
    # Every start gets a cheap coarse refinement; only the best is refined finely.
    coarse_passes, fine_passes = _passes(ref)
    coarse = []
    for method, start in starts:
        h = _refine(dark, ref, start, coarse_passes)
        coarse.append((_score(dark, ref, h)[0], method, h))
        if method == "data matrix" and coarse[-1][0] > 0.6:
            break  # the code's own corners are as good a start as there is
    _, method, h = max(coarse, key=lambda c: c[0])
    h = _refine(dark, ref, h, fine_passes)
    score, warped = _score(dark, ref, h)
    return Registration(h, score, method, warped)
