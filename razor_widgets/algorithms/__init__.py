"""Algorithms: what happens to a model's choices while it trains."""
from .base import BaseAlgorithm
from .ite import IteAlgorithm, PruneStep

__all__ = ["BaseAlgorithm", "IteAlgorithm", "PruneStep"]
