"""Unit types that rank channels by group importance (``group.py``): every slice the unit moves.

``GroupMagnitudeMutableChannelUnit`` needs no data; ``GroupTaylorMutableChannelUnit`` scores
``|w * dL/dw|`` over the same slices from calibration batches (``calibrate(mutator, data)``).
Defaults (``p=2``, ``reduction="sum"``, ``normalize="mean"``) were chosen by
``benchmarks/bench_quality.py``; a ranking within a unit does not depend on ``normalize``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..registry import MODELS
from .group import check_group_args, group_magnitude_scores, taylor_products
from .units import DataMutableChannelUnit, ImportanceMutableChannelUnit

__all__ = ["GroupMagnitudeMutableChannelUnit", "GroupTaylorMutableChannelUnit"]


class _GroupArgs:
    """``p``, ``reduction`` and ``normalize``: checked, kept, and written to configs."""

    def _set_group_args(self, p: int, reduction: str, normalize: str | None) -> None:
        check_group_args(p, reduction, normalize)
        self.p, self.reduction, self.normalize = int(p), reduction, normalize

    @property
    def init_args(self) -> dict[str, Any]:
        """The sequential unit's arguments plus ``p``, ``reduction`` and ``normalize``."""
        return {**super().init_args, "p": self.p, "reduction": self.reduction, "normalize": self.normalize}

    def watched_parameters(self) -> list:
        """Every parameter of every layer the unit touches (its slices read them all)."""
        pairs = self.__dict__.get("_watched")
        if pairs is None:
            pairs = []
            for channel in self.output_related + self.input_related:
                if channel.module is None or channel.param_dim is not None:
                    continue
                for sub in channel.module.modules():
                    for attr, param in sub.__dict__.get("_parameters", {}).items():
                        if param is not None and (sub, attr) not in pairs:
                            pairs.append((sub, attr))
            self.__dict__["_watched"] = pairs
        return pairs


@MODELS.register_module()
class GroupMagnitudeMutableChannelUnit(_GroupArgs, ImportanceMutableChannelUnit):
    """Keeps the channels of largest group magnitude: ``sum |w|^p`` over every slice the unit
    moves (writers' outputs, readers' inputs, norms' scale and bias), combined by ``reduction``."""

    criterion = "group_magnitude"

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9, p: int = 2, reduction: str = "sum", normalize: str | None = "mean",
                 **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)
        self._set_group_args(p, reduction, normalize)

    def scores(self) -> torch.Tensor:
        """The group magnitude of each channel position (``group.group_magnitude_scores``)."""
        return group_magnitude_scores(self, self.p, self.reduction, self.normalize)


@MODELS.register_module()
class GroupTaylorMutableChannelUnit(_GroupArgs, DataMutableChannelUnit):
    """Keeps the channels of largest first-order Taylor score summed over every slice the unit
    moves: ``sum |w * dL/dw|``, the gradient averaged over the calibration batches."""

    criterion = "group_taylor"
    no_score_reason = "its parameters got no gradient from the calibration loss"

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9, p: int = 1, reduction: str = "sum", normalize: str | None = "mean",
                 **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)
        self._set_group_args(p, reduction, normalize)

    def scores_from_gradients(self, grads: dict[int, torch.Tensor]) -> torch.Tensor:
        """The scores for parameter gradients ``grads`` (by id of the raw parameter)."""
        return group_magnitude_scores(self, self.p, self.reduction, self.normalize,
                                      tensors=taylor_products(self, grads))
