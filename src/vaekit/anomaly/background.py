"""A background model for likelihood-ratio anomaly scores: local pixel statistics only.

Much of an image's likelihood is explained by local statistics (stroke width, edges,
empty background) that any image of a similar kind shares; the semantic part is what a
model of the normal class adds on top (Schirrmeister et al. 2020; Ren et al. 2019). This
model predicts each binary pixel from a small causal neighbourhood (the pixels just above
and to the left, as in one masked-convolution layer of a PixelCNN), so it sees local
texture and no global shape. The ratio score is the VAE's surprise minus this model's.

The same model with 256 levels predicts each 8-bit intensity from its neighbourhood: the
`local` score's model, which sees what a binarized VAE cannot (shot noise, blur, the
resampling of a rotated image, changed brightness) because it keeps the intensities. Its
output is a discretized logistic mixture (PixelCNN++'s, the 8-bit VAE likelihood's): 15
numbers per pixel instead of a 256-way softmax, which made the fit about 3x faster per epoch
and, at the same fitting time, a better model (measured on MNIST: 914 against 947 bits per
test image, and shot noise in the strokes found with AUROC 0.962 against 0.908).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vaekit.data.pixels import PixelMode, pixel_mode
from vaekit.distributions.likelihoods import DiscretizedLogisticMixture
from vaekit.randomness import seeded


class LocalPixelModel(nn.Module):
    """p(x) = prod_ij p(x_ij | causal k x k neighbourhood) for single-channel images with
    `levels` values per pixel (2: binary; 256: 8-bit intensities), exact and fast.

    A type-A masked convolution (the centre and everything after it in raster order are
    hidden) feeds a small ReLU layer and a 1x1 output, per channel-1 image. With 256 levels
    the output is a discretized logistic mixture of `mixture` components, or a softmax over
    the levels when `mixture` is 0 (the intensity models kept by vaekit 0.5).
    """

    def __init__(
        self, kernel: int = 5, width: int = 64, depth: int = 2, levels: int = 2, mixture: int = 0
    ):
        super().__init__()
        self.kernel, self.width, self.depth, self.levels = kernel, width, depth, levels
        self.mixture = mixture
        self.conv = nn.Conv2d(1, width, kernel, padding=kernel // 2)
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(depth - 1):  # 1x1 layers keep the neighbourhood causal
            layers += [nn.Conv2d(width, width, 1), nn.ReLU()]
        # binary: one logit; 256 levels: a mixture's (logit, mean, log-scale) per component,
        # or one logit per level
        out = 1 if levels == 2 else 3 * mixture if mixture else levels
        self.head = nn.Sequential(*layers, nn.Conv2d(width, out, 1))
        mask = torch.ones(kernel, kernel)
        c = kernel // 2
        mask[c, c:] = 0
        mask[c + 1 :] = 0
        self.register_buffer("mask", mask.view(1, 1, kernel, kernel))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer's values per pixel: logits, or the mixture's parameters."""
        h = F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=self.kernel // 2)
        return self.head(h)

    def log_prob_map(self, x: torch.Tensor) -> torch.Tensor:
        """log p of each pixel (B, H, W) in nats, for values in [0, 1] (B, 1, H, W): binary
        values (soft ones give the expectation over binarizations, as in the expected-binary
        pixel mode), or levels/(levels - 1) for a many-level model."""
        if self.levels == 2:
            return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none")[:, 0]
        # channels last: the 1x1 layers become one matrix product over every pixel, and the
        # softmax runs over contiguous memory (several times faster than NCHW on a CPU)
        h = F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=self.kernel // 2)
        h = h.permute(0, 2, 3, 1)
        for layer in self.head:
            if isinstance(layer, nn.Conv2d):
                h = F.linear(h, layer.weight.flatten(1), layer.bias)
            else:
                h = layer(h)
        if self.mixture:
            logits, means, log_scales = h.split(self.mixture, -1)
            dist = DiscretizedLogisticMixture(logits, torch.tanh(means), log_scales.clamp_min(-7.0))
            return dist.log_prob(torch.round(x[:, 0] * 255.0))
        target = torch.round(x[:, 0] * (self.levels - 1)).long()
        return h.log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image (see `log_prob_map`)."""
        return self.log_prob_map(x).flatten(1).sum(1)


def fit_local_model(
    images: torch.Tensor,
    pixels: str | PixelMode | None,
    epochs: int = 5,
    batch_size: int = 128,
    min_steps: int = 0,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    mixture: int = 5,
) -> LocalPixelModel:
    """Fit a `LocalPixelModel` by maximum likelihood on uint8 images (N, 1, H, W), with the
    same pixel mode (fresh binarizations each epoch for dynamic-binary) as the VAE, or with
    `pixels=None` on the 8-bit intensities themselves (256 levels, a logistic mixture of
    `mixture` components; 0: a softmax over the levels). More epochs than
    `epochs` where they would give fewer than `min_steps` updates (a small data set). Trains on
    `device` and returns the model on the CPU (scoring it is cheap)."""
    if images.shape[1] != 1:
        raise ValueError("the local background model handles single-channel images")
    mode = None if pixels is None else pixel_mode(pixels)
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):  # the weights start on the CPU: the same on every device
        model = LocalPixelModel(
            levels=2 if mode is not None else 256, mixture=0 if mode is not None else mixture
        ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(images)
    per_epoch = math.ceil(n / batch_size)
    epochs = max(epochs, math.ceil(min_steps / per_epoch))
    steps = max(1, epochs * per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    what = "background model" if mode is not None else "local intensity model"
    bar = tqdm(total=steps, desc=f"fit {what}", unit="step", disable=not progress)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch_size):
            bar.update()
            # binarized on the CPU from the seeded generator: the same bits on every device
            if mode is None:
                x = intensities(images[idx]).to(device)
            else:
                x = mode.values(images[idx], train=True, noise=g).to(device)
            loss = -model.log_prob(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    bar.close()
    return model.cpu().eval()


def intensities(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as the values in [0, 1] that a 256-level model reads."""
    return images.float() / 255.0


@torch.no_grad()
def local_log_prob(model: LocalPixelModel, values: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """log p(x) in nats for prepared values (see `PixelMode.values`), in batches."""
    return torch.cat([model.log_prob(values[i : i + batch]) for i in range(0, len(values), batch)])
