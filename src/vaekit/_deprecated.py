"""Old import paths (vaekit <= 0.6), kept for one release: each names its new home."""

from __future__ import annotations

import importlib
import sys
import warnings

# old module -> new module (CHANGELOG.md, 0.7.0)
MOVED: dict[str, str] = {
    "vaekit.model": "vaekit.models",
    "vaekit.runs": "vaekit.run",
    "vaekit.tensorboard_log": "vaekit.generation.tensorboard",
    "vaekit.uses.anomaly": "vaekit.anomaly.detector",
    "vaekit.uses.anomaly_scores": "vaekit.anomaly.scores",
    "vaekit.uses.background": "vaekit.anomaly.background",
    "vaekit.uses.bitsback": "vaekit.coding.bitsback",
    "vaekit.uses.calibration": "vaekit.anomaly.calibration",
    "vaekit.uses.compression": "vaekit.coding.files",
    "vaekit.uses.exact_arithmetic": "vaekit.coding.exact_arithmetic",
    "vaekit.uses.generation": "vaekit.generation.images",
    "vaekit.uses.images": "vaekit.generation.grids",
    "vaekit.uses.latent_search": "vaekit.coding.latent_search",
    "vaekit.uses.report": "vaekit.generation.report",
    "vaekit.uses.sample_quality": "vaekit.generation.quality",
    "vaekit.uses.samplers": "vaekit.generation.samplers",
}


def redirect(old: str) -> None:
    """Make module `old` the module it moved to, with a DeprecationWarning."""
    new = MOVED[old]
    warnings.warn(
        f"{old} moved to {new}; the old path goes in vaekit 0.8", DeprecationWarning, stacklevel=3
    )
    sys.modules[old] = importlib.import_module(new)
