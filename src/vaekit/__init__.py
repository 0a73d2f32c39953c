"""vaekit: variational autoencoders, correct to the math, fast, and honest in their numbers.

The public API is loaded lazily: `import vaekit` (or `vaekit --help`, or `import
vaekit.config`) loads no use until one of its names is asked for, so the command line
starts without scikit-learn, scipy or constriction.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaekit import _runtime  # noqa: F401  (first: sets CPU float flags before torch's threads)
from vaekit._version import __version__

# public name -> the module that defines it
_API: dict[str, str] = {
    "AnomalyDetector": "vaekit.anomaly.detector",
    "compress": "vaekit.coding.files",
    "decompress": "vaekit.coding.files",
    "VAE": "vaekit.models",
    "LatentVariableModel": "vaekit.models",
    "build_model": "vaekit.models",
    "load_checkpoint": "vaekit.checkpoint",
    "save_checkpoint": "vaekit.checkpoint",
    "Config": "vaekit.config",
    "ModelConfig": "vaekit.config",
    "TrainConfig": "vaekit.config",
    "preset": "vaekit.config",
    "CheckpointError": "vaekit.errors",
    "DataError": "vaekit.errors",
    "TrainingDiverged": "vaekit.errors",
    "VaekitError": "vaekit.errors",
    "load_dataset": "vaekit.data",
    "evaluate": "vaekit.evaluation",
    "elbo": "vaekit.objectives",
    "importance_sampled_log_px": "vaekit.objectives",
    "iwae_bound": "vaekit.objectives",
    "RunFolder": "vaekit.run",
    "train": "vaekit.training",
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from vaekit.anomaly.detector import AnomalyDetector
    from vaekit.checkpoint import load_checkpoint, save_checkpoint
    from vaekit.coding.files import compress, decompress
    from vaekit.config import Config, ModelConfig, TrainConfig, preset
    from vaekit.data import load_dataset
    from vaekit.errors import CheckpointError, DataError, TrainingDiverged, VaekitError
    from vaekit.evaluation import evaluate
    from vaekit.models import VAE, LatentVariableModel, build_model
    from vaekit.objectives import elbo, importance_sampled_log_px, iwae_bound
    from vaekit.run import RunFolder
    from vaekit.training import train


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


def load(run: str) -> LatentVariableModel:
    """Load a trained model from a run folder or checkpoint file."""
    return importlib.import_module("vaekit.checkpoint").load_checkpoint(run)[0]


__all__ = [*_API, "load", "__version__"]
