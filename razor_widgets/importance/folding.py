"""Scores of a channel range summed onto its unit's positions (every criterion ends here)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["fold"]


def fold(unit: Any, channel: Any, per_position: torch.Tensor) -> torch.Tensor:
    """Scores of a channel range (one per element of ``start:end``) summed onto the unit's
    ``base_channels`` positions (expanded channels and repeated blocks add up)."""
    per_position = per_position.to(torch.float64).reshape(-1, channel.expand_ratio).sum(1)
    return per_position.reshape(-1, unit.base_channels).sum(0)
