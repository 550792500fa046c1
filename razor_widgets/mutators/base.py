"""BaseMutator: the manager of a model's mutables (reference 003)."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

from torch import nn


class BaseMutator(nn.Module):
    """A mutator prepares a supernet and groups its mutables into search groups."""

    def __init__(self, init_cfg: dict | None = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg

    @abstractmethod
    def prepare_from_supernet(self, supernet: nn.Module) -> None:
        """Find and set up the mutables of ``supernet``."""

    @property
    @abstractmethod
    def search_groups(self) -> dict[Any, list]:
        """Mutables that share one choice, by group id."""
