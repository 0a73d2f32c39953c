"""Configs: presets, files and overrides are typed and refuse unknown keys."""

import pytest
import torch

from vaekit import build_model
from vaekit.config import PRESETS, Config, apply_overrides, load_config_file, preset
from vaekit.errors import VaekitError


def test_overrides_are_typed():
    cfg = apply_overrides(
        preset("mlp"),
        ["train.lr=2e-3", "model.hidden=[100,50]", "epochs=7", "train.grad_clip=none"],
    )
    assert cfg.train.lr == 2e-3 and cfg.model.hidden == [100, 50] and cfg.train.epochs == 7
    assert cfg.train.grad_clip is None


def test_json_round_trip():
    cfg = preset("conv")
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_toml_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nlatent_dim = 8\n[train]\nepochs = 2\npixels = "8bit"\n')
    cfg = load_config_file(p)
    assert cfg.model.latent_dim == 8 and cfg.model.pixels == "8bit"


@pytest.mark.parametrize(
    "text,match",
    [
        ("[model]\nlatnt = 8\n", "unknown key"),
        ("[trian]\nepochs = 2\n", "unknown section"),
        ("[model\n", "not valid"),
    ],
)
def test_bad_config_files(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(VaekitError, match=match):
        load_config_file(p)


def test_unknown_preset():
    with pytest.raises(VaekitError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[train]\nlr = "fast"\n', r"train.lr = 'fast': must be a finite number"),
        ("[model]\nlatent_dim = 2.5\n", r"model.latent_dim = 2.5: must be an integer"),
        ("[model]\nhidden = 256\n", r"model.hidden = 256: must be a list"),
        ('[train]\nepochs = "3"\n', r"train.epochs = '3': must be an integer"),
        ('[train]\nbf16 = "no"\n', r"train.bf16 = 'no': must be true or false"),
        ('[model]\nprior = "gauss"\n', r"model.prior = 'gauss': must be one of"),
    ],
)
def test_config_file_settings_are_type_checked(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(VaekitError, match=message):
        load_config_file(p)


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.lr=-1", "must be > 0"),
        ("train.lr=nan", "must be a finite number"),
        ("train.batch_size=0", "must be >= 1"),
        ("model.latent_dim=-3", "must be >= 1"),
        ("model.hidden=256,0", "each item must be >= 1"),
        ("train.bf16=maybe", "not true or false"),
        ("model.dropout=1", "must be >= 0 and <= 0.9"),
        ("train.ema=1", "must be >= 0 and <= 0.99999"),  # an average that never moves
    ],
)
def test_overrides_are_range_checked(item, message):
    with pytest.raises(VaekitError, match=message):
        apply_overrides(preset("demo"), [item])


def test_a_bad_setting_writes_nothing(tmp_path, npy_data):
    from click.testing import CliRunner

    from vaekit.cli import main

    out = tmp_path / "r"
    args = ["train", "--data", str(npy_data), "--out", str(out), "--set", "train.lr=-1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "error: setting train.lr = -1.0: must be > 0" in res.output
    assert not out.exists()


def test_resume_refuses_to_shrink_a_run(tmp_path, npy_data):
    from tests.conftest import tiny_config
    from vaekit.training import train

    run = train(tiny_config(npy_data, epochs=2), tmp_path / "r", progress=False)
    config_before = (run / "config.json").read_text()
    with pytest.raises(VaekitError, match="trained 2 epochs already"):
        train(tiny_config(npy_data), run, resume=True, progress=False, total_epochs=1)
    assert (run / "config.json").read_text() == config_before


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_builds_a_working_model(name):
    """A preset is a checked config whose model scores data of its own kind."""
    torch.manual_seed(0)
    cfg = preset(name)
    assert Config.from_dict(cfg.to_dict()) == cfg
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        x = model.decode(model.sample_latents(2)).sample()
        log_w, _ = model.log_weights(x, 3)
    assert log_w.shape == (3, 2)  # (K, B)
    assert torch.isfinite(log_w).all()
