"""The `vaekit` command line: a thin layer over the Python API."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import torch

import vaekit.distributed as distributed
from vaekit.anomaly.scores import SCORE_ALIASES, SCORE_KINDS
from vaekit.checkpoint import load_checkpoint
from vaekit.config import PRESETS, apply_overrides, load_config_file, preset, replace
from vaekit.data.pixels import PIXEL_MODES
from vaekit.data.sources import read_examples
from vaekit.data.splits import load_splits
from vaekit.errors import VaekitError
from vaekit.evaluation import CONTROL_K, evaluate, evaluate_sampled, evaluation_table
from vaekit.evaluation.result import format_row
from vaekit.generation import interpolate_images, reconstruct_images, save_grid
from vaekit.generation.samplers import SAMPLERS
from vaekit.training import train


class _RegistryChoice(click.Choice):
    """A choice among a registry's names, read when the command runs: an entry registered
    after import (a plugin's) is offered too."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ sets it; the registry decides
        pass


# Ranges are checked by click before any work starts: a bad value is one line and exit 2.
_POSITIVE = click.IntRange(min=1)
_NON_NEGATIVE = click.IntRange(min=0)
_FRACTION = click.FloatRange(0.0, 1.0, min_open=True, max_open=True)


def _friendly_errors(fn):
    """Print a VaekitError as one clear message and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VaekitError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; the last checkpoint (if any) is intact", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaekit")
def main() -> None:
    """Variational autoencoders: train, evaluate, and use them."""


@main.command("train")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="JSON or TOML config."
)
@click.option("--preset", "preset_name", help=f"Named preset ({', '.join(PRESETS)}); default mlp.")
@click.option("--data", help="mnist, fashion-mnist, or a PATH (IDX, .npy, image folder).")
@click.option("--data-dir", help="Folder that holds named datasets (also: $VAEKIT_DATA).")
@click.option("--pixels", type=click.Choice(PIXEL_MODES.names()), help="How pixels are modelled.")
@click.option(
    "--epochs", type=_POSITIVE, help="Total epochs (with --resume: extend the run to this)."
)
@click.option("--out", "out", default="runs/latest", show_default=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--limit", type=_POSITIVE, help="Use only the first N training images (quick runs).")
@click.option("--seed", type=_NON_NEGATIVE)
@click.option("--threads", type=_POSITIVE, help="CPU threads for PyTorch.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "mps"]),
    help="auto picks CUDA, then MPS, then CPU; bf16 autocast on CUDA.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    default=None,
    help="torch.compile the training step (opt-in; helps most on GPUs).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any setting, e.g. --set train.lr=2e-3 --set model.latent_dim=64.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    help="Also log to this TensorBoard folder: scalars every epoch, sample and reconstruction "
    "grids every 5 (view with: tensorboard --logdir DIR).",
)
@click.option(
    "--nproc",
    type=_POSITIVE,
    default=1,
    show_default=True,
    help="Processes on this node (DistributedDataParallel via torchrun).",
)
@_friendly_errors
def train_cmd(
    config_file,
    preset_name,
    data,
    data_dir,
    pixels,
    epochs,
    out,
    resume,
    limit,
    seed,
    threads,
    device,
    compile_,
    overrides,
    quiet,
    tensorboard,
    nproc,
) -> None:
    """Train a VAE; writes config.json, metrics.jsonl and checkpoint.safetensors to --out."""
    if nproc > 1 and distributed.world_from_env().size == 1:
        distributed.launch(nproc, distributed.without_option(sys.argv[1:], "--nproc"))
        return
    if resume:
        if config_file or preset_name or overrides:
            raise VaekitError(
                "--resume continues the run's own config; drop --config/--preset/--set"
            )
        ignored = [
            flag
            for flag, value in (
                ("--data", data),
                ("--data-dir", data_dir),
                ("--pixels", pixels),
                ("--limit", limit),
                ("--seed", seed),
                ("--device", device),
                ("--compile", compile_),
            )
            if value is not None
        ]
        if ignored:
            click.echo(
                f"warning: --resume continues with the run's own settings; ignored: "
                f"{', '.join(ignored)}",
                err=True,
            )
        cfg = None  # the checkpoint's config
    elif config_file and preset_name:
        raise VaekitError("give --config or --preset, not both")
    else:
        cfg = load_config_file(config_file) if config_file else preset(preset_name or "mlp")
        if pixels:
            cfg.model.pixels = pixels
        cfg = replace(
            cfg,
            data=data,
            data_dir=data_dir,
            epochs=epochs,
            limit=limit,
            seed=seed,
            threads=threads,
            device=device,
            compile=compile_,
        )
        cfg = apply_overrides(cfg, list(overrides))
    if resume and threads:
        torch.set_num_threads(threads)
    board = _tensorboard_log(tensorboard, cfg, out) if tensorboard else None
    try:
        run = train(
            cfg, out, resume=resume, progress=not quiet, total_epochs=epochs, on_epoch=board
        )
    finally:
        if board is not None:
            board.close()
    if distributed.world_from_env().is_main:
        click.echo(f"run folder: {run}  (checkpoint: {run / 'checkpoint.safetensors'})")
    distributed.shutdown()


def _tensorboard_log(log_dir: str, cfg, run_dir: str):
    """The TensorBoard callback, with a few test images of the run's data to reconstruct."""
    from vaekit.checkpoint import checkpoint_config
    from vaekit.data.sources import load_dataset
    from vaekit.generation.tensorboard import TensorBoardLog

    cfg = cfg if cfg is not None else checkpoint_config(run_dir)
    if not distributed.world_from_env().is_main:
        return None
    if cfg.train.stream:
        from vaekit.data.streaming import open_shards

        test = open_shards(cfg.train.data)[1]
        images = torch.stack([test[i] for i in range(min(32, len(test)))]).numpy()
    else:
        images = load_dataset(cfg.train.data, cfg.train.data_dir).test[:32]
    return TensorBoardLog(log_dir, images)


def _load_run(run_dir: str, data_dir: str | None, limit: int | None):
    model, cfg, _ = load_checkpoint(run_dir)
    cfg.train.data_dir = data_dir or cfg.train.data_dir
    cfg.train.limit = limit if limit is not None else cfg.train.limit
    return model, cfg, load_splits(cfg, torch.device("cpu"))


_run_arg = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))


