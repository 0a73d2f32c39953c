"""`--data cifar10`: a tar of JPEG files in class layout, checked against SHA256SUMS, decoded
once into a cache that carries its pixels' SHA-256 and its decoder's versions."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from vaekit.data import cifar, load_dataset
from vaekit.errors import DataError

CLASSES = ("cat", "airplane")


def _jpeg(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def tar_root(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / cifar.FOLDER
    folder.mkdir(parents=True)
    tar = folder / cifar.TAR
    with tarfile.open(tar, "w") as tf:
        # packed out of order: the split's order is its sorted paths, not the packing
        for split, n in (("test", 2), ("train", 3)):
            for c in CLASSES:
                for i in reversed(range(n)):
                    data = _jpeg(rng)
                    info = tarfile.TarInfo(f"{split}/{c}/{i:04d}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  {cifar.TAR}\n")
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "data"


def test_the_tar_decodes_to_arrays_with_labels_in_path_order(tar_root):
    ds = load_dataset("cifar10", tar_root)
    assert ds.train.shape == (6, 3, 32, 32) and ds.test.shape == (4, 3, 32, 32)
    assert ds.train.dtype == np.uint8 and ds.class_names == ["airplane", "cat"]
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    with tarfile.open(tar_root / cifar.FOLDER / cifar.TAR) as tf:
        first = tf.extractfile("train/airplane/0000.jpg").read()
    expected = np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(ds.train[0], expected)


def test_the_cache_is_read_back_and_rebuilt_when_stale(tar_root, monkeypatch):
    first = load_dataset("cifar10", tar_root)
    (cached,) = (cifar.cache_dir()).glob("cifar10-*.npz")

    def no_decoding(*args):
        raise AssertionError("decoded again")

    real = cifar.decode_tar
    monkeypatch.setattr(cifar, "decode_tar", no_decoding)
    again = load_dataset("cifar10", tar_root)
    assert np.array_equal(again.train, first.train)
    monkeypatch.setattr(cifar, "decode_tar", real)
    # another decoder's cache, or one whose pixels no longer match their digest: rebuilt
    with np.load(cached) as z:
        arrays = {k: z[k] for k in cifar.ARRAYS}
        meta = json.loads(str(z["meta"]))
    arrays["train"][0, 0, 0, 0] ^= 1
    with open(cached, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    assert np.array_equal(load_dataset("cifar10", tar_root).train, first.train)
    meta["libjpeg"] = "another"
    with open(cached, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    rebuilt = {"n": 0}

    def counting(path):
        rebuilt["n"] += 1
        return real(path)

    monkeypatch.setattr(cifar, "decode_tar", counting)
    assert np.array_equal(load_dataset("cifar10", tar_root).train, first.train)
    assert rebuilt["n"] == 1


def test_a_tar_that_fails_its_checksum_is_refused(tar_root):
    tar = tar_root / cifar.FOLDER / cifar.TAR
    blob = bytearray(tar.read_bytes())
    blob[600] ^= 0xFF  # inside the first image's bytes
    tar.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", tar_root)


def test_no_tar_says_where_it_looked(tmp_path, monkeypatch):
    from vaekit.data import sources

    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    monkeypatch.setattr(sources, "default_data_dirs", lambda: [])
    with pytest.raises(DataError, match="dataset 'cifar10' not found"):
        cifar.locate_tar(tmp_path / "nowhere")
