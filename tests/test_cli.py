"""Every command end to end on a small subset, and clean errors for bad input."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from vaekit.cli import main


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--preset",
            "demo",
            "--data",
            "mnist",
            "--limit",
            "1200",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "model.hidden=64,64",
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def test_train_writes_run_folder(mnist_run):
    assert {p.name for p in mnist_run.iterdir()} >= {
        "config.json",
        "metrics.jsonl",
        "checkpoint.safetensors",
    }
    cfg = json.loads((mnist_run / "config.json").read_text())
    assert cfg["model"]["hidden"] == [64, 64] and cfg["train"]["limit"] == 1200


def test_evaluate_json_has_the_promised_keys(mnist_run):
    res = CliRunner().invoke(main, ["evaluate", str(mnist_run), "--k", "20", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in (
        "elbo",
        "reconstruction",
        "kl",
        "kl_per_dim",
        "log_px",
        "jensen_gap",
        "active_units",
        "bits_per_dim",
        "k",
    ):
        assert key in out
    assert out["k"] == 20 and len(out["kl_per_dim"]) == 16
    assert out["jensen_gap"] == pytest.approx(out["log_px"] - out["elbo"])
    assert out["elbo"] == pytest.approx(out["reconstruction"] - out["kl"])
    assert sum(out["kl_per_dim"]) == pytest.approx(out["kl"], rel=1e-6)
    assert out["bits_per_dim"] == pytest.approx(-out["log_px"] / (784 * 0.6931471805599453))


def test_evaluate_human_output(mnist_run):
    res = CliRunner().invoke(main, ["evaluate", str(mnist_run), "--k", "5", "--limit", "600"])
    assert res.exit_code == 0, res.output
    assert "Jensen gap" in res.output and "active units" in res.output


@pytest.mark.parametrize(
    "cmd,name,n",
    [
        (["sample", "--n", "16"], "s.png", 16),
        (["reconstruct", "--n", "8"], "r.png", 16),
        (["interpolate", "--steps", "5", "--pairs", "3"], "i.png", 21),
    ],
)
def test_image_commands(mnist_run, tmp_path, cmd, name, n):
    out = tmp_path / name
    res = CliRunner().invoke(main, [cmd[0], str(mnist_run), *cmd[1:], "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 28 * 2


def test_resume_via_cli(mnist_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(mnist_run, run)
    res = CliRunner().invoke(
        main, ["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_damaged_checkpoint_is_a_clean_error(mnist_run, tmp_path):
    import shutil

    run = tmp_path / "bad"
    shutil.copytree(mnist_run, run)
    ck = run / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    res = CliRunner().invoke(main, ["sample", str(run)])
    assert res.exit_code == 1 and "error:" in res.output and "checkpoint.safetensors" in res.output


def test_missing_data_is_a_clean_error(tmp_path):
    res = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 1 and "error:" in res.output and "nope" in res.output


def test_bad_override_is_a_clean_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "--set", "model.widht=3", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "widht" in res.output


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vaekit", "evaluate", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "no checkpoint" in proc.stderr


def test_compress_decompress_cli(mnist_run, tmp_path):
    import numpy as np
    import torch

    from vaekit.data import load_dataset
    from vaekit.data.pixels import binarize_fixed

    imgs = binarize_fixed(torch.from_numpy(load_dataset("mnist").test[:40])).numpy()[:, 0]
    np.save(tmp_path / "bin.npy", imgs)
    vkz, back = tmp_path / "bin.vkz", tmp_path / "back.npy"
    res = CliRunner().invoke(
        main,
        ["compress", str(mnist_run), str(tmp_path / "bin.npy"), "-o", str(vkz), "--ideal-k", "5"],
    )
    assert res.exit_code == 0, res.output
    assert "bits/dim" in res.output and "-ELBO" in res.output and "-log p(x)" in res.output
    # `--out`, as every other command spells it, works too
    res = CliRunner().invoke(main, ["decompress", str(mnist_run), str(vkz), "--out", str(back)])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(back), imgs)
    # An 8-bit input to a binary model, and a damaged file, are clean errors.
    np.save(tmp_path / "gray.npy", load_dataset("mnist").test[:5, 0])
    res = CliRunner().invoke(
        main, ["compress", str(mnist_run), str(tmp_path / "gray.npy"), "-o", str(vkz)]
    )
    assert res.exit_code == 1 and "binar" in res.output
    vkz.write_bytes(vkz.read_bytes()[:-3])
    res = CliRunner().invoke(main, ["decompress", str(mnist_run), str(vkz), "-o", str(back)])
    assert res.exit_code == 1 and "corrupt" in res.output


def test_unknown_activation_is_a_clean_error(tmp_path, npy_data):
    out = tmp_path / "r"
    res = CliRunner().invoke(
        main,
        ["train", "--data", str(npy_data), "--out", str(out), "--set", "model.activation=swish"],
    )
    assert res.exit_code == 1
    assert "error: setting model.activation = 'swish': must be one of relu, silu" in res.output
    assert not out.exists()  # nothing written for a run that never started


def test_compress_by_default_adds_no_importance_sampling_pass(mnist_run, tmp_path, monkeypatch):
    """`vaekit compress` used to run K=100 importance sampling over the whole input after
    writing the file; by default it now reports -ELBO from one cheap pass."""
    import numpy as np
    import torch

    import vaekit.evaluation.estimators as evaluation
    from vaekit.data import load_dataset
    from vaekit.data.pixels import binarize_fixed

    imgs = binarize_fixed(torch.from_numpy(load_dataset("mnist").test[:30])).numpy()[:, 0]
    np.save(tmp_path / "bin.npy", imgs)
    calls = []
    real = evaluation.importance_sampled_terms
    monkeypatch.setattr(
        evaluation, "importance_sampled_terms", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    vkz = tmp_path / "bin.vkz"
    res = CliRunner().invoke(
        main, ["compress", str(mnist_run), str(tmp_path / "bin.npy"), "-o", str(vkz)]
    )
    assert res.exit_code == 0, res.output
    assert calls == [] and "-ELBO" in res.output and "-log p(x)" not in res.output
    res = CliRunner().invoke(
        main,
        ["compress", str(mnist_run), str(tmp_path / "bin.npy"), "-o", str(vkz), "--ideal-k", "3"],
    )
    assert res.exit_code == 0 and calls and "-log p(x)" in res.output


def test_pixels_flag_sets_the_models_pixel_mode(tmp_path, npy_data):
    from vaekit.checkpoint import load_checkpoint

    out = tmp_path / "r"
    args = ["train", "--data", str(npy_data), "--out", str(out), "--quiet", "--pixels", "8bit"]
    res = CliRunner().invoke(main, [*args, "--preset", "demo", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    model, cfg, _ = load_checkpoint(out)
    assert cfg.model.pixels == "8bit" and model.likelihood.name == "logistic-mixture"


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "RUN", "--k", "-1"],
        ["evaluate", "RUN", "--batch-size", "0"],
        ["sample", "RUN", "--n", "0"],
        ["sample", "RUN", "--n", "-3"],
        ["reconstruct", "RUN", "--n", "0"],
        ["interpolate", "RUN", "--steps", "0"],
        ["score", "RUN", "INPUT", "--k", "0"],
        ["detect", "RUN", "INPUT", "--contamination", "1.5"],
        ["detect", "RUN", "INPUT", "--calibrate", "INPUT", "--quantile", "1"],
        ["compress", "RUN", "INPUT", "-o", "OUT", "--ideal-k", "-2"],
    ],
)
def test_out_of_range_arguments_are_refused_before_any_work(mnist_run, tmp_path, args):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.uint8))
    subs = {"RUN": str(mnist_run), "INPUT": str(tmp_path / "x.npy"), "OUT": str(tmp_path / "o")}
    res = CliRunner().invoke(main, [subs.get(a, a) for a in args])
    assert res.exit_code == 2 and "Invalid value" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--limit", "0"], ["--limit", "-5"]])
def test_train_refuses_out_of_range_counts(tmp_path, npy_data, flag):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["train", "--data", str(npy_data), "--out", str(out), *flag])
    assert res.exit_code == 2 and "Invalid value" in res.output
    assert not out.exists()


def test_a_collapsed_run_says_so(tmp_path, npy_data, monkeypatch):
    import json

    out = tmp_path / "r"
    # a KL weight of 50 switches every unit off
    flags = "--preset demo --epochs 1 --quiet --set train.beta=50".split()
    res = CliRunner().invoke(main, ["train", "--data", str(npy_data), "--out", str(out), *flags])
    assert res.exit_code == 0, res.output
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_active_units"] == 0
    assert "warning: posterior collapse: 0 active latent units" in res.output
    assert "posterior collapse" in rows[-1]["warnings"][-1]


def test_resume_says_which_flags_it_ignores(mnist_run, tmp_path):
    import shutil

    run = tmp_path / "again"
    shutil.copytree(mnist_run, run)
    res = CliRunner().invoke(
        main, ["train", "--out", str(run), "--resume", "--epochs", "3", "--limit", "50", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert "warning: --resume continues with the run's own settings; ignored: --limit" in res.output


def test_evaluate_on_a_random_sample_states_its_estimator(mnist_run):
    res = CliRunner().invoke(
        main, ["evaluate", str(mnist_run), "--k", "5", "--sample", "20", "--limit", "600"]
    )
    assert res.exit_code == 0, res.output
    assert "+- " in res.output and "20 images drawn at random" in res.output
    assert "the mean of 8 one-sample ELBOs" in res.output  # --control-k 32 is not below --k 5
    for control, says in (("2", "IS log p(x) with K=2"), ("0", "one-sample ELBOs")):
        res = CliRunner().invoke(
            main,
            ["evaluate", str(mnist_run), "--k", "5", "--sample", "20", "--limit", "600"]
            + ["--control-k", control],
        )
        assert res.exit_code == 0 and says in res.output, res.output
    for bad, says in (
        (["--sample", "1"], "--sample needs"),
        (["--sample", "100000"], "--sample needs"),
        (["--sample", "5", "--k", "0"], "--sample needs"),
        (["--sample", "5", "--k", "4", "--control-k", "4"], "--control-k (4) must be below"),
    ):
        res = CliRunner().invoke(main, ["evaluate", str(mnist_run), "--limit", "600", *bad])
        assert res.exit_code != 0 and says in res.output, res.output
        assert "Traceback" not in res.output
