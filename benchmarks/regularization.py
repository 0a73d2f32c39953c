"""Screen regularizers for a preset on a small slice of dynamically binarized MNIST.

    python benchmarks/regularization.py --preset hvae --limit 10000 --epochs 250 \\
        --variant base --variant dropout-0.1=model.dropout=0.1 --variant vamp=model.prior=vamp

The full `hvae` run overfits (training ELBO -81.8 against a test ELBO of -87.2 after 850
epochs on the 60,000 images) and takes two hours, too long to try regularizers one by one.
This proxy trains each variant on the first `--limit` training images, where the same model
overfits within minutes, with the preset's recipe compressed to `--epochs`, and reports the
last epoch's training bound (the ELBO, or the IWAE bound with `train.objective=iwae`), the
test ELBO and IS log p(x) (K=`--k`) on the first `--eval-images` test images. A variant is
`name` or `name=override,override` (`--set` syntax; lists as `model.hidden=[256,256]`).
Every variant runs in this one process, one after another, so they share the machine's
state. A proxy ranks candidates for a full
run; it is not a likelihood result. Older rows call the training bound `train_elbo`
whatever the objective.

Appends one row per variant to benchmarks/results/regularization.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import evaluate, load_checkpoint, preset, train  # noqa: E402
from vaekit.config import apply_overrides  # noqa: E402
from vaekit.data.splits import load_splits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="hvae")
    ap.add_argument("--variant", action="append", default=[], help="name[=override,...]")
    ap.add_argument("--limit", type=int, default=10000, help="training (and test) images")
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.variant or ["base"]:
        name, _, overrides = spec.partition("=")
        # a comma starts a new override only before `section.key=`: lists keep theirs
        items = re.split(r",(?=\w+\.\w+=)", overrides)
        cfg = apply_overrides(preset(args.preset), [o for o in items if o])
        cfg.model.pixels = "dynamic-binary"
        cfg.train.limit, cfg.train.epochs, cfg.train.threads = args.limit, args.epochs, args.threads
        run = Path(args.out) / f"regularization-{args.preset}-{name}-{int(time.time())}"
        t0 = time.perf_counter()
        train(cfg, run, progress=False)
        train_s = time.perf_counter() - t0
        model, cfg, _ = load_checkpoint(run)
        test = load_splits(cfg, torch.device("cpu")).test[: args.eval_images]
        res = evaluate(model, test, k=args.k, batch_size=100)
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        row = {
            "preset": args.preset,
            "variant": name,
            "overrides": overrides,
            "limit": args.limit,
            "epochs": args.epochs,
            # the training objective's bound on the last epoch: the ELBO, or the IWAE bound
            "train_bound": last["train_bound"],
            "train_bound_name": last.get("train_bound_name", "elbo"),
            "test_elbo": last["test_elbo"],
            "log_px": res["log_px"],
            "log_px_stderr": res.get("log_px_stderr"),
            "k": args.k,
            "eval_images": len(test),
            "elbo_eval_images": res["elbo"],
            "kl": res["kl"],
            "active_units": res["active_units"],
            "train_seconds": train_s,
            "run": str(run),
            "machine": machine(),
            "command": command(),
            "date": now(),
        }
        append_result("regularization", row)
        print(
            f"{name:>14}: train {row['train_bound_name']} {row['train_bound']:8.2f}  "
            f"test ELBO {row['test_elbo']:8.2f}"
            f"  log p(x) {row['log_px']:8.2f} ± {row['log_px_stderr'] or 0:.2f}"
            f"  AU {row['active_units']}  {train_s:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
