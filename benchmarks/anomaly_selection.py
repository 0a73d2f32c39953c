"""Choose what the combined anomaly score combines on validation data, not on the test sets.

`collect` fits detectors with the defaults and keeps every score kind of (a) the normal
examples each detector holds out as its reference and (b) validation sets drawn from the
MNIST *training* images that no detector learns from:
- corruptions: a detector on training images 0..19,999; validation = images 20,000..20,999,
  clean and under every corruption of `corruptions.py`;
- one class: for each digit d, a detector on the d's among training images 0..53,999;
  validation = images 54,000..59,999 (that digit normal, the others anomalous).
`analyze` rebuilds the combined score's reference for candidate sets of kinds (and tails)
from the kept reference scores and prints each candidate's validation AUROC per set. The
test sets stay unseen until `anomaly.py` measures the chosen default.

    python benchmarks/anomaly_selection.py collect --digits 2 5 8
    python benchmarks/anomaly_selection.py analyze
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from vaekit import AnomalyDetector  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.uses.anomaly import REFERENCE_IMAGES  # noqa: E402
from vaekit.uses.calibration import combined_score, fit_reference  # noqa: E402

OUT = Path(__file__).parent / "out" / "anomaly_selection"
# (kinds, upper-tailed kinds) per candidate
CANDIDATES = {
    "default": (
        ("surprise", "complexity", "ratio", "local", "local-ink"),
        ("surprise", "complexity", "ratio", "local-ink"),
    ),
    "no-surprise": (
        ("complexity", "ratio", "local", "local-ink"),
        ("complexity", "ratio", "local-ink"),
    ),
    "no-local": (
        ("surprise", "complexity", "ratio", "local-ink"),
        ("surprise", "complexity", "ratio", "local-ink"),
    ),
    "no-surprise-no-local": (
        ("complexity", "ratio", "local-ink"),
        ("complexity", "ratio", "local-ink"),
    ),
    "ratio-local-ink-local": (("ratio", "local", "local-ink"), ("ratio", "local-ink")),
}
# Two views, each combined by Fisher's method, the more extreme view deciding (min-p)
VIEWS = {
    "views": (
        (("surprise", "complexity", "ratio"), ("local", "local-ink")),
        ("surprise", "complexity", "ratio", "local-ink"),
    ),
    "views-ratio": (
        (("complexity", "ratio"), ("local", "local-ink")),
        ("complexity", "ratio", "local-ink"),
    ),
    "views-r": ((("ratio",), ("local", "local-ink")), ("ratio", "local-ink")),
    "views-sr": (
        (("surprise", "ratio"), ("local", "local-ink")),
        ("surprise", "ratio", "local-ink"),
    ),
    "views-3": (
        (("surprise", "ratio"), ("complexity",), ("local", "local-ink")),
        ("surprise", "complexity", "ratio", "local-ink"),
    ),
}


def _kinds(det: AnomalyDetector, images: np.ndarray) -> dict[str, np.ndarray]:
    return det._every_kind(det._prepare(images, fitting=False))


def _reference_images(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The normal examples a detector fitted on `images` holds out (`AnomalyDetector.fit`)."""
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[: min(REFERENCE_IMAGES, len(images) // 10)]]


def _save(name: str, groups: dict[str, dict[str, np.ndarray]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    flat = {f"{g}|{k}": v for g, kinds in groups.items() for k, v in kinds.items()}
    np.savez(OUT / f"{name}.npz", **flat)
    print(f"kept {OUT / name}.npz", flush=True)


def collect(args) -> None:
    from corruptions import CORRUPTIONS, corrupt

    torch.set_num_threads(args.threads)
    mnist = load_dataset("mnist")
    if not args.no_corruptions:
        fit = mnist.train[:20000]
        det = AnomalyDetector(k=args.k, progress=True).fit(fit)
        clean = mnist.train[20000:21000]
        groups = {"reference": _kinds(det, _reference_images(fit)), "normal": _kinds(det, clean)}
        for name in CORRUPTIONS:
            groups[f"anomalous:{name}"] = _kinds(det, corrupt(clean, name))
        _save("corruptions", groups)
    for d in args.digits:
        fit = mnist.train[:54000][mnist.train_labels[:54000] == d]
        det = AnomalyDetector(k=args.k, overrides=tuple(args.overrides), progress=True).fit(fit)
        val, labels = mnist.train[54000:], mnist.train_labels[54000:]
        groups = {
            "reference": _kinds(det, _reference_images(fit)),
            "normal": _kinds(det, val[labels == d]),
            "anomalous:other digits": _kinds(det, val[labels != d]),
        }
        _save(f"{args.tag}digit-{d}", groups)


def _load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    groups: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as f:
        for key in f.files:
            g, k = key.split("|")
            groups.setdefault(g, {})[k] = f[key]
    return groups


def _scorer(name: str, reference: dict[str, np.ndarray]):
    if name == "tippett":  # every kind its own view
        kinds, upper = CANDIDATES["default"]
        views = tuple((k,) for k in kinds)
        ref = fit_reference(reference, upper=upper, views=views)
        return lambda scores: combined_score(scores, ref)
    if name in VIEWS:
        views, upper = VIEWS[name]
        ref = fit_reference(reference, upper=upper, views=views)
        return lambda scores: combined_score(scores, ref)
    if name in reference:  # a single kind, as it is
        return lambda scores: scores[name]
    kinds, upper = CANDIDATES[name]
    ref = fit_reference({k: reference[k] for k in kinds}, upper=upper)
    return lambda scores: combined_score(scores, ref)


def analyze(args) -> None:
    names = [
        "default",
        "ratio-local-ink-local",
        "views",
        "views-ratio",
        "views-r",
        "tippett",
        "ratio",
    ]
    print(f"{'set':28s}" + "".join(f"{n[:11]:>12s}" for n in names))
    means: dict[str, list[float]] = {n: [] for n in names}
    for path in sorted(OUT.glob(f"{args.glob}.npz")):
        groups = _load(path)
        for g in (g for g in groups if g.startswith("anomalous:")):
            row = []
            for n in names:
                score = _scorer(n, groups["reference"])
                s = [score(groups[x]) for x in ("normal", g)]
                y = np.r_[np.zeros(len(s[0])), np.ones(len(s[1]))]
                auc = roc_auc_score(y, np.r_[s[0], s[1]])
                row.append(auc)
                means[n].append(auc)
            label = f"{path.stem}:{g.split(':', 1)[1]}"
            print(f"{label[:28]:28s}" + "".join(f"{a:12.4f}" for a in row))
    print(f"{'mean':28s}" + "".join(f"{np.mean(means[n]):12.4f}" for n in names))
    print(f"{'min':28s}" + "".join(f"{np.min(means[n]):12.4f}" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--digits", type=int, nargs="*", default=[2, 5, 8])
    c.add_argument("--no-corruptions", action="store_true")
    c.add_argument("--k", type=int, default=100)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--set", dest="overrides", nargs="*", default=[], help="preset overrides")
    c.add_argument("--tag", default="", help="prefix of the kept files' names")
    a = sub.add_parser("analyze")
    a.add_argument("--glob", default="*", help="which kept files (their name, a glob)")
    args = ap.parse_args()
    collect(args) if args.cmd == "collect" else analyze(args)


if __name__ == "__main__":
    main()
