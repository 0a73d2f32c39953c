"""Anomaly detection's commands: `score`, `fit-scores`, `detect`."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from vaekit.cli.options import (
    FRACTION,
    POSITIVE,
    RegistryChoice,
    friendly_errors,
    main,
    run_arg,
)
from vaekit.data.sources import read_examples
from vaekit.data.splits import image_options
from vaekit.errors import VaekitError
from vaekit.generation import save_grid


def _score_names() -> list[str]:
    # imported when a command runs: the score kinds load scipy, which `vaekit --help` need not
    from vaekit.anomaly.scores import SCORE_ALIASES, SCORE_KINDS

    return [*SCORE_ALIASES, *SCORE_KINDS]


_score_opt = click.option(
    "--score",
    "score",
    type=RegistryChoice(_score_names),
    help="[the detector's; auto: combined, every kind's tail probability under held-out "
    "normal data, combined by Fisher's method within the VAE's kinds and within the local "
    "intensity model's, the smaller p of the two calibrated again; level-ratio needs a "
    "hierarchy]",
)
_k_opt = click.option("--k", "k", type=POSITIVE, help="Importance samples for surprise [100].")
_limit_opt = click.option("--limit", type=POSITIVE, help="Only the first N examples of an input.")


def _examples(path: str, limit: int | None, det):
    """The first `limit` examples of `path`, a folder read as the run read its data."""
    x, labels = read_examples(path, image_options(det.config_))
    return x[:limit], None if labels is None else labels[:limit]


@main.command("score")
@run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@_score_opt
@_k_opt
@_limit_opt
@click.option("--out", type=click.Path(dir_okay=False), default="scores.csv", show_default=True)
@friendly_errors
def score_cmd(run_dir, input_path, score, k, limit, out) -> None:
    """Anomaly score (bits, higher = more anomalous) of every example in INPUT, as CSV."""
    from vaekit.anomaly.detector import AnomalyDetector, write_scores

    det = AnomalyDetector.load(run_dir)
    det.progress = True  # a plain run folder's missing parts are fitted in memory: say so
    if k is not None:
        det.k = k
    x, labels = _examples(input_path, limit, det)
    scores = det.anomaly_score(x, score)
    write_scores(Path(out), scores, labels)
    click.echo(
        f"scored {len(scores)} examples ({det._score_kind(score)}, bits): mean "
        f"{scores.mean():.2f}, min {scores.min():.2f}, max {scores.max():.2f}; "
        f"wrote {out}"
    )


@main.command("fit-scores")
@run_arg
@_score_opt
@friendly_errors
def fit_scores_cmd(run_dir, score) -> None:
    """Fit what a score needs on a `vaekit train` run's training data (the local models and
    the combined score's reference) and keep it in RUN_DIR, so that `score` and `detect`
    read it instead of fitting it in memory on every call."""
    from vaekit.anomaly.detector import AnomalyDetector

    det = AnomalyDetector.load(run_dir)
    det.progress = True
    fitted = det.fit_parts(score)
    written = det.keep_parts() if fitted else []
    if not written:
        click.echo(f"{run_dir} holds everything the {det._score_kind(score)} score needs")
        return
    click.echo(f"fitted the {', '.join(fitted)}; wrote {', '.join(p.name for p in written)}")


@main.command("detect")
@run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.option("--contamination", type=FRACTION, help="Flag this fraction of INPUT as anomalous.")
@click.option(
    "--calibrate",
    "normal_path",
    type=click.Path(exists=True),
    help="Held-out normal data that sets the threshold (with --quantile).",
)
@click.option(
    "--quantile",
    type=FRACTION,
    default=0.99,
    show_default=True,
    help="Fraction of the normal data that must pass as normal.",
)
@_score_opt
@_k_opt
@_limit_opt
@click.option("--out", type=click.Path(file_okay=False), default="detections", show_default=True)
@friendly_errors
def detect_cmd(
    run_dir, input_path, contamination, normal_path, quantile, score, k, limit, out
) -> None:
    """Flag anomalies in INPUT; writes flagged.csv, scores.csv and PNG grids of the extremes."""
    import numpy as np

    from vaekit.anomaly.detector import AnomalyDetector, write_scores

    if (contamination is None) == (normal_path is None):
        raise VaekitError("give exactly one of --contamination P or --calibrate NORMAL_INPUT")
    det = AnomalyDetector.load(run_dir)
    if k is not None:
        det.k = k
    if score:
        det.score_kind = score
    x, labels = _examples(input_path, limit, det)
    if normal_path is not None:
        det.calibrate(_examples(normal_path, limit, det)[0], quantile)
    scores = det.anomaly_score(x)
    if contamination is not None:
        det.set_threshold_by_contamination(scores, contamination)
    threshold = det.threshold_bits
    flagged = np.flatnonzero(det.flag(scores))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_scores(out / "scores.csv", scores, labels)
    write_scores(out / "flagged.csv", scores, labels, indices=flagged.tolist())
    click.echo(
        f"threshold {threshold:.2f} bits: flagged {len(flagged)} of {len(scores)} "
        f"examples; wrote {out / 'flagged.csv'} and {out / 'scores.csv'}"
    )
    if x.ndim == 4:
        order = np.argsort(-scores)
        n = min(32, len(order))
        imgs = torch.from_numpy(x[order]).float() / 255.0
        save_grid(imgs[:n], out / "most_anomalous.png", nrow=8)
        save_grid(imgs[-n:].flip(0), out / "least_anomalous.png", nrow=8)
        click.echo(f"wrote {out / 'most_anomalous.png'} and {out / 'least_anomalous.png'}")


