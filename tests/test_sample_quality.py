"""The sample-quality metric (issue 16): the Fréchet distance and precision/recall are right
on cases with known answers, the shipped feature networks are what they claim, and the
metric ranks degraded images correctly."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from vaekit.data import load_dataset
from vaekit.generation import quality as sq


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist").test[:4000]


def test_frechet_distance_of_gaussians_has_its_closed_form():
    """For samples of N(m1, diag(a)) and N(m2, diag(b)) the distance tends to
    |m1 - m2|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(0)
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.5])
    m1, m2 = np.zeros(3), np.array([1.0, -0.5, 2.0])
    x = m1 + rng.standard_normal((200_000, 3)) * np.sqrt(a)
    y = m2 + rng.standard_normal((200_000, 3)) * np.sqrt(b)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert sq.frechet_distance(x, y) == pytest.approx(expected, rel=0.02)
    assert abs(sq.frechet_distance(x, x)) < 1e-6


def test_precision_and_recall_see_missing_modes_and_outliers():
    """Fakes that cover one of two real clusters: precision ~1, recall ~1/2; fakes far away
    from the data: precision ~0."""
    rng = np.random.default_rng(1)
    real = np.concatenate([rng.normal(-5, 1, (1000, 2)), rng.normal(5, 1, (1000, 2))])
    half = rng.normal(-5, 1, (2000, 2))
    p, r = sq.precision_recall(real, half)
    assert p > 0.95 and 0.4 < r < 0.6
    p, r = sq.precision_recall(real, rng.normal(40, 1, (500, 2)))
    assert p == 0.0 and r == 0.0
    p, r = sq.precision_recall(real, real.copy())
    assert p == 1.0 and r == 1.0


@pytest.mark.parametrize("name", sorted(sq.FEATURE_NETS))
def test_shipped_feature_networks_are_small_checked_and_accurate(name):
    sha, accuracy = sq.FEATURE_NETS[name]
    path = resources.files("vaekit.feature_weights").joinpath(f"{name}.safetensors")
    blob = path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == sha and len(blob) < 300_000
    with safe_open(str(path), "pt") as f:
        assert float(f.metadata()["test_accuracy"]) == accuracy
    assert accuracy >= {"mnist": 0.993, "fashion-mnist": 0.92}[name]
    assert sq.load_feature_net(name).head.out_features == 10


def test_a_damaged_feature_network_is_refused(monkeypatch):
    monkeypatch.setitem(sq.FEATURE_NETS, "mnist", ("0" * 64, 0.99))
    with pytest.raises(sq.VaekitError, match="damaged"):
        sq.load_feature_net("mnist")
    with pytest.raises(sq.VaekitError, match="no shipped feature network"):
        sq.load_feature_net("cifar-10")


def _blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1)
    x = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="replicate"), k)
    return F.conv2d(F.pad(x, (0, 0, 4, 4), mode="replicate"), k.transpose(2, 3))


def test_the_distance_rises_as_images_are_blurred_or_noised_more(mnist_test):
    """FD against clean test images grows monotonically with blur and with noise."""
    net = sq.load_feature_net("mnist")
    clean = torch.from_numpy(mnist_test[:2000]).float() / 255.0
    real = sq.features(net, torch.from_numpy(mnist_test[2000:4000]).float() / 255.0)
    blur = [
        sq.frechet_distance(real, sq.features(net, _blurred(clean, s))) for s in (0.5, 1, 1.5, 2)
    ]
    g = torch.Generator().manual_seed(0)
    noise = [
        sq.frechet_distance(
            real, sq.features(net, (clean + s * torch.randn(clean.shape, generator=g)).clamp(0, 1))
        )
        for s in (0.1, 0.2, 0.3, 0.4)
    ]
    base = sq.frechet_distance(real, sq.features(net, clean))
    assert base < blur[0] < blur[1] < blur[2] < blur[3]
    assert base < noise[0] < noise[1] < noise[2] < noise[3]


def test_a_feature_network_trains_on_a_users_labels():
    from tests.conftest import synthetic_digits

    images = synthetic_digits(200)[:, None]
    labels = np.arange(200) % 2  # bars and squares alternate
    net = sq.train_feature_net(images, labels, steps=200)
    with torch.no_grad():
        acc = (net(torch.from_numpy(images).float() / 255).argmax(1).numpy() == labels).mean()
    assert acc > 0.9
    with pytest.raises(sq.VaekitError):
        sq.train_feature_net(images, labels[:10])


def test_quality_on_a_users_labelled_folder_trains_its_own_features(tmp_path):
    """`vaekit quality` on a run trained on an image folder of class subfolders: no shipped
    network, so one is trained on the folder's labels; the table has the floor, samples
    from both samplers and reconstructions."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from tests.conftest import synthetic_digits
    from vaekit.cli import main

    images = synthetic_digits(240)
    for i, im in enumerate(images):
        folder = tmp_path / "data" / ("bars" if i % 2 else "squares")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    cli, run = CliRunner(), tmp_path / "run"
    res = cli.invoke(
        main,
        [
            "train", "--data", str(tmp_path / "data"), "--epochs", "2", "--out", str(run),
            "--set", "model.hidden=[32]", "--set", "model.latent_dim=4", "--quiet",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = cli.invoke(main, ["quality", str(run), "--n", "20"])
    assert res.exit_code == 0 and "training one on its labels" in res.output, res.output
    table = json.loads(cli.invoke(main, ["quality", str(run), "--n", "20", "--json"]).stdout)
    assert len(table) == 4 and all(v["fd"] >= 0 for v in table.values())
