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

- combined: every kind above that applies, each as a calibrated tail probability under
  normal data, combined (`anomaly.calibration`); the detector's default ("auto").

Each kind is a `ScoreKind` registered by name in `SCORE_KINDS`: it says what it needs (a
background model, the intensity model, a reference), whether it applies to a model, where
it sits in the combined score, and computes itself from a `ScoreInputs`, which computes what
kinds share (one importance-sampling pass, the PNG lengths, the intensity map) once.
An example's score depends on the example alone (its noise is seeded by its own bytes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from typing_extensions import override

from vaekit.anomaly.background import LocalPixelModel, intensities, local_log_prob
from vaekit.anomaly.calibration import combined_score
from vaekit.errors import VaekitError
from vaekit.evaluation import per_example
from vaekit.fileio import png_bytes
from vaekit.models import LatentVariableModel
from vaekit.registry import Registry

_LN2 = math.log(2.0)
# configured names that stand for a kind: the detector's default is the combined score
SCORE_ALIASES = {"auto": "combined"}


def png_bits(images: np.ndarray) -> np.ndarray:
    """Length in bits of each uint8 image (N, C, H, W) as an optimized PNG."""
    out = np.empty(len(images))
    for i, im in enumerate(images):
        arr = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        out[i] = 8 * len(png_bytes(arr, optimize=True))
    return out


class ScoreInputs:
    """What score kinds are computed from, each part computed once on first use.

    `prepared`: inputs prepared by the model's pixel mode; `images`: the uint8 images the
    local intensity model reads (None for tables). `background`, `intensity` and
    `reference` are the fitted parts, or callables that give them when first asked.
    `levels`: whether the importance-sampling pass also gives the top levels' log p(x)
    (a second pass, for level-ratio).
    """

    def __init__(
        self,
        model: LatentVariableModel,
        prepared: torch.Tensor,
        k: int = 100,
        seed: int = 0,
        batch_size: int = 200,
        images: torch.Tensor | None = None,
        background: LocalPixelModel | Callable[[], LocalPixelModel] | None = None,
        intensity: LocalPixelModel | Callable[[], LocalPixelModel] | None = None,
        reference: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        levels: bool = False,
    ):
        self.model, self.prepared, self.k, self.seed = model, prepared, k, seed
        self.batch_size, self.images, self.levels = batch_size, images, levels
        self._parts = {"background": background, "intensity": intensity, "reference": reference}
        self._scores: dict[str, np.ndarray] = {}
        self.local_batch = 500  # images per pass of the local intensity model

    def part(self, name: str) -> Any:
        """A fitted part ("background", "intensity" or "reference"), or None."""
        value = self._parts[name]
        if callable(value) and not isinstance(value, torch.nn.Module):
            value = self._parts[name] = value()
        return value

    def has(self, name: str) -> bool:
        """Whether the part was given (without fitting it)."""
        return self._parts[name] is not None

    @functools.cached_property
    def terms(self) -> dict[str, Any]:
        """The importance-sampling pass: log p(x), ELBO, reconstruction per example (nats)."""
        model = self.model
        hierarchy = self.levels and len(model.group_dims) > 1
        top = len(model.group_dims) - 1 if hierarchy else None
        was_training = model.training
        terms = per_example(
            model,
            self.prepared,
            k=self.k,
            batch_size=self.batch_size,
            seed=self.seed,
            top_groups=top,
        )
        model.train(was_training)
        return terms

    @functools.cached_property
    def local_bits(self) -> torch.Tensor:
        """Bits of every pixel (N, H*W) under the local intensity model."""
        model, images, batch = self.part("intensity"), self.images, self.local_batch
        if model is None:
            raise VaekitError(
                "this detector has no local intensity model (it was fitted for another "
                "score kind, or by vaekit 0.4); refit it with score_kind='combined'"
            )
        with torch.no_grad():
            return torch.cat(
                [
                    -model.log_prob_map(intensities(images[i : i + batch])).flatten(1) / _LN2
                    for i in range(0, len(images), batch)
                ]
            ).double()

    def score(self, name: str) -> np.ndarray:
        """The named kind's scores (bits), computed once."""
        if name not in self._scores:
            self._scores[name] = SCORE_KINDS.get(name)().compute(self)
        return self._scores[name]


