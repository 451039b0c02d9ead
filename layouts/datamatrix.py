"""Data Matrix ECC 200 symbols, encoded with pyStrich and verified with zxing-cpp.

Two independent libraries on purpose: the symbol is *encoded* by pyStrich (a pure-Python
ISO/IEC 16022 implementation) and the rendered preview is *decoded* by zxing-cpp (the C++ ZXing
port), so an encoder bug cannot be hidden by the same library reading its own output back
(issue #3 "Tests"). Limits come from the rule profile's ``[code]`` table (DM-130).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from markctl.errors import LayoutError

__all__ = ["DataMatrixSymbol", "decode_datamatrix", "encode_datamatrix"]

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class DataMatrixSymbol:
    """An encoded symbol: ``modules[row, col]`` is True for a dark module; row 0 is the top row."""

    content: str
    modules: BoolArray

    @property
    def size(self) -> tuple[int, int]:
        """(rows, columns) of modules, without the quiet zone."""
        rows, cols = self.modules.shape
        return int(rows), int(cols)


@lru_cache(maxsize=4096)
def encode_datamatrix(content: str) -> DataMatrixSymbol:
    """Encode ``content`` (printable ASCII) as a square ECC 200 symbol.

    Raises:
        LayoutError: empty or non-ASCII content (``field="options.datamatrix"``).
    """
    if not content or not all(" " <= ch <= "~" for ch in content):
        raise LayoutError(
            f"Data Matrix content must be printable ASCII, got {content!r}", field="options.datamatrix"
        )
    from pystrich.datamatrix import DataMatrixData, DataMatrixEncoder

    encoder = DataMatrixEncoder(DataMatrixData(content, encoding="ascii"), quiet_zone=0)
    image = encoder.get_pilimage(1)  # one pixel per module, no quiet zone: the module matrix itself
    modules = np.asarray(image.convert("L")) < 128
    modules.setflags(write=False)
    return DataMatrixSymbol(content, modules)


def decode_datamatrix(image: Any) -> list[str]:
    """Texts of every Data Matrix that zxing-cpp finds in a PIL image or numpy array."""
    import zxingcpp

    results = zxingcpp.read_barcodes(image)
    return [r.text for r in results if r.format == zxingcpp.BarcodeFormat.DataMatrix]
