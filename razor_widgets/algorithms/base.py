"""BaseAlgorithm: wraps the model being searched or pruned (the ``architecture``)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import MODELS


class BaseAlgorithm(nn.Module):
    """Holds ``architecture`` (a module, or a config that ``MODELS.build`` turns into one);
    ``forward`` is the architecture's. Subclasses decide how it changes while training."""

    def __init__(self, architecture: nn.Module | dict[str, Any], data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__()
        if isinstance(architecture, dict):
            architecture = MODELS.build(architecture)
        if not isinstance(architecture, nn.Module):
            raise TypeError(f"architecture must be a nn.Module or a config dict, got {type(architecture).__name__}")
        self.init_cfg = init_cfg
        self.architecture = architecture

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The architecture's forward, with the same arguments."""
        return self.architecture(*args, **kwargs)
