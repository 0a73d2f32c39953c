"""Named datasets (`--data mnist`, `fashion-mnist`, `cifar10`), each a registered reader, and
`load_dataset`, which also takes a path: an IDX folder, an array, or a folder of images."""

from __future__ import annotations

import os
from pathlib import Path

from typing_extensions import override

from vaekit.data.cifar import read_cifar10
from vaekit.data.idx import read_idx
from vaekit.data.sources import (
    AS_STORED,
    SPLIT_FILES,
    Dataset,
    ImageOptions,
    as_nchw,
    find_split_file,
    holdout_indices,
    read_images,
    read_labelled_folder,
    read_named,
    split_holdout,
    verify_checksums,
)
from vaekit.errors import DataError
from vaekit.registry import Registry


class NamedDataset:
    """A dataset `--data NAME` finds on the data path."""

    def load(self, data_dir: str | os.PathLike | None = None) -> Dataset:  # pragma: no cover
        """The dataset's train and test splits, from the first place on the path holding it."""
        raise NotImplementedError


DATASETS: Registry[type[NamedDataset]] = Registry("dataset")


@DATASETS.register("mnist")
class Mnist(NamedDataset):
    """MNIST's four IDX files (LeCun et al. 1998)."""

    @override
    def load(self, data_dir=None):
        return read_named("mnist", data_dir)


@DATASETS.register("fashion-mnist")
class FashionMnist(NamedDataset):
    """Fashion-MNIST's four IDX files (Xiao et al. 2017)."""

    @override
    def load(self, data_dir=None):
        return read_named("fashion-mnist", data_dir)


@DATASETS.register("cifar10")
class Cifar10(NamedDataset):
    """CIFAR-10 as JPEG files in a tar (`vaekit.data.cifar`), decoded once into a cache."""

    @override
    def load(self, data_dir=None):
        return read_cifar10(data_dir)


def load_dataset(
    spec: str, data_dir: str | os.PathLike | None = None, options: ImageOptions = AS_STORED
) -> Dataset:
    """Load a named dataset, a folder of IDX files, or any image set (with a 10% test holdout);
    `options` say how a folder of image files is read (resized, bad files skipped)."""
    if spec in DATASETS:
        return DATASETS.get(spec)().load(data_dir)
    path = Path(spec)
    if path.is_dir() and find_split_file(path, SPLIT_FILES["train"][0]):
        files = [find_split_file(path, s) for stems in SPLIT_FILES.values() for s in stems]
        present = [f for f in files if f is not None]
        verify_checksums(path, present)
        train = as_nchw(read_idx(present[0]).array, str(present[0]))
        test_f = find_split_file(path, SPLIT_FILES["test"][0])
        if test_f is not None:
            return Dataset(path.name, train, as_nchw(read_idx(test_f).array, str(test_f)))
        tr, te = split_holdout(train)
        return Dataset(path.name, tr, te)
    if not path.exists():
        raise DataError(
            f"--data {spec!r}: not a named dataset ({', '.join(DATASETS)}) and no such "
            f"file or folder"
        )
    if path.is_dir():
        images, _, labels, classes = read_labelled_folder(path, options)
        tr, te = holdout_indices(len(images))
        if labels is None:
            return Dataset(path.name, images[tr], images[te])
        return Dataset(path.name, images[tr], images[te], labels[tr], labels[te], classes)
    tr, te = split_holdout(read_images(path, options))
    return Dataset(path.stem, tr, te)
