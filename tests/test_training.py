"""Training: the loss goes down, resume continues exactly, NaN never overwrites a checkpoint."""

import json

import pytest
import torch

from tests.conftest import tiny_config
from vaekit.checkpoint import load_checkpoint
from vaekit.errors import TrainingDiverged, VaekitError
from vaekit.training import train


def _metrics(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_training_lowers_the_loss(tmp_path, npy_data):
    run = train(tiny_config(npy_data, epochs=6), tmp_path / "run", progress=False)
    m = _metrics(run)
    assert len(m) == 6
    assert m[-1]["train_loss"] < m[0]["train_loss"] - 5
    assert m[-1]["test_elbo"] > m[0]["test_elbo"] + 5


def _config(npy_data, arch: str, epochs: int = 2):
    cfg = tiny_config(npy_data, epochs=epochs)
    if arch == "conv":  # trained channels-last on CPUs, saved contiguous
        cfg.model.arch, cfg.model.channels = "conv", 4
    return cfg


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_resume_continues_exactly(tmp_path, npy_data, monkeypatch, arch):
    full = train(_config(npy_data, arch, epochs=4), tmp_path / "full", progress=False)
    import vaekit.training.epoch as training

    real_save = training.save_checkpoint
    calls = {"n": 0}

    def save_then_die(*args, **kw):  # the process dies after epoch 3's metrics, before its save
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_save(*args, **kw)

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(npy_data, arch, epochs=4), tmp_path / "part", progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    part = train(_config(npy_data, arch), tmp_path / "part", resume=True, progress=False)
    a, b = _metrics(full), _metrics(part)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)
        assert ra["test_elbo"] == pytest.approx(rb["test_elbo"], rel=1e-6)
    ma, _, sa = load_checkpoint(full)
    mb, _, sb = load_checkpoint(part)
    assert sa.step == sb.step
    for (ka, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), ka


def test_convolutions_train_channels_last_on_cpus(tmp_path, npy_data):
    layouts = []

    def record(row, model):
        kernels = [p for p in model.parameters() if p.dim() == 4]
        layouts.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels))
        layouts.append(len(kernels) > 0)

    train(_config(npy_data, "conv"), tmp_path / "run", progress=False, on_epoch=record)
    assert layouts == [True, True, True, True]


def test_the_monitor_reads_the_first_n_test_images(tmp_path, npy_data):
    from vaekit.data.splits import load_splits
    from vaekit.evaluation import evaluate

    cfg = tiny_config(npy_data, epochs=1)
    cfg.train.monitor_images = 10
    run = train(cfg, tmp_path / "run", progress=False)
    model, cfg, _ = load_checkpoint(run)
    test = load_splits(cfg, torch.device("cpu")).test
    assert len(test) > 10

    def elbo(images):
        return evaluate(model, images, k=0, batch_size=64, shard=False, example_noise=False)["elbo"]

    logged = _metrics(run)[0]["test_elbo"]
    assert logged == pytest.approx(elbo(test[:10]), rel=1e-6)
    assert abs(logged - elbo(test)) > 1e-3


def test_weight_average_is_the_moving_average_of_the_optimizers_weights(tmp_path, npy_data):
    """With `train.ema = d` and one step per epoch, the model saved after epoch e is
    d * (the one after e-1) + (1 - d) * the optimizer's weights, which the checkpoint keeps
    for resume; the epoch's test ELBO is the average's."""
    cfg = tiny_config(npy_data, epochs=3)
    cfg.train.ema, cfg.train.batch_size = 0.75, 100_000  # the whole split: one step an epoch
    seen = []

    def grab(row, model):
        saved, _, state = load_checkpoint(tmp_path / "run", with_state=True)
        seen.append((row, saved.state_dict(), state.raw_weights))
        assert torch.equal(
            next(iter(model.state_dict().values())), next(iter(seen[-1][1].values()))
        )

    train(cfg, tmp_path / "run", progress=True, on_epoch=grab)  # the CLI shows progress
    assert all(row["test_weights"] == "ema-0.75" for row, _, _ in seen)
    first_avg, first_raw = seen[0][1], seen[0][2]
    for name in first_raw:  # the first update copies
        torch.testing.assert_close(first_avg[name], first_raw[name])
    moved = 0.0
    for (_, before, _), (_, after, raw) in zip(seen, seen[1:], strict=False):
        for name in raw:
            torch.testing.assert_close(after[name], 0.75 * before[name] + 0.25 * raw[name])
            moved = max(moved, (raw[name] - after[name]).abs().max().item())
    assert moved > 1e-4  # the average lags the raw weights: the two are really different


