"""The ex-post Gaussian-mixture sampler: fitted to posterior means, saved, reused."""

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_config
from vaekit.cli import main
from vaekit.training import train
from vaekit.uses.samplers import GMM_FILE, ExPostGMM


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
