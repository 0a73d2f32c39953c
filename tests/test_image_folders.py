"""A user's own image folder, flat or in the usual CLASS/*.png layout."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_digits, tiny_model
from vaekit.coding.files import compress_file, decompress_file
from vaekit.data.datasets import load_dataset
from vaekit.data.sources import read_examples
from vaekit.errors import DataError


def _class_folder(root, per_class=12):
    imgs = synthetic_digits(3 * per_class, 12)
    for c, name in enumerate(["cat", "ant", "bee"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(imgs[c * per_class + i]).save(root / name / f"{i:03d}.png")
    return imgs


def test_class_subfolders_give_labels_in_sorted_class_order(tmp_path):
    _class_folder(tmp_path / "d")
    ds = load_dataset(str(tmp_path / "d"))
    assert len(ds.train) + len(ds.test) == 36 and ds.train_labels is not None
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    assert sorted(np.bincount(labels).tolist()) == [12, 12, 12]
    x, y = read_examples(tmp_path / "d")
    # ant=0, bee=1, cat=2: sorted names; the cat images were written first
    assert y.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    assert np.array_equal(x[24:, 0], synthetic_digits(36, 12)[:12])


def test_a_folder_mixing_layouts_is_refused(tmp_path):
    _class_folder(tmp_path / "d")
    Image.fromarray(synthetic_digits(1, 12)[0]).save(tmp_path / "d" / "stray.png")
    with pytest.raises(DataError, match="both at its top level and in class subfolders"):
        load_dataset(str(tmp_path / "d"))


def test_compression_restores_the_class_tree(tmp_path):
    _class_folder(tmp_path / "d", per_class=4)
    model = tiny_model("8bit", shape=(1, 12, 12))
    compress_file(model, tmp_path / "d", tmp_path / "d.vkz")
    decompress_file(model, tmp_path / "d.vkz", tmp_path / "back")
    for p in sorted((tmp_path / "d").rglob("*.png")):
        q = tmp_path / "back" / p.relative_to(tmp_path / "d")
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q)))
    assert len(list((tmp_path / "back").rglob("*.png"))) == 12


@pytest.mark.parametrize("name", ["../evil.png", "/tmp/evil.png", "a/b/c.png", "x.exe", ""])
def test_decompression_never_writes_outside_its_folder(tmp_path, name):
    from vaekit.coding.bitsback import CodingError
    from vaekit.coding.files import write_container

    images = np.zeros((1, 1, 4, 4), np.uint8)
    with pytest.raises(CodingError, match="bad image names"):
        write_container(images, {"kind": "folder", "names": [name]}, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()
