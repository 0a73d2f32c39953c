"""Evaluation: reconstruction, KL (total and per dimension), ELBO, active units, and the
importance-sampled log p(x) with its Jensen gap, in nats per example and bits/dim."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.data.pixels import discrete_offset_nats, to_values
from vaekit.model import VAE
from vaekit.objectives import importance_sampled_terms, kl_terms

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_i]) > 0.01


def batches(n: int, size: int):
    """Index ranges covering 0..n in order."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def evaluate(
    model: VAE,
    images: torch.Tensor,
    pixels: str,
    k: int = 5000,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    shard: bool = True,
) -> dict[str, Any]:
    """Evaluate on prepared uint8 images (see `data.prepare_split`); k=0 skips log p(x).

    Returns per-example means in nats (bits where the key says so). log p(x) is the
    importance-sampled estimate with K samples from q(z|x) (a stochastic lower bound); the
    ELBO is E_q[log p(x|z)], averaged over those same K samples (one sample when k=0), minus
    the analytic KL. Under torchrun (and `shard`), each rank takes a slice of the images and
    the sums are all-reduced, so every rank returns the same numbers for the whole set.
    """
    model.eval()
    world = distributed.world_from_env() if shard else distributed.World()
    if world.active:
        per = -(-images.shape[0] // world.size)
        images = images[world.rank * per : (world.rank + 1) * per]
    # A private RNG stream: evaluation is reproducible and leaves training's noise untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + world.rank)
        return _evaluate(
            model,
            images,
            pixels,
            k,
            batch_size,
            seed + world.rank,
            progress and world.is_main,
            world.active,
        )


def per_example(
    model: VAE,
    images: torch.Tensor,
    pixels: str,
    k: int = 100,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-example log p(x) (IS, K samples), reconstruction, KL and ELBO, in nats.

    With k > 0 the reconstruction term averages the K importance samples; with k = 0 it is
    one reparameterised sample and log p(x) is absent. Seeded: the same call gives the same
    numbers, and the global RNG is left as it was.
    """
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _per_example(model, images, pixels, k, batch_size, seed, progress)


@torch.no_grad()
def _per_example(model, images, pixels, k, batch_size, seed, progress):
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {
        "reconstruction": [],
        "kl": [],
        "log_px": [],
        "kl_per_dim": [],
        "posterior_mean": [],
    }
    n = images.shape[0]
    bar = tqdm(total=n, desc=f"evaluate (K={k})", unit="img", disable=not progress, leave=False)
    for sl in batches(n, batch_size):
        x = to_values(images[sl].to(dev), pixels, train=False, generator=gen)
        q = model.encode(x)
        kl, per_dim = kl_terms(model, q)
        if k > 0:
            terms = importance_sampled_terms(model, x, k, q=q)
            out["log_px"].append(terms.log_px.double())
            rec = terms.reconstruction
        else:
            rec = model.decode(q.rsample()).log_prob(x)
        out["reconstruction"].append(rec.double())
        out["kl"].append(kl.double())
        if per_dim is not None:
            out["kl_per_dim"].append(per_dim.double())
        out["posterior_mean"].append(q.mean.double())
        bar.update(x.shape[0])
    bar.close()
    res = {key: torch.cat(v) for key, v in out.items() if v}
    res["elbo"] = res["reconstruction"] - res["kl"]
    return res


def _evaluate(
    model: VAE,
    images: torch.Tensor,
    pixels: str,
    k: int,
    batch_size: int,
    seed: int,
    progress: bool,
    reduce: bool = False,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    terms = _per_example(model, images, pixels, k, batch_size, seed, progress)
    d = model.latent_dim
    mu = terms["posterior_mean"]
    kl_dim = terms.get("kl_per_dim", torch.zeros(0, d, dtype=torch.float64))
    # Sums that add up across ranks: n, reconstruction, KL, log p(x), KL per dim, E[mu], E[mu^2].
    sums = torch.cat(
        [
            torch.tensor(
                [
                    float(images.shape[0]),
                    terms["reconstruction"].sum().item(),
                    terms["kl"].sum().item(),
                    terms["log_px"].sum().item() if "log_px" in terms else 0.0,
                ],
                dtype=torch.float64,
            ),
            kl_dim.sum(0).cpu(),
            mu.sum(0).cpu(),
            (mu**2).sum(0).cpu(),
        ]
    )
    if reduce:
        distributed.all_reduce_(sums)
    n = int(sums[0].item())
    rec, kl, log_px_sum = (sums[1] / n).item(), (sums[2] / n).item(), sums[3].item()
    kl_dim_mean = sums[4 : 4 + d] / n
    mu_sum, mu2_sum = sums[4 + d : 4 + 2 * d], sums[4 + 2 * d :]
    activity = (mu2_sum - mu_sum**2 / n) / max(1, n - 1)
    dims = model.data_dims
    offset = discrete_offset_nats(pixels, dims)

    def bpd(nats: float) -> float:
        return -(nats + offset) / (dims * math.log(2.0))

    out: dict[str, Any] = {
        "n": n,
        "dims": dims,
        "pixels": pixels,
        "reconstruction": rec,
        "kl": kl,
        "kl_per_dim": kl_dim_mean.tolist() if "kl_per_dim" in terms else None,
        "elbo": rec - kl,
        "elbo_bits_per_dim": bpd(rec - kl),
        "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum().item()),
        "latent_dim": model.latent_dim,
        "k": k,
        "seconds": time.perf_counter() - t0,
        "estimators": {
            "reconstruction": f"mean over the K={k} importance samples from q(z|x)"
            if k
            else "1 reparameterised sample per example",
            "kl": "analytic" if model.prior.analytic_kl else "1-sample Monte Carlo",
            "log_px": f"importance sampling with K={k} samples from q(z|x)" if k else "skipped",
        },
    }
    if k > 0:
        log_px = log_px_sum / n
        out.update(log_px=log_px, jensen_gap=log_px - out["elbo"], bits_per_dim=bpd(log_px))
    else:
        out.update(log_px=None, jensen_gap=None, bits_per_dim=None)
    if pixels == "expected-binary":
        out["note"] = (
            "expected-binary: the ELBO bounds E_b[log p(b)] over binarizations "
            "b ~ Bernoulli(x/255); log_px is the log-marginal of the cross-entropy objective, "
            "not a normalized likelihood, and is not comparable with binary log p(x)"
        )
    if offset:
        out["bits_per_dim_note"] = (
            "continuous pixels: bits/dim of the 8-bit data from the dequantized density "
            f"(log P = log p - {dims}*ln 256)"
        )
    return out
