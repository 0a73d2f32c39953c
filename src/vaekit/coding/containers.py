"""Containers: how images were stored before coding, so that decoding writes them back the
same way. A container kind (an IDX file, a `.npy` array, a folder of images, a bare array)
is a class registered in `CONTAINERS` by the name `.vkz` headers store."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from vaekit.data.idx import parse_idx, read_idx
from vaekit.data.sources import (
    AS_STORED,
    IMAGE_SUFFIXES,
    ImageOptions,
    read_image_folder,
    read_images,
)
from vaekit.errors import CodingError
from vaekit.fileio import atomic_write_bytes, png_bytes
from vaekit.registry import Registry

_PIXEL_DTYPE = str(np.dtype(np.uint8))  # what decoded pixels are


@dataclass
class Container:
    """How the pixels were stored, so they can be written back the same way."""

    kind: str  # a name in CONTAINERS
    meta: dict[str, Any]


class ContainerKind:
    """Writes decoded images (N, C, H, W) back as their container held them."""

    described: str | None = None  # "an IDX file": what a `.npy` output replaces
    lost_in_npy = ""  # what a `.npy` output of it does not keep

    def as_array(self, images: np.ndarray, container: dict[str, Any]) -> np.ndarray:
        """The images as this container shapes them, for a `.npy` output."""
        return images

    def write(  # pragma: no cover
        self, images: np.ndarray, container: dict[str, Any], out: Path
    ) -> list[str]:
        """Write `out`; returns notes for the user."""
        raise NotImplementedError


CONTAINERS: Registry[type[ContainerKind]] = Registry("container")


def _channels_last(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) as image files hold them: (N, H, W) grey, (N, H, W, C) colour."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def _safe_relative_name(name: object) -> bool:
    """An image path inside the output folder: relative, no '..', at most one class folder."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    parts = Path(name).parts
    return (
        not Path(name).is_absolute()
        and len(parts) <= 2
        and all(p not in ("", ".", "..") for p in parts)
        and Path(name).suffix.lower() in IMAGE_SUFFIXES
    )


@CONTAINERS.register("folder")
class ImageFolder(ContainerKind):
    """A folder of image files (class subfolders kept), written back as lossless PNG data."""

    described = "a folder of images"
    lost_in_npy = " (the image names are not kept)"

    @override
    def as_array(self, images, container):
        return _channels_last(images)

    @override
    def write(self, images, container, out):
        names = container["names"]
        if len(names) != len(images) or not all(_safe_relative_name(n) for n in names):
            raise CodingError("the file is corrupt (bad image names in its header)")
        out.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        written = _png_names(names)
        renamed = [(a, b) for a, b in zip(names, written, strict=True) if a != b]
        if renamed:
            notes.append(
                f"{len(renamed)} image(s) written as lossless PNG files under their stems "
                f"(e.g. {renamed[0][0]} -> {renamed[0][1]})"
            )
        for name, arr in zip(written, _channels_last(images), strict=True):
            atomic_write_bytes(out / name, png_bytes(arr, optimize=True))
        return notes


def _png_names(names: list[str]) -> list[str]:
    """Each name with the suffix `.png`, in the same folder and order; where two would meet
    (a.jpg and a.png), the original name with `.png` appended instead."""
    stems = [Path(n).with_suffix(".png").as_posix() for n in names]
    taken = {s for s in stems if stems.count(s) > 1}
    return [f"{n}.png" if s in taken and s != n else s for n, s in zip(names, stems, strict=True)]


def _idx_bytes(images: np.ndarray, container: dict[str, Any]) -> tuple[bytes, np.ndarray]:
    """The decoded IDX file's bytes (its stored header, then the pixels) and the array they
    parse to, which checks that header and body agree."""
    raw = bytes.fromhex(container["idx_header"]) + np.ascontiguousarray(images).tobytes()
    return raw, parse_idx(raw, "decoded IDX")


