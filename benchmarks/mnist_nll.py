"""Train reference presets on dynamically binarized MNIST and report test log p(x) (K=5000).

    python benchmarks/mnist_nll.py [--presets mlp] [--k 5000] [--threads 2]

On a lent GPU, whose minutes are few: `--train-seconds S` times a short probe first and trains
for as many epochs as fit in S (the learning-rate schedule then spans those epochs), and
`--eval-images N` estimates log p(x) on the first N test images (the ELBO on all of them);
`--eval-seconds S` picks N from the time K samples take on 100 images (after a warm-up), and
`--total-seconds S` gives the evaluation what is left of S seconds from the script's start
once training ends. `--decode-batch` decodes more latents at once than the architecture's
conservative default (a large GPU's memory); on CUDA cuDNN picks its fastest kernels.

`--eval-sample N` estimates the whole test set's log p(x) where K samples on every image would
take too long (K=5000 with a conv model on two CPU cores: about 57 h): a cheap control for
every test image, IS with `--control-k` samples (default 32; 0: the mean of
`--control-samples` one-sample ELBOs), plus the mean of log p(x) - control on N test images
drawn uniformly at random (`--sample-seed`). The estimate is unbiased for what K samples on
all images would give; its standard error is the difference's spread over the N images, about
a nat with K=32 and a few with ELBOs, where log p(x) itself spreads by tens
(evaluation.subset_mean). The row says which estimator it used.

`--run DIR` evaluates a run trained before (on another machine: a model trained on the CPU,
evaluated on a lent GPU) instead of training one; its row names the run and takes the
training time from the run's own metrics (the epochs' training seconds, monitor excluded).

Appends one row per preset to benchmarks/results/mnist_nll.jsonl with machine, command and
date; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import evaluate, load_checkpoint, preset, train  # noqa: E402
from vaekit.data.splits import load_splits  # noqa: E402
from vaekit.evaluation import CONTROL_K, evaluate_sampled  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", nargs="+", default=["mlp"])
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[])
    ap.add_argument("--device", default="cpu", help="train and evaluate here (cpu, cuda)")
    ap.add_argument("--train-seconds", type=float, help="fit the epochs to this time budget")
    ap.add_argument("--eval-images", type=int, help="IS log p(x) on the first N test images")
    ap.add_argument(
        "--eval-sample", type=int, help="IS on N random test images, the ELBO on all of them"
    )
    ap.add_argument("--sample-seed", type=int, default=0, help="which random test images")
    ap.add_argument(
        "--control-k",
        type=int,
        default=CONTROL_K,
        help="with --eval-sample: IS samples per image for the control (0: one-sample ELBOs)",
    )
    ap.add_argument(
        "--control-samples",
        type=int,
        default=8,
        help="with --control-k 0: one-sample ELBOs averaged per image",
    )
    ap.add_argument("--eval-seconds", type=float, help="choose --eval-images to fit this time")
    ap.add_argument(
        "--total-seconds", type=float, help="evaluate within what is left of this after training"
    )
    ap.add_argument("--decode-batch", type=int, help="latents decoded at once when evaluating")
    ap.add_argument("--run", type=Path, help="evaluate this trained run instead of training")
    return ap


def _train_preset(args, name: str) -> tuple[Path, float | None, float]:
    """Train preset `name` as the arguments say; returns the run, its budget and seconds."""
    from vaekit.config import apply_overrides

    cfg = apply_overrides(preset(name), args.overrides)
    cfg.model.pixels = "dynamic-binary"
    cfg.train.threads = args.threads
    cfg.train.device = args.device
    if args.epochs:
        cfg.train.epochs = args.epochs
    run = Path(args.out) / f"mnist-{name}-{int(time.time())}"
    budget_s = None
    if args.train_seconds:
        cfg.train.epochs = _epochs_within(
            cfg, args.train_seconds, run.with_name(run.name + "-probe")
        )
        budget_s = args.train_seconds
    t0 = time.perf_counter()
    train(cfg, run, progress=True)
    return run, budget_s, time.perf_counter() - t0


def _evaluate_run(args, run: Path, start: float):
    """The run's model and config, its evaluation, the full-set ELBO pass where log p(x)
    took a subset (or None), the images IS saw, and the evaluation's seconds."""
    device = torch.device(args.device)
    model, cfg, _ = load_checkpoint(run, map_location=args.device)
    if device.type == "cpu":
        # oneDNN's preferred layout: a conv model's K=5000 passes run faster on a CPU
        model.to(memory_format=torch.channels_last)
    test = load_splits(cfg, device).test
    full = None
    if args.total_seconds:
        # the K=0 pass over all images and the timing take about a tenth of the rest
        left = args.total_seconds - (time.perf_counter() - start)
        args.eval_seconds = max(1.0, 0.9 * left - 15)
    if args.eval_seconds:
        args.eval_images = _images_within(model, test, args.k, args.eval_seconds, args.decode_batch)
    t1 = time.perf_counter()
    if args.eval_sample:
        res = evaluate_sampled(
            model,
            test,
            args.k,
            args.eval_sample,
            args.sample_seed,
            args.control_samples,
            progress=True,
            max_batch=args.decode_batch,
            control_k=args.control_k,
        )
    else:
        if args.eval_images and args.eval_images < len(test):
            full = evaluate(model, test, k=0, batch_size=500, progress=True)
            test = test[: args.eval_images]
        res = evaluate(
            model, test, k=args.k, batch_size=100, progress=True, max_batch=args.decode_batch
        )
    return model, cfg, res, full, len(test), time.perf_counter() - t1


