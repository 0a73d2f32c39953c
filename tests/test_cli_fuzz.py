"""Every subcommand with bad arguments and bad inputs: a non-zero exit, one clear message
and no traceback, and nothing left where the output would have gone."""

import itertools

import numpy as np
import pytest
from click.testing import CliRunner

from vaekit.cli import main

BAD_NUMBERS = ["0", "-1", "-3", "nan", "abc", "1e999", "2.5", ""]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    data = (np.random.default_rng(0).random((60, 12, 12)) * 255).astype(np.uint8)
    np.save(root / "good.npy", data)
    flags = "--preset demo --epochs 1 --quiet --set model.hidden=16 --set model.latent_dim=2"
    args = ["train", "--data", str(root / "good.npy"), "--out", str(run), *flags.split()]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (root / "empty.npy").write_bytes(b"")
    (root / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "nan.npy", np.full((4, 12, 12), np.nan))
    np.save(root / "wrong.npy", np.zeros((4, 9, 9), np.uint8))
    (root / "rows.csv").write_text("a,b\n1,x\n")
    (root / "bad.vkz").write_bytes(b"VKZ\x1a" + b"\0" * 20)
    (root / "fake_run").mkdir()
    (root / "fake_run" / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    return root


def _cases():
    options = {
        "evaluate": ["--k", "--batch-size", "--limit", "--seed"],
        "sample": ["--n", "--seed", "--temperature"],
        "reconstruct": ["--n"],
        "interpolate": ["--steps", "--pairs"],
        "score": ["--k"],
        "compress": ["--ideal-k"],
    }
    positional = {
        "evaluate": ["RUN"],
        "sample": ["RUN"],
        "reconstruct": ["RUN"],
        "interpolate": ["RUN"],
        "score": ["RUN", "GOOD", "--out", "OUT/s.csv"],
        "compress": ["RUN", "GOOD", "-o", "OUT/x.vkz"],
    }
    for cmd, opts in options.items():
        for opt, value in itertools.product(opts, BAD_NUMBERS):
            if (opt, value) in {("--seed", "0"), ("--k", "0"), ("--ideal-k", "0")}:
                continue  # valid values
            if opt == "--temperature" and value in ("0", "2.5"):
                continue
            yield [cmd, *positional[cmd], opt, value]
    bad_inputs = ["EMPTY", "JUNK", "NAN", "WRONG", "MISSING", "OUT"]
    for cmd in ("score", "compress"):
        for inp in bad_inputs:
            tail = ["--out", "OUT/s.csv"] if cmd == "score" else ["-o", "OUT/x.vkz"]
            yield [cmd, "RUN", inp, *tail]
    for inp in ("GOOD", "JUNK", "BADVKZ"):
        yield ["decompress", "RUN", inp, "-o", "OUT/back.npy"]
    for cmd in ("evaluate", "sample", "reconstruct", "interpolate"):
        for run in ("FAKE", "MISSING", "GOOD"):
            yield [cmd, run]
    train = ["train", "--data", "GOOD", "--out", "OUT/r", "--quiet"]
    for opt, value in itertools.product(
        ["--epochs", "--limit", "--threads", "--nproc"], BAD_NUMBERS
    ):
        yield [*train, opt, value]
    for item in [
        "train.lr=-1",
        "train.lr=nan",
        "model.latent_dim=0",
        "model.hidden=0",
        "train.bf16=maybe",
        "model.prior=nope",
        "nothing=1",
        "train.epochs",
        "=3",
    ]:
        yield [*train, "--set", item]
    for data in ["EMPTY", "JUNK", "NAN", "MISSING", "ROWS", "nonexistent-dataset"]:
        yield ["train", "--data", data, "--out", "OUT/r", "--quiet"]
    yield [*train, "--preset", "nope"]
    yield [*train, "--pixels", "nine-bit"]
    for opt, value in itertools.product(["--contamination", "--quantile"], BAD_NUMBERS):
        extra = ["--calibrate", "GOOD"] if opt == "--quantile" else []
        yield ["detect", "RUN", "GOOD", *extra, opt, value, "--out", "OUT/d"]
    for value in BAD_NUMBERS[1:]:
        yield [*train, "--seed", value]
    for cmd in (["score", "RUN", "GOOD"], ["detect", "RUN", "GOOD", "--contamination", "0.1"]):
        yield [*cmd, "--score", "nope", "--out", "OUT/s"]
    for value in ["1,2", "1,", ",", "-0.5", "inf", "1,nan"]:
        yield ["sample", "RUN", "--temperature", value, "--out", "OUT/s.png"]
    yield [*train, "--device", "nope"]
    yield [*train, "--config", "MISSING"]
    yield [*train, "--config", "ROWS"]
    yield ["detect", "RUN", "GOOD", "--out", "OUT/d"]  # neither --contamination nor --calibrate
    yield ["detect", "RUN", "GOOD", "--contamination", "0", "--out", "OUT/d"]


CASES = list(_cases())


def test_the_table_is_large():
    assert len(CASES) >= 200


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_bad_cli_use_is_a_clean_error(world, tmp_path, args):
    subs = {
        "RUN": str(world / "run"),
        "FAKE": str(world / "fake_run"),
        "GOOD": str(world / "good.npy"),
        "EMPTY": str(world / "empty.npy"),
        "JUNK": str(world / "junk.npy"),
        "NAN": str(world / "nan.npy"),
        "WRONG": str(world / "wrong.npy"),
        "ROWS": str(world / "rows.csv"),
        "BADVKZ": str(world / "bad.vkz"),
        "MISSING": str(world / "missing.npy"),
    }
    out = tmp_path / "out"
    argv = [a.replace("OUT", str(out)) if a.startswith("OUT") else subs.get(a, a) for a in args]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
