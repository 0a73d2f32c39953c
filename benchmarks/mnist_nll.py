"""Train reference presets on dynamically binarized MNIST and report test log p(x) (K=5000).

    python benchmarks/mnist_nll.py [--presets mlp] [--k 5000] [--threads 2]

Appends one row per preset to benchmarks/results/mnist_nll.jsonl with machine, command and
date; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import evaluate, load_checkpoint, preset, train  # noqa: E402
from vaekit.data.splits import load_splits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", nargs="+", default=["mlp"])
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[])
    ap.add_argument("--device", default="cpu", help="train and evaluate here (cpu, cuda)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vaekit.config import apply_overrides

    for name in args.presets:
        cfg = apply_overrides(preset(name), args.overrides)
        cfg.model.pixels = "dynamic-binary"
        cfg.train.threads = args.threads
        cfg.train.device = args.device
        if args.epochs:
            cfg.train.epochs = args.epochs
        run = Path(args.out) / f"mnist-{name}-{int(time.time())}"
        t0 = time.perf_counter()
        train(cfg, run, progress=True)
        train_s = time.perf_counter() - t0
        device = torch.device(args.device)
        model, cfg, _ = load_checkpoint(run, map_location=args.device)
        splits = load_splits(cfg, device)
        t1 = time.perf_counter()
        res = evaluate(model, splits.test, k=args.k, batch_size=100, progress=True)
        eval_s = time.perf_counter() - t1
        metrics = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
        row = {
            "preset": name,
            "config": cfg.to_dict(),
            "log_px": res["log_px"],
            "k": args.k,
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
            "eval_seconds": eval_s,
            "images_per_s": sum(m["images_per_s"] for m in metrics) / len(metrics),
            "epochs": cfg.train.epochs,
            "device": args.device,
            "machine": machine(),
            "command": command(),
            "date": now(),
        }
        path = append_result("mnist_nll", row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}, indent=1))
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