def _row(args, name, run, cfg, model, res, full, n_test, budget_s, train_s, eval_s) -> dict:
    metrics = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    sampled = res.get("sampled")
    cuda = args.device == "cuda"
    return {
        "preset": name,
        "run": None if name else str(run),
        "config": cfg.to_dict(),
        "log_px": res["log_px"],
        "k": args.k,
        "eval_images": sampled["images"] if sampled else n_test,
        "log_px_estimator": res["estimators"]["log_px"]
        + ("" if sampled or full is None else f" (the first {n_test} test images)"),
        "sampled": sampled,
        "elbo_all_test": res["elbo"] if sampled else None if full is None else full["elbo"],
        "log_px_stderr": res.get("log_px_stderr"),
        "train_budget_s": budget_s or cfg.train.time_budget_s,
        "elbo": res["elbo"],
        "reconstruction": res["reconstruction"],
        "kl": res["kl"],
        "kl_estimator": res["estimators"]["kl"],
        "jensen_gap": res["jensen_gap"],
        "bits_per_dim": res["bits_per_dim"],
        "active_units": res["active_units"],
        "latent_dim": res["latent_dim"],
        "groups": res.get("groups"),
        "train_seconds": train_s,
        # the epochs' own training time (per-epoch monitor and checkpoints excluded)
        "train_seconds_in_metrics": sum(m["train_seconds"] for m in metrics),
        "trained_on": cfg.train.device,
        "eval_seconds": eval_s,
        "images_per_s": sum(m["images_per_s"] for m in metrics) / len(metrics),
        "epochs": len(metrics),  # a time budget (train.time_budget_s) may stop early
        "epochs_allowed": cfg.train.epochs,
        # the run's wall time, steps and per-epoch monitor (rows written since session 15)
        "elapsed_seconds_in_metrics": metrics[-1].get("elapsed_seconds"),
        "device": args.device,
        "decode_batch": args.decode_batch or model.decode_batch_limit,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "machine": machine(),
        "command": command(),
        "date": now(),
    }


def main() -> None:
    args = _parser().parse_args()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        # fixed shapes throughout: cuDNN's timed choice of kernels pays off
        torch.backends.cudnn.benchmark = True
    jobs = [(None, args.run)] if args.run else [(name, None) for name in args.presets]
    for name, run in jobs:
        budget_s = train_s = None
        if run is None:
            run, budget_s, train_s = _train_preset(args, name)
        model, cfg, res, full, n_test, eval_s = _evaluate_run(args, run, start)
        row = _row(args, name, run, cfg, model, res, full, n_test, budget_s, train_s, eval_s)
        path = append_result("mnist_nll", row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}, indent=1))
        print(f"appended to {path}")


def _images_within(model, test, k: int, seconds: float, max_batch: int | None = None) -> int:
    """Test images (in hundreds) whose K-sample log p(x) fits in `seconds`, from the time
    100 take once the first 100 have warmed up the kernels."""
    evaluate(model, test[:100], k=k, batch_size=100, max_batch=max_batch)
    t0 = time.perf_counter()
    evaluate(model, test[100:200], k=k, batch_size=100, max_batch=max_batch)
    per_100 = time.perf_counter() - t0
    n = max(100, min(len(test), int(seconds / per_100) * 100))
    print(f"K={k} on 100 images took {per_100:.1f} s: evaluating {n} images", flush=True)
    return n


def _epochs_within(cfg, seconds: float, probe_run: Path) -> int:
    """Epochs of `cfg` that fit in `seconds`, from a two-epoch probe: the second epoch's
    training time plus a fifth for the test ELBO and checkpoint after each epoch. (The
    first epoch holds the device's start-up and cuDNN's autotuning: on an H200 it took
    twice a later epoch's time, and a probe of it alone fitted 14 epochs into 210 s where
    they trained in 88.)"""
    probe = copy.deepcopy(cfg)
    probe.train.epochs = 2
    train(probe, probe_run, progress=False)
    row = json.loads((probe_run / "metrics.jsonl").read_text().splitlines()[1])
    epoch_s = 1.2 * row["train_seconds"]
    epochs = max(1, min(cfg.train.epochs, int(seconds / epoch_s)))
    print(f"one epoch: about {epoch_s:.1f} s: training {epochs} epochs", flush=True)
    return epochs


if __name__ == "__main__":
    main()
