"""Sample quality you can compare: Fréchet distance and precision/recall in the feature
space of a classifier, offline (issue 16).

No Inception weights can be downloaded here, so vaekit ships a small classifier per
supported data set (`nets.feature_classifier`, trained by scripts/train_feature_classifiers.py,
weights in `vaekit/feature_weights/` with their SHA-256 and test accuracy below). For other
data, pass a feature network or train one on your labels (`train_feature_net`).

- Fréchet distance (Heusel et al. 2017): ||mu_r - mu_g||^2 + tr(C_r + C_g - 2 (C_r C_g)^1/2)
  between Gaussians fitted to the two feature sets (scipy's matrix square root).
- Precision and recall (Kynkäänniemi et al. 2019): the fraction of generated images inside
  the k-nearest-neighbour balls of the real ones, and the other way round (k = 3).

A number means something beside its floor: the distance between two sets of real images
(training against test), which `quality_table` reports with the samples' and the
reconstructions'.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from safetensors.torch import load

from vaekit.errors import VaekitError
from vaekit.nets.feature_classifier import FeatureClassifier

# name -> (SHA-256 of the shipped file, its test accuracy), as the training script printed
FEATURE_NETS: dict[str, tuple[str, float]] = {
    "mnist": ("d082d0b87901f2c1d5bc2f9e17b25f7be3d81bb1b066bb648c0cc6ea59839929", 0.9938),
    "fashion-mnist": ("afe4cfea1ede2a4c7fb563413da8e45cecc15837b14e34ca8b9205c25b5d2ce6", 0.9201),
}
NEAREST_K = 3


def load_feature_net(name: str) -> FeatureClassifier:
    """The shipped classifier for data set `name`, checked against its SHA-256."""
    if name not in FEATURE_NETS:
        raise VaekitError(
            f"no shipped feature network for {name!r} (vaekit has {', '.join(FEATURE_NETS)}); "
            f"pass your own, or train one on your labels (train_feature_net)"
        )
    blob = resources.files("vaekit.feature_weights").joinpath(f"{name}.safetensors").read_bytes()
    expected, _ = FEATURE_NETS[name]
    if hashlib.sha256(blob).hexdigest() != expected:
        raise VaekitError(f"the shipped feature network for {name} is damaged (SHA-256 differs)")
    weights = {k: v.float() for k, v in load(blob).items()}
    channels = weights["body.0.weight"].shape[1]
    net = FeatureClassifier(channels, weights["head.weight"].shape[0])
    net.load_state_dict(weights)
    return net.eval()


def train_feature_net(
    images: np.ndarray, labels: np.ndarray, steps: int = 1000, seed: int = 0
) -> FeatureClassifier:
    """A `FeatureClassifier` trained on a user's labelled uint8 images (N, C, H, W): `steps`
    Adam steps on random batches of up to 128."""
    if len(images) != len(labels) or len(images) < 2:
        raise VaekitError("need at least 2 labelled images, one label per image")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(images)).float() / 255.0
    y = torch.from_numpy(np.asarray(labels)).long()
    net = FeatureClassifier(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(128, len(x)),), generator=g)
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def features(net: FeatureClassifier, images: np.ndarray | torch.Tensor, batch: int = 500):
    """float64 features (N, 128) of uint8 images (N, C, H, W), or of floats in [0, 1]."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    dev = next(net.parameters()).device
    out = [
        net.features(x[i : i + batch].to(dev).float() / scale).double().cpu()
        for i in range(0, len(x), batch)
    ]
    return torch.cat(out).numpy()


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D)."""
    from scipy import linalg

    mu1, mu2 = real.mean(0), fake.mean(0)
    c1, c2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(c1 @ c2)
    if caught or not np.isfinite(root).all():  # singular product (few images): regularize
        eps = 1e-6 * np.eye(len(c1))
        root = linalg.sqrtm((c1 + eps) @ (c2 + eps))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(root.real))


def _kth_radius(a: torch.Tensor, k: int, chunk: int = 2000) -> torch.Tensor:
    """Distance from each row of a to its k-th nearest other row."""
    out = []
    for i in range(0, len(a), chunk):
        d = torch.cdist(a[i : i + chunk], a)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the row itself is at distance 0
    return torch.cat(out)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk=2000):
    """Fraction of points inside at least one ball (centre, radius)."""
    inside = 0
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)
        inside += int((d <= radii[None]).any(1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = NEAREST_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets (N, D)."""
    if min(len(real), len(fake)) <= k:
        raise VaekitError(
            f"precision and recall need more than {k} images per set (k = {k} nearest "
            f"neighbours); got {len(real)} and {len(fake)}"
        )
    r, f = torch.from_numpy(real).float(), torch.from_numpy(fake).float()
    precision = _covered(f, r, _kth_radius(r, k))
    recall = _covered(r, f, _kth_radius(f, k))
    return precision, recall