def test_resume_with_a_weight_average_continues_exactly(tmp_path, npy_data, monkeypatch):
    import vaekit.training.epoch as training

    cfg = tiny_config(npy_data, epochs=3)
    cfg.train.ema = 0.9
    full = train(cfg, tmp_path / "full", progress=False)
    real_save = training.save_checkpoint
    saves = []

    def die_at_the_third_save(*args, **kw):
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt
        real_save(*args, **kw)

    monkeypatch.setattr(training, "save_checkpoint", die_at_the_third_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    part = train(None, tmp_path / "part", resume=True, progress=False)
    a, b = _metrics(full), _metrics(part)
    assert [r["test_elbo"] for r in a] == pytest.approx([r["test_elbo"] for r in b], rel=1e-6)
    (ma, _, sa), (mb, _, sb) = (load_checkpoint(r, with_state=True) for r in (full, part))
    for name, v in ma.state_dict().items():
        torch.testing.assert_close(v, mb.state_dict()[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(sa.raw_weights[name], sb.raw_weights[name], rtol=0, atol=1e-6)


def test_resume_can_extend_a_finished_run(tmp_path, npy_data):
    run = train(tiny_config(npy_data, epochs=2), tmp_path / "r", progress=False)
    train(tiny_config(npy_data), run, resume=True, progress=False, total_epochs=3)
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3]
    assert load_checkpoint(run)[2].epoch == 3


def test_existing_run_needs_resume(tmp_path, npy_data):
    train(tiny_config(npy_data, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(VaekitError, match="--resume"):
        train(tiny_config(npy_data, epochs=1), tmp_path / "r", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, npy_data, monkeypatch):
    run = train(tiny_config(npy_data, epochs=1), tmp_path / "r", progress=False)
    ckpt = run / "checkpoint.safetensors"
    before = ckpt.read_bytes()
    import vaekit.objectives as objectives

    real_elbo = objectives.elbo
    calls = {"n": 0}

    def poisoned(model, x, **kw):
        calls["n"] += 1
        terms = real_elbo(model, x, **kw)
        if calls["n"] == 5:
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(objectives, "elbo", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 16"):
        train(tiny_config(npy_data), run, resume=True, progress=False, total_epochs=3)
    assert ckpt.read_bytes() == before
    assert len(_metrics(run)) == 1


@pytest.mark.parametrize("pixels", ["static-binary", "expected-binary", "8bit", "continuous"])
def test_every_pixel_mode_trains_and_evaluates(tmp_path, npy_data, pixels):
    from vaekit.data.splits import load_splits
    from vaekit.evaluation import evaluate

    run = train(tiny_config(npy_data, pixels=pixels, epochs=2), tmp_path / pixels, progress=False)
    model, cfg, _ = load_checkpoint(run)
    splits = load_splits(cfg, torch.device("cpu"))
    res = evaluate(model, splits.test, k=20)
    assert all(torch.isfinite(torch.tensor(res[k])) for k in ("elbo", "log_px", "bits_per_dim"))
    assert res["log_px"] >= res["elbo"] - 0.5
    # Bits/dim of 8-bit data: a bound on a real discrete likelihood, so within (0, 8].
    if pixels in ("8bit", "continuous"):
        assert 0 < res["bits_per_dim"] <= 8.5
    # expected-binary's IS estimate is not a likelihood, and the result says so
    assert ("note" in res) == (pixels == "expected-binary")


def test_log_px_standard_error_is_the_spread_over_test_images(tmp_path, npy_data):
    from vaekit.data.splits import load_splits
    from vaekit.evaluation import evaluate, per_example

    run = train(tiny_config(npy_data, epochs=1), tmp_path / "run", progress=False)
    model, cfg, _ = load_checkpoint(run)
    test = load_splits(cfg, torch.device("cpu")).test
    res = evaluate(model, test, k=10, batch_size=7)
    log_px = per_example(model, test, k=10)["log_px"]
    # float32 per-example values: batches of 7 and of the default size may round
    # differently in the last bit on some CPUs (an AMD EPYC did, by 2.5e-9 relative)
    assert res["log_px"] == pytest.approx(log_px.double().mean().item(), rel=1e-6)
    assert res["log_px_stderr"] == pytest.approx(
        (log_px.std() / len(log_px) ** 0.5).item(), rel=1e-6
    )
    assert res["log_px_stderr"] > 0
    assert evaluate(model, test, k=0)["log_px_stderr"] is None


def test_decoding_more_latents_at_once_draws_the_same_samples(tmp_path, npy_data):
    """`max_batch` only regroups the work: each example's K samples come from its own stream,
    so its log p(x) is the same whether 64 or 4096 latents are decoded at once, and K=200
    spans several chunks of the smaller limit."""
    from vaekit.data.splits import load_splits
    from vaekit.evaluation import evaluate, per_example

    run = train(tiny_config(npy_data, epochs=1), tmp_path / "run", progress=False)
    model, cfg, _ = load_checkpoint(run)
    test = load_splits(cfg, torch.device("cpu")).test[:20]
    decoded: list[int] = []
    log_weights = model.log_weights

    def counting(x, k, eps=None, **kw):
        decoded.append(x.shape[0] * k)
        return log_weights(x, k, eps, **kw)

    model.log_weights = counting
    small = per_example(model, test, k=200, batch_size=10, max_batch=64)["log_px"]
    assert max(decoded) == 64  # one example's block at a time
    decoded.clear()
    large = per_example(model, test, k=200, batch_size=10, max_batch=4096)["log_px"]
    assert max(decoded) > 64
    torch.testing.assert_close(small, large, rtol=0, atol=1e-4)
    other = per_example(model, test, k=200, batch_size=10, seed=1, max_batch=4096)["log_px"]
    assert (other - large).abs().max() > 1e-3  # the seed, not the batching, moves it
    res = evaluate(model, test, k=200, batch_size=10, max_batch=4096)
    assert res["log_px"] == pytest.approx(large.mean().item(), rel=1e-9)


def test_conv_architecture_trains_on_odd_sizes(tmp_path):
    import numpy as np

    from tests.conftest import synthetic_digits

    data = np.pad(synthetic_digits(200, 12), ((0, 0), (0, 1), (0, 2)))  # 13 x 14 images
    np.save(tmp_path / "odd.npy", data)
    cfg = tiny_config(tmp_path / "odd.npy", epochs=2)
    cfg.model.arch, cfg.model.channels = "conv", 8
    run = train(cfg, tmp_path / "conv", progress=False)
    model, _, _ = load_checkpoint(run)
    x = torch.from_numpy(data[:3, None] > 0).float()
    assert model.decode(model.encode(x).mean).mean.shape == (3, 1, 13, 14)
    m = _metrics(run)
    assert m[-1]["train_loss"] < m[0]["train_loss"]


def test_iwae_objective_trains(tmp_path, npy_data):
    cfg = tiny_config(npy_data, epochs=3)
    cfg.train.objective, cfg.train.iw_k = "iwae", 4
    run = train(cfg, tmp_path / "iwae", progress=False)
    m = _metrics(run)
    assert m[0]["train_bound_name"] == "iwae-k4"
    assert m[-1]["train_loss"] < m[0]["train_loss"]


def test_a_small_data_set_is_warned_about_in_the_log_and_metrics(tmp_path, npy_data, capsys):
    """400 images at batch 32 for 2 epochs is 24 steps: far too few, and the run says so."""
    run = train(tiny_config(npy_data, epochs=2), tmp_path / "r", progress=False)
    first = _metrics(run)[0]
    assert "only 360 training images: 22 optimizer steps" in first["warnings"][0]
    assert "warning: only 360 training images" in capsys.readouterr().err


def test_resume_with_other_settings_says_they_were_ignored(tmp_path, npy_data, capsys):
    run = train(tiny_config(npy_data, epochs=1), tmp_path / "r", progress=False)
    other = tiny_config(npy_data)
    other.train.lr = 0.5
    train(other, run, resume=True, progress=False, total_epochs=2)
    row = _metrics(run)[-1]
    assert "ignored: train.lr" in row["warnings"][0]
    assert "ignored: train.lr" in capsys.readouterr().err


def test_learning_rate_ramps_in_then_follows_the_cosine():
    from vaekit.config import Config
    from vaekit.training import learning_rate

    cfg = Config()
    cfg.train.lr, cfg.train.lr_final = 1e-3, 1e-4
    cosine = [learning_rate(cfg, s, 100) for s in range(100)]
    assert cosine[0] == pytest.approx(1e-3) and cosine[-1] == pytest.approx(1e-4, rel=0.01)
    cfg.train.lr_warmup_steps = 10
    ramped = [learning_rate(cfg, s, 100) for s in range(100)]
    # linear from lr/10 to the cosine's value at step 9, then the cosine unchanged
    assert ramped[0] == pytest.approx(cosine[0] / 10)
    assert ramped[4] == pytest.approx(cosine[4] / 2)
    assert ramped[9] == pytest.approx(cosine[9])
    assert ramped[10:] == cosine[10:]
    assert all(a < b for a, b in zip(ramped[:9], ramped[1:10], strict=True))


def test_dropout_acts_while_training_only_and_its_run_reloads(tmp_path, npy_data):
    """model.dropout perturbs the networks in training mode; evaluation (model.eval(), as
    every use loads a run) is deterministic, and the checkpoint rebuilds the same model."""
    from vaekit.models import build_model

    cfg = tiny_config(npy_data, epochs=1)
    cfg.model.hidden, cfg.model.dropout = [32, 32], 0.3
    run = train(cfg, tmp_path / "run", progress=False)
    model, loaded, _ = load_checkpoint(run)
    assert loaded.model.dropout == 0.3 and not model.training
    z = torch.randn(8, loaded.model.latent_dim)
    assert torch.equal(model.decode_params(z), model.decode_params(z))
    model.train()
    assert not torch.equal(model.decode_params(z), model.decode_params(z))
    cfg.model.dropout = 0.0  # without dropout the layer names are the ones older runs have
    plain = build_model(cfg.model)
    assert "decoder.body.2.weight" in plain.state_dict()
    assert "decoder.body.2.weight" not in model.state_dict()


class _FakeClock:
    """A clock that advances `tick` seconds each time it is read."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_time_budget_paces_the_learning_rate_and_stops_before_overrunning(monkeypatch):
    import vaekit.training.schedules as training

    clock = _FakeClock()
    monkeypatch.setattr(training, "_clock", clock)
    b = training.TimeBudget(100.0, [])
    assert b.begin_epoch(0, 10) and b.fraction(5) == 0.0  # no pace known yet
    clock.now = 30.0
    assert b.begin_epoch(10, 10)  # 3 s a step: this epoch ends at 60 s
    assert b.fraction(15) == pytest.approx(0.45)
    clock.now = 60.0
    assert b.begin_epoch(20, 10)  # ends at 90
    clock.now = 95.0
    assert not b.begin_epoch(30, 10)  # 3.5 s a step now: would end at 130
    # a resumed run takes its spent time and pace from the metrics rows
    clock.now = 0.0
    rows = [{"elapsed_seconds": 30.0, "step": 10}, {"elapsed_seconds": 60.0, "step": 20}]
    r = training.TimeBudget(100.0, rows)
    assert r.begin_epoch(20, 10) and r.fraction(25) == pytest.approx(0.75)
    assert not training.TimeBudget(80.0, rows).begin_epoch(20, 10)
    free = training.TimeBudget(None, rows)
    assert free.begin_epoch(10**6, 10) and free.fraction(10**6) == 0.0


def test_a_budgeted_run_stops_early_with_its_learning_rate_decayed(tmp_path, npy_data, monkeypatch):
    import vaekit.training.schedules as training

    monkeypatch.setattr(training, "_clock", _FakeClock(tick=1.0))
    cfg = tiny_config(npy_data, epochs=50)
    cfg.train.lr, cfg.train.lr_final, cfg.train.time_budget_s = 1e-3, 1e-5, 9.0
    run = train(cfg, tmp_path / "run", progress=False)
    m = _metrics(run)
    assert 2 <= len(m) < 10
    assert all(r["elapsed_seconds"] <= 9.0 for r in m)
    # by steps the run is a few percent in, so the cosine alone would still be near lr
    assert m[-1]["lr"] < 0.5 * (cfg.train.lr + cfg.train.lr_final)
    assert training.learning_rate(cfg, m[-1]["step"], 50 * m[0]["step"]) > 9e-4
    # resuming a spent budget trains nothing more
    train(None, run, resume=True, progress=False, total_epochs=60)
    assert _metrics(run) == m


def test_a_time_budget_must_be_positive(tmp_path, npy_data):
    cfg = tiny_config(npy_data)
    cfg.train.time_budget_s = 0.0
    with pytest.raises(VaekitError, match="time_budget_s"):
        train(cfg, tmp_path / "run", progress=False)
