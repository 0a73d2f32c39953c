"""Anomaly detection on MNIST: one-class AUROC per digit, out-of-distribution AUROC against
Fashion-MNIST in both directions, and PyOD's VAE as a peer on the one-class splits.

    python benchmarks/anomaly.py [--pixels dynamic-binary] [--k 100] [--no-pyod]
    python benchmarks/anomaly.py --mnist-run RUN --fashion-run RUN   # trained models, OOD only
    python benchmarks/anomaly.py --corruptions [--n 1000]           # MNIST-C-style table

--corruptions fits one detector (the default score, combined) on 20,000 MNIST training images, then
scores N clean test images against the same N images under each corruption of
benchmarks/corruptions.py: the AUROC of every score kind and of the combined score, with
PyOD's VAE (fitted on the same images) beside them.

With --mnist-run / --fashion-run the out-of-distribution directions score with those trained
run folders (e.g. the `hvae` preset trained by mnist_nll.py, which adds the hierarchy's
level-ratio score) instead of detectors trained here; the ratio score's background model is
fitted on the inlier training set as the detector does, and its time is reported.

Every AUROC is scikit-learn's roc_auc_score with the anomalous class as positive and the
score in bits as the ranking. Appends one row to benchmarks/results/anomaly.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, machine, now  # noqa: E402
from vaekit import AnomalyDetector  # noqa: E402
from vaekit.anomaly.background import fit_local_model  # noqa: E402
from vaekit.anomaly.calibration import combined_score  # noqa: E402
from vaekit.anomaly.scores import all_scores  # noqa: E402
from vaekit.checkpoint import load_checkpoint  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402


def score_all(det: AnomalyDetector, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every score kind and the combined default, from one importance-sampling pass (the
    detector's own code path)."""
    scores = det.view_scores(images)
    scores["combined"] = combined_score(scores, det.reference_)
    return scores


def aurocs(scores: dict[str, np.ndarray], is_anomaly: np.ndarray) -> dict[str, float]:
    return {name: float(roc_auc_score(is_anomaly, s)) for name, s in scores.items()}


def pyod_one_class(train: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray):
    from pyod.models.vae import VAE as PyodVAE

    x_tr = train.reshape(len(train), -1).astype(np.float32) / 255.0
    x_te = test.reshape(len(test), -1).astype(np.float32) / 255.0
    t0 = time.perf_counter()
    model = PyodVAE(verbose=0, random_state=0)
    model.fit(x_tr)
    fit_s = time.perf_counter() - t0
    return float(roc_auc_score(is_anomaly, model.decision_function(x_te))), fit_s


def corruption_table(args) -> None:
    """AUROC of every score kind, the combined score and PyOD's VAE per corruption."""
    from corruptions import CORRUPTIONS, corrupt

    torch.set_num_threads(args.threads)
    mnist = load_dataset("mnist")
    train = mnist.train[: args.fit_n]
    clean = mnist.test[: args.n]
    t0 = time.perf_counter()
    det = AnomalyDetector(
        k=args.k,
        overrides=tuple(args.overrides),
        progress=True,
        intensity_epochs=args.intensity_epochs,
    ).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean_scores = score_all(det, clean)
    per_image_s = (time.perf_counter() - t0) / len(clean)
    pyod = None
    if not args.no_pyod:
        from pyod.models.vae import VAE as PyodVAE

        t1 = time.perf_counter()
        pyod = PyodVAE(verbose=0, random_state=0).fit(train.reshape(len(train), -1) / 255.0)
        pyod_fit_s = time.perf_counter() - t1
        pyod_clean = pyod.decision_function(clean.reshape(len(clean), -1) / 255.0)
    labels = np.r_[np.zeros(len(clean)), np.ones(len(clean))]
    table: dict[str, dict[str, float]] = {}
    for name in CORRUPTIONS:
        bad = corrupt(clean, name)
        scores = score_all(det, bad)
        table[name] = {
            kind: float(roc_auc_score(labels, np.r_[clean_scores[kind], scores[kind]]))
            for kind in clean_scores
        }
        if pyod is not None:
            bad_pyod = pyod.decision_function(bad.reshape(len(bad), -1) / 255.0)
            table[name]["pyod_vae"] = float(roc_auc_score(labels, np.r_[pyod_clean, bad_pyod]))
        print(
            f"{name:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in table[name].items()), flush=True
        )
    kinds = next(iter(table.values())).keys()
    mean = {k: float(np.mean([row[k] for row in table.values()])) for k in kinds}
    worst = {k: float(np.min([row[k] for row in table.values()])) for k in kinds}
    print("mean           " + "  ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    row = {
        "corruptions": table,
        "mean_auroc": mean,
        "min_auroc": worst,
        "default_score": det._score_kind(),
        "reference": det.reference_,
        "n_per_corruption": args.n,
        "fit_images": len(train),
        "k": args.k,
        "fit_seconds": fit_s,
        "score_seconds_per_image": per_image_s,
        "machine": machine(),
        "command": command(),
        "date": now(),
    }
    if pyod is not None:
        row["pyod_fit_seconds"] = pyod_fit_s
    print(f"appended to {append_result('anomaly_corruptions', row)}")


