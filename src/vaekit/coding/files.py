"""Lossless image files by bits-back coding: the `.vkz` format, and file-level round trips.

Layout (little-endian; see FORMAT.md):
    magic b"VKZ\\x1a" | u16 format version | u32 header length | header (UTF-8 JSON)
    | ANS words (u32 each) | u32 CRC-32 of everything before it
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.checkpoint import weights_fingerprint
from vaekit.coding.bitsback import (
    FLOAT,
    MAX_PARTICLES,
    CodingError,
    CodingPlan,
    decode,
    encode,
)
from vaekit.coding.containers import Container, read_container, write_container
from vaekit.coding.exact_arithmetic import ARITHMETIC
from vaekit.coding.generic import GENERIC_CODER, generic_decode, generic_encode
from vaekit.coding.pixels import pixel_coder
from vaekit.data.sources import AS_STORED, ImageOptions
from vaekit.errors import DataError
from vaekit.fileio import atomic_write_bytes
from vaekit.models import LatentVariableModel

MAGIC = b"VKZ\x1a"
FORMAT_VERSION = 2  # plain bits-back (and Bit-Swap): what vaekit 0.1-0.3 write
IW_FORMAT_VERSION = 3  # importance-weighted bits-back (vaekit >= 0.3): other steps per batch
# An xz-compressed header, and a payload coded by bits-back or by xz, whichever is smaller
# (vaekit >= 0.3): written where xz wins or the header is large (an image folder's names).
PACKED_FORMAT_VERSION = 4
# Probabilities from exact arithmetic (vaekit >= 0.4): the same bits on any machine, thread
# count, batch and device. The header (xz) names the arithmetic and the exact network's digest.
EXACT_FORMAT_VERSION = 5
# Importance-weighted bits-back whose particle count grows with the stack, batch by batch
# (vaekit >= 0.5): the header (xz, as in 4 and 5) lists each batch's particles as `plan.ramp`.
RAMP_FORMAT_VERSION = 6
READABLE = {
    FORMAT_VERSION: "0.1",
    IW_FORMAT_VERSION: "0.3",
    PACKED_FORMAT_VERSION: "0.3",
    EXACT_FORMAT_VERSION: "0.4",
    RAMP_FORMAT_VERSION: "0.5",
}
_XZ_HEADER = (PACKED_FORMAT_VERSION, EXACT_FORMAT_VERSION, RAMP_FORMAT_VERSION)
PLAIN_HEADER_LIMIT = 2048  # bytes of JSON above which the header is worth compressing
_PREFIX = struct.Struct("<4sHI")
MAX_HEADER = 64 * 1024 * 1024


def _sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def to_model_values(images: np.ndarray, model: LatentVariableModel) -> tuple[np.ndarray, int]:
    """The values the model's pixel mode codes, and the factor back to the stored pixels
    (binary images may be stored as 0/1 or 0/255)."""
    pixel_coder(model.likelihood)  # refuses a model that cannot code, saying why
    try:
        return model.pixels.code_values(images)
    except DataError as e:
        raise CodingError(str(e)) from e


def compress(
    model: LatentVariableModel,
    images: np.ndarray,
    container: Container | None = None,
    progress: bool = False,
    batch_size: int = 100,
    particles: int = 1,
    fallback: bool = False,
    arithmetic: str = ARITHMETIC,
) -> bytes:
    """Losslessly code uint8 images (N, C, H, W), or (N, H, W) for one channel, to bytes.
    `particles` > 1: importance-weighted bits-back (the rate approaches the K-sample bound).
    `fallback`: also code the values with xz and keep whichever is smaller, so that the file
    is never more than a few bytes larger than xz's (`compress_file` and the CLI do).
    `arithmetic`: exact (format 5, decodes on any machine; the default) or "float", the
    coder of vaekit <= 0.3 (formats 2-4), kept to measure against."""
    images = np.asarray(images)
    if images.ndim == 3 and model.config.image_shape[0] == 1:
        images = images[:, None]
    values, one = to_model_values(images, model)
    words, plan = encode(
        model,
        values,
        batch_size=batch_size,
        progress=progress,
        particles=particles,
        arithmetic=arithmetic,
    )
    header: dict[str, Any] = {
        "fingerprint": weights_fingerprint(model),
        "likelihood": model.likelihood.name,
        "pixels": model.pixels.name,
        "shape": list(images.shape),
        "one_value": one,
        "sha256": _sha256(images),
        "plan": {
            "sizes": list(plan.sizes),
            "latent_bits": plan.latent_bits,
            "init_words": plan.init_words,
            # written only where used: files of plain bits-back keep their bytes
            **({"particles": plan.particles} if plan.particles > 1 else {}),
            **({"ramp": list(plan.ramp)} if plan.ramp else {}),
        },
        "n_words": int(words.size),
        "container": {"kind": container.kind, **container.meta} if container else {"kind": "array"},
    }
    payload = words.astype("<u4").tobytes()
    generic = generic_encode(values, pixel_coder(model.likelihood)) if fallback else None
    xz_wins = generic is not None and len(generic) < len(payload)
    exact = plan.arithmetic != FLOAT
    if exact:
        header["plan"]["arithmetic"] = plan.arithmetic
        header["exact_digest"] = plan.exact_digest
    hb = json.dumps(header, separators=(",", ":")).encode()
    if plan.ramp and not xz_wins:
        version = RAMP_FORMAT_VERSION
        hb, payload = _packed(header, payload, None)
    elif exact:
        version = EXACT_FORMAT_VERSION
        hb, payload = _packed(header, payload, generic if xz_wins else None)
    elif not xz_wins and len(hb) <= PLAIN_HEADER_LIMIT:
        # bits-back wins and the header is small: versions 2/3, byte for byte as before
        version = IW_FORMAT_VERSION if plan.particles > 1 else FORMAT_VERSION
    else:
        version = PACKED_FORMAT_VERSION
        hb, payload = _packed(header, payload, generic if xz_wins else None)
    body = _PREFIX.pack(MAGIC, version, len(hb)) + hb + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _packed(header: dict[str, Any], payload: bytes, generic: bytes | None) -> tuple[bytes, bytes]:
    """The xz-compressed header and the payload of formats 4 and 5: the generic coder's
    where it won (a file never more than a few bytes above xz's own), else bits-back's."""
    if generic is not None:
        del header["plan"], header["n_words"]
        header.pop("exact_digest", None)  # no network decodes this payload
        header["coder"], payload = GENERIC_CODER, generic
    else:
        header["coder"] = "bits-back"
    header["payload_bytes"] = len(payload)
    return lzma.compress(json.dumps(header, separators=(",", ":")).encode()), payload


def read_header(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """Validate a `.vkz` byte string and split it into header and ANS words."""
    if len(data) < _PREFIX.size + 4:
        raise CodingError("not a vaekit compressed file (too short)")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CodingError("not a vaekit compressed file (bad magic bytes)")
    if version not in READABLE:
        raise CodingError(
            f"format version {version} is not supported (this vaekit reads versions "
            f"{', '.join(map(str, READABLE))}; a newer vaekit wrote this file)"
        )
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise CodingError("the file is corrupt or truncated (CRC-32 mismatch)")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(data) - 4:
        raise CodingError("the file is corrupt (header length out of range)")
    try:
        raw_header = data[_PREFIX.size : _PREFIX.size + hlen]
        if version in _XZ_HEADER:
            dec = lzma.LZMADecompressor()
            raw_header = dec.decompress(raw_header, max_length=MAX_HEADER)
            if not dec.eof:
                raise ValueError("the header does not end")
        header = json.loads(raw_header)
        header["version"] = version
        shape = [int(s) for s in header["shape"]]
        if header.get("coder", "bits-back") == GENERIC_CODER:
            return _checked(header, shape), np.frombuffer(
                _payload(data, hlen, int(header["payload_bytes"])), dtype=np.uint8
            )
        n_words = int(header["n_words"])
        header["plan"] = _plan(header["plan"], header.get("exact_digest"))
        _checked(header, shape)
    except (ValueError, KeyError, TypeError, AttributeError, lzma.LZMAError) as e:
        raise CodingError(f"the file is corrupt (unreadable header: {e})") from e
    plan = header["plan"]
    if (
        (version == IW_FORMAT_VERSION and plan.particles == 1)
        or (version == FORMAT_VERSION and plan.particles > 1)
        or (version == RAMP_FORMAT_VERSION) != bool(plan.ramp)
    ):
        raise CodingError("the file is corrupt (its format version and coding plan disagree)")
    # format 6 allows either arithmetic; 5 is exact, 2-4 are float
    if version != RAMP_FORMAT_VERSION and (version == EXACT_FORMAT_VERSION) != (
        plan.arithmetic != FLOAT
    ):
        raise CodingError("the file is corrupt (its format version and arithmetic disagree)")
    if plan.n != shape[0]:
        raise CodingError("the file is corrupt (payload size does not match its header)")
    payload = _payload(data, hlen, 4 * n_words)
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def _checked(header: dict[str, Any], shape: list[int]) -> dict[str, Any]:
    """Every key decoding relies on must be there and well-typed, so that a damaged header
    (even one with a recomputed CRC) is a clean error rather than a crash later on."""
    if not (
        isinstance(header["fingerprint"], str)
        and isinstance(header["sha256"], str)
        and header["one_value"] in (1, 255)
        and isinstance(header["container"], dict)
        and len(shape) == 4
        and all(d > 0 for d in shape)
    ):
        raise ValueError("bad fingerprint, checksum, pixel value, shape or container fields")
    return header


def _payload(data: bytes, hlen: int, expected: int) -> bytes:
    payload = data[_PREFIX.size + hlen : -4]
    if len(payload) != expected:
        raise CodingError("the file is corrupt (payload size does not match its header)")
    return payload


def _plan(p: dict[str, Any], digest: str | None = None) -> CodingPlan:
    plan = CodingPlan(
        tuple(int(b) for b in p["sizes"]),
        int(p["latent_bits"]),
        int(p["init_words"]),
        int(p.get("particles", 1)),
        str(p.get("arithmetic", FLOAT)),
        None if digest is None else str(digest),
        tuple(int(k) for k in p.get("ramp", ())),
    )
    if plan.arithmetic not in (FLOAT, ARITHMETIC):
        raise ValueError(
            f"probabilities from arithmetic {plan.arithmetic!r}, which this vaekit does not have "
            f"(it has {ARITHMETIC}): a newer vaekit wrote this file"
        )
    if not 1 <= plan.particles <= MAX_PARTICLES:
        raise ValueError("invalid particle count")
    if any(b < 1 for b in plan.sizes) or not 0 <= plan.init_words < 2**20:
        raise ValueError("invalid batch sizes or initial words")
    if plan.ramp and (
        len(plan.ramp) != len(plan.sizes) or not all(1 <= k <= plan.particles for k in plan.ramp)
    ):
        raise ValueError("invalid particles per batch")
    if not 1 <= plan.latent_bits <= 16:
        raise ValueError("invalid latent precision")
    return plan


def decompress(model: LatentVariableModel, data: bytes, progress: bool = False) -> np.ndarray:
    """Decode bytes from `compress` back to the exact uint8 images (N, C, H, W)."""
    return _decode(model, *read_header(data), progress=progress)


def _decode(
    model: LatentVariableModel, header: dict[str, Any], words: np.ndarray, progress: bool = False
) -> np.ndarray:
    fingerprint = weights_fingerprint(model)
    if header["fingerprint"] != fingerprint:
        raise CodingError(
            f"this file was compressed with another model (weights fingerprint "
            f"{header['fingerprint'][:12]}…, this model {fingerprint[:12]}…)"
        )
    if list(header["shape"][1:]) != list(model.config.image_shape):
        raise CodingError("the file's image shape does not match this model")
    if header.get("coder") == GENERIC_CODER:
        values = generic_decode(words.tobytes(), header, pixel_coder(model.likelihood))
    else:
        values = decode(model, words, header["plan"], progress=progress)
    images = values * np.uint8(header["one_value"]) if header["one_value"] != 1 else values
    if _sha256(images) != header["sha256"]:
        raise CodingError(
            "decoded data fails its SHA-256 check: the coder's probabilities differed between "
            "compression and decompression (another machine or library version?)"
        )
    return images


def compress_file(
    model: LatentVariableModel,
    src: str | Path,
    dst: str | Path,
    progress: bool = False,
    ideal_k: int | None = None,
    particles: int = 1,
    fallback: bool = True,
    options: ImageOptions = AS_STORED,
) -> dict[str, Any]:
    """Compress an IDX file, `.npy` array or image folder into a `.vkz` file; `options` say
    how a folder is read (resized: the file then holds the resized pixels).

    Returns the counts and the rate in bits/dim; with `ideal_k` also the model's own -ELBO
    on the input (one pass, K=0) and, for ideal_k > 0, its importance-sampled -log p(x)."""
    images, container = read_container(src, options)
    data = compress(
        model, images, container, progress=progress, particles=particles, fallback=fallback
    )
    atomic_write_bytes(dst, data)
    header, payload = read_header(data)
    out: dict[str, Any] = {
        "images": len(images),
        "bytes": len(data),
        "coder": header.get("coder", "bits-back"),
        "payload_bytes": payload.nbytes,
        "header_bytes": len(data) - payload.nbytes,  # magic, version, header, CRC
        "raw_bytes": int(images.size),
        "bits_per_dim": 8 * len(data) / images.size,
    }
    if ideal_k is not None:
        out["ideal"] = ideal_rates(model, images, ideal_k, progress=progress)
    return out


def ideal_rates(
    model: LatentVariableModel, images: np.ndarray, k: int = 0, progress: bool = False
) -> dict[str, Any]:
    """The model's own -ELBO (and for k > 0, -log p(x) by importance sampling) on images it
    can code, in bits/dim: what the coder's rate is measured against."""
    from vaekit.evaluation import evaluate

    values, _ = to_model_values(np.asarray(images), model)
    values = values if values.ndim == 4 else values[:, None]
    return evaluate(
        model, torch.from_numpy(values), k=k, batch_size=100, progress=progress, coded=True
    )


def decompress_file(
    model: LatentVariableModel, src: str | Path, dst: str | Path, progress: bool = False
) -> list[str]:
    """Decode a `.vkz` file and write the images back in their original container."""
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        raise CodingError(f"cannot read {src}: {e.strerror}") from e
    header, words = read_header(data)
    images = _decode(model, header, words, progress=progress)
    try:
        return write_container(images, header["container"], dst)
    except (KeyError, TypeError, ValueError) as e:
        raise CodingError(f"the file is corrupt (bad container metadata: {e})") from e


__all__ = ["compress", "compress_file", "decompress", "decompress_file", "read_header"]
