"""Anomaly detection: deterministic scores, planted outliers found, scikit-learn conventions."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.conftest import synthetic_digits
from vaekit.anomaly.background import local_log_prob
from vaekit.anomaly.calibration import combined_score
from vaekit.anomaly.detector import AnomalyDetector
from vaekit.anomaly.scores import png_bits
from vaekit.checkpoint import weights_fingerprint
from vaekit.cli import main
from vaekit.data import prepare_split
from vaekit.errors import DataError, VaekitError

TINY = ("model.hidden=[32]", "model.latent_dim=2", "train.epochs=3", "train.lr=3e-3")


def _tabular(n_in=300, n_out=15, seed=0):
    """Inliers near a 2-D plane in 6-D; outliers off it."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, 6))
    inliers = rng.normal(size=(n_in, 2)) @ a + 0.05 * rng.normal(size=(n_in, 6))
    outliers = rng.normal(size=(n_out, 6)) * 2.0
    return inliers, outliers


@pytest.fixture(scope="module")
def tabular_detector():
    inliers, _ = _tabular()
    overrides = ("model.hidden=[32]", "model.latent_dim=2", "train.epochs=40", "train.lr=3e-3")
    return AnomalyDetector(k=50, overrides=overrides, contamination=0.05).fit(inliers)


def test_planted_tabular_outliers_rank_above_inliers(tabular_detector):
    inliers, outliers = _tabular(seed=0)
    test_in, _ = _tabular(n_in=100, seed=0)
    scores = tabular_detector.anomaly_score(np.vstack([test_in, outliers]))
    labels = np.r_[np.zeros(len(test_in)), np.ones(len(outliers))]
    assert roc_auc_score(labels, scores) > 0.95
    assert (tabular_detector.predict(outliers) == -1).mean() > 0.8


def test_scores_are_finite_deterministic_and_leave_the_model_alone(tabular_detector):
    x, _ = _tabular(n_in=50, seed=3)
    before = weights_fingerprint(tabular_detector.model_)
    for score in ("surprise", "elbo", "reconstruction"):
        a = tabular_detector.anomaly_score(x, score)
        b = tabular_detector.anomaly_score(x, score)
        assert np.isfinite(a).all() and np.array_equal(a, b)
    assert weights_fingerprint(tabular_detector.model_) == before
    assert np.allclose(tabular_detector.score_samples(x), -tabular_detector.anomaly_score(x))


def test_threshold_from_contamination_and_calibration(tabular_detector):
    inliers, _ = _tabular()
    assert (tabular_detector.predict(inliers) == -1).mean() == pytest.approx(0.05, abs=0.01)
    held_out, _ = _tabular(n_in=200, seed=0)
    tabular_detector.calibrate(held_out, quantile=0.9)
    assert (tabular_detector.predict(held_out) == 1).mean() == pytest.approx(0.9, abs=0.01)


def test_planted_image_outliers_all_scores(tmp_path):
    normal = synthetic_digits(400, 12)
    rng = np.random.default_rng(1)
    odd = (rng.random((20, 12, 12)) < 0.3).astype(np.uint8) * 255  # salt-and-pepper noise
    det = AnomalyDetector(
        k=20, overrides=TINY[:2] + ("train.epochs=8", "train.lr=3e-3"), intensity_epochs=60
    )
    det.fit(normal)
    test = np.concatenate([synthetic_digits(60, 12, seed=5), odd])
    labels = np.r_[np.zeros(60), np.ones(20)]
    for score in ("surprise", "elbo", "reconstruction", "ratio"):
        assert roc_auc_score(labels, det.anomaly_score(test, score)) > 0.95, score
    # The ratio is surprise minus the surprise of the local background model, both in bits.
    surprise = det.anomaly_score(test, "surprise")
    values = prepare_split(torch.from_numpy(test[:, None]), "dynamic-binary", train=False)
    assert values.max() == 1
    background_bits = -local_log_prob(det.background_, values.float()).numpy() / np.log(2)
    assert np.allclose(det.anomaly_score(test, "ratio"), surprise - background_bits, atol=1e-3)
    # The default combines every kind's calibrated tail probability (`uses.calibration`).
    every = det.view_scores(test)
    assert set(every) >= {"surprise", "ratio", "complexity", "local", "local-ink"}
    assert np.allclose(det.anomaly_score(test), combined_score(every, det.reference_))
    assert roc_auc_score(labels, det.anomaly_score(test)) > 0.95
    assert roc_auc_score(labels, det.anomaly_score(test, "local")) > 0.95
    # Complexity is surprise minus the PNG length: it corrects for inputs simpler than the
    # data (Serrà et al.), and by design it discounts noise, whose PNG is long.
    shown = prepare_split(torch.from_numpy(test[:, None]), "dynamic-binary", train=False)
    png = png_bits(shown.numpy() * 255)
    assert np.allclose(det.anomaly_score(test, "complexity"), surprise - png)
    det.save(tmp_path / "det")
    again = AnomalyDetector.load(tmp_path / "det")
    assert np.array_equal(again.anomaly_score(test), det.anomaly_score(test))
    assert again.offset_ == det.offset_
    assert again.get_params()["intensity_epochs"] == 60


