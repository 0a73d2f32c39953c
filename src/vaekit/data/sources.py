"""Finding and reading image data: named datasets, IDX files, `.npy` arrays, image folders.

Every loader returns uint8 arrays shaped (N, C, H, W); pixel modes are applied later
(`vaekit.data.pixels`), on the device, so a dataset is one compact tensor in memory.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit.data.idx import read_idx
from vaekit.errors import DataError, DataNote

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Debian's dataset-fashion-mnist package; checked last among the default places.
_DEBIAN_PLACES = {"fashion-mnist": [Path("/usr/share/dataset-fashion-mnist")]}


@dataclass
class Dataset:
    """A train/test pair of uint8 image arrays (N, C, H, W) with optional labels."""

    name: str
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    class_names: list[str] | None = None  # what the labels index, where the data names them

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        return tuple(self.train.shape[1:])  # type: ignore[return-value]


def default_data_dirs() -> list[Path]:
    """Places searched for named datasets, after `--data-dir` and `$VAEKIT_DATA`."""
    repo_root = Path(__file__).resolve().parents[3]
    places = [
        Path.cwd() / "../shared/data",
        repo_root.parent / "shared/data",
        Path.home() / ".cache/vaekit/data",
    ]
    seen: list[Path] = []
    for p in places:
        p = p.resolve()
        if p not in seen:
            seen.append(p)
    return seen


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The ordered list of roots: `data_dir`, then `$VAEKIT_DATA`, then the defaults."""
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get("VAEKIT_DATA"):
        dirs.extend(Path(p) for p in os.environ["VAEKIT_DATA"].split(os.pathsep) if p)
    return dirs + default_data_dirs()


