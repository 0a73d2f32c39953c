"""Per-example estimators: every example's log p(x) (importance sampling), reconstruction,
KL (per group and per dimension) and ELBO in nats, and the mean of an expensive number from
a random subset against a cheap control.

Every random number an example gets (its importance samples, its dequantization noise) comes
from a stream seeded by its own bytes, so its numbers do not depend on the batch it sits in.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit.models.base import ANALYTIC, LatentVariableModel
from vaekit.objectives import importance_sampled_terms
from vaekit.randomness import ExampleNoise, seeded


def batches(n: int, size: int):
    """Index ranges covering 0..n in order."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def per_example(
    model: LatentVariableModel,
    images: torch.Tensor,
    k: int = 100,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    coded: bool = False,
    example_noise: bool = True,
    top_groups: int | None = None,
    max_batch: int | None = None,
) -> dict[str, Any]:
    """Per-example log p(x) (IS, K samples), reconstruction, KL (per group) and ELBO, in nats,
    for a split prepared by the model's pixel mode (`prepare_split`).

    With k > 0 the reconstruction term averages the K importance samples; with k = 0 it is
    one reparameterised sample and log p(x) is absent. An example's numbers depend on the
    example and `seed` alone; torch's global RNG is not touched. `coded`: the images are
    already the likelihood's integer values (what the bits-back coder codes, e.g. 0/1 pixels
    for a binary model), not a split for the pixel mode to turn into values.
    `example_noise=False` draws from one seeded stream instead (faster; numbers then depend
    on the batch: for monitoring, as the per-epoch test ELBO does). `top_groups = j` adds
    `log_px_top`, log p_{>j}(x) with only the top j groups inferred (hierarchies).
    `max_batch`: latents decoded at once (default: the architecture's limit); a large GPU
    takes more than that conservative limit. It does not change the samples drawn.
    """
    if not example_noise:
        # CUDA's generator is forked too: unforked, every training epoch after this evaluation
        # would restart CUDA's noise from `seed`
        with seeded(seed, next(model.parameters()).device):
            return _per_example(
                model, images, k, batch_size, seed, progress, coded, False, top_groups, max_batch
            )
    return _per_example(
        model, images, k, batch_size, seed, progress, coded, True, top_groups, max_batch
    )


@torch.no_grad()
def _per_example(
    model,
    images,
    k,
    batch_size,
    seed,
    progress,
    coded,
    example_noise,
    top_groups=None,
    max_batch=None,
):
    model.eval()
    images = torch.as_tensor(images)
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    out: dict[str, list[torch.Tensor]] = {
        "reconstruction": [],
        "kl": [],
        "log_px": [],
        "posterior_mean": [],
    }
    group_kl: list[list[torch.Tensor]] = [[] for _ in model.group_dims]
    group_kl_dim: list[list[torch.Tensor] | None] = [[] for _ in model.group_dims]
    estimators: list[str] = [ANALYTIC] * len(model.group_dims)
    n = images.shape[0]
    bar = tqdm(total=n, desc=f"evaluate (K={k})", unit="img", disable=not progress, leave=False)
    for sl in batches(n, batch_size):
        raw = images[sl]
        noise = ExampleNoise(raw, seed) if example_noise else None
        if coded:
            x = raw.to(dev).float()
        else:
            x = model.pixels.values(raw.to(dev), train=False, noise=noise)
        x = x.to(dtype)  # a float64 model scores in float64
        inf = model.infer(x, None if noise is None else noise.normal(1, model.latent_dim, dev)[0])
        if k > 0:
            terms = importance_sampled_terms(model, x, k, noise=noise, max_batch=max_batch)
            out["log_px"].append(terms.log_px.double())
            if top_groups is not None:
                top = importance_sampled_terms(
                    model, x, k, noise=noise, max_batch=max_batch, posterior_groups=top_groups
                )
                out.setdefault("log_px_top", []).append(top.log_px.double())
            rec = terms.reconstruction
        else:
            rec = inf.decoded.log_prob(x)
        out["reconstruction"].append(rec.double())
        out["kl"].append(inf.kl.double())
        out["posterior_mean"].append(model.posterior_means(x).double())
        for i, g in enumerate(inf.groups):
            group_kl[i].append(g.kl.double())
            estimators[i] = g.kl_estimator
            if g.kl_per_dim is None or group_kl_dim[i] is None:
                group_kl_dim[i] = None
            else:
                group_kl_dim[i].append(g.kl_per_dim.double())
        bar.update(raw.shape[0])
    bar.close()
    res: dict[str, Any] = {key: torch.cat(v) for key, v in out.items() if v}
    res["elbo"] = res["reconstruction"] - res["kl"]
    res["group_kl"] = [torch.cat(v) for v in group_kl]
    res["group_kl_per_dim"] = [None if v is None else torch.cat(v) for v in group_kl_dim]
    res["kl_estimators"] = estimators
    return res


def subset_mean(
    control: torch.Tensor, index: torch.Tensor, target: torch.Tensor
) -> tuple[float, float]:
    """The mean of an expensive per-example number over a whole set, from a uniform random
    subset of it, and the standard error of that estimate.

    `control` holds a cheap number for every example (the ELBO), `index` the subset (drawn
    uniformly without replacement), `target` the expensive number on those examples (log p(x)
    with K=5000), in `index`'s order. The difference estimator mean(control) +
    mean(target - control[index]) is unbiased for the whole set's mean of `target`, and its
    spread is that of the difference (the Jensen gap) instead of that of `target` (log p(x)
    varies by tens of nats between images, its gap over the ELBO by a few). The error counts
    the finite population: a subset that is the whole set has none.
    """
    control = torch.as_tensor(control, dtype=torch.float64).flatten()
    index = torch.as_tensor(index, dtype=torch.long).flatten()
    target = torch.as_tensor(target, dtype=torch.float64).flatten()
    big_n, n = control.numel(), index.numel()
    if n != target.numel():
        raise ValueError(f"{n} subset indices but {target.numel()} target values")
    if n == 0 or index.unique().numel() != n or index.min() < 0 or index.max() >= big_n:
        raise ValueError(f"the subset must be distinct indices into the {big_n} examples")
    diff = target - control[index]
    estimate = (control.mean() + diff.mean()).item()
    if n < 2:
        return estimate, math.inf if n < big_n else 0.0
    stderr = math.sqrt((1.0 - n / big_n) * diff.var().item() / n)
    return estimate, stderr
