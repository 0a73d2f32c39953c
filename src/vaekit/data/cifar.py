"""CIFAR-10 from a tar of JPEG files in class layout (`train/CLASS/*.jpg`, `test/CLASS/*.jpg`),
as `../shared/data/cifar10-jpeg/` holds it, decoded once into a cache outside the repository.

The cache (`$VAEKIT_CACHE`, else `~/.cache/vaekit/`) holds one `.npz` per tar: the uint8
arrays, their labels and class names, the SHA-256 of the pixels, and the Pillow and libjpeg
versions that decoded them. A cache whose pixels no longer match their digest, or that another
decoder made, is rebuilt: JPEG decoders may differ in their last bits, and every number
measured on these pixels depends on them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data.sources import Dataset, search_dirs, verify_checksums
from vaekit.errors import DataError
from vaekit.fileio import atomic_path

FOLDER = "cifar10-jpeg"
TAR = "cifar10-jpeg.tar"
SPLITS = ("train", "test")
ARRAYS = (*SPLITS, *(f"{s}_labels" for s in SPLITS))  # what a cache file holds, beside "meta"


def cache_dir() -> Path:
    """Where decoded datasets are kept: `$VAEKIT_CACHE`, else `~/.cache/vaekit`."""
    return Path(os.environ.get("VAEKIT_CACHE") or Path.home() / ".cache" / "vaekit")


def locate_tar(data_dir: str | os.PathLike | None = None) -> Path:
    """The CIFAR-10 tar on the data path, or a DataError that says where it looked."""
    looked = []
    for root in search_dirs(data_dir):
        for folder in (root / FOLDER, root):
            looked.append(folder)
            if (folder / TAR).is_file():
                return folder / TAR
    where = "\n  ".join(str(p) for p in dict.fromkeys(looked))
    raise DataError(
        f"dataset 'cifar10' not found: no {FOLDER}/{TAR} in\n  {where}\n"
        "Point vaekit at the folder that holds cifar10-jpeg/ with --data-dir DIR or "
        "VAEKIT_DATA, or pass a folder of images with --data PATH."
    )


def decoder_versions() -> dict[str, str]:
    """The versions of what turns JPEG bytes into pixels here."""
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "libjpeg": str(features.version("jpg"))}


def _pixels_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(np.ascontiguousarray(arrays[split]).tobytes())
        h.update(np.ascontiguousarray(arrays[f"{split}_labels"]).tobytes())
    return h.hexdigest()


def decode_tar(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every image of the tar as uint8 (N, 3, H, W) per split, with labels indexing the
    sorted class names. Members are read in sorted path order, so the order is the tar's
    layout, not its packing."""
    from PIL import Image, UnidentifiedImageError

    images: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in SPLITS}
    try:
        with tarfile.open(path) as tf:
            for member in tf:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 3 or parts[0] not in images:
                    continue
                data = tf.extractfile(member).read()
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        arr = np.asarray(im.convert("RGB"))
                except (UnidentifiedImageError, OSError) as e:
                    raise DataError(f"{path}: {member.name} is not a readable image ({e})") from e
                images[parts[0]].append((member.name, arr))
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable tar ({e})") from e
    classes = sorted({Path(name).parts[1] for split in SPLITS for name, _ in images[split]})
    if not classes or not all(images.values()):
        raise DataError(f"{path}: expected train/CLASS/*.jpg and test/CLASS/*.jpg")
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        items = sorted(images[split], key=lambda item: item[0])
        if len({a.shape for _, a in items}) != 1:
            raise DataError(f"{path}: the {split} images differ in size")
        arrays[split] = np.ascontiguousarray(np.stack([a for _, a in items]).transpose(0, 3, 1, 2))
        arrays[f"{split}_labels"] = np.array(
            [classes.index(Path(name).parts[1]) for name, _ in items], dtype=np.int64
        )
    return arrays, classes


def _read_cache(path: Path, expect: dict[str, Any]) -> tuple[dict, list[str]] | None:
    """The cached arrays, or None where the cache is missing, stale or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ARRAYS}
    except (OSError, ValueError, KeyError):
        return None
    if {k: meta.get(k) for k in expect} != expect:
        return None
    if meta.get("pixels_sha256") != _pixels_digest(arrays):
        return None
    return arrays, list(meta["classes"])


def read_cifar10(data_dir: str | os.PathLike | None = None) -> Dataset:
    """CIFAR-10's train and test splits (uint8, (N, 3, 32, 32)) with labels, decoded once."""
    tar = locate_tar(data_dir)
    verify_checksums(tar.parent, [tar])
    tar_sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    expect = {"tar_sha256": tar_sha, **decoder_versions()}
    cached = cache_dir() / f"cifar10-{tar_sha[:16]}.npz"
    found = _read_cache(cached, expect)
    if found is None:
        arrays, classes = decode_tar(tar)
        meta = {**expect, "classes": classes, "pixels_sha256": _pixels_digest(arrays)}
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        found = arrays, classes
    arrays, classes = found
    return Dataset(
        "cifar10",
        arrays["train"],
        arrays["test"],
        arrays["train_labels"],
        arrays["test_labels"],
        class_names=classes,
    )