def _output_option(help: str, **path: bool):
    """The required output of compress/decompress: `-o`, `--output`, or `--out` as every
    other command spells it."""
    return click.option(
        "-o", "--output", "--out", "output", required=True, type=click.Path(**path), help=help
    )


_data_dir_opt = click.option("--data-dir", help="Where the run's dataset lives, if moved.")


@main.command("evaluate")
@_run_arg
@click.option(
    "--k",
    "k",
    type=_NON_NEGATIVE,
    default=5000,
    show_default=True,
    help="Importance samples for log p(x) (0: ELBO only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--batch-size", type=_POSITIVE, default=100, show_default=True)
@click.option("--limit", type=_POSITIVE, help="Evaluate on the first N/6 test images only.")
@click.option("--seed", type=_NON_NEGATIVE, default=0, show_default=True)
@click.option(
    "--sample",
    type=_POSITIVE,
    help="log p(x) from IS on N random test images plus a cheap control on all of them "
    "(an unbiased estimate with its standard error, for models too slow for K on every image).",
)
@click.option(
    "--control-k",
    type=_NON_NEGATIVE,
    help="With --sample: the control is IS with this many samples on every test image, "
    "fewer than --k (0: the mean of 8 one-sample ELBOs). [default: 32 where --k is larger, else 0]",
)
@_data_dir_opt
@_friendly_errors
def evaluate_cmd(run_dir, k, as_json, batch_size, limit, seed, sample, control_k, data_dir) -> None:
    """Test-split ELBO, KL per dimension, active units and importance-sampled log p(x)."""
    model, cfg, splits = _load_run(run_dir, data_dir, limit)
    world, _ = distributed.init(torch.device("cpu"))
    if sample is not None:
        if world.active:
            raise VaekitError("--sample runs in one process: drop torchrun/--nproc")
        if not 2 <= sample <= len(splits.test) or k < 1:
            raise VaekitError(
                f"--sample needs 2..{len(splits.test)} images (the test split's size) and --k >= 1"
            )
        if control_k is None:
            control_k = CONTROL_K if k > CONTROL_K else 0
        if control_k >= k:
            raise VaekitError(f"--control-k ({control_k}) must be below --k ({k})")
        res = evaluate_sampled(
            model,
            splits.test,
            k,
            sample,
            sample_seed=seed,
            progress=not as_json,
            control_k=control_k,
        )
    else:
        res = evaluate(
            model,
            splits.test,
            k=k,
            batch_size=batch_size,
            seed=seed,
            progress=not as_json,
        )
    distributed.shutdown()
    if not world.is_main:
        return
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo(f"test split: {res['n']} images, {res['dims']} dims, pixels {res['pixels']}")
    for row in evaluation_table(res):
        click.echo(format_row(row))