@dataclass
class Quality:
    """The metric for one set of images against the real test images."""

    frechet_distance: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        """FD, precision and recall as a dict."""
        return {"fd": self.frechet_distance, "precision": self.precision, "recall": self.recall}


def quality(real_features: np.ndarray, images, net: FeatureClassifier) -> Quality:
    """FD, precision and recall of `images` against real images' features."""
    fake = features(net, images)
    return Quality(frechet_distance(real_features, fake), *precision_recall(real_features, fake))


def feature_net_for(dataset, name: str) -> FeatureClassifier:
    """The shipped network for a supported data set; for other data with labels (an image
    folder of class subfolders, an IDX file with its labels file), one trained on them."""
    if name in FEATURE_NETS:
        return load_feature_net(name)
    if getattr(dataset, "train_labels", None) is None:
        raise VaekitError(
            f"no shipped feature network for {name!r} (vaekit has {', '.join(FEATURE_NETS)}) "
            "and no labels to train one: give the data in class subfolders, or pass a "
            "network (quality_table(..., net=...))"
        )
    return train_feature_net(dataset.train, dataset.train_labels)


@torch.no_grad()
def _in_batches(fn, n: int, batch: int = 1000) -> torch.Tensor:
    return torch.cat([fn(i, min(batch, n - i)) for i in range(0, n, batch)])


def quality_table(
    model,
    dataset,
    name: str,
    n: int = 10000,
    temperature: float = 1.0,
    seed: int = 0,
    run_dir=None,
    train_images: torch.Tensor | None = None,
    net: FeatureClassifier | None = None,
) -> dict[str, dict[str, float]]:
    """FD, precision and recall against n real test images of: n training images (the
    floor), prior samples, ex-post mixture samples (fitted on `train_images` or read from the
    run) and reconstructions of the test images."""
    from vaekit.generation.samplers import SAMPLERS
    from vaekit.randomness import seeded

    if net is None:
        net = feature_net_for(dataset, name)
    n = min(n, len(dataset.test), len(dataset.train))
    real = features(net, dataset.test[:n])
    model.eval()
    dev = next(model.parameters()).device
    test = torch.from_numpy(dataset.test[:n]).to(dev)
    table = {"real: training vs test images (floor)": quality(real, dataset.train[:n], net)}
    for sampler_class in dict(SAMPLERS.items()).values():
        try:  # a sampler that cannot be fitted here (no training images) is left out
            sampler = sampler_class(model).fit(run_dir, train_images, seed)
        except VaekitError:
            continue
        draw = sampler.images
        table[f"samples, {sampler.label}, T={temperature:g}"] = quality(
            real, _in_batches(lambda i, b, draw=draw: draw(b, seed + i, temperature).cpu(), n), net
        )
    with seeded(seed, dev):
        recon = _in_batches(
            lambda i, b: model.reconstruct(model.pixels.values(test[i : i + b], train=False)).cpu(),
            n,
        )
    table["reconstructions of the test images"] = quality(real, recon, net)
    return {k: v.as_dict() for k, v in table.items()}
