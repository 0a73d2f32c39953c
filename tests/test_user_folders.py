"""A folder a user would have: colour and grey JPEGs and PNGs of mixed sizes in class layout,
EXIF-rotated, with alpha, in CMYK, one truncated. Read with `--image-size`, each odd kind is
read or refused with one clear line, and every command works on it."""

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vaekit.cli import main
from vaekit.data.sources import AS_STORED, ImageOptions, parse_image_size, read_labelled_folder
from vaekit.errors import DataError, DataNote


def _photo(rng, h, w) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    noise = rng.integers(0, 30, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


@pytest.fixture
def messy(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            h, w = (20 + 4 * (i % 3), 28 + 2 * (i % 4))
            _photo(rng, h, w).save(root / c / f"{i:02d}.jpg", quality=90)
    _photo(rng, 24, 24).convert("L").save(root / "cats" / "grey.png")
    rgba = _photo(rng, 24, 30).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "dogs" / "alpha.png")
    _photo(rng, 26, 26).convert("CMYK").save(root / "dogs" / "cmyk.jpg")
    rotated = _photo(rng, 30, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    rotated.save(root / "cats" / "rotated.jpg", exif=exif)
    good = io.BytesIO()
    _photo(rng, 24, 24).save(good, format="JPEG")
    (root / "dogs" / "truncated.jpg").write_bytes(good.getvalue()[:200])
    return root


def test_each_odd_file_is_read_or_refused_with_one_line(messy):
    with pytest.raises(DataError, match="truncated.jpg: not a readable image.*--skip-bad"):
        read_labelled_folder(messy, ImageOptions((16, 16)))
    with pytest.raises(DataError, match="images differ in size.*--image-size"):
        read_labelled_folder(messy, ImageOptions(None, skip_bad=True))
    with pytest.warns(DataNote) as notes:
        images, names, labels, classes = read_labelled_folder(messy, ImageOptions((16, 16), True))
    said = " ".join(str(n.message) for n in notes)
    assert "skipped 1 unreadable" in said and "alpha channel" in said
    assert images.shape == (len(names), 3, 16, 16) and "dogs/truncated.jpg" not in names
    assert classes == ["cats", "dogs"] and labels.tolist() == sorted(labels.tolist())


def test_exif_orientation_is_applied(messy):
    from vaekit.data.sources import _read_image

    assert Image.open(messy / "cats" / "rotated.jpg").size == (20, 30)  # stored 20 wide, 30 high
    arr = _read_image(messy / "cats" / "rotated.jpg", AS_STORED)[0]
    assert arr.shape[:2] == (20, 30)  # shown rotated by 90 degrees: 20 high, 30 wide


def test_resizing_covers_the_size_and_crops_the_centre(tmp_path):
    from vaekit.data.sources import _read_image

    arr = np.zeros((40, 80), np.uint8)
    arr[:, 20:60] = 255  # a white centre band half the width
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = _read_image(tmp_path / "wide.png", ImageOptions((20, 20)))[0]
    # shorter side 40 -> 20 (the width 80 -> 40), then the centre 20 columns: all white
    assert out.shape == (20, 20) and out.min() > 200
    assert parse_image_size("32") == (32, 32) and parse_image_size("16x24") == (16, 24)
    with pytest.raises(DataError, match="HxW"):
        parse_image_size("big")


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="big.png: refused as a decompression bomb"):
        read_labelled_folder(tmp_path)


def test_every_command_works_on_the_folder(messy, tmp_path):
    run, cli = tmp_path / "run", CliRunner()
    common = ["--image-size", "16", "--skip-bad"]
    res = cli.invoke(
        main,
        [
            "train",
            "--data",
            str(messy),
            *common,
            "--pixels",
            "8bit",
            "--epochs",
            "2",
            "--set",
            "model.hidden=[32]",
            "--set",
            "model.latent_dim=4",
            "--set",
            "train.batch_size=8",
            "--out",
            str(run),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    for args in (
        ["evaluate", str(run), "--k", "4"],
        ["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")],
        ["report", str(run), "--quality-n", "8"],
        [
            "score",
            str(run),
            str(messy),
            "--score",
            "surprise",
            "--k",
            "4",
            "--out",
            str(tmp_path / "scores.csv"),
        ],
    ):
        res = cli.invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
    vkz = str(tmp_path / "p.vkz")
    res = cli.invoke(main, ["compress", str(run), str(messy), "-o", vkz])
    assert res.exit_code == 1 and "truncated.jpg" in res.output and "--skip-bad" in res.output
    res = cli.invoke(main, ["compress", str(run), str(messy), "-o", vkz, "--skip-bad"])
    assert res.exit_code == 1 and "--image-size" in res.output  # mixed sizes: asked to resize
    res = cli.invoke(
        main, ["compress", str(run), str(messy), "-o", str(tmp_path / "p.vkz"), *common]
    )
    assert res.exit_code == 0 and "resized to 16x16" in res.output, res.output
    out = tmp_path / "back"
    res = cli.invoke(main, ["decompress", str(run), str(tmp_path / "p.vkz"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "cats" / "00.png").exists() and not (out / "cats" / "00.jpg").exists()
    expected, names, _, _ = read_labelled_folder(messy, ImageOptions((16, 16), True))
    for name, im in zip(names, expected, strict=True):
        png = out / (name.rsplit(".", 1)[0] + ".png")
        got = np.asarray(Image.open(png).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(got, im), name


def test_16_bit_grey_images_keep_their_range_in_8_bits(tmp_path):
    """Pillow's own conversion clips every 16-bit value above 255 to white; the reader scales."""
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, 0)
    for i in range(2):
        Image.fromarray(ramp).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    with pytest.warns(DataNote, match="16 or 32 bits per pixel, scaled to 8 bits"):
        images, _, _, _ = read_labelled_folder(tmp_path)
    assert images[0, 0, 0].tolist() == [0, 1, 128, 255]
