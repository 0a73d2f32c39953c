"""Reader and writer for the IDX format of MNIST-style files (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit.errors import DataError

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class IdxFile:
    """An IDX array with what is needed to write the file back byte for byte."""

    array: np.ndarray
    gzipped: bool
    raw: bytes  # the decompressed file contents, header included


def _read_bytes(path: Path) -> tuple[bytes, bool]:
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    if blob[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(blob), True
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    return blob, False


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array, checking its header."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX element type 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(
            f"{name}: IDX header promises shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(body)} bytes: it is truncated or corrupt"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> IdxFile:
    """Read an IDX file (`.gz` or raw) and validate its header against its length."""
    path = Path(path)
    raw, gz = _read_bytes(path)
    return IdxFile(parse_idx(raw, str(path)), gz, raw)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as uncompressed IDX bytes."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = _CODES.get(np.dtype(dtype)) or _CODES.get(np.dtype(array.dtype))
    if code is None:
        raise DataError(f"IDX cannot store arrays of dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
