"""Evaluation: reconstruction, KL (total, per group and per dimension), ELBO, active units,
and the importance-sampled log p(x) with its Jensen gap, in nats per example and bits/dim.

Every random number an example gets (its importance samples, its dequantization noise) comes
from a stream seeded by its own bytes, so its numbers do not depend on the batch it sits in.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

import vaekit.distributed as distributed
from vaekit.models.base import ANALYTIC, LatentVariableModel
from vaekit.objectives import importance_sampled_terms
from vaekit.randomness import ExampleNoise, seeded

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_i]) > 0.01
# `evaluate_sampled`'s control for callers that do not choose one: IS with this many samples
# per image (a third of two one-sample ELBOs' spread against K=5000, for minutes on a CPU)
CONTROL_K = 32


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


def summarize(
    model: LatentVariableModel,
    terms: dict[str, Any],
    k: int,
    world: distributed.World | None = None,
    t0: float | None = None,
) -> dict[str, Any]:
    """`evaluate`'s result from `per_example`'s terms (summed over `world`'s ranks when it
    is active); `t0`: the `time.perf_counter()` the evaluation started at."""
    world = world or distributed.World()
    t0 = time.perf_counter() if t0 is None else t0
    dims = model.group_dims
    mu = terms["posterior_mean"]
    per_dim_known = all(v is not None for v in terms["group_kl_per_dim"])
    kl_dim = (
        torch.cat(terms["group_kl_per_dim"], -1).sum(0)
        if per_dim_known
        else torch.zeros(sum(dims), dtype=torch.float64)
    )
    # Sums that add up across ranks: n, reconstruction, KL, log p(x), log p(x)^2, KL per
    # group, KL per dim, E[mu], E[mu^2].
    head = [
        float(terms["elbo"].shape[0]),
        terms["reconstruction"].sum().item(),
        terms["kl"].sum().item(),
        terms["log_px"].sum().item() if "log_px" in terms else 0.0,
        (terms["log_px"] ** 2).sum().item() if "log_px" in terms else 0.0,
    ] + [g.sum().item() for g in terms["group_kl"]]
    sums = torch.cat(
        [
            torch.tensor(head, dtype=torch.float64),
            kl_dim.cpu(),
            mu.sum(0).cpu(),
            (mu**2).sum(0).cpu(),
        ]
    )
    if world.active:
        distributed.all_reduce_(sums)
    n = int(sums[0].item())
    rec, kl, log_px_sum = (sums[1] / n).item(), (sums[2] / n).item(), sums[3].item()
    log_px_sq = sums[4].item()
    g_kl = (sums[5 : 5 + len(dims)] / n).tolist()
    d, off = sum(dims), 5 + len(dims)
    kl_dim_mean = sums[off : off + d] / n
    mu_sum, mu2_sum = sums[off + d : off + 2 * d], sums[off + 2 * d :]
    activity = (mu2_sum - mu_sum**2 / n) / max(1, n - 1)
    active = activity > ACTIVE_UNIT_THRESHOLD
    data_dims = model.data_dims
    offset = model.pixels.offset_nats(data_dims)

    def bpd(nats: float) -> float:
        return -(nats + offset) / (data_dims * math.log(2.0))

    groups, start = [], 0
    for i, size in enumerate(dims):
        sl = slice(start, start + size)
        groups.append(
            {
                "dims": size,
                "kl": g_kl[i],
                "kl_per_dim": kl_dim_mean[sl].tolist() if per_dim_known else None,
                "kl_estimator": terms["kl_estimators"][i],
                "active_units": int(active[sl].sum().item()),
            }
        )
        start += size
    mc = any(e != ANALYTIC for e in terms["kl_estimators"])
    out: dict[str, Any] = {
        "n": n,
        "dims": data_dims,
        "pixels": model.pixels.name,
        "reconstruction": rec,
        "kl": kl,
        "kl_per_dim": kl_dim_mean.tolist() if per_dim_known else None,
        "groups": groups,
        "elbo": rec - kl,
        "elbo_bits_per_dim": bpd(rec - kl),
        "active_units": int(active.sum().item()),
        "latent_dim": d,
        "k": k,
        "seconds": time.perf_counter() - t0,
        "estimators": {
            "reconstruction": f"mean over the K={k} importance samples from q(z|x)"
            if k
            else "1 reparameterised sample per example",
            "kl": "1-sample Monte Carlo (the prior has no closed-form KL)" if mc else "analytic",
            "log_px": f"importance sampling with K={k} samples from q(z|x)" if k else "skipped",
        },
    }
    if not per_dim_known:
        out["kl_per_dim_note"] = (
            "no KL per dimension: the prior does not factorise over dimensions, so the KL is "
            "one Monte-Carlo estimate per example and group"
        )
    if k > 0:
        log_px = log_px_sum / n
        # the spread over images, not over samples: how far another test set could move it
        var = max(0.0, log_px_sq - n * log_px**2) / max(1, n - 1)
        out.update(
            log_px=log_px,
            log_px_stderr=math.sqrt(var / n),
            jensen_gap=log_px - out["elbo"],
            bits_per_dim=bpd(log_px),
        )
    else:
        out.update(log_px=None, log_px_stderr=None, jensen_gap=None, bits_per_dim=None)
    if model.pixels.note:
        out["note"] = model.pixels.note
    if offset:
        out["bits_per_dim_note"] = (
            "continuous pixels: bits/dim of the 8-bit data from the dequantized density "
            f"(log P = log p - {data_dims}*ln 256)"
        )
    return out


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
    if control_k:
        terms = per_example(
            model, images, k=control_k, batch_size=100, progress=progress, max_batch=max_batch
        )
        res = summarize(model, terms, control_k, t0=t0)
        control = terms["log_px"].cpu()
        control_name = f"IS log p(x) with K={control_k} samples from q(z|x)"
    else:
        passes = [
            per_example(model, images, k=0, batch_size=500, seed=s, progress=progress and s == 0)
            for s in range(control_samples)
        ]
        res = summarize(model, passes[0], 0, t0=t0)  # evaluate(k=0) of all images
        control = torch.stack([p["elbo"].cpu() for p in passes]).mean(0)
        control_name = f"the ELBO (the mean of {control_samples} one-sample ELBOs)"
    g = torch.Generator().manual_seed(sample_seed)
    index = torch.randperm(n_all, generator=g)[:sample].sort().values
    log_px_i = per_example(
        model, images[index], k=k, batch_size=100, progress=progress, max_batch=max_batch
    )["log_px"].cpu()
    log_px, stderr = subset_mean(control, index, log_px_i)
    bits = model.data_dims * math.log(2.0)
    res.update(
        k=k,
        log_px=log_px,
        log_px_stderr=stderr,
        jensen_gap=log_px - res["elbo"],
        bits_per_dim=res["elbo_bits_per_dim"] + (res["elbo"] - log_px) / bits,
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
