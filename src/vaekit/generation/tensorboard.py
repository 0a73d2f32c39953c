"""`vaekit train --tensorboard DIR`: every epoch's metrics as TensorBoard scalars, and sample
and reconstruction grids every few epochs, through `torch.utils.tensorboard` (issue 16).

    tensorboard --logdir DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from typing_extensions import override

from vaekit.errors import VaekitError
from vaekit.generation.grids import grid
from vaekit.generation.images import reconstruct_images, sample_images
from vaekit.models import LatentVariableModel


class TensorBoardLog:
    """An `on_epoch(row, model)` callback for `vaekit.train` that writes to `log_dir`."""

    def __init__(self, log_dir: str | Path, test_images: np.ndarray, images_every: int = 5):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # the tensorboard package is an optional dependency
            raise VaekitError(
                "--tensorboard needs the tensorboard package: pip install tensorboard"
            ) from e
        self.writer = SummaryWriter(str(log_dir))
        self.test = torch.from_numpy(np.asarray(test_images[:32]))
        self.images_every = max(1, images_every)

    @override
    def __call__(self, row: dict[str, Any], model: LatentVariableModel) -> None:
        scalars = dict(row)
        epoch = int(scalars.pop("epoch"))  # the x axis, not a curve
        for key, value in scalars.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, epoch)
        if epoch == 1 or epoch % self.images_every == 0:
            dev = next(model.parameters()).device
            with torch.no_grad():
                samples = sample_images(model, 64, seed=0)
                recon = reconstruct_images(model, self.test.to(dev))
            for tag, images, nrow in (("samples", samples, 8), ("reconstructions", recon, 16)):
                self.writer.add_image(tag, grid(images, nrow), epoch, dataformats=_format(images))
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def _format(images: torch.Tensor) -> str:
    return "HW" if images.shape[1] == 1 else "HWC"
