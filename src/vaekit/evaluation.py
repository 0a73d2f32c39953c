"""Evaluation: reconstruction, KL (total and per dimension), ELBO, active units, and the
importance-sampled log p(x) with its Jensen gap, in nats per example and bits/dim."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

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
) -> dict[str, Any]:
    """Evaluate on prepared uint8 images (see `data.prepare_split`); k=0 skips log p(x).

    Returns per-example means in nats (bits where the key says so). log p(x) is the
    importance-sampled estimate with K samples from q(z|x) (a stochastic lower bound); the
    ELBO is E_q[log p(x|z)], averaged over those same K samples (one sample when k=0), minus
    the analytic KL.
    """
    model.eval()
    # A private RNG stream: evaluation is reproducible and leaves training's noise untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _evaluate(model, images, pixels, k, batch_size, seed, progress)


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
) -> dict[str, Any]:
    t0 = time.perf_counter()
    terms = _per_example(model, images, pixels, k, batch_size, seed, progress)
    n = images.shape[0]
    dims = model.data_dims
    offset = discrete_offset_nats(pixels, dims)
    rec, kl = terms["reconstruction"].mean().item(), terms["kl"].mean().item()
    mu = terms["posterior_mean"]
    activity = mu.var(0, unbiased=True) if n > 1 else torch.zeros(model.latent_dim)
    kl_dim = terms["kl_per_dim"].mean(0) if "kl_per_dim" in terms else None

    def bpd(nats: float) -> float:
        return -(nats + offset) / (dims * math.log(2.0))

    out: dict[str, Any] = {
        "n": n,
        "dims": dims,
        "pixels": pixels,
        "reconstruction": rec,
        "kl": kl,
        "kl_per_dim": kl_dim.tolist() if kl_dim is not None else None,
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
        log_px = terms["log_px"].mean().item()
        out.update(log_px=log_px, jensen_gap=log_px - out["elbo"], bits_per_dim=bpd(log_px))
    else:
        out.update(log_px=None, jensen_gap=None, bits_per_dim=None)
    if offset:
        out["bits_per_dim_note"] = (
            "continuous pixels: bits/dim of the 8-bit data from the dequantized density "
            f"(log P = log p - {dims}*ln 256)"
        )
    return out
