"""vaekit: variational autoencoders, correct to the math, fast, and honest in their numbers."""

__version__ = "0.6.0"  # first: modules that name the version import it from here

from vaekit import _runtime  # noqa: F401  (first: sets CPU float flags)
from vaekit.checkpoint import load_checkpoint, save_checkpoint
from vaekit.config import Config, ModelConfig, TrainConfig, preset
from vaekit.data import load_dataset
from vaekit.errors import CheckpointError, DataError, TrainingDiverged, VaekitError
from vaekit.evaluation import evaluate
from vaekit.models import VAE, LatentVariableModel, build_model
from vaekit.objectives import elbo, importance_sampled_log_px, iwae_bound
from vaekit.training import train
from vaekit.uses.anomaly import AnomalyDetector
from vaekit.uses.compression import compress, decompress


def load(run: str) -> LatentVariableModel:
    """Load a trained model from a run folder or checkpoint file."""
    return load_checkpoint(run)[0]


__all__ = [
    "AnomalyDetector",
    "compress",
    "decompress",
    "VAE",
    "LatentVariableModel",
    "build_model",
    "CheckpointError",
    "Config",
    "DataError",
    "ModelConfig",
    "TrainConfig",
    "TrainingDiverged",
    "VaekitError",
    "elbo",
    "evaluate",
    "importance_sampled_log_px",
    "iwae_bound",
    "load",
    "load_checkpoint",
    "load_dataset",
    "preset",
    "save_checkpoint",
    "train",
]
