"""Generation's commands: `sample`, `reconstruct`, `interpolate`, `report`, `quality`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vaekit.cli.options import (
    NON_NEGATIVE,
    POSITIVE,
    RegistryChoice,
    data_dir_opt,
    friendly_errors,
    load_run,
    main,
    run_arg,
)
from vaekit.errors import VaekitError
from vaekit.generation import interpolate_images, reconstruct_images, save_grid
from vaekit.generation.samplers import SAMPLERS
from vaekit.run import RunFolder


@main.command("sample")
@run_arg
@click.option("--n", type=POSITIVE, default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG file [RUN_DIR/samples.png].")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option(
    "--temperature",
    default="1",
    show_default=True,
    help="Scale of the prior's noise: one number, or one per latent group (comma-separated).",
)
@click.option(
    "--sampler",
    type=RegistryChoice(SAMPLERS.names),
    default="prior",
    show_default=True,
    help="prior: z ~ p(z); gmm: a Gaussian mixture fitted to the training set's posterior "
    "means (fitted once, saved in the run folder).",
)
@friendly_errors
def sample_cmd(run_dir, n, out, seed, temperature, sampler) -> None:
    """Images decoded from z ~ p(z), or from the ex-post mixture (--sampler gmm)."""
    run = RunFolder(run_dir).open()
    drawer = SAMPLERS.get(sampler)(run.model)
    try:
        temps = drawer.temperature([float(t) for t in temperature.split(",")])
        train = None
        if drawer.needs_training_images(run_dir):
            if drawer.fit_note:
                click.echo(drawer.fit_note)
            train = run.splits().train
        images = drawer.fit(run_dir, train, seed).images(n, seed, temps)
    except ValueError as e:
        raise VaekitError(f"--temperature {temperature}: {e}") from e
    path = save_grid(images, out or run.folder / "samples.png")
    click.echo(f"wrote {n} samples to {path}")


@main.command("reconstruct")
@run_arg
@click.option("--n", type=POSITIVE, default=32, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG [RUN_DIR/reconstructions.png].")
@data_dir_opt
@friendly_errors
def reconstruct_cmd(run_dir, n, out, data_dir) -> None:
    """Test images beside their reconstructions (pairs: input, reconstruction)."""
    model, _, splits = load_run(run_dir, data_dir, None)
    imgs = reconstruct_images(model, splits.test[:n])
    path = save_grid(imgs, out or Path(run_dir) / "reconstructions.png", nrow=16)
    click.echo(f"wrote {min(n, len(splits.test))} input/reconstruction pairs to {path}")


@main.command("interpolate")
@run_arg
@click.option("--steps", type=POSITIVE, default=10, show_default=True)
@click.option("--pairs", type=POSITIVE, default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="PNG [RUN_DIR/interpolations.png].")
@data_dir_opt
@friendly_errors
def interpolate_cmd(run_dir, steps, pairs, out, data_dir) -> None:
    """Decoded straight lines between the latent means of pairs of test images."""
    model, _, splits = load_run(run_dir, data_dir, None)
    test = splits.test
    pairs = min(pairs, len(test) // 2)
    if pairs < 1:
        raise VaekitError("need at least 2 test images to interpolate")
    imgs = interpolate_images(model, test[:pairs], test[pairs : 2 * pairs], steps)
    path = save_grid(imgs, out or Path(run_dir) / "interpolations.png", nrow=steps + 2)
    click.echo(f"wrote {pairs} interpolations of {steps} steps to {path}")


@main.command("report")
@run_arg
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
    type=POSITIVE,
    default=2000,
    show_default=True,
    help="Images per set for the generation metrics.",
)
@data_dir_opt
@friendly_errors
def report_cmd(run_dir, out, k, quality_n, data_dir) -> None:
    """One self-contained HTML page: config, curves, evaluation, KL, samples, reconstructions,
    interpolations, traversals, a latent map and the generation metrics."""
    from vaekit.generation.report import write_report

    path = write_report(run_dir, out, data_dir, quality_n=quality_n, k=k, progress=True)
    click.echo(f"wrote {path}")


@main.command("quality")
@run_arg
@click.option("--n", type=POSITIVE, default=10000, show_default=True, help="Images per set.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@data_dir_opt
@friendly_errors
def quality_cmd(run_dir, n, temperature, seed, as_json, data_dir) -> None:
    """Fréchet distance, precision and recall (classifier features) of the run's samples
    (prior and ex-post mixture) and reconstructions, beside the real-vs-real floor. MNIST and
    Fashion-MNIST use vaekit's shipped classifiers; other labelled data trains one first."""
    import math

    from vaekit.generation.quality import FEATURE_NETS, quality_table

    if not math.isfinite(temperature) or temperature < 0:
        raise VaekitError(f"--temperature must be a finite number >= 0; got {temperature}")
    run = RunFolder(run_dir).open(data_dir)
    model, cfg = run.model, run.config
    ds, train = run.dataset(), run.splits().train
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


