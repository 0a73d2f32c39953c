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
    python benchmarks/anomaly_selection.py collect --no-corruptions --digits 2 5 8 \
        --set train.epochs=100 --tag e100-
    python benchmarks/anomaly_selection.py analyze --row
    python benchmarks/anomaly_selection.py collect --digits --set train.epochs=90 --tag e90-
    python benchmarks/anomaly_selection.py collect --no-corruptions --digits 2 5 8 \
        --set train.epochs=325 --tag e325-
    python benchmarks/anomaly_selection.py analyze --glob "*digit-*" \
        --names views fisher-5 ratio --row
    python benchmarks/anomaly_selection.py analyze --glob "e[39]*" --names views \
        views-w0.6 views-w0.7 views-w0.8 views-w0.9 views-w0.95 views-w0.98 ratio --row
    python benchmarks/anomaly_selection.py analyze --glob "e[39]*" --names views \
        views-r views-cr views-sr views-3 fisher-ratio-local ratio --row

Each kept file records the command and commit that made it; the row records them all. The
one-class detectors of the first command trained 30 epochs (vaekit 0.5's preset), those of
the second 100 (session 11's MIN_UPDATES). The `e90-` and `e325-` files try the longer rule
that MIN_UPDATES now gives (90 epochs for the corruption detector, about 300 for a digit);
the last two commands compare weighted and other views on those detectors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from common import append_result, command, git_commit, machine, now  # noqa: E402
from vaekit import AnomalyDetector  # noqa: E402
from vaekit.anomaly.calibration import combined_score, fit_reference  # noqa: E402
from vaekit.anomaly.detector import REFERENCE_IMAGES  # noqa: E402
from vaekit.anomaly.scores import combined_views, upper_tailed  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402

OUT = Path(__file__).parent / "out" / "anomaly_selection"
_KINDS5 = ("surprise", "complexity", "ratio", "local", "local-ink")
_UPPER = ("surprise", "complexity", "ratio", "local-ink")
# One Fisher sum over kinds: (kinds, upper-tailed kinds). fisher-5 was vaekit 0.5's default.
FISHER = {
    "fisher-5": (_KINDS5, _UPPER),
    "fisher-no-surprise": (_KINDS5[1:], _UPPER[1:]),
    "fisher-no-local": (_UPPER, _UPPER),
    "fisher-ratio-local": (("ratio", "local", "local-ink"), ("ratio", "local-ink")),
}
# Views, Fisher's method within each and the smallest p across: (views, upper-tailed kinds).
# "views" is today's default (combined_views()); "tippett" makes every kind its own view.
VIEWS = {
    "views": (combined_views(), upper_tailed()),
    "views-cr": ((("complexity", "ratio"), ("local", "local-ink")), _UPPER),
    "views-r": ((("ratio",), ("local", "local-ink")), _UPPER),
    "views-sr": ((("surprise", "ratio"), ("local", "local-ink")), _UPPER),
    "views-3": ((("surprise", "ratio"), ("complexity",), ("local", "local-ink")), _UPPER),
    "tippett": (tuple((k,) for k in _KINDS5), _UPPER),
}
# Today's views, the VAE's of weight w and the intensity model's 1 - w (weighted Bonferroni).
WEIGHTED = {f"views-w{w}": (w, 1.0 - w) for w in (0.6, 0.7, 0.8, 0.9, 0.95, 0.98)}
SHOWN = ("fisher-5", "fisher-ratio-local", "views", "views-cr", "views-r", "tippett", "ratio")


def _kinds(det: AnomalyDetector, images: np.ndarray) -> dict[str, np.ndarray]:
    return det.view_scores(images)


def _reference_images(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The normal examples a detector fitted on `images` holds out (`AnomalyDetector.fit`)."""
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[: min(REFERENCE_IMAGES, len(images) // 10)]]


def _save(name: str, groups: dict[str, dict[str, np.ndarray]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    flat = {f"{g}|{k}": v for g, kinds in groups.items() for k, v in kinds.items()}
    made = {"command": command(), "commit": git_commit(), "date": now()}
    np.savez(OUT / f"{name}.npz", **flat, made=np.array(json.dumps(made)))
    print(f"kept {OUT / name}.npz", flush=True)


def collect(args) -> None:
    from corruptions import CORRUPTIONS, corrupt

    torch.set_num_threads(args.threads)
    mnist = load_dataset("mnist")
    if not args.no_corruptions:
        fit = mnist.train[:20000]
        det = AnomalyDetector(k=args.k, overrides=tuple(args.overrides), progress=True).fit(fit)
        clean = mnist.train[20000:21000]
        groups = {"reference": _kinds(det, _reference_images(fit)), "normal": _kinds(det, clean)}
        for name in CORRUPTIONS:
            groups[f"anomalous:{name}"] = _kinds(det, corrupt(clean, name))
        _save(f"{args.tag}corruptions", groups)
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
            if key == "made":
                continue
            g, k = key.split("|")
            groups.setdefault(g, {})[k] = f[key]
    return groups


def _scorer(name: str, reference: dict[str, np.ndarray]):
    """The candidate `name`'s score, its reference fitted on `reference`; a kind's name
    gives that kind as it is."""
    if name in reference:
        return lambda scores: scores[name]
    if name in VIEWS:
        ref = fit_reference(reference, upper=VIEWS[name][1], views=VIEWS[name][0])
    elif name in WEIGHTED:
        ref = fit_reference(reference, upper_tailed(), combined_views(), weights=WEIGHTED[name])
    else:
        kinds, upper = FISHER[name]
        ref = fit_reference({k: reference[k] for k in kinds}, upper=upper)
    return lambda scores: combined_score(scores, ref)


def analyze(args) -> None:
    """Each candidate's validation AUROC per set, printed; with `--row`, kept as a row."""
    names = args.names
    print(f"{'set':28s}" + "".join(f"{n[:11]:>12s}" for n in names))
    table: dict[str, dict[str, float]] = {}
    made: dict[str, dict] = {}
    for path in sorted(OUT.glob(f"{args.glob}.npz")):
        groups = _load(path)
        with np.load(path) as f:
            made[path.stem] = json.loads(str(f["made"])) if "made" in f.files else {}
        for g in (g for g in groups if g.startswith("anomalous:")):
            label = f"{path.stem}:{g.split(':', 1)[1]}"
            table[label] = {}
            for n in names:
                score = _scorer(n, groups["reference"])
                s = [score(groups[x]) for x in ("normal", g)]
                y = np.r_[np.zeros(len(s[0])), np.ones(len(s[1]))]
                table[label][n] = float(roc_auc_score(y, np.r_[s[0], s[1]]))
            print(f"{label[:28]:28s}" + "".join(f"{table[label][n]:12.4f}" for n in names))
    for what, f in (("mean", np.mean), ("min", np.min)):
        print(f"{what:28s}" + "".join(f"{f([r[n] for r in table.values()]):12.4f}" for n in names))
    if args.row:
        row = {"validation_auroc": table, "collected": made, "machine": machine()}
        row.update(command=command(), date=now())
        print(f"appended to {append_result('anomaly_selection', row)}")


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
    a.add_argument("--names", nargs="*", default=list(SHOWN), help="candidates or kinds")
    a.add_argument("--row", action="store_true", help="append the table to results/")
    args = ap.parse_args()
    collect(args) if args.cmd == "collect" else analyze(args)


if __name__ == "__main__":
    main()
