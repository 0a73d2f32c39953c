"""Bits-back compression: exact round trips, a pinned format, clean errors on bad files."""

import gzip
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import (
    assert_pixels_cost_their_likelihood,
    synthetic_digits,
    tiny_config,
    tiny_model,
)
from vaekit.checkpoint import load_checkpoint
from vaekit.coding.bitsback import CodingError
from vaekit.coding.files import (
    compress,
    compress_file,
    decompress,
    decompress_file,
    read_header,
)
from vaekit.data import idx_bytes, load_dataset
from vaekit.data.pixels import binarize_fixed
from vaekit.evaluation import evaluate
from vaekit.training import train


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist").test[:300]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small models trained briefly on MNIST: one Bernoulli (binarized), one 8-bit."""
    out = {}
    for pixels in ("static-binary", "8bit"):
        cfg = tiny_config("mnist", pixels=pixels, epochs=2)
        cfg.model.hidden, cfg.model.latent_dim = [128], 8
        cfg.train.limit, cfg.train.batch_size = 3000, 64
        run = train(cfg, tmp_path_factory.mktemp(pixels) / "run", progress=False)
        out[pixels] = load_checkpoint(run)[0]
    return out


def _binary(images):
    return binarize_fixed(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
def test_round_trip_exact_on_mnist(models, mnist_test, pixels):
    model = models[pixels]
    images = _binary(mnist_test) if pixels == "static-binary" else mnist_test
    data = compress(model, images)
    out = decompress(model, data)
    assert out.dtype == np.uint8 and np.array_equal(out, images)
    assert 8 * len(data) / images.size < (0.5 if pixels == "static-binary" else 3.0)


@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
def test_rate_is_close_to_negative_elbo(models, mnist_test, pixels):
    """Stated margin: within 0.005 bits/dim of the model's -ELBO on 300 test images (the
    coder's discretisation, quantised probabilities, initial words and the single-sample
    noise of the coded rate all count; the tail-mass leak once cost 0.018)."""
    model = models[pixels]
    images = _binary(mnist_test) if pixels == "static-binary" else mnist_test
    header, words = read_header(compress(model, images))
    rate = 32 * len(words) / images.size  # the coder's bits; the JSON header is metadata
    ideal = evaluate(model, torch.from_numpy(images), k=0, batch_size=100, coded=True)
    assert abs(rate - ideal["elbo_bits_per_dim"]) < 0.005, (rate, ideal["elbo_bits_per_dim"])


def test_idx_raw_and_gzip_come_back_byte_for_byte(models, mnist_test, tmp_path):
    model = models["8bit"]
    raw = idx_bytes(mnist_test[:50, 0])
    for name, blob in (("imgs-idx3-ubyte", raw), ("imgs-idx3-ubyte.gz", gzip.compress(raw, 9))):
        src = tmp_path / name
        src.write_bytes(blob)
        compress_file(model, src, tmp_path / "x.vkz")
        notes = decompress_file(model, tmp_path / "x.vkz", tmp_path / ("out-" + name))
        assert (tmp_path / ("out-" + name)).read_bytes() == blob and notes == []


def test_an_output_named_npy_gets_an_array_whatever_the_container(models, mnist_test, tmp_path):
    """A user who asks for back.npy can np.load it: an IDX file comes back in its own shape,
    an image folder as (N, H, W), each with a note; other names keep the container."""
    model = models["8bit"]
    images = mnist_test[:20, 0]
    (tmp_path / "t-idx3-ubyte").write_bytes(idx_bytes(images))
    compress_file(model, tmp_path / "t-idx3-ubyte", tmp_path / "t.vkz")
    notes = decompress_file(model, tmp_path / "t.vkz", tmp_path / "back.NPY")
    back = np.load(tmp_path / "back.NPY")
    assert back.shape == (20, 28, 28) and np.array_equal(back, images)
    assert "IDX" in notes[0] and ".npy" in notes[0]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(images[:5]):
        Image.fromarray(im).save(folder / f"d{i}.png")
    compress_file(model, folder, tmp_path / "f.vkz")
    notes = decompress_file(model, tmp_path / "f.vkz", tmp_path / "folder.npy")
    assert np.array_equal(np.load(tmp_path / "folder.npy"), images[:5])
    assert "names are not kept" in notes[0]


def test_unreproducible_gzip_gives_identical_idx_contents(models, mnist_test, tmp_path):
    model = models["8bit"]
    raw = idx_bytes(mnist_test[:20, 0])
    blob = bytearray(gzip.compress(raw, 9))
    blob[3] |= 0x10  # a comment flag zlib will not rebuild
    body = bytes(blob[:10]) + b"made elsewhere\0" + bytes(blob[10:])
    src = tmp_path / "c-idx3-ubyte.gz"
    src.write_bytes(body)
    compress_file(model, src, tmp_path / "c.vkz")
    notes = decompress_file(model, tmp_path / "c.vkz", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == raw and "uncompressed" in notes[0]


def test_npy_and_png_folder_round_trip(models, mnist_test, tmp_path):
    model = models["static-binary"]
    imgs = (_binary(mnist_test[:30]) * 255).astype(np.uint8)  # 0/255 binary images
    np.save(tmp_path / "a.npy", imgs[:, 0])
    compress_file(model, tmp_path / "a.npy", tmp_path / "a.vkz")
    decompress_file(model, tmp_path / "a.vkz", tmp_path / "back.npy")
    assert np.array_equal(np.load(tmp_path / "back.npy"), imgs[:, 0])
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = [f"digit_{i:02d}.png" for i in range(12)]
    for n, im in zip(names, imgs, strict=False):
        Image.fromarray(im[0]).save(folder / n)
    compress_file(model, folder, tmp_path / "f.vkz")
    decompress_file(model, tmp_path / "f.vkz", tmp_path / "pngs-back")
    assert sorted(p.name for p in (tmp_path / "pngs-back").iterdir()) == names
    for n in names:
        a = np.asarray(Image.open(folder / n))
        b = np.asarray(Image.open(tmp_path / "pngs-back" / n))
        assert np.array_equal(a, b)


@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
def test_pixel_bits_equal_the_likelihoods_probability(pixels):
    """For every codable likelihood: pushing images under p(x|z) costs -log2 p(x|z) bits, the
    probability `log_prob` gives with the same quantized parameters, within 0.001 bits/dim."""
    model = tiny_model(pixels, latent_dim=4, shape=(1, 12, 12), hidden=(32,), seed=1)
    imgs = synthetic_digits(50, 12)[:, None]
    x = imgs if pixels == "8bit" else (imgs > 100).astype(np.uint8)
    assert_pixels_cost_their_likelihood(model, x)


def test_wrong_model_refused(models, mnist_test):
    data = compress(models["8bit"], mnist_test[:10])
    other = tiny_model("8bit", latent_dim=8, shape=(1, 28, 28), hidden=(128,))
    with pytest.raises(CodingError, match="another model"):
        decompress(other, data)


def test_inputs_the_model_cannot_code(models, mnist_test):
    with pytest.raises(CodingError, match="binary"):
        compress(models["static-binary"], mnist_test[:5])
    with pytest.raises(CodingError, match="do not match"):
        compress(models["8bit"], np.zeros((3, 1, 27, 28), np.uint8))
    with pytest.raises(CodingError, match="no images"):
        compress(models["8bit"], np.zeros((0, 1, 28, 28), np.uint8))
    gaussian = tiny_model("continuous", shape=(1, 28, 28))
    with pytest.raises(CodingError, match="no discrete"):
        compress(gaussian, mnist_test[:2])


def test_corrupt_truncated_and_foreign_files(models, mnist_test):
    model = models["8bit"]
    data = compress(model, mnist_test[:20])
    with pytest.raises(CodingError, match="CRC"):
        decompress(model, data[:-10] + data[-4:])
    with pytest.raises(CodingError):
        decompress(model, data[: len(data) // 2])
    with pytest.raises(CodingError, match="magic"):
        decompress(model, b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    bumped = bytearray(data)
    bumped[4] = 9
    with pytest.raises(CodingError, match="version 9"):
        decompress(model, bytes(bumped))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_payload_damage_with_valid_crc_never_returns_wrong_data(models, mnist_test):
    model = models["8bit"]
    data = compress(model, mnist_test[:20])
    body = bytearray(data[:-4])
    body[-9] ^= 0x01  # one bit inside the ANS words, CRC recomputed to hide it
    with pytest.raises(CodingError):
        decompress(model, _with_crc(bytes(body)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_decompress_only_raises_clean_errors(data):
    model = tiny_model("static-binary", latent_dim=3, shape=(1, 8, 8), hidden=(16,), seed=123)
    images = (synthetic_digits(12, 8)[:, None] > 100).astype(np.uint8)
    good = compress(model, images, fallback=data.draw(st.booleans()))  # formats 2 and 4
    kind = data.draw(st.sampled_from(["random", "flip", "flip+crc", "truncate", "splice"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=400))
    elif kind == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        body = bytearray(good[:-4] if kind == "flip+crc" else good)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] = data.draw(st.integers(0, 255))
        if kind == "splice":
            body[8:8] = data.draw(st.binary(min_size=1, max_size=30))
        blob = _with_crc(bytes(body)) if kind == "flip+crc" else bytes(body)
    try:
        out = decompress(model, blob)
    except CodingError:
        return
    # The only acceptable success is the original data (a mutation that changed nothing).
    assert np.array_equal(out, decompress(model, good))


def test_never_larger_than_xz_and_the_header_packed(tmp_path):
    """Where xz codes the input smaller than the model (here: a random, untrained model on
    near-blank images), `compress_file` keeps xz's stream (format 4) and the file is at most
    a few hundred bytes of header above xz's own; a large header (an image folder's names) is
    itself compressed. Both decode exactly, and `--bits-back-only` turns the fallback off."""
    import lzma

    model = tiny_model("8bit", latent_dim=3, shape=(1, 8, 8), hidden=(16,), seed=5)
    imgs = np.zeros((400, 8, 8), np.uint8)
    imgs[::7, 3, 3] = 200
    np.save(tmp_path / "a.npy", imgs)
    res = compress_file(model, tmp_path / "a.npy", tmp_path / "a.vkz")
    data = (tmp_path / "a.vkz").read_bytes()
    xz = len(lzma.compress(imgs.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    assert res["coder"] == "xz" and data[4] == 5 and res["payload_bytes"] == xz
    assert len(data) < xz + 400 and res["header_bytes"] == len(data) - xz
    decompress_file(model, tmp_path / "a.vkz", tmp_path / "back.npy")
    assert np.array_equal(np.load(tmp_path / "back.npy"), imgs)
    plain = compress_file(model, tmp_path / "a.npy", tmp_path / "b.vkz", fallback=False)
    assert plain["coder"] == "bits-back" and plain["bytes"] > res["bytes"]

    folder = tmp_path / "many"
    folder.mkdir()
    names = [f"a-rather-long-file-name-for-image-number-{i:04d}.png" for i in range(120)]
    for n, im in zip(names, np.repeat(imgs[:1], 120, 0), strict=True):
        Image.fromarray(im).save(folder / n)
    res = compress_file(model, folder, tmp_path / "f.vkz", fallback=False)
    raw_names = sum(len(n) + 3 for n in names)
    assert (tmp_path / "f.vkz").read_bytes()[4] == 5 and res["header_bytes"] < raw_names / 4
    decompress_file(model, tmp_path / "f.vkz", tmp_path / "many-back")
    assert sorted(p.name for p in (tmp_path / "many-back").iterdir()) == sorted(names)


@pytest.mark.parametrize("arithmetic, version", [("float", 4), ("exact-1", 5)])
def test_packed_files_refuse_damage(tmp_path, arithmetic, version):
    model = tiny_model("8bit", latent_dim=3, shape=(1, 8, 8), hidden=(16,), seed=5)
    imgs = np.zeros((50, 1, 8, 8), np.uint8)
    data = compress(model, imgs, fallback=True, arithmetic=arithmetic)
    assert data[4] == version
    assert np.array_equal(decompress(model, data), imgs)
    body = bytearray(data[:-4])
    body[-3] ^= 0x10  # inside the xz payload, CRC recomputed
    with pytest.raises(CodingError):
        decompress(model, _with_crc(bytes(body)))
    body = bytearray(data[:-4])
    body[12] ^= 0x10  # inside the packed header
    with pytest.raises(CodingError, match="corrupt"):
        decompress(model, _with_crc(bytes(body)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    enc_threads=st.sampled_from([1, 2]),
    dec_threads=st.sampled_from([1, 2]),
    batch=st.sampled_from([1, 7, 100, 1000]),
)
def test_files_decode_under_other_thread_counts_and_batch_sizes(
    models, mnist_test, enc_threads, dec_threads, batch
):
    """Issue 14's property: encode with (threads, batch size) drawn from {1, 2} x
    {1, 7, 100, 1000}, decode with another thread count: identical images. (The decoder
    follows the file's own batch plan, so the encoder's batch size is what varies.)"""
    model = models["8bit"]
    images = mnist_test[:120]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(enc_threads)
        data = compress(model, images, batch_size=batch)
        torch.set_num_threads(dec_threads)
        assert np.array_equal(decompress(model, data), images)
        # exact arithmetic: the other thread count also writes the same bytes
        assert compress(model, images, batch_size=batch) == data
    finally:
        torch.set_num_threads(before)


def _rewritten(data: bytes, version: int, edit) -> bytes:
    """`data` (an xz-header file) with its header JSON edited and the CRC recomputed."""
    import json
    import lzma

    hlen = struct.unpack_from("<I", data, 6)[0]
    header = json.loads(lzma.decompress(data[10 : 10 + hlen]))
    edit(header)
    hb = lzma.compress(json.dumps(header).encode())
    return _with_crc(struct.pack("<4sHI", data[:4], version, len(hb)) + hb + data[10 + hlen : -4])


def test_a_damaged_particle_ramp_is_a_clear_error():
    """Format 6 lists each batch's particles; a list that does not fit the batches, a count
    above K, or a ramp in a version-5 file is refused as corrupt, never decoded wrongly."""
    model = tiny_model("static-binary", latent_dim=3, shape=(1, 6, 6), hidden=(16,), seed=2)
    imgs = (np.random.default_rng(0).random((40, 1, 6, 6)) < 0.3).astype(np.uint8)
    data = compress(model, imgs, particles=3, fallback=False)
    assert data[4] == 6 and np.array_equal(decompress(model, data), imgs)
    edits = (
        lambda h: h["plan"].update(ramp=h["plan"]["ramp"][:-1]),  # one batch short
        lambda h: h["plan"].update(ramp=[4] * len(h["plan"]["ramp"])),  # above K
        lambda h: h["plan"].pop("ramp"),  # missing
    )
    for edit in edits:
        with pytest.raises(CodingError, match="corrupt"):
            decompress(model, _rewritten(data, 6, edit))
    with pytest.raises(CodingError, match="corrupt"):
        decompress(model, _rewritten(data, 5, lambda h: None))
