"""`vaekit evaluate`: the test split's numbers."""

from __future__ import annotations

import json

import click
import torch

from vaekit import distributed
from vaekit.cli.options import (
    NON_NEGATIVE,
    POSITIVE,
    data_dir_opt,
    friendly_errors,
    load_run,
    main,
    run_arg,
)
from vaekit.errors import VaekitError
from vaekit.evaluation import CONTROL_K, evaluate, evaluate_sampled, evaluation_table
from vaekit.evaluation.result import format_row


@main.command("evaluate")
@run_arg
@click.option(
    "--k",
    "k",
    type=NON_NEGATIVE,
    default=5000,
    show_default=True,
    help="Importance samples for log p(x) (0: ELBO only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--batch-size", type=POSITIVE, default=100, show_default=True)
@click.option("--limit", type=POSITIVE, help="Evaluate on the first N/6 test images only.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option(
    "--sample",
    type=POSITIVE,
    help="log p(x) from IS on N random test images plus a cheap control on all of them "
    "(an unbiased estimate with its standard error, for models too slow for K on every image).",
)
@click.option(
    "--control-k",
    type=NON_NEGATIVE,
    help="With --sample: the control is IS with this many samples on every test image, "
    "fewer than --k (0: the mean of 8 one-sample ELBOs). [default: 32 where --k is larger, else 0]",
)
@data_dir_opt
@friendly_errors
def evaluate_cmd(run_dir, k, as_json, batch_size, limit, seed, sample, control_k, data_dir) -> None:
    """Test-split ELBO, KL per dimension, active units and importance-sampled log p(x)."""
    model, cfg, splits = load_run(run_dir, data_dir, limit)
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


