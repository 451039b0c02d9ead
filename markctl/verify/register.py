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
    """How much darker than its surroundings each pixel is: 0 bare surface .. 1 the darkest mark."""
    h, w = gray.shape
    size = int(feature_px) if feature_px else max(15, max(h, w) // 10)
    # The background estimate at quarter resolution is as good and 16x cheaper.
    f = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(gray, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    k = max(3, (size // f) | 1)
    background = cv2.morphologyEx(
        small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    )
    background = cv2.GaussianBlur(background, (0, 0), k / 2)
    background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    ratio = 1.0 - gray / np.maximum(np.asarray(background, dtype=np.float32), 1e-3)
    dark = np.asarray(cv2.medianBlur(np.clip(ratio, 0.0, 1.0).astype(np.float32), 3), dtype=np.float32)
    top = float(np.percentile(dark, 99.7))
    out: F32 = np.clip(dark / max(top, 1e-3), 0.0, 1.0).astype(np.float32)
    return out


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


def _refine(dark: F32, ref: Reference, start: F64) -> tuple[F64, float, F32]:
    h = start.copy()
    for blur in (max(2.0, ref.stroke_px * 1.5), max(1.0, ref.stroke_px / 2)):
        warped = _warp(dark, h, ref, _scale_of(h, ref))
        template = _blur(ref.ink, blur)
        moving = _blur(warped, blur)
        step = np.eye(3, dtype=np.float32)
        try:
            _, found = cv2.findTransformECC(
                template, moving, step, cv2.MOTION_HOMOGRAPHY,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5), np.empty((0, 0), np.uint8), 1,
            )  # fmt: skip
            step = np.asarray(found, dtype=np.float32)
        except cv2.error:
            break  # no convergence from this start: keep what we have
        candidate = h @ step.astype(np.float64)
        if not np.all(np.isfinite(candidate)) or abs(candidate[2, 2]) < 1e-9:
            break
        h = candidate / candidate[2, 2]
    warped = _warp(dark, h, ref, _scale_of(h, ref))
    blur = max(1.0, ref.stroke_px / 2)
    score = _ncc(_blur(ref.ink, blur), _blur(warped, blur))
    return h, score, warped


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
    u8 = np.clip(dark * 255, 0, 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    out: F32 = (binary > 0).astype(np.float32)
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
    best: Registration | None = None
    for method, start in starts:
        h, score, warped = _refine(dark, ref, start)
        if best is None or score > best.score:
            best = Registration(h, score, method, warped)
        if method == "data matrix" and score > 0.8:
            break  # the code's own corners, refined, are as good as it gets
    return best