def test_bad_input_gives_clear_errors(tabular_detector):
    with pytest.raises(NotFittedError):
        AnomalyDetector().predict(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="5 features, but AnomalyDetector is expecting 6"):
        tabular_detector.score_samples(np.zeros((3, 5)))
    bad = np.zeros((4, 6))
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match=r"rows \[2\]"):
        tabular_detector.score_samples(bad)
    with pytest.raises(ValueError, match="0 sample"):
        tabular_detector.score_samples(np.zeros((0, 6)))
    with pytest.raises(DataError, match="fitted on tabular"):
        tabular_detector.score_samples(np.zeros((2, 6, 6)))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        AnomalyDetector(overrides=TINY).fit(np.full((5, 4, 4), 3.0))


@parametrize_with_checks([AnomalyDetector(k=4, overrides=TINY)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_score_and_detect_cli(tmp_path):
    from vaekit.data import idx_bytes, load_dataset

    ds = load_dataset("mnist")
    train_imgs = ds.train[ds.train_labels == 1][:1500, 0]
    det = AnomalyDetector(k=10, overrides=("train.epochs=3",)).fit(train_imgs)
    det.save(tmp_path / "ones")
    test = ds.test[:200, 0]
    (tmp_path / "t-images-idx3-ubyte").write_bytes(idx_bytes(test))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(idx_bytes(ds.test_labels[:200]))
    out = tmp_path / "s.csv"
    res = CliRunner().invoke(
        main,
        ["score", str(tmp_path / "ones"), str(tmp_path / "t-images-idx3-ubyte"), "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    rows = out.read_text().splitlines()
    assert rows[0] == "index,score_bits,label" and len(rows) == 201
    scores = np.array([float(r.split(",")[1]) for r in rows[1:]])
    labels = np.array([int(r.split(",")[2]) for r in rows[1:]])
    assert roc_auc_score(labels != 1, scores) > 0.9
    np.save(tmp_path / "normal.npy", ds.test[ds.test_labels == 1][:100, 0])
    res = CliRunner().invoke(
        main,
        [
            "detect",
            str(tmp_path / "ones"),
            str(tmp_path / "t-images-idx3-ubyte"),
            "--calibrate",
            str(tmp_path / "normal.npy"),
            "--quantile",
            "0.95",
            "--out",
            str(tmp_path / "det"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "det" / "most_anomalous.png").exists()
    flagged = (tmp_path / "det" / "flagged.csv").read_text().splitlines()[1:]
    assert 100 < len(flagged) < 200
    res = CliRunner().invoke(
        main,
        [
            "detect",
            str(tmp_path / "ones"),
            str(tmp_path / "t-images-idx3-ubyte"),
            "--contamination",
            "0.1",
            "--out",
            str(tmp_path / "d2"),
        ],
    )
    assert res.exit_code == 0 and "flagged 20 of 200" in res.output
    res = CliRunner().invoke(main, ["detect", str(tmp_path / "ones"), str(tmp_path / "x.npy")])
    assert res.exit_code != 0


def test_a_plain_run_scores_without_writing_and_keeps_its_parts_only_when_asked(
    tmp_path, npy_data, monkeypatch
):
    """`vaekit score` on a `vaekit train` run (no detector.json) fits the local models and the
    combined score's reference on the run's training data in memory and writes nothing into
    the run folder (a read-only folder scores); `fit_parts` and `keep_parts` (`vaekit
    fit-scores`) keep them there, and later loads read them back without fitting again."""
    from tests.conftest import tiny_config
    from vaekit import fileio
    from vaekit.training import train

    run = train(tiny_config(npy_data, epochs=1), tmp_path / "run", progress=False)
    before = sorted(p.name for p in run.iterdir())
    test = synthetic_digits(30, 12, seed=3)

    def no_writes(*args, **kwargs):
        raise PermissionError("read-only run folder")

    monkeypatch.setattr(fileio, "atomic_path", no_writes)
    a = AnomalyDetector.load(run)
    assert a.background_ is None  # nothing fitted until the ratio is asked for
    ratio = a.anomaly_score(test, "ratio")
    assert a.background_ is not None and np.isfinite(ratio).all()
    combined = a.anomaly_score(test)  # auto: combined, which also needs the intensity model
    assert np.isfinite(combined).all()
    assert sorted(p.name for p in run.iterdir()) == before
    monkeypatch.undo()

    b = AnomalyDetector.load(run)
    assert b.fit_parts() == ["background", "intensity", "reference"]
    written = {p.name for p in b.keep_parts()}
    assert written == {
        "background.safetensors",
        "background.json",
        "intensity.safetensors",
        "intensity.json",
        "score_reference.json",
    }
    import vaekit.anomaly.detector as anomaly_module

    def refit(*args, **kwargs):
        raise AssertionError("a kept part was fitted again")

    monkeypatch.setattr(anomaly_module, "fit_local_model", refit)
    monkeypatch.setattr(anomaly_module, "fit_reference", refit)
    c = AnomalyDetector.load(run)
    assert c.fit_parts() == []
    # in memory or kept, the same deterministic fit gives the same scores
    assert np.allclose(c.anomaly_score(test, "ratio"), ratio)
    assert np.allclose(c.anomaly_score(test), combined)


def test_ratio_needs_binary_single_channel_images(tabular_detector):
    with pytest.raises(VaekitError, match="background model"):
        tabular_detector.anomaly_score(np.zeros((3, 6)), "ratio")
    with pytest.raises(VaekitError, match="single-channel images with binary pixels"):
        AnomalyDetector(score_kind="ratio", overrides=TINY).fit(
            np.random.default_rng(0).random((20, 6))
        )


def test_a_detector_saved_by_0_4_scores_as_it_was_fitted(tmp_path):
    """vaekit 0.4 saved no intensity model and, for "auto", no reference: its "auto" meant the
    ratio for binary single-channel images, and its threshold was set on that score."""
    import json

    normal = synthetic_digits(200, 12)
    det = AnomalyDetector(score_kind="ratio", k=5, overrides=TINY).fit(normal)
    det.save(tmp_path / "old")
    state = json.loads((tmp_path / "old" / "detector.json").read_text())
    state["params"]["score_kind"] = "auto"
    (tmp_path / "old" / "detector.json").write_text(json.dumps(state))
    old = AnomalyDetector.load(tmp_path / "old")
    test = synthetic_digits(20, 12, seed=4)
    assert old._score_kind() == "ratio"
    assert np.array_equal(old.anomaly_score(test), det.anomaly_score(test, "ratio"))
    assert np.array_equal(old.predict(test), det.predict(test))


def test_the_default_on_an_8bit_run_combines_the_kinds_that_apply(tmp_path, npy_data):
    """No ratio for 8-bit pixels (its background model is binary): the combined default's
    views are surprise and complexity, and the local intensity scores; it flags blank images."""
    from tests.conftest import tiny_config
    from vaekit.training import train

    run = train(tiny_config(npy_data, pixels="8bit", epochs=2), tmp_path / "run", progress=False)
    det = AnomalyDetector.load(run)
    test = synthetic_digits(30, 12, seed=3)
    blank = np.zeros((10, 12, 12), np.uint8)
    scores = det.anomaly_score(np.concatenate([test, blank]))
    assert det._score_kind() == "combined" and np.isfinite(scores).all()
    views = [set(v["kinds"]) for v in det.reference_["views"]]
    assert views == [{"surprise", "complexity"}, {"local", "local-ink"}]
    assert scores[30:].min() > np.median(scores[:30])


def test_an_intensity_model_kept_by_0_5_loads_as_the_softmax_it_is(tmp_path):
    """vaekit 0.5 kept a 256-way softmax intensity model and no "mixture" in its spec; today's
    default is a logistic mixture. The old file loads as what it is and scores the same."""
    import json

    from vaekit.anomaly.background import LocalPixelModel
    from vaekit.anomaly.detector import _load_kept, _save_local_model

    torch.manual_seed(0)
    old = LocalPixelModel(levels=256, mixture=0)
    _save_local_model(tmp_path, old, "intensity.safetensors", "intensity.json")
    spec = json.loads((tmp_path / "intensity.json").read_text())
    del spec["mixture"]
    (tmp_path / "intensity.json").write_text(json.dumps(spec))
    back = _load_kept(tmp_path, "intensity.safetensors", "intensity.json")
    assert back.mixture == 0
    x = torch.randint(0, 256, (3, 1, 8, 8)).float() / 255
    with torch.no_grad():
        assert torch.equal(back.log_prob(x), old.eval().log_prob(x))
    new = LocalPixelModel(levels=256, mixture=5)
    _save_local_model(tmp_path, new, "intensity.safetensors", "intensity.json")
    assert _load_kept(tmp_path, "intensity.safetensors", "intensity.json").mixture == 5


def test_two_processes_score_one_run_folder_at_once(tmp_path, npy_data):
    """`vaekit score` on a plain run folder, twice at once: both fit what the ratio needs in
    memory, write the same scores, and leave the run folder as it was."""
    import subprocess
    import sys

    from tests.conftest import tiny_config
    from vaekit.training import train

    run = train(tiny_config(npy_data, epochs=1), tmp_path / "run", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    np.save(tmp_path / "x.npy", synthetic_digits(40, 12, seed=3))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vaekit",
                "score",
                str(run),
                str(tmp_path / "x.npy"),
                "--score",
                "ratio",
                "--k",
                "5",
                "--out",
                str(tmp_path / f"s{i}.csv"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert (tmp_path / "s0.csv").read_text() == (tmp_path / "s1.csv").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
