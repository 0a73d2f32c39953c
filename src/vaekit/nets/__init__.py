"""Encoder and decoder networks."""

from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