def ood_with_runs(args) -> None:
    """Both OOD directions scored by trained run folders: every score kind side by side."""
    torch.set_num_threads(args.threads)
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    row: dict = {"k": args.k, "ood": {}}
    for name, run, inlier, outlier in (
        ("mnist->fashion", args.mnist_run, mnist, fashion),
        ("fashion->mnist", args.fashion_run, fashion, mnist),
    ):
        if not run:
            continue
        model, cfg, _ = load_checkpoint(run)
        t0 = time.perf_counter()
        background = fit_local_model(
            model.pixels.prepare(torch.from_numpy(inlier.train), train=True), model.pixels
        )
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = [
            all_scores(
                model,
                model.pixels.prepare(torch.from_numpy(images), train=False),
                k=args.k,
                background=background,
            )
            for images in (inlier.test, outlier.test)
        ]
        score_s = time.perf_counter() - t0
        labels = np.r_[np.zeros(len(inlier.test)), np.ones(len(outlier.test))]
        res = {
            s: float(roc_auc_score(labels, np.r_[scored[0][s], scored[1][s]])) for s in scored[0]
        }
        row["ood"][name] = {
            "auroc": res,
            "run": str(run),
            "family": cfg.model.family,
            "latent_groups": cfg.model.latent_groups,
            "background_fit_seconds": fit_s,
            "score_seconds_20k_images": score_s,
        }
        print(f"OOD {name}: " + "  ".join(f"{k} {v:.4f}" for k, v in res.items()), flush=True)
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('anomaly', row)}")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pixels", default="dynamic-binary")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--digits", type=int, nargs="*", default=list(range(10)))
    ap.add_argument("--no-pyod", action="store_true")
    ap.add_argument("--no-ood", action="store_true")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[])
    ap.add_argument(
        "--intensity-epochs",
        type=int,
        default=AnomalyDetector().intensity_epochs,
        help="the local intensity model's",
    )
    ap.add_argument("--mnist-run", help="a trained MNIST run folder for MNIST -> Fashion")
    ap.add_argument("--fashion-run", help="a trained Fashion-MNIST run folder for the reverse")
    ap.add_argument("--corruptions", action="store_true", help="the corruption table only")
    ap.add_argument("--n", type=int, default=1000, help="test images per corruption")
    ap.add_argument("--fit-n", type=int, default=20000, help="training images (corruptions)")
    return ap


def _detector(args) -> AnomalyDetector:
    return AnomalyDetector(
        pixels=args.pixels,
        k=args.k,
        overrides=tuple(args.overrides),
        intensity_epochs=args.intensity_epochs,
    )


def _one_class(args, mnist, row: dict) -> AnomalyDetector:
    """Each digit against the others (one-class MNIST), beside PyOD's VAE; the last detector."""
    for d in args.digits:
        t0 = time.perf_counter()
        det = _detector(args).fit(mnist.train[mnist.train_labels == d])
        fit_s = time.perf_counter() - t0
        is_anomaly = mnist.test_labels != d
        t0 = time.perf_counter()
        scored = score_all(det, mnist.test)
        res = {
            "auroc": aurocs(scored, is_anomaly),
            "fit_seconds": fit_s,
            "score_seconds_10k_images": time.perf_counter() - t0,
        }
        if not args.no_pyod:
            res["pyod_auroc"], res["pyod_fit_seconds"] = pyod_one_class(
                mnist.train[mnist.train_labels == d], mnist.test, is_anomaly
            )
        row["one_class"][d] = res
        print(
            f"digit {d}: "
            + "  ".join(f"{k} {v:.4f}" for k, v in res["auroc"].items())
            + (f"  pyod {res['pyod_auroc']:.4f}" if "pyod_auroc" in res else "")
            + f"  fit {fit_s:.1f}s score {res['score_seconds_10k_images']:.1f}s",
            flush=True,
        )
    oc = row["one_class"].values()
    row["one_class_mean"] = {
        s: float(np.mean([r["auroc"][s] for r in oc])) for s in next(iter(oc))["auroc"]
    }
    if not args.no_pyod:
        row["pyod_mean_auroc"] = float(np.mean([r["pyod_auroc"] for r in oc]))
        row["pyod_fit_seconds_mean"] = float(np.mean([r["pyod_fit_seconds"] for r in oc]))
        row["vaekit_fit_seconds_mean"] = float(np.mean([r["fit_seconds"] for r in oc]))
    print("one-class mean:", json.dumps(row["one_class_mean"]))
    return det


def _ood(args, mnist, fashion, row: dict) -> None:
    """MNIST against Fashion-MNIST and the reverse, a detector fitted on each."""
    for name, inlier, outlier in (
        ("mnist->fashion", mnist, fashion),
        ("fashion->mnist", fashion, mnist),
    ):
        t0 = time.perf_counter()
        det = _detector(args).fit(inlier.train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_in, s_out = score_all(det, inlier.test), score_all(det, outlier.test)
        score_s = time.perf_counter() - t0
        labels = np.r_[np.zeros(len(inlier.test)), np.ones(len(outlier.test))]
        res = {s: float(roc_auc_score(labels, np.r_[s_in[s], s_out[s]])) for s in s_in}
        row["ood"][name] = {"auroc": res, "fit_seconds": fit_s, "score_seconds_20k_images": score_s}
        print(f"OOD {name}: " + "  ".join(f"{k} {v:.4f}" for k, v in res.items()), flush=True)


def main() -> None:
    args = _parser().parse_args()
    if args.corruptions:
        corruption_table(args)
        return
    if args.mnist_run or args.fashion_run:
        ood_with_runs(args)
        return
    torch.set_num_threads(args.threads)
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    row: dict = {
        "pixels": args.pixels,
        "k": args.k,
        "overrides": args.overrides,
        "one_class": {},
        "ood": {},
    }
    det = _one_class(args, mnist, row)
    row["default_score"] = det._score_kind()  # what the default score_kind="auto" picks
    if not args.no_ood:
        _ood(args, mnist, fashion, row)
    row.update(machine=machine(), command=command(), date=now())
    print(f"appended to {append_result('anomaly', row)}")


if __name__ == "__main__":
    main()