class ScoreKind:
    """One anomaly score in bits per example, higher = more anomalous."""

    upper_tailed = False  # combined: tested in its upper tail only (else both tails)
    view: int | None = None  # combined: which view it belongs to (None: not combined)
    background = False  # needs the local background model (binary single-channel images)
    intensity = False  # needs the local intensity model (single-channel images)
    reference = False  # needs reference scores of held-out normal data
    levels = False  # needs the top levels' log p(x) (hierarchies: a second pass)
    costly = False  # needs work per input beyond the model's pass (a PNG encoding)
    strict = True  # a part that does not apply is an error (False: the kinds are left out)

    def problem(self, model: LatentVariableModel) -> str | None:
        """Why this kind cannot score with `model` (None when it can)."""
        return None

    def compute(self, inputs: ScoreInputs) -> np.ndarray:  # pragma: no cover
        """This kind's scores (bits per example) from the shared inputs."""
        raise NotImplementedError


SCORE_KINDS: Registry[type[ScoreKind]] = Registry("score")


@SCORE_KINDS.register("surprise")
class Surprise(ScoreKind):
    """-log2 p(x), importance-sampled."""

    upper_tailed, view = True, 0

    @override
    def compute(self, inputs):
        return (-inputs.terms["log_px"] / _LN2).cpu().numpy()


@SCORE_KINDS.register("elbo")
class NegativeElbo(ScoreKind):
    """-ELBO in bits."""

    @override
    def compute(self, inputs):
        return (-inputs.terms["elbo"] / _LN2).cpu().numpy()


@SCORE_KINDS.register("reconstruction")
class Reconstruction(ScoreKind):
    """-E_q[log2 p(x|z)]."""

    @override
    def compute(self, inputs):
        return (-inputs.terms["reconstruction"] / _LN2).cpu().numpy()


@SCORE_KINDS.register("complexity")
class Complexity(ScoreKind):
    """Surprise minus the input's PNG length (Serra et al. 2020)."""

    upper_tailed, view, costly = True, 0, True

    @override
    def problem(self, model):
        if not model.pixels.images:
            return "the complexity score needs images (a PNG length); use surprise"
        return None

    @override
    def compute(self, inputs):
        pixels = inputs.model.pixels
        return inputs.score("surprise") - png_bits(pixels.as_uint8_images(inputs.prepared))


@SCORE_KINDS.register("ratio")
class Ratio(ScoreKind):
    """Surprise minus the local background model's surprise (a likelihood ratio)."""

    upper_tailed, view, background = True, 0, True

    @override
    def compute(self, inputs):
        background = inputs.part("background")
        if background is None:
            raise VaekitError(
                "the ratio score needs a background model: it exists for single-channel "
                "images with binary pixels fitted by vaekit.AnomalyDetector; use surprise "
                "otherwise"
            )
        x = inputs.model.pixels.values(inputs.prepared, train=False).cpu()
        return inputs.score("surprise") + (local_log_prob(background, x) / _LN2).numpy()


@SCORE_KINDS.register("level-ratio")
class LevelRatio(ScoreKind):
    """Surprise minus the surprise under the top levels alone (Havtorn et al. 2021)."""

    levels = True

    @override
    def problem(self, model):
        if len(model.group_dims) < 2:
            return (
                "the level-ratio score needs a hierarchical model (two or more latent "
                "groups); this one has one: use ratio or surprise"
            )
        return None

    @override
    def compute(self, inputs):
        t = inputs.terms
        return ((t["log_px_top"] - t["log_px"]) / _LN2).cpu().numpy()


@SCORE_KINDS.register("local")
class Local(ScoreKind):
    """-log2 p(x) of the 8-bit image under the local intensity model."""

    view, intensity = 1, True

    @override
    def compute(self, inputs):
        return inputs.local_bits.sum(1).numpy()


@SCORE_KINDS.register("local-ink")
class LocalInk(ScoreKind):
    """The intensity model's bits per pixel brighter than black."""

    upper_tailed, view, intensity = True, 1, True

    @override
    def compute(self, inputs):
        ink = (inputs.images[:, 0] > 0).flatten(1)
        return ((inputs.local_bits * ink).sum(1) / ink.sum(1).clamp(min=1)).numpy()


