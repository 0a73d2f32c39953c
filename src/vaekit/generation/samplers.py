"""Where generated latents come from: the model's prior, or an ex-post density, each a
`Sampler` registered by name in `SAMPLERS` (`vaekit sample --sampler NAME`).

The ex-post sampler (Ghosh et al. 2020; the pythae benchmark's main finding) fits a Gaussian
mixture (scikit-learn) to the posterior means of the training set and samples latents from
it instead of from p(z): the aggregate posterior the decoder was trained on, rather than the
prior the KL only pulled it towards. It is fitted once per run and saved there (JSON, written
atomically), so later samples and reports reuse it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from typing_extensions import override

from vaekit.errors import VaekitError
from vaekit.fileio import atomic_write_text
from vaekit.generation.images import sample_images
from vaekit.models import LatentVariableModel
from vaekit.randomness import seeded
from vaekit.registry import Registry
from vaekit.run import RunFolder

GMM_FILE = RunFolder.SAMPLER_GMM
# vaekit 0.3 fitted a dynamically binarized model's mixture to grey 0..255 inputs it never
# saw in training; files without this mark are refitted
FITTED_ON = "training values (vaekit >= 0.4)"


class ExPostGMM:
    """A full-covariance Gaussian mixture over concatenated latents (all groups)."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray):
        self.weights, self.means, self.covariances = weights, means, covariances
        self.chol = np.linalg.cholesky(covariances)

    @override
    @classmethod
    def fit(cls, latents: np.ndarray, components: int = 10, seed: int = 0) -> ExPostGMM:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(components, covariance_type="full", random_state=seed, reg_covar=1e-5)
        gm.fit(latents.astype(np.float64))
        return cls(gm.weights_, gm.means_, gm.covariances_)

    def sample(self, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """n latents; the temperature scales each component's spread, not its mean."""
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0; got {temperature}")
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.means.shape[1]))
        return self.means[comp] + temperature * np.einsum("nij,nj->ni", self.chol[comp], eps)

    def to_json(self) -> str:
        """The mixture as JSON, marked with what it was fitted on."""
        return json.dumps(
            {
                "fitted_on": FITTED_ON,
                "weights": self.weights.tolist(),
                "means": self.means.tolist(),
                "covariances": self.covariances.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ExPostGMM:
        """The mixture `to_json` wrote."""
        d = json.loads(text)
        return cls(
            *(np.asarray(d[k], dtype=np.float64) for k in ("weights", "means", "covariances"))
        )


@torch.no_grad()
def posterior_means_of(
    model: LatentVariableModel, images: torch.Tensor, batch: int = 1000, seed: int = 0
):
    """Posterior means (N, latent_dim) of a training split prepared by the model's pixel mode,
    turned into values as training does (a dynamically binarized split is stored as 0..255
    and binarized per draw: here one seeded draw)."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with seeded(seed, dev):
        for i in range(0, len(images), batch):
            x = model.pixels.values(images[i : i + batch].to(dev), train=True)
            out.append(model.posterior_means(x).double().cpu())
    return torch.cat(out).numpy()


def gmm_needs_fit(run_dir: str | Path) -> bool:
    """Whether the run has no usable saved mixture (none, or one of vaekit 0.3)."""
    path = Path(run_dir) / GMM_FILE
    try:
        return json.loads(path.read_text()).get("fitted_on") != FITTED_ON
    except (OSError, ValueError, AttributeError):
        return True


def expost_gmm(
    model: LatentVariableModel,
    run_dir: str | Path | None,
    train_images: torch.Tensor | None,
    components: int = 10,
    seed: int = 0,
) -> ExPostGMM:
    """The run's saved ex-post mixture, or one fitted now on `train_images` (and saved)."""
    path = Path(run_dir) / GMM_FILE if run_dir is not None else None
    if path is not None and path.exists():
        try:
            text = path.read_text()
            if json.loads(text).get("fitted_on") == FITTED_ON or train_images is None:
                return ExPostGMM.from_json(text)
        except (ValueError, KeyError, AttributeError, np.linalg.LinAlgError) as e:
            raise VaekitError(f"{path}: cannot read the saved sampler ({e})") from e
    if train_images is None:
        raise VaekitError("the gmm sampler is fitted on the run's training images; none given")
    gmm = ExPostGMM.fit(posterior_means_of(model, train_images, seed=seed), components, seed)
    if path is not None:
        atomic_write_text(path, gmm.to_json())
    return gmm


@torch.no_grad()
def gmm_images(
    model: LatentVariableModel, gmm: ExPostGMM, n: int, seed: int = 0, temperature: float = 1.0
) -> torch.Tensor:
    """n images in [0, 1] decoded from latents drawn from the ex-post mixture."""
    model.eval()
    dev = next(model.parameters()).device
    z = torch.from_numpy(gmm.sample(n, temperature, seed)).float().to(dev)
    with seeded(seed, dev):
        return model.likelihood.display(model.decode(z))


class Sampler:
    """Draws images from a trained model: `fit` once (it may read or save what it learns
    in the run folder), then `images` as often as wanted."""

    label = ""  # its name in quality tables
    fit_note: str | None = None  # said when `fit` has to learn from the training images

    def __init__(self, model: LatentVariableModel):
        self.model = model

    def temperature(self, temperatures: list[float]) -> float | list[float]:
        """The temperature `images` takes from one number, or one per latent group."""
        return temperatures[0] if len(temperatures) == 1 else temperatures

    def needs_training_images(self, run_dir: str | Path | None) -> bool:
        """Whether `fit` must be given the run's training images."""
        return False

    @override
    def fit(
        self, run_dir: str | Path | None, train_images: torch.Tensor | None = None, seed: int = 0
    ) -> Sampler:
        return self

    def images(  # pragma: no cover
        self, n: int, seed: int = 0, temperature: float | list[float] = 1.0
    ) -> torch.Tensor:
        """n images in [0, 1]."""
        raise NotImplementedError


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


@SAMPLERS.register("prior")
class PriorSampler(Sampler):
    """z ~ p(z), each group's noise scaled by its temperature."""

    label = "prior"

    @override
    def images(self, n, seed=0, temperature=1.0):
        return sample_images(self.model, n, seed, temperature)


@SAMPLERS.register("gmm")
class ExPostSampler(Sampler):
    """z from a Gaussian mixture fitted to the training set's posterior means (saved in the
    run folder on first use)."""

    label = "ex-post GMM"
    fit_note = "fitting the ex-post mixture to the training set's posterior means"

    @override
    def temperature(self, temperatures):
        if len(temperatures) != 1:
            raise ValueError("the gmm sampler takes one temperature")
        return temperatures[0]

    @override
    def needs_training_images(self, run_dir):
        return run_dir is None or gmm_needs_fit(run_dir)

    @override
    def fit(self, run_dir, train_images=None, seed=0):
        self.gmm = expost_gmm(self.model, run_dir, train_images, seed=seed)
        return self

    @override
    def images(self, n, seed=0, temperature=1.0):
        return gmm_images(self.model, self.gmm, n, seed, temperature)
