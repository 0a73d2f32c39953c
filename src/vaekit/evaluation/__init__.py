"""Evaluation: reconstruction, KL (total, per group and per dimension), ELBO, active units,
and the importance-sampled log p(x) with its Jensen gap, in nats per example and bits/dim.

- `estimators`: the per-example terms, and the subset estimate with a control;
- `result`: their means as one result dict, its bits/dim, and its table.

Every random number an example gets (its importance samples, its dequantization noise) comes
from a stream seeded by its own bytes, so its numbers do not depend on the batch it sits in.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from vaekit import distributed
from vaekit.evaluation.estimators import batches, per_example, subset_mean
from vaekit.evaluation.result import (
    ACTIVE_UNIT_THRESHOLD,
    bits_per_dim,
    evaluation_table,
    summarize,
)
from vaekit.models.base import LatentVariableModel

# `evaluate_sampled`'s control for callers that do not choose one: IS with this many samples
# per image (a third of two one-sample ELBOs' spread against K=5000, for minutes on a CPU)
CONTROL_K = 32


@torch.no_grad()
def evaluate(
    model: LatentVariableModel,
    images: torch.Tensor,
    k: int = 5000,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    shard: bool = True,
    coded: bool = False,
    example_noise: bool = True,
    max_batch: int | None = None,
) -> dict[str, Any]:
    """Evaluate on uint8 images prepared by the model's pixel mode (`prepare_split`); k=0
    skips log p(x).

    Returns per-example means in nats (bits where the key says so). log p(x) is the
    importance-sampled estimate with K samples from q(z|x) (a stochastic lower bound); the
    ELBO is E_q[log p(x|z)], averaged over those same K samples (one sample when k=0), minus
    the KL. Under torchrun (and `shard`), each rank takes a slice of the images and the sums
    are all-reduced, so every rank returns the same numbers for the whole set. `coded`,
    `example_noise` and `max_batch`: see `per_example`.
    """
    t0 = time.perf_counter()
    images = torch.as_tensor(images)
    world = distributed.world_from_env() if shard else distributed.World()
    if world.active:
        per = -(-images.shape[0] // world.size)
        images = images[world.rank * per : (world.rank + 1) * per]
    terms = per_example(
        model,
        images,
        k,
        batch_size,
        seed,
        progress and world.is_main,
        coded,
        example_noise,
        max_batch=max_batch,
    )
    return summarize(model, terms, k, world, t0)


def _control(model, images, control_k, control_samples, progress, max_batch, t0):
    """`evaluate_sampled`'s control on every image: its result dict, the control per image
    and the control's name."""
    if control_k:
        terms = per_example(
            model, images, k=control_k, batch_size=100, progress=progress, max_batch=max_batch
        )
        res = summarize(model, terms, control_k, t0=t0)
        return res, terms["log_px"].cpu(), f"IS log p(x) with K={control_k} samples from q(z|x)"
    passes = [
        per_example(model, images, k=0, batch_size=500, seed=s, progress=progress and s == 0)
        for s in range(control_samples)
    ]
    res = summarize(model, passes[0], 0, t0=t0)  # evaluate(k=0) of all images
    control = torch.stack([p["elbo"].cpu() for p in passes]).mean(0)
    return res, control, f"the ELBO (the mean of {control_samples} one-sample ELBOs)"


def evaluate_sampled(
    model: LatentVariableModel,
    images: torch.Tensor,
    k: int,
    sample: int,
    sample_seed: int = 0,
    control_samples: int = 8,
    progress: bool = False,
    max_batch: int | None = None,
    control_k: int = 0,
) -> dict[str, Any]:
    """`evaluate` for when K samples on every image cost too much (K=5000 with a conv
    hierarchy on a CPU: hours): a cheap control for every image, and log p(x) by
    `subset_mean` from it and IS with K samples on `sample` images drawn uniformly without
    replacement (`sample_seed`). Unbiased for what K samples on all images would give; its
    `log_px_stderr` counts the subset's draw and the samples' noise.

    The control: with `control_k` = 0, the mean of `control_samples` one-sample ELBOs per
    image, and everything else is `evaluate(k=0)`; with `control_k` = K_c > 0, IS log p(x)
    with K_c samples per image (its first samples are the K-sample pass's, as both draw from
    the image's own stream), and the ELBO and the rest average those K_c samples. IS with
    K_c=32 tracks the K=5000 estimate far more closely than one-sample ELBOs do (the
    difference's spread is what the error scales with). Single process."""
    images = torch.as_tensor(images)
    n_all = images.shape[0]
    if not 2 <= sample <= n_all or k < 1 or control_samples < 1 or not 0 <= control_k < k:
        raise ValueError(
            f"need 2 <= sample <= {n_all} images, k >= 1, control samples >= 1 and "
            "0 <= control k < k (a control as costly as the target gains nothing)"
        )
    t0 = time.perf_counter()
    res, control, control_name = _control(
        model, images, control_k, control_samples, progress, max_batch, t0
    )
    g = torch.Generator().manual_seed(sample_seed)
    index = torch.randperm(n_all, generator=g)[:sample].sort().values
    log_px_i = per_example(
        model, images[index], k=k, batch_size=100, progress=progress, max_batch=max_batch
    )["log_px"].cpu()
    log_px, stderr = subset_mean(control, index, log_px_i)
    res.update(
        k=k,
        log_px=log_px,
        log_px_stderr=stderr,
        jensen_gap=log_px - res["elbo"],
        bits_per_dim=bits_per_dim(
            log_px, model.data_dims, model.pixels.offset_nats(model.data_dims)
        ),
        sampled={
            "images": sample,
            "of": n_all,
            "seed": sample_seed,
            "index": index.tolist(),
            "control_estimator": control_name,
            "control_k": control_k,
            "control": control.mean().item(),
            "log_px_on_sample": log_px_i.mean().item(),
            "control_on_sample": control[index].mean().item(),
            "difference_sd": (log_px_i - control[index]).std().item(),
            # per sampled image, in `index`'s order: the row can be re-estimated later
            "log_px_per_image": log_px_i.tolist(),
            "control_per_image": control[index].tolist(),
        },
    )
    res["estimators"]["log_px"] = (
        f"{control_name} of all {n_all} images plus the mean of IS with K={k} samples from "
        f"q(z|x) minus that control, on {sample} images drawn at random (seed {sample_seed})"
    )
    return res


__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "CONTROL_K",
    "batches",
    "bits_per_dim",
    "evaluate",
    "evaluate_sampled",
    "evaluation_table",
    "per_example",
    "subset_mean",
    "summarize",
]
