"""A new score kind or sampler is one class plus its registration (docs/concepts/extending.md):
the detector, the command line and the quality table take it with no other edit."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.conftest import synthetic_digits, tiny_config
from vaekit.anomaly.detector import AnomalyDetector
from vaekit.anomaly.scores import SCORE_KINDS, ScoreKind
from vaekit.cli import main
from vaekit.generation.samplers import SAMPLERS, Sampler
from vaekit.training import train


@pytest.fixture
def run(tmp_path, npy_data):
    return train(tiny_config(npy_data, epochs=2), tmp_path / "run", progress=False)


@pytest.fixture
def kl_kind():
    @SCORE_KINDS.register("test-kl")
    class KlOnly(ScoreKind):
        """The ELBO's KL term alone, in bits."""

        def compute(self, inputs):
            return inputs.score("elbo") - inputs.score("reconstruction")

    yield KlOnly
    SCORE_KINDS.unregister("test-kl")


def test_a_new_score_kind_scores_from_python_and_the_command_line(run, kl_kind, tmp_path):
    x = synthetic_digits(20, 12, seed=3)
    det = AnomalyDetector.load(run)
    kl = det.anomaly_score(x, "test-kl")
    assert np.allclose(kl, det.anomaly_score(x, "elbo") - det.anomaly_score(x, "reconstruction"))
    assert (kl >= 0).all()  # an analytic KL is never negative
    np.save(tmp_path / "x.npy", x)
    res = CliRunner().invoke(
        main,
        [
            "score",
            str(run),
            str(tmp_path / "x.npy"),
            "--score",
            "test-kl",
            "--k",
            "5",
            "--out",
            str(tmp_path / "kl.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "test-kl" in res.output and (tmp_path / "kl.csv").exists()


def test_without_its_registration_the_kind_is_a_clear_error(run, tmp_path):
    np.save(tmp_path / "x.npy", synthetic_digits(5, 12))
    res = CliRunner().invoke(
        main, ["score", str(run), str(tmp_path / "x.npy"), "--score", "test-kl"]
    )
    assert res.exit_code == 2 and "'test-kl' is not one of" in res.output


@pytest.fixture
def origin_sampler():
    @SAMPLERS.register("test-origin")
    class Origin(Sampler):
        """Every latent at the prior's mode."""

        label = "z = 0"

        def images(self, n, seed=0, temperature=1.0):
            z = torch.zeros(n, self.model.latent_dim)
            return self.model.likelihood.display(self.model.decode(z))

    yield Origin
    SAMPLERS.unregister("test-origin")


def test_a_new_sampler_draws_from_the_command_line(run, origin_sampler, tmp_path):
    out = tmp_path / "origin.png"
    res = CliRunner().invoke(
        main, ["sample", str(run), "--sampler", "test-origin", "--n", "4", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 2 and grid.std() > 0  # an image, not a blank page


def test_the_quality_table_takes_every_registered_sampler(run, origin_sampler):
    from vaekit.checkpoint import load_checkpoint
    from vaekit.data.sources import Dataset
    from vaekit.generation.quality import quality_table, train_feature_net

    model = load_checkpoint(run)[0]
    digits = synthetic_digits(200, 12)[:, None]
    labels = np.arange(200) % 2
    ds = Dataset("blobs", digits, digits[:100], labels, labels[:100])
    net = train_feature_net(ds.train, ds.train_labels, steps=50)
    table = quality_table(model, ds, "blobs", n=50, run_dir=None, net=net)
    assert "samples, z = 0, T=1" in table and "samples, prior, T=1" in table
    assert not any("GMM" in k for k in table)  # no run folder, no training images: left out
