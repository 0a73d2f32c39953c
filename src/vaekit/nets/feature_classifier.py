"""A small image classifier whose penultimate layer is the feature space of the sample
quality metric (`vaekit.generation.quality`): vaekit's offline stand-in for Inception.

Three 3x3 convolutions (32, 64, 128 channels, batch-normalized, two 2x poolings) and global
average pooling give 128 features for any image size; a linear layer classifies them. About
94k weights, stored in float16: under 200 KB per data set.
"""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import override

FEATURES = 128


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class FeatureClassifier(nn.Module):
    """uint8-range images (N, C, H, W) scaled to [0, 1] -> 128 features -> class logits."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            *_block(channels, 32),
            nn.MaxPool2d(2),
            *_block(32, 64),
            nn.MaxPool2d(2),
            *_block(64, FEATURES),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images in [0, 1] (float, (N, C, H, W))."""
        return self.body(x)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
