"""The ex-post Gaussian-mixture sampler: fitted to posterior means, saved, reused."""

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_config
from vaekit.cli import main
from vaekit.generation.samplers import GMM_FILE, ExPostGMM
from vaekit.training import train


def test_mixture_finds_clusters_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-5, 0.5, (500, 3)), rng.normal(5, 0.5, (500, 3))])
    gmm = ExPostGMM.fit(z, components=2)
    assert sorted(np.round(gmm.means[:, 0])) == [-5.0, 5.0]
    s = gmm.sample(2000, seed=1)
    assert np.all(np.abs(np.abs(s[:, 0]) - 5) < 3)  # no draws between the clusters
    t0 = gmm.sample(4, 0.0, seed=2)
    assert all(any(np.allclose(row, m) for m in gmm.means) for row in t0)  # T=0: the means
    again = ExPostGMM.from_json(gmm.to_json())
    assert np.array_equal(again.sample(50, 0.7, seed=3), gmm.sample(50, 0.7, seed=3))
    with pytest.raises(ValueError, match="temperature"):
        gmm.sample(3, float("nan"))


def test_cli_gmm_sampler_is_fitted_once_and_saved(tmp_path, npy_data, monkeypatch):
    run = train(tiny_config(npy_data, epochs=1), tmp_path / "run", progress=False)
    res = CliRunner().invoke(main, ["sample", str(run), "--sampler", "gmm", "--n", "8"])
    assert res.exit_code == 0 and "fitting" in res.output, res.output
    assert (run / GMM_FILE).exists() and (run / "samples.png").exists()

    def refit(*a, **k):
        raise AssertionError("fitted again")

    monkeypatch.setattr(ExPostGMM, "fit", refit)
    out = tmp_path / "t.png"
    args = ["sample", str(run), "--sampler", "gmm", "--temperature", "0.5", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "fitting" not in res.output and out.exists(), res.output
    res = CliRunner().invoke(main, ["sample", str(run), "--sampler", "gmm", "--temperature", "1,1"])
    assert res.exit_code != 0 and "one temperature" in res.output


def test_mixture_is_fitted_where_the_encoder_puts_real_inputs(tmp_path):
    """The mixture sits where the encoder maps the training data as it was trained on it:
    for a dynamically binarized model, binarized digits, not the grey 0..255 images its split
    stores (vaekit 0.3 fitted those: samples far from the data). Its mean is within a small
    distance of the test set's mean posterior mean, and a vaekit 0.3 file is refitted."""
    import json

    import torch

    from vaekit.checkpoint import load_checkpoint
    from vaekit.data.splits import load_splits
    from vaekit.generation.samplers import expost_gmm, gmm_needs_fit, posterior_means_of

    cfg = tiny_config("mnist", pixels="dynamic-binary", epochs=2)
    cfg.train.limit = 3000
    run = train(cfg, tmp_path / "run", progress=False)
    model, cfg, _ = load_checkpoint(run)
    splits = load_splits(cfg, torch.device("cpu"))
    gmm = expost_gmm(model, run, splits.train)
    with torch.no_grad():
        test = model.posterior_means(model.pixels.values(splits.test, train=False)).numpy()
    mixture_mean = (gmm.weights[:, None] * gmm.means).sum(0)
    spread = np.linalg.norm(test.std(0))
    assert np.linalg.norm(mixture_mean - test.mean(0)) < 0.25 * spread
    grey = posterior_means_of(model, splits.train[:500].float().div(255).round().to(torch.uint8))
    assert np.isfinite(grey).all()
    old = json.loads((run / GMM_FILE).read_text())
    del old["fitted_on"]
    (run / GMM_FILE).write_text(json.dumps(old))
    assert gmm_needs_fit(run)
