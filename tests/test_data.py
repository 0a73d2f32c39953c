"""Readers and data discovery: good input loads, bad input gets an error naming the file."""

import gzip

import numpy as np
import pytest
from PIL import Image

from vaekit.data import idx_bytes, load_dataset, read_idx, read_images
from vaekit.data.sources import locate_named, verify_checksums
from vaekit.errors import DataError


def test_idx_round_trip_gzip_and_raw(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "a-idx3-ubyte"
    raw.write_bytes(idx_bytes(arr))
    gz = tmp_path / "a-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(arr)))
    for p in (raw, gz):
        f = read_idx(p)
        assert np.array_equal(f.array, arr)
        assert f.raw == idx_bytes(arr)
    assert read_idx(gz).gzipped and not read_idx(raw).gzipped


def test_idx_truncated_names_file(tmp_path):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((5, 4, 4), np.uint8))[:-7])
    with pytest.raises(DataError, match="bad-idx3-ubyte.*truncated"):
        read_idx(p)


def test_idx_bad_magic_and_corrupt_gzip(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="x.idx.*magic"):
        read_idx(p)
    g = tmp_path / "y.gz"
    g.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 2, 2), np.uint8)))[:-10])
    with pytest.raises(DataError, match="y.gz.*gzip"):
        read_idx(g)


def test_checksum_mismatch(tmp_path):
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(b"not what was promised")
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  train-images-idx3-ubyte.gz\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_checksums(tmp_path, [f])


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env-dir"))
    monkeypatch.setattr("vaekit.data.sources.default_data_dirs", lambda: [tmp_path / "default"])
    with pytest.raises(DataError) as e:
        locate_named("mnist", tmp_path / "cli-dir")
    msg = str(e.value)
    assert "cli-dir" in msg and "env-dir" in msg and "default" in msg
    assert "--data-dir" in msg and "VAEKIT_DATA" in msg


def test_named_mnist_loads_and_verifies():
    ds = load_dataset("mnist")
    assert ds.train.shape == (60000, 1, 28, 28) and ds.test.shape == (10000, 1, 28, 28)
    assert ds.train.dtype == np.uint8 and ds.train_labels.shape == (60000,)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float"])
def test_npy_layouts(tmp_path, layout):
    base = np.random.default_rng(0).integers(0, 256, (10, 5, 7), dtype=np.uint8)
    arr = {"nhw": base, "nhwc": base[..., None], "nchw": base[:, None], "float": base / 255.0}[
        layout
    ]
    p = tmp_path / "x.npy"
    np.save(p, arr)
    out = read_images(p)
    assert out.shape == (10, 1, 5, 7) and out.dtype == np.uint8
    assert np.array_equal(out[:, 0], base)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.full((4, 5, 5), np.nan), "NaN"),
        (np.full((4, 5, 5), 2.0), r"\[0, 1\]"),
        (np.zeros((4, 5), np.uint8), "expected images shaped"),
        (np.zeros((0, 5, 5), np.uint8), "no images"),
    ],
)
def test_npy_bad_input(tmp_path, bad, match):
    p = tmp_path / "bad.npy"
    np.save(p, bad)
    with pytest.raises(DataError, match=match):
        read_images(p)


def test_image_folder_and_corrupt_png(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    assert np.array_equal(read_images(tmp_path)[:, 0], arr)
    (tmp_path / "3.png").write_bytes((tmp_path / "0.png").read_bytes()[:30])
    with pytest.raises(DataError, match="3.png"):
        read_images(tmp_path)


def test_image_folder_mixed_sizes(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="differ in size"):
        read_images(tmp_path)


def test_user_array_gets_fixed_holdout(npy_data):
    a, b = load_dataset(str(npy_data)), load_dataset(str(npy_data))
    assert len(a.test) == 40 and len(a.train) == 360
    assert np.array_equal(a.test, b.test)


def test_unknown_data_spec():
    with pytest.raises(DataError, match="not a named dataset"):
        load_dataset("no-such-thing")
