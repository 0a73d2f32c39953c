"""Configs: presets, files and overrides are typed and refuse unknown keys."""

import pytest

from vaekit.config import Config, apply_overrides, load_config_file, preset
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
