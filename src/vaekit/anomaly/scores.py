"""Anomaly scores of a trained model, in bits per example (higher = more anomalous):

- surprise: -log2 p(x), importance-sampled with K samples from q(z|x);
- elbo: -ELBO / ln 2 (K-sample reconstruction, KL as the model reports it);
- reconstruction: -E_q[log p(x|z)] / ln 2;
- complexity: surprise minus the input's length under a generic lossless coder (PNG), the
  correction of Serrà et al. (2020) for likelihoods that favour simple inputs from other
  domains;
- ratio: surprise minus the surprise of a local background model fitted to the same data
  (`anomaly.background`): a likelihood ratio (Ren et al. 2019; Schirrmeister et al. 2020) that
  cancels what local pixel statistics explain and keeps what the model's global view adds;
- local: -log2 p(x) of the 8-bit image under a local intensity model (`anomaly.background`, 256
  levels, each pixel given its causal neighbourhood), which keeps what a binarized model
  throws away: noise in the strokes, blur, resampling, brightness;
- local-ink: the same model's surprise per pixel brighter than black (bits per pixel), how
  typical the stroke's intensities are whatever its length (every pixel, for images without
  a black background);
- level-ratio (hierarchies): surprise minus the surprise under the top levels alone, every
  group but the bottom one inferred and the bottom one drawn from its prior: the likelihood
  ratio of Havtorn et al. (2021), which cancels the low-level statistics that dominate a
  likelihood and keeps what the semantic levels add.

An example's score depends on the example alone (its noise is seeded by its own bytes).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from vaekit.anomaly.background import LocalPixelModel, intensities, local_log_prob
from vaekit.errors import VaekitError
from vaekit.evaluation import per_example
from vaekit.models import LatentVariableModel

SCORES = ("surprise", "elbo", "reconstruction", "complexity", "ratio", "level-ratio")
LOCAL_SCORES = ("local", "local-ink")
# Kinds a detector offers: the model's own, the local intensity model's, and their calibrated
# combination (`anomaly.calibration`, which needs the detector's reference scores of normal data).
DETECTOR_SCORES = (*SCORES, *LOCAL_SCORES, "combined")
# What the combined score combines, in two views (`anomaly.calibration`): the VAE's kinds, and
# the local intensity model's. elbo and reconstruction are left out as near copies of
# surprise (they would count its evidence three times), level-ratio as measured not to help.
COMBINED_VIEWS = (("surprise", "complexity", "ratio"), ("local", "local-ink"))
# Kinds tested in their upper tail only. "Too simple" (blank, blurred, smoothed inputs) is
# tested once, by the kinds made for it: `local` (two-sided: locally simpler or noisier than
# the data) and `complexity` (a likelihood against a PNG length). Testing surprise's low tail
# too would count that evidence twice in Fisher's sum (a simple input is likely under both
# models); ratio is a correction for simplicity, and local-ink is low for clean, evenly inked
# strokes. Measured on the corruption benchmark and three one-class digits: these tails add
# more false alarms than detections.
UPPER_TAILED = ("surprise", "complexity", "ratio", "local-ink")
_LN2 = math.log(2.0)


def png_bits(images: np.ndarray) -> np.ndarray:
    """Length in bits of each uint8 image (N, C, H, W) as an optimized PNG."""
    out = np.empty(len(images))
    for i, im in enumerate(images):
        arr = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", optimize=True)
        out[i] = 8 * buf.tell()
    return out


def all_scores(
    model: LatentVariableModel,
    prepared: torch.Tensor,
    k: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    complexity: bool = True,
    background: LocalPixelModel | None = None,
    levels: bool = True,
) -> dict[str, np.ndarray]:
    """Every score kind (bits) for inputs prepared by the model's pixel mode, from one
    importance-sampling pass (two for a hierarchy's level-ratio, skipped with
    `levels=False`); `complexity=False` skips the PNG encoding that only the complexity score
    needs, and the ratio score is there when a `background` is given."""
    was_training = model.training
    top = len(model.group_dims) - 1 if levels and len(model.group_dims) > 1 else None
    terms = per_example(model, prepared, k=k, batch_size=batch_size, seed=seed, top_groups=top)
    model.train(was_training)
    out = {
        "surprise": (-terms["log_px"] / _LN2).cpu().numpy(),
        "elbo": (-terms["elbo"] / _LN2).cpu().numpy(),
        "reconstruction": (-terms["reconstruction"] / _LN2).cpu().numpy(),
    }
    if "log_px_top" in terms:
        out["level-ratio"] = ((terms["log_px_top"] - terms["log_px"]) / _LN2).cpu().numpy()
    if complexity and model.pixels.images:
        out["complexity"] = out["surprise"] - png_bits(model.pixels.as_uint8_images(prepared))
    if background is not None:
        x = model.pixels.values(prepared, train=False).cpu()
        out["ratio"] = out["surprise"] + (local_log_prob(background, x) / _LN2).numpy()
    return out


@torch.no_grad()
def local_scores(
    model: LocalPixelModel, images: torch.Tensor, batch: int = 500
) -> dict[str, np.ndarray]:
    """`local` (bits per image) and `local-ink` (bits per pixel brighter than black) of uint8
    images (N, 1, H, W) under a 256-level local intensity model."""
    bits = torch.cat(
        [
            -model.log_prob_map(intensities(images[i : i + batch])).flatten(1) / _LN2
            for i in range(0, len(images), batch)
        ]
    ).double()
    ink = (images[:, 0] > 0).flatten(1)
    per_ink = (bits * ink).sum(1) / ink.sum(1).clamp(min=1)
    return {"local": bits.sum(1).numpy(), "local-ink": per_ink.numpy()}


def anomaly_scores(
    model: LatentVariableModel,
    prepared: torch.Tensor,
    kind: str = "surprise",
    k: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    background: LocalPixelModel | None = None,
) -> np.ndarray:
    """One score kind in bits (higher = more anomalous) for prepared inputs."""
    if kind not in SCORES:
        raise VaekitError(f"unknown score {kind!r}; choose from {', '.join(SCORES)}")
    if kind == "complexity" and not model.pixels.images:
        raise VaekitError("the complexity score needs images (a PNG length); use surprise")
    if kind == "ratio" and background is None:
        raise VaekitError(
            "the ratio score needs a background model: it exists for single-channel images "
            "with binary pixels fitted by vaekit.AnomalyDetector; use surprise otherwise"
        )
    if kind == "level-ratio" and len(model.group_dims) < 2:
        raise VaekitError(
            "the level-ratio score needs a hierarchical model (two or more latent groups); "
            "this one has one: use ratio or surprise"
        )
    scores = all_scores(
        model,
        prepared,
        k,
        seed,
        batch_size,
        complexity=kind == "complexity",
        background=background if kind == "ratio" else None,
        levels=kind == "level-ratio",
    )
    return scores[kind]