def combined_views() -> tuple[tuple[str, ...], ...]:
    """The kinds of each view of the combined score, in registration order."""
    views: dict[int, list[str]] = {}
    for name, kind in SCORE_KINDS.items():
        if kind.view is not None:
            views.setdefault(kind.view, []).append(name)
    return tuple(tuple(views[v]) for v in sorted(views))


def upper_tailed() -> tuple[str, ...]:
    """The kinds the combined score tests in their upper tail only."""
    return tuple(name for name, kind in SCORE_KINDS.items() if kind.upper_tailed)


def _reference_kinds(reference: dict[str, Any]) -> set[str]:
    if "views" in reference:
        return {k for view in reference["views"] for k in view["kinds"]}
    return set(reference.get("kinds", reference))  # a vaekit 0.4 reference: kinds are its keys


@SCORE_KINDS.register("combined")
class Combined(ScoreKind):
    """Every kind that applies, calibrated on normal data and combined (the default)."""

    background = intensity = reference = True
    strict = False

    @override
    def compute(self, inputs):
        reference = inputs.part("reference")
        if reference is None:
            raise VaekitError(
                "the combined score needs reference scores of normal data, measured when a "
                "detector is fitted with score_kind='combined'; refit it with that"
            )
        kinds = [k for k in SCORE_KINDS if k in _reference_kinds(reference)]
        kinds = [k for k in kinds if applies(SCORE_KINDS.get(k)(), inputs)]
        return combined_score({k: inputs.score(k) for k in kinds}, reference)


def applies(kind: ScoreKind, inputs: ScoreInputs) -> bool:
    """Whether `kind` can be computed from `inputs`: it suits the model, and the local model
    it needs was given."""
    if kind.problem(inputs.model) is not None:
        return False
    return not (kind.background and not inputs.has("background")) and not (
        kind.intensity and not inputs.has("intensity")
    )


def view_scores(inputs: ScoreInputs) -> dict[str, np.ndarray]:
    """Every kind of the combined score's views that applies here: what a reference is
    fitted on."""
    names = [name for view in combined_views() for name in view]
    return {n: inputs.score(n) for n in names if applies(SCORE_KINDS.get(n)(), inputs)}


# ---- the model's own kinds as functions ---------------------------------------------------


def model_kinds() -> list[str]:
    """The kinds a model computes by itself: no intensity model, no reference."""
    return [n for n, kind in SCORE_KINDS.items() if not (kind.intensity or kind.reference)]


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
    """Every score kind of the model itself (bits) for prepared inputs, from one
    importance-sampling pass (two for a hierarchy's level-ratio, skipped with
    `levels=False`); `complexity=False` skips the kinds that cost more per input (the PNG
    encoding of the complexity score), and the ratio is there when a `background` is given."""
    inputs = ScoreInputs(model, prepared, k, seed, batch_size, background=background, levels=levels)
    out = {}
    for name in model_kinds():
        kind = SCORE_KINDS.get(name)()
        if (kind.costly and not complexity) or (kind.levels and not levels):
            continue
        if applies(kind, inputs):
            out[name] = inputs.score(name)
    return out


def local_scores(
    model: LocalPixelModel, images: torch.Tensor, batch: int = 500
) -> dict[str, np.ndarray]:
    """The local intensity model's kinds (`local`: bits per image; `local-ink`: bits per
    pixel brighter than black) of uint8 images (N, 1, H, W)."""
    inputs = ScoreInputs(None, None, images=images, intensity=model)  # type: ignore[arg-type]
    inputs.local_batch = batch
    names = [n for n, kind in SCORE_KINDS.items() if kind.intensity and not kind.reference]
    return {n: inputs.score(n) for n in names}


def anomaly_scores(
    model: LatentVariableModel,
    prepared: torch.Tensor,
    kind: str = "surprise",
    k: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    background: LocalPixelModel | None = None,
) -> np.ndarray:
    """One score kind of the model itself, in bits (higher = more anomalous)."""
    if kind not in model_kinds():
        raise VaekitError(f"unknown score {kind!r}; choose from {', '.join(model_kinds())}")
    score = SCORE_KINDS.get(kind)()
    if problem := score.problem(model):
        raise VaekitError(problem)
    inputs = ScoreInputs(
        model, prepared, k, seed, batch_size, background=background, levels=score.levels
    )
    return inputs.score(kind)
