"""The local intensity model's output head: a 256-way softmax against a discretized logistic
mixture, at fitting times that match (issue 15).

Each variant is fitted alone on 12,000 MNIST training images (seeded pick) as the detector
fits it, then scored on the first 1,000 test images and on some of their corruptions
(`corruptions.py`): bits per clean image, and the AUROC of `local-ink` and `local` per
corruption. A variant is MIXTURE:EPOCHS (mixture 0: the softmax).

    python benchmarks/intensity_model.py 0:5 5:15
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from corruptions import corrupt  # noqa: E402
from vaekit.anomaly.background import fit_local_model  # noqa: E402
from vaekit.anomaly.scores import local_scores  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402

SHOWN = ("shot noise", "shear", "rotate", "scale", "motion blur")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="MIXTURE:EPOCHS, mixture 0 = softmax")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_dataset("mnist")
    pick = np.random.default_rng(0).permutation(len(mnist.train))[:12000]
    train = torch.from_numpy(mnist.train[pick].copy())
    clean = mnist.test[:1000]
    sets = {name: torch.from_numpy(corrupt(clean, name)) for name in SHOWN}
    labels = np.r_[np.zeros(len(clean)), np.ones(len(clean))]
    rows = []
    for spec in args.variants:
        mixture, epochs = map(int, spec.split(":"))
        t0 = time.perf_counter()
        model = fit_local_model(train, None, epochs=epochs, mixture=mixture, min_steps=200)
        fit_s = time.perf_counter() - t0
        base = local_scores(model, torch.from_numpy(clean.copy()))
        auroc = {}
        for name, bad in sets.items():
            s = local_scores(model, bad)
            auroc[name] = {
                k: float(roc_auc_score(labels, np.r_[base[k], s[k]]))
                for k in ("local-ink", "local")
            }
        row = {
            "mixture": mixture,
            "epochs": epochs,
            "fit_seconds": fit_s,
            "bits_per_clean_image": float(base["local"].mean()),
            "auroc": auroc,
        }
        rows.append(row)
        print(
            f"mixture {mixture} epochs {epochs}: fit {fit_s:.0f} s, "
            f"{row['bits_per_clean_image']:.1f} bits/image | "
            + " | ".join(f"{n} ink {a['local-ink']:.3f}" for n, a in auroc.items()),
            flush=True,
        )
    result = {"variants": rows, "fit_images": len(train), "test_images": len(clean)}
    result.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('intensity_model', result)}")


if __name__ == "__main__":
    main()
