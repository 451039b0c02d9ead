"""Opening a photo safely: bounded bytes, bounded pixels, bounded concurrent work.

A photo comes from a person or over HTTP, so it is untrusted input. A PNG of 20000 x 20000 pixels
compresses to a few hundred kilobytes and decodes to gigabytes (a decompression bomb); a header
may claim any size; a file may stop half-way. The size is read from the header (Pillow's
``Image.open`` parses the header only) and refused *before* any pixel is decoded; a truncated or
corrupt file is refused when decoding fails. Each refusal is an :class:`PhotoRejectedError` whose
message is one line a person can act on; ``too_large`` says whether it is about size (HTTP 413)
or content (HTTP 422).

Limits come from the environment so a depot can set them without code:
``MARKCTL_PHOTO_MAX_PIXELS`` (default 40 million: a 24-megapixel camera passes),
``MARKCTL_PHOTO_MAX_BYTES`` (default 40 MB) and ``MARKCTL_PHOTO_WORKERS`` (default 2, how many
photos are decoded and checked at the same time in one process).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from markctl.errors import ConfigError

__all__ = [
    "PhotoRejectedError",
    "Photo",
    "image_slot",
    "max_bytes",
    "max_pixels",
    "open_photo",
    "photo_workers",
]

# The verifier works at this many pixels on the long side at most: finer detail than this only
# costs time (a mark photographed to fill a 12-MP frame still has > 20 px per character stroke).
WORK_LONG_SIDE = 2400

_FORMATS = ("PNG", "JPEG")


class PhotoRejectedError(ConfigError):
    """A photo that is refused before or while decoding; ``too_large`` for size limits."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message, code="photo-too-large" if too_large else "photo-unreadable")
        self.too_large = too_large


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def max_pixels() -> int:
    return _env_int("MARKCTL_PHOTO_MAX_PIXELS", 40_000_000)


def max_bytes() -> int:
    return _env_int("MARKCTL_PHOTO_MAX_BYTES", 40_000_000)


def photo_workers() -> int:
    return _env_int("MARKCTL_PHOTO_WORKERS", 2)


_slots_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None


def _semaphore() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(photo_workers())
        return _slots


@contextlib.contextmanager
def image_slot() -> Iterator[None]:
    """Hold one of the process's image-work slots (decode + check), waiting for one if needed."""
    sem = _semaphore()
    sem.acquire()
    try:
        yield
    finally:
        sem.release()


class Photo:
    """A decoded photo as greyscale floats in [0, 1], shrunk to at most WORK_LONG_SIDE pixels.

    ``scale`` is work pixels per original pixel (1.0 when no shrinking was needed), so a scale
    measured in work pixels converts back to the photo's own pixels.
    """

    def __init__(self, gray: npt.NDArray[np.float32], scale: float, size: tuple[int, int]) -> None:
        self.gray = gray
        self.scale = scale
        self.size = size  # original (width, height)


def _read_bytes(source: str | Path | BinaryIO, limit: int) -> bytes:
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise PhotoRejectedError(f"cannot read the photo {path}: {exc.strerror or exc}") from exc
        if size > limit:
            raise PhotoRejectedError(
                f"the photo is {size / 1e6:.1f} MB, more than the {limit / 1e6:.0f} MB allowed "
                "(MARKCTL_PHOTO_MAX_BYTES); send a smaller JPEG or PNG",
                too_large=True,
            )
        return path.read_bytes()
    data = source.read(limit + 1)
    if len(data) > limit:
        raise PhotoRejectedError(
            f"the photo is more than the {limit / 1e6:.0f} MB allowed (MARKCTL_PHOTO_MAX_BYTES); "
            "send a smaller JPEG or PNG",
            too_large=True,
        )
    return data


def open_photo(source: str | Path | BinaryIO) -> Photo:
    """Decode a PNG or JPEG within the limits, as greyscale, shrunk for work.

    Raises:
        PhotoRejectedError: too many bytes or pixels (``too_large``), not a PNG/JPEG, truncated or corrupt.
    """
    pixels_allowed = max_pixels()
    data = _read_bytes(source, max_bytes())
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is lower and answers with a clear message; Pillow's bomb
            # warning (an error under pytest's filterwarnings) would only pre-empt it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (far above ours) tripped on the header: its message has the size.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)) / 1e6:.0f} megapixels" if claimed else "too many pixels"
        raise PhotoRejectedError(
            f"the photo is {size}, more than the {pixels_allowed / 1e6:.0f} allowed "
            "(MARKCTL_PHOTO_MAX_PIXELS); it was not decoded",
            too_large=True,
        ) from exc
    except UnidentifiedImageError as exc:
        raise PhotoRejectedError("the photo is not a PNG or JPEG image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoRejectedError(f"the photo cannot be read: {exc}") from exc
    width, height = image.size
    if width * height > pixels_allowed:
        raise PhotoRejectedError(
            f"the photo is {width}x{height} pixels: {width * height / 1e6:.0f} megapixels, more than "
            f"the {pixels_allowed / 1e6:.0f} allowed (MARKCTL_PHOTO_MAX_PIXELS); it was not decoded",
            too_large=True,
        )
    if width < 16 or height < 16:
        raise PhotoRejectedError(f"the photo is only {width}x{height} pixels: too small to check a mark")
    factor = min(1.0, WORK_LONG_SIDE / max(width, height))
    try:
        if image.format == "JPEG" and factor < 1.0:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: less time and memory.
            image.draft("L", (max(1, round(width * factor)), max(1, round(height * factor))))
        gray = image.convert("L")
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoRejectedError(f"the photo is truncated or corrupt ({exc}); take or send it again") from exc
    if max(gray.size) > WORK_LONG_SIDE:
        f = WORK_LONG_SIDE / max(gray.size)
        gray = gray.resize(
            (max(1, round(gray.width * f)), max(1, round(gray.height * f))), Image.Resampling.BOX
        )
    array = np.asarray(gray, dtype=np.float32) / np.float32(255.0)
    return Photo(array, gray.width / width, (width, height))
