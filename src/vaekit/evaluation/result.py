"""An evaluation's result: the per-example terms summed into means (over every rank),
with bits/dim from one function, and one table of it that the CLI and the report share."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from vaekit import distributed
from vaekit.models.base import ANALYTIC, LatentVariableModel

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_i]) > 0.01


def bits_per_dim(nats: float, dims: int, offset_nats: float = 0.0) -> float:
    """-log2 p per dimension of a log-likelihood `nats` per example over `dims` dimensions
    (`offset_nats`: the pixel mode's correction to the discrete data, e.g. dequantization)."""
    return -(nats + offset_nats) / (dims * math.log(2.0))


def _sums(model: LatentVariableModel, terms: dict[str, Any], world) -> dict[str, Any]:
    """The sums that add up across ranks, all-reduced: n, reconstruction, KL, log p(x), log
    p(x)^2, KL per group, KL per dim, E[mu], E[mu^2]; as means where they are means."""
    dims = model.group_dims
    mu = terms["posterior_mean"]
    per_dim_known = all(v is not None for v in terms["group_kl_per_dim"])
    kl_dim = (
        torch.cat(terms["group_kl_per_dim"], -1).sum(0)
        if per_dim_known
        else torch.zeros(sum(dims), dtype=torch.float64)
    )
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
    d, off = sum(dims), 5 + len(dims)
    mu_sum, mu2_sum = sums[off + d : off + 2 * d], sums[off + 2 * d :]
    activity = (mu2_sum - mu_sum**2 / n) / max(1, n - 1)
    return {
        "n": n,
        "rec": (sums[1] / n).item(),
        "kl": (sums[2] / n).item(),
        "log_px_sum": sums[3].item(),
        "log_px_sq": sums[4].item(),
        "group_kl": (sums[5 : 5 + len(dims)] / n).tolist(),
        "kl_dim": sums[off : off + d] / n,
        "per_dim_known": per_dim_known,
        "active": activity > ACTIVE_UNIT_THRESHOLD,
    }


def _groups(model: LatentVariableModel, terms: dict[str, Any], s: dict[str, Any]) -> list:
    groups, start = [], 0
    for i, size in enumerate(model.group_dims):
        sl = slice(start, start + size)
        groups.append(
            {
                "dims": size,
                "kl": s["group_kl"][i],
                "kl_per_dim": s["kl_dim"][sl].tolist() if s["per_dim_known"] else None,
                "kl_estimator": terms["kl_estimators"][i],
                "active_units": int(s["active"][sl].sum().item()),
            }
        )
        start += size
    return groups


def _estimators(terms: dict[str, Any], k: int) -> dict[str, str]:
    mc = any(e != ANALYTIC for e in terms["kl_estimators"])
    return {
        "reconstruction": f"mean over the K={k} importance samples from q(z|x)"
        if k
        else "1 reparameterised sample per example",
        "kl": "1-sample Monte Carlo (the prior has no closed-form KL)" if mc else "analytic",
        "log_px": f"importance sampling with K={k} samples from q(z|x)" if k else "skipped",
    }


def _log_px(s: dict[str, Any], elbo: float, bpd) -> dict[str, Any]:
    n = s["n"]
    log_px = s["log_px_sum"] / n
    # the spread over images, not over samples: how far another test set could move it
    var = max(0.0, s["log_px_sq"] - n * log_px**2) / max(1, n - 1)
    return {
        "log_px": log_px,
        "log_px_stderr": math.sqrt(var / n),
        "jensen_gap": log_px - elbo,
        "bits_per_dim": bpd(log_px),
    }


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
    s = _sums(model, terms, world)
    data_dims = model.data_dims
    offset = model.pixels.offset_nats(data_dims)

    def bpd(nats: float) -> float:
        return bits_per_dim(nats, data_dims, offset)

    rec, kl = s["rec"], s["kl"]
    out: dict[str, Any] = {
        "n": s["n"],
        "dims": data_dims,
        "pixels": model.pixels.name,
        "reconstruction": rec,
        "kl": kl,
        "kl_per_dim": s["kl_dim"].tolist() if s["per_dim_known"] else None,
        "groups": _groups(model, terms, s),
        "elbo": rec - kl,
        "elbo_bits_per_dim": bpd(rec - kl),
        "active_units": int(s["active"].sum().item()),
        "latent_dim": sum(model.group_dims),
        "k": k,
        "seconds": time.perf_counter() - t0,
        "estimators": _estimators(terms, k),
    }
    if not s["per_dim_known"]:
        out["kl_per_dim_note"] = (
            "no KL per dimension: the prior does not factorise over dimensions, so the KL is "
            "one Monte-Carlo estimate per example and group"
        )
    if k > 0:
        out.update(_log_px(s, out["elbo"], bpd))
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


@dataclass(frozen=True)
class Row:
    """One line of an evaluation table: a label and its value; `sep` joins them where the
    label is not a column (group and note lines)."""

    label: str
    value: str
    sep: str | None = None


def evaluation_table(res: dict[str, Any]) -> list[Row]:
    """The rows of an evaluation result, for people: the CLI prints them, the report shows
    them as a table."""
    k, est = res["k"], res["estimators"]
    rows = [
        Row("reconstruction E_q[log p(x|z)]", f"{res['reconstruction']:10.3f} nats"),
        Row("KL(q(z|x) || p(z))", f"{res['kl']:10.3f} nats  ({est['kl']})"),
        Row("ELBO", f"{res['elbo']:10.3f} nats  {res['elbo_bits_per_dim']:.4f} bits/dim"),
    ]
    if res["log_px"] is not None:
        rows.append(
            Row(
                f"log p(x), IS with K={k:<6d}",
                f"{res['log_px']:10.3f} nats  {res['bits_per_dim']:.4f} bits/dim",
            )
        )
        if "sampled" in res:
            rows.append(
                Row(f"  +- {res['log_px_stderr']:.3f} (standard error)", est["log_px"], ": ")
            )
        gap_bits = -bits_per_dim(res["jensen_gap"], res["dims"])
        rows.append(
            Row(
                "Jensen gap log p(x) - ELBO",
                f"{res['jensen_gap']:10.3f} nats  ({gap_bits:.4f} bits/dim)",
            )
        )
    rows.append(
        Row("active units (Cov > 0.01)", f"{res['active_units']:10d} of {res['latent_dim']}")
    )
    if len(res["groups"]) > 1:
        for i, g in enumerate(res["groups"]):
            rows.append(
                Row(
                    f"group {i + 1}",
                    f"{g['dims']} dims, KL {g['kl']:8.3f} nats ({g['kl_estimator']}), "
                    f"{g['active_units']} active",
                    ": ",
                )
            )
    if res["kl_per_dim"] is not None:
        per_dim = " ".join(f"{v:.2f}" for v in sorted(res["kl_per_dim"], reverse=True))
        rows.append(Row("KL per dimension (sorted)", per_dim))
    for key in ("kl_per_dim_note", "bits_per_dim_note", "note"):
        if key in res:
            rows.append(Row("note", res[key], ": "))
    return rows


def format_row(row: Row) -> str:
    """A row as the CLI prints it: labels in a column of 32, or joined by the row's `sep`."""
    return f"  {row.label}{row.sep}{row.value}" if row.sep else f"  {row.label:<32}{row.value}"