def _gzip_recipe(blob: bytes, raw: bytes) -> dict[str, Any] | None:
    """Settings with which zlib rebuilds this gzip stream exactly, if any."""
    flags = blob[3]
    end = 10
    if flags & ~0x08:  # only the FNAME flag is handled
        return None
    if flags & 0x08:
        end = blob.index(b"\0", 10) + 1
    body = blob[end:-8]
    for level in (6, 9, 1, 2, 3, 4, 5, 7, 8):
        for mem in (8, 9):
            c = zlib.compressobj(level, zlib.DEFLATED, -15, mem)
            if c.compress(raw) + c.flush() == body:
                return {"gzip_header": blob[:end].hex(), "level": level, "memlevel": mem}
    return None


@CONTAINERS.register("idx")
class IdxFile(ContainerKind):
    """An IDX file, gzipped or not; a gzip stream is rebuilt byte for byte where zlib can."""

    described = "an IDX file"

    @override
    def as_array(self, images, container):
        return _idx_bytes(images, container)[1]  # the IDX's own shape, e.g. (N, 28, 28)

    @override
    def write(self, images, container, out):
        raw = _idx_bytes(images, container)[0]
        notes: list[str] = []
        if container.get("gzipped"):
            recipe = container.get("gzip")
            if recipe:
                c = zlib.compressobj(recipe["level"], zlib.DEFLATED, -15, recipe["memlevel"])
                body = c.compress(raw) + c.flush()
                trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
                atomic_write_bytes(out, bytes.fromhex(recipe["gzip_header"]) + body + trailer)
                return notes
            notes.append(
                "the original was gzip-compressed by a gzip whose stream zlib cannot "
                "reproduce; wrote the IDX contents uncompressed (identical bytes to "
                "`gunzip` of the original)"
            )
        atomic_write_bytes(out, raw)
        return notes


def _save_npy(arr: np.ndarray, out: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(out, buf.getvalue())


@CONTAINERS.register("array")
class BareArray(ContainerKind):
    """Images given as an array from Python: written as a `.npy` of (N, C, H, W)."""

    @override
    def write(self, images, container, out):
        _save_npy(images, out)
        return []


@CONTAINERS.register("npy")
class NpyFile(ContainerKind):
    """A `.npy` file: its shape restored; pixels are written as uint8."""

    @override
    def write(self, images, container, out):
        shape = tuple(container["shape"])
        arr = images.reshape(shape) if int(np.prod(shape)) == images.size else images
        notes = []
        if container.get("dtype") != _PIXEL_DTYPE:
            notes.append(f"the original array was {container.get('dtype')}; wrote uint8 pixels")
        _save_npy(arr, out)
        return notes


def read_container(
    path: str | Path, options: ImageOptions = AS_STORED
) -> tuple[np.ndarray, Container]:
    """Read images and remember how they were stored (`options`: how a folder is read)."""
    path = Path(path)
    if path.is_dir():
        images, names = read_image_folder(path, options)
        return images, Container("folder", {"names": names})
    if path.suffix == ".npy":
        images = read_images(path)
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return images, Container("npy", {"shape": list(arr.shape), "dtype": str(arr.dtype)})
    f = read_idx(path)
    if f.array.dtype != np.uint8:
        raise CodingError(f"{path}: only uint8 IDX files can be coded")
    header_len = len(f.raw) - f.array.nbytes
    meta: dict[str, Any] = {
        "idx_header": f.raw[:header_len].hex(),
        "gzipped": f.gzipped,
        "name": path.name,
    }
    if f.gzipped:
        meta["gzip"] = _gzip_recipe(path.read_bytes(), f.raw)
    images = f.array if f.array.ndim == 4 else f.array.reshape(len(f.array), 1, *f.array.shape[1:])
    return np.ascontiguousarray(images), Container("idx", meta)


def write_container(images: np.ndarray, container: dict[str, Any], out: str | Path) -> list[str]:
    """Write decoded images in their original container, or as a NumPy array where `out` is
    named `.npy` (what its name promises); returns notes for the user."""
    out = Path(out)
    name = container.get("kind", "array")
    kind = CONTAINERS.get(name if name in CONTAINERS else "array")()
    if out.suffix.lower() == ".npy" and kind.described:
        note = (
            f"the original was {kind.described}; wrote a .npy array, as the output's name asks"
            + kind.lost_in_npy
            + "; name it otherwise to get the original container back"
        )
        _save_npy(kind.as_array(images, container), out)
        return [note]
    return kind.write(images, container, out)
