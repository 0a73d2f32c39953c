"""The generic fallback coder: `vaekit compress` codes its input with xz too and keeps the
smaller, so a file is never more than its header larger than `xz -9e`'s; a file then says
`"coder": "xz"` in its header (FORMAT.md)."""

from __future__ import annotations

import lzma
from typing import Any

import numpy as np

from vaekit.coding.pixels import PixelCoder
from vaekit.errors import CodingError

GENERIC_CODER = "xz"


def generic_encode(values: np.ndarray, pixels: PixelCoder) -> bytes:
    """The values coded by xz at its strongest setting, as the pixel coder packs them."""
    return lzma.compress(pixels.generic_bytes(values), preset=9 | lzma.PRESET_EXTREME)


def generic_decode(payload: bytes, header: dict[str, Any], pixels: PixelCoder) -> np.ndarray:
    """The values of a generic payload, checked against the header's shape."""
    shape = tuple(header["shape"])
    size = int(np.prod(shape))
    expect = pixels.generic_size(size)
    try:
        dec = lzma.LZMADecompressor()
        raw = dec.decompress(payload, max_length=expect + 1)
    except lzma.LZMAError as e:
        raise CodingError(f"the file's {GENERIC_CODER} payload does not decode ({e})") from e
    if len(raw) != expect or not dec.eof:
        raise CodingError("the file is corrupt (its generic payload has the wrong length)")
    arr = np.frombuffer(raw, dtype=np.uint8)
    values = pixels.from_generic_bytes(arr, size)
    return values.reshape(shape).copy()
