"""Kept so that `from vaekit.model import VAE` (the path before `vaekit.models`) still works."""

from vaekit.models import VAE

__all__ = ["VAE"]