@main.command("sample")
@_run_arg
@click.option("--n", type=_POSITIVE, default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG file [RUN_DIR/samples.png].")
@click.option("--seed", type=_NON_NEGATIVE, default=0, show_default=True)
@click.option(
    "--temperature",
    default="1",
    show_default=True,
    help="Scale of the prior's noise: one number, or one per latent group (comma-separated).",
)
@click.option(
    "--sampler",
    type=_RegistryChoice(SAMPLERS.names),
    default="prior",
    show_default=True,
    help="prior: z ~ p(z); gmm: a Gaussian mixture fitted to the training set's posterior "
    "means (fitted once, saved in the run folder).",
)
@_friendly_errors
def sample_cmd(run_dir, n, out, seed, temperature, sampler) -> None:
    """Images decoded from z ~ p(z), or from the ex-post mixture (--sampler gmm)."""
    model, cfg, _ = load_checkpoint(run_dir)
    drawer = SAMPLERS.get(sampler)(model)
    try:
        temps = drawer.temperature([float(t) for t in temperature.split(",")])
        train = None
        if drawer.needs_training_images(run_dir):
            if drawer.fit_note:
                click.echo(drawer.fit_note)
            train = load_splits(cfg, torch.device("cpu")).train
        images = drawer.fit(run_dir, train, seed).images(n, seed, temps)
    except ValueError as e:
        raise VaekitError(f"--temperature {temperature}: {e}") from e
    path = save_grid(images, out or Path(run_dir) / "samples.png")
    click.echo(f"wrote {n} samples to {path}")


@main.command("reconstruct")
@_run_arg
@click.option("--n", type=_POSITIVE, default=32, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG [RUN_DIR/reconstructions.png].")
@_data_dir_opt
@_friendly_errors
def reconstruct_cmd(run_dir, n, out, data_dir) -> None:
    """Test images beside their reconstructions (pairs: input, reconstruction)."""
    model, _, splits = _load_run(run_dir, data_dir, None)
    imgs = reconstruct_images(model, splits.test[:n])
    path = save_grid(imgs, out or Path(run_dir) / "reconstructions.png", nrow=16)
    click.echo(f"wrote {min(n, len(splits.test))} input/reconstruction pairs to {path}")


@main.command("interpolate")
@_run_arg
@click.option("--steps", type=_POSITIVE, default=10, show_default=True)
@click.option("--pairs", type=_POSITIVE, default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG [RUN_DIR/interpolations.png].")
@_data_dir_opt
@_friendly_errors
def interpolate_cmd(run_dir, steps, pairs, out, data_dir) -> None:
    """Decoded straight lines between the latent means of pairs of test images."""
    model, _, splits = _load_run(run_dir, data_dir, None)
    test = splits.test
    pairs = min(pairs, len(test) // 2)
    if pairs < 1:
        raise VaekitError("need at least 2 test images to interpolate")
    imgs = interpolate_images(model, test[:pairs], test[pairs : 2 * pairs], steps)
    path = save_grid(imgs, out or Path(run_dir) / "interpolations.png", nrow=steps + 2)
    click.echo(f"wrote {pairs} interpolations of {steps} steps to {path}")


@main.command("report")
@_run_arg
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file [RUN_DIR/report.html].")
@click.option(
    "--k",
    type=click.IntRange(0, 100000),
    default=0,
    show_default=True,
    help="Importance samples for log p(x) in the evaluation table (0: ELBO only).",
)
@click.option(
    "--quality-n",
    type=_POSITIVE,
    default=2000,
    show_default=True,
    help="Images per set for the generation metrics.",
)
@_data_dir_opt
@_friendly_errors
def report_cmd(run_dir, out, k, quality_n, data_dir) -> None:
    """One self-contained HTML page: config, curves, evaluation, KL, samples, reconstructions,
    interpolations, traversals, a latent map and the generation metrics."""
    from vaekit.generation.report import write_report

    path = write_report(run_dir, out, data_dir, quality_n=quality_n, k=k, progress=True)
    click.echo(f"wrote {path}")


@main.command("quality")
@_run_arg
@click.option("--n", type=_POSITIVE, default=10000, show_default=True, help="Images per set.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=_NON_NEGATIVE, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_data_dir_opt
@_friendly_errors
def quality_cmd(run_dir, n, temperature, seed, as_json, data_dir) -> None:
    """Fréchet distance, precision and recall (classifier features) of the run's samples
    (prior and ex-post mixture) and reconstructions, beside the real-vs-real floor. MNIST and
    Fashion-MNIST use vaekit's shipped classifiers; other labelled data trains one first."""
    import math

    from vaekit.data.sources import load_dataset
    from vaekit.generation.quality import FEATURE_NETS, quality_table

    if not math.isfinite(temperature) or temperature < 0:
        raise VaekitError(f"--temperature must be a finite number >= 0; got {temperature}")
    model, cfg, _ = load_checkpoint(run_dir)
    if data_dir:
        cfg.train.data_dir = data_dir
    ds = load_dataset(cfg.train.data, cfg.train.data_dir)
    train = load_splits(cfg, torch.device("cpu")).train
    if cfg.train.data not in FEATURE_NETS and ds.train_labels is not None:
        click.echo("no shipped feature network for this data: training one on its labels", err=True)
    table = quality_table(
        model, ds, cfg.train.data, n, temperature, seed, run_dir=run_dir, train_images=train
    )
    if as_json:
        click.echo(json.dumps(table))
        return
    click.echo(f"{min(n, len(ds.test))} images per set against as many real test images:")
    for name, q in table.items():
        click.echo(
            f"  {name:<42s} FD {q['fd']:9.3f}   precision {q['precision']:.3f}   "
            f"recall {q['recall']:.3f}"
        )


@main.command("compress")
@_run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@_output_option("FILE.vkz", dir_okay=False)
@click.option(
    "--ideal-k",
    type=_NON_NEGATIVE,
    default=0,
    show_default=True,
    help="Also estimate -log p(x) by importance sampling with K samples (slow; 0: -ELBO only).",
)
@click.option(
    "--particles",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Importance-weighted bits-back with K particles: codes near the K-sample bound "
    "instead of -ELBO, for K times the network work after the encoder; the first images "
    "use fewer, as the stack allows (format version 6 files).",
)
@click.option(
    "--bits-back-only",
    is_flag=True,
    help="Do not fall back to xz where it codes the input smaller than the model does.",
)
@_friendly_errors
def compress_cmd(run_dir, input_path, output, ideal_k, particles, bits_back_only) -> None:
    """Losslessly compress an image set (IDX, .npy, image folder) by bits-back coding."""
    from vaekit.coding.files import GENERIC_CODER, compress_file

    model, _, _ = load_checkpoint(run_dir)
    res = compress_file(
        model,
        input_path,
        output,
        progress=True,
        ideal_k=ideal_k,
        particles=particles,
        fallback=not bits_back_only,
    )
    bpd, ideal = res["bits_per_dim"], res["ideal"]
    dims = res["raw_bytes"]
    click.echo(
        f"wrote {output}: {res['images']} images, {res['bytes']:,} bytes, {bpd:.4f} bits/dim "
        f"(raw 8-bit: {dims:,} bytes)"
    )
    coded = 8 * res["payload_bytes"] / dims
    generic = res["coder"] == GENERIC_CODER
    why = f" ({GENERIC_CODER} coded this input smaller than the model)" if generic else ""
    click.echo(
        f"  payload by {res['coder']}{why}: {res['payload_bytes']:,} bytes, {coded:.4f} bits/dim;"
        f" header and framing: {res['header_bytes']:,} bytes"
    )
    line = f"model's ideal on this input: -ELBO {ideal['elbo_bits_per_dim']:.4f} bits/dim"
    if ideal_k:
        line += f", -log p(x) {ideal['bits_per_dim']:.4f} bits/dim (IS, K={ideal_k})"
    if not generic:
        line += f"; coder overhead over -ELBO {coded - ideal['elbo_bits_per_dim']:+.4f}"
    click.echo(line)


@main.command("decompress")
@_run_arg
@click.argument("input_path", metavar="FILE.vkz", type=click.Path(exists=True, dir_okay=False))
@_output_option("File or folder to write (the original container; a .npy name: an array).")
@_friendly_errors
def decompress_cmd(run_dir, input_path, output) -> None:
    """Decode a .vkz file exactly, in the container it came from (IDX, .npy, image folder)."""
    from vaekit.coding.files import decompress_file

    model, _, _ = load_checkpoint(run_dir)
    for note in decompress_file(model, input_path, output, progress=True):
        click.echo(f"note: {note}")
    click.echo(f"wrote {output}")


_score_opt = click.option(
    "--score",
    "score",
    type=_RegistryChoice(lambda: [*SCORE_ALIASES, *SCORE_KINDS]),
    help="[the detector's; auto: combined, every kind's tail probability under held-out "
    "normal data, combined by Fisher's method within the VAE's kinds and within the local "
    "intensity model's, the smaller p of the two calibrated again; level-ratio needs a "
    "hierarchy]",
)
_k_opt = click.option("--k", "k", type=_POSITIVE, help="Importance samples for surprise [100].")
_limit_opt = click.option("--limit", type=_POSITIVE, help="Only the first N examples of an input.")


def _examples(path: str, limit: int | None):
    x, labels = read_examples(path)
    return x[:limit], None if labels is None else labels[:limit]


@main.command("score")
@_run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@_score_opt
@_k_opt
@_limit_opt
@click.option("--out", type=click.Path(dir_okay=False), default="scores.csv", show_default=True)
@_friendly_errors
def score_cmd(run_dir, input_path, score, k, limit, out) -> None:
    """Anomaly score (bits, higher = more anomalous) of every example in INPUT, as CSV."""
    from vaekit.anomaly.detector import AnomalyDetector, write_scores

    det = AnomalyDetector.load(run_dir)
    det.progress = True  # a plain run folder's missing parts are fitted in memory: say so
    if k is not None:
        det.k = k
    x, labels = _examples(input_path, limit)
    scores = det.anomaly_score(x, score)
    write_scores(Path(out), scores, labels)
    click.echo(
        f"scored {len(scores)} examples ({det._score_kind(score)}, bits): mean "
        f"{scores.mean():.2f}, min {scores.min():.2f}, max {scores.max():.2f}; "
        f"wrote {out}"
    )


@main.command("fit-scores")
@_run_arg
@_score_opt
@_friendly_errors
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
@_run_arg
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.option("--contamination", type=_FRACTION, help="Flag this fraction of INPUT as anomalous.")
@click.option(
    "--calibrate",
    "normal_path",
    type=click.Path(exists=True),
    help="Held-out normal data that sets the threshold (with --quantile).",
)
@click.option(
    "--quantile",
    type=_FRACTION,
    default=0.99,
    show_default=True,
    help="Fraction of the normal data that must pass as normal.",
)
@_score_opt
@_k_opt
@_limit_opt
@click.option("--out", type=click.Path(file_okay=False), default="detections", show_default=True)
@_friendly_errors
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
    x, labels = _examples(input_path, limit)
    if normal_path is not None:
        det.calibrate(_examples(normal_path, limit)[0], quantile)
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


if __name__ == "__main__":
    main()