def find_split_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem.gz` or `folder/stem`, whichever exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate_named(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Find the folder holding the IDX files of a named dataset, or explain where we looked."""
    looked: list[Path] = []
    roots = search_dirs(data_dir)
    candidates = [r / name for r in roots] + [r for r in roots if r.name == name]
    candidates += _DEBIAN_PLACES.get(name, [])
    for folder in candidates:
        looked.append(folder)
        if folder.is_dir() and find_split_file(folder, SPLIT_FILES["train"][0]):
            return folder
    where = "\n  ".join(str(p) for p in looked)
    raise DataError(
        f"dataset {name!r} not found. Looked in:\n  {where}\n"
        f"Point vaekit at a folder that contains {name}/ (the IDX .gz files) with "
        f"--data-dir DIR or the VAEKIT_DATA environment variable, or pass --data PATH."
    )


def verify_checksums(folder: Path, files: list[Path]) -> None:
    """Check `files` against `folder/SHA256SUMS` when that file exists."""
    sums_file = folder / "SHA256SUMS"
    if not sums_file.is_file():
        return
    expected: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            expected[parts[1].lstrip("*")] = parts[0].lower()
    for f in files:
        want = expected.get(f.name)
        if want is None:
            continue
        got = hashlib.sha256(f.read_bytes()).hexdigest()
        if got != want:
            raise DataError(
                f"{f}: SHA256 checksum mismatch (expected {want[:12]}…, got {got[:12]}…); "
                f"the file is corrupt or was replaced: download it again"
            )


def as_nchw(images: np.ndarray, source: str) -> np.ndarray:
    """Images as (N, C, H, W) from (N, H, W), (N, C, H, W) or (N, H, W, C); else a DataError."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise DataError(
            f"{source}: expected images shaped (N, H, W), (N, C, H, W) or (N, H, W, C) with "
            f"1, 3 or 4 channels; got {images.shape}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{source}: contains no images")
    return np.ascontiguousarray(images)


def to_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """Accept uint8, or floats in [0, 1]; anything else is refused with the reason."""
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(f"{source}: contains NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{source}: float images must lie in [0, 1]; found values in [{lo:g}, {hi:g}]"
            )
        return np.round(images * 255.0).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: integer pixels must lie in [0, 255]; found [{lo}, {hi}]")
        return images.astype(np.uint8)
    raise DataError(f"{source}: unsupported dtype {images.dtype}")


def read_named(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load MNIST or Fashion-MNIST from the first place that has it, verifying checksums."""
    folder = locate_named(name, data_dir)
    arrays = {}
    files = []
    for split, stems in SPLIT_FILES.items():
        for stem in stems:
            f = find_split_file(folder, stem)
            if f is None:
                raise DataError(f"{folder}: missing {stem}(.gz) for the {split} split")
            files.append(f)
    verify_checksums(folder, files)
    for f in files:
        arrays[f.name.split(".")[0]] = read_idx(f).array
    train, test = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    train_y, test_y = arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    if len(train) != len(train_y) or len(test) != len(test_y):
        raise DataError(f"{folder}: image and label files disagree on the number of examples")
    return Dataset(name, as_nchw(train, name), as_nchw(test, name), train_y, test_y)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_folder_layout(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The image files of a folder in a deterministic order, and their labels: images at the
    top level (no labels), or the usual class layout `CLASS/*.png` (labels index the sorted
    class names, which are returned too)."""
    top = _image_files(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and _image_files(d))
    if top and classes:
        raise DataError(
            f"{folder}: holds images both at its top level and in class subfolders "
            f"({', '.join(d.name for d in classes[:3])}); use one layout"
        )
    if top:
        return top, None, []
    if not classes:
        raise DataError(
            f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or in class "
            f"subfolders of it"
        )
    paths, labels = [], []
    for i, d in enumerate(classes):
        files = _image_files(d)
        paths += files
        labels += [i] * len(files)
    return paths, np.array(labels, dtype=np.int64), [d.name for d in classes]


@dataclass(frozen=True)
class ImageOptions:
    """How a folder of image files becomes one array: `size` (H, W) resizes each image's
    shorter side to cover it and centre-crops (torchvision's Resize + CenterCrop);
    `skip_bad` skips unreadable files (counted in a note) instead of refusing the folder."""

    size: tuple[int, int] | None = None
    skip_bad: bool = False


AS_STORED = ImageOptions()  # every image as it is, a bad file refused


def parse_image_size(text: str | int | list[int] | tuple[int, ...] | None):
    """(H, W) from "32", "32x48", 32 or [32, 48]; None stays None; else a DataError."""
    if text is None:
        return None
    if isinstance(text, int):
        parts = [text]
    elif isinstance(text, list | tuple):
        parts = list(text)
    else:
        try:
            parts = [int(p) for p in str(text).lower().split("x")]
        except ValueError:
            parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise DataError(f"image size {text!r}: give one size (32) or HxW (32x48), each >= 1")
    return int(parts[0]), int(parts[1])


def _cover_and_crop(im, size: tuple[int, int]):
    """`im` resized so that it covers `size` (H, W) with its aspect kept, then centre-cropped."""
    from PIL import Image

    h, w = size
    scale = max(h / im.height, w / im.width)
    new = (max(w, round(im.width * scale)), max(h, round(im.height * scale)))
    if new != im.size:
        im = im.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    return im.crop((left, top, left + w, top + h))


_DEEP_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow's 16- and 32-bit grey


def _to_8bit(im):
    """A 16- or 32-bit grey image as 8-bit grey, its full range scaled to 0..255 (Pillow's
    own conversion clips every value above 255)."""
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or arr.max() <= 65535 else float(2**32 - 1)
    return Image.fromarray(np.round(np.clip(arr, 0, top) * (255.0 / top)).astype(np.uint8))


def _read_image(p: Path, options: ImageOptions) -> tuple[np.ndarray | None, bool, bool]:
    """One image file as uint8 (H, W) grey or (H, W, 3) colour, upright (EXIF), whether it had
    an alpha channel and whether it had more than 8 bits per pixel; (None, False, False) for
    an unreadable file that `skip_bad` skips."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as raw:
                raw.load()
                im = ImageOps.exif_transpose(raw)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{p}: refused as a decompression bomb ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if options.skip_bad:
            return None, False, False
        raise DataError(f"{p}: not a readable image ({e}); --skip-bad skips such files") from e
    alpha = "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
    deep = im.mode in _DEEP_GREY_MODES
    gray = deep or im.mode in ("1", "L", "LA")
    im = _to_8bit(im) if deep else im.convert("L" if gray else "RGB")
    if options.size is not None:
        im = _cover_and_crop(im, options.size)
    arr = np.asarray(im)
    if not gray and (arr == arr[..., :1]).all():  # palette or RGB images of greys
        arr = arr[..., 0]
    return arr, alpha, deep


def _note(text: str) -> None:
    warnings.warn(text, DataNote, stacklevel=3)


def read_image_folder(
    folder: Path, options: ImageOptions = AS_STORED
) -> tuple[np.ndarray, list[str]]:
    """Read every image of a folder (flat, or in class subfolders) into one uint8
    (N, C, H, W) array; returns it with the images' paths relative to the folder."""
    images, names, _, _ = read_labelled_folder(folder, options)
    return images, names


def read_labelled_folder(
    folder: Path, options: ImageOptions = AS_STORED
) -> tuple[np.ndarray, list[str], np.ndarray | None, list[str]]:
    """Images, relative paths, labels (None for a flat folder) and class names."""
    paths, labels, classes = image_folder_layout(folder)
    images, kept, alpha, deep = [], [], 0, 0
    for i, p in enumerate(paths):
        arr, had_alpha, was_deep = _read_image(p, options)
        if arr is not None:
            images.append(arr)
            kept.append(i)
            alpha += had_alpha
            deep += was_deep
    if len(kept) < len(paths):
        bad = [paths[i] for i in range(len(paths)) if i not in set(kept)]
        _note(f"{folder}: skipped {len(bad)} unreadable file(s) (--skip-bad), e.g. {bad[0]}")
        if not kept:
            raise DataError(f"{folder}: no readable image")
        paths = [paths[i] for i in kept]
        labels = None if labels is None else labels[kept]
    if alpha:
        _note(f"{folder}: {alpha} image(s) had an alpha channel, dropped (colour kept as stored)")
    if deep:
        _note(f"{folder}: {deep} image(s) had 16 or 32 bits per pixel, scaled to 8 bits")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        if len({s[:2] for s in shapes}) > 1:
            raise DataError(
                f"{folder}: images differ in size ({sorted(shapes)[:3]}…); pass --image-size 32 "
                "(or HxW) to resize each one's shorter side and centre-crop"
            )
        images = [im if im.ndim == 3 else np.repeat(im[..., None], 3, -1) for im in images]
    names = [p.relative_to(folder).as_posix() for p in paths]
    return as_nchw(np.stack(images), str(folder)), names, labels, classes


def read_images(path: str | os.PathLike, options: ImageOptions = AS_STORED) -> np.ndarray:
    """Read an image set from a `.npy` array, an IDX file or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_image_folder(path, options)[0]
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from e
        return as_nchw(to_uint8(arr, str(path)), str(path))
    return as_nchw(to_uint8(read_idx(path).array, str(path)), str(path))


def read_table(path: str | os.PathLike) -> np.ndarray:
    """Read a CSV of numeric rows (an optional header line is skipped) as float64 (N, D)."""
    path = Path(path)
    try:
        with open(path) as f:
            first = f.readline()
        has_header = any(c.isalpha() for c in first.replace("e", "").replace("E", ""))
        table = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a numeric CSV table ({e})") from e
    if table.shape[0] == 0:
        raise DataError(f"{path}: contains no rows")
    bad = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: rows {bad[:10].tolist()} contain NaN or infinite values")
    return table


def read_examples(
    path: str | os.PathLike, options: ImageOptions = AS_STORED
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (IDX, .npy, image folder) or tabular rows (.csv) to score, with their labels
    where an IDX image file has its labels file beside it or a folder has class subfolders."""
    p = Path(path)
    if p.suffix == ".csv":
        return read_table(p), None
    if p.is_dir():
        images, _, labels, _ = read_labelled_folder(p, options)
        return images, labels
    labels = None
    sibling = p.with_name(p.name.replace("images-idx3", "labels-idx1"))
    if sibling != p and sibling.exists():
        labels = read_idx(sibling).array
    return read_images(p), labels


def split_holdout(images: np.ndarray, fraction: float = 0.1, seed: int = 0):
    """A fixed random split into (train, test): the same seed always gives the same split."""
    train, test = holdout_indices(len(images), fraction, seed)
    return images[train], images[test]


def holdout_indices(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Indices of a fixed random (train, test) split of n examples."""
    if n < 2:
        raise DataError("need at least 2 images to hold some out for testing")
    n_test = max(1, int(round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:], perm[:n_test]
