"""Pixel modes are registered objects saved with the model: every use asks the model."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import synthetic_digits, tiny_model
from vaekit.anomaly.scores import all_scores, png_bits
from vaekit.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from vaekit.config import Config
from vaekit.data.pixels import PIXEL_MODES, binarize_fixed, pixel_mode
from vaekit.distributions import LIKELIHOODS


def test_every_pixel_mode_names_a_registered_likelihood():
    for name in PIXEL_MODES:
        mode = pixel_mode(name)
        assert mode.name == name and mode.likelihood in LIKELIHOODS
    with pytest.raises(ValueError, match="unknown pixel mode 'nine-bit'.*8bit"):
        pixel_mode("nine-bit")


def test_fixed_binarization_depends_on_the_image_alone():
    imgs = torch.from_numpy(synthetic_digits(50, 12))[:, None]
    a = binarize_fixed(imgs, seed=1)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(binarize_fixed(imgs[perm], seed=1), a[perm])
    assert torch.equal(binarize_fixed(imgs[7:8], seed=1), a[7:8])
    assert not torch.equal(binarize_fixed(imgs, seed=2), a)
    # and it is a Bernoulli(x/255) draw: pixels at 200 come out 1 with probability 200/255
    # (400 distinct images: each carries its index in its first two pixels)
    grey = torch.full((400, 1, 12, 12), 200, dtype=torch.uint8)
    grey[:, 0, 0, 0], grey[:, 0, 0, 1] = torch.arange(400) % 256, torch.arange(400) // 256
    lit = binarize_fixed(grey)[:, :, 1:].float()  # 400 x 132 pixels: standard error 0.002
    assert abs(lit.mean().item() - 200 / 255) < 0.01


def test_the_model_carries_its_pixel_mode_through_a_checkpoint(tmp_path):
    model = tiny_model("8bit")
    save_checkpoint(tmp_path / "m.safetensors", model, Config(model.config), TrainingState())
    back = load_checkpoint(tmp_path / "m.safetensors")[0]
    assert back.pixels.name == "8bit" and back.likelihood.name == "logistic-mixture"


def test_a_config_from_before_the_move_still_loads():
    old = {
        "model": {"latent_dim": 4, "likelihood": "bernoulli", "image_shape": [1, 6, 6]},
        "train": {"pixels": "static-binary", "epochs": 3},
    }
    cfg = Config.from_dict(json.loads(json.dumps(old)))
    assert cfg.model.pixels == "static-binary" and cfg.train.epochs == 3
    assert not hasattr(cfg.train, "pixels")


def test_complexity_of_expected_binary_inputs_uses_their_8bit_pixels():
    """It used to multiply the 0..255 pixels of expected-binary inputs by 255 in uint8
    (200 wrapped to 56), so the PNG length was that of another image."""
    model = tiny_model("expected-binary", shape=(1, 12, 12))
    imgs = torch.from_numpy(synthetic_digits(6, 12))[:, None]
    prepared = model.pixels.prepare(imgs, train=False)
    scores = all_scores(model, prepared, k=4)
    expected = scores["surprise"] - png_bits(imgs.numpy())
    np.testing.assert_allclose(scores["complexity"], expected)
    binary = tiny_model("static-binary", shape=(1, 12, 12))
    prepared = binary.pixels.prepare(imgs, train=False)  # {0, 1}: shown as 0/255
    scores = all_scores(binary, prepared, k=4)
    np.testing.assert_allclose(
        scores["complexity"], scores["surprise"] - png_bits(prepared.numpy() * 255)
    )
