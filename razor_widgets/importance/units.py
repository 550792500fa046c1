"""Channel units that keep their most important channels, by the criteria of ``criteria.py``.

MMRazor-style unit types in the registry (``channel_unit_cfg=dict(type="L2MutableChannelUnit")``
or ``"TaylorMutableChannelUnit"``...). The ranking is computed once and cached
(``importance_cache.py``); the data criteria (Taylor, activation) need ``calibrate(mutator,
data)`` first, and score again from the same data when the weights change.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ..mutables.importance_cache import CachedImportanceMixin
from ..mutables.units import SequentialMutableChannelUnit
from ..registry import MODELS
from . import criteria

__all__ = ["ImportanceMutableChannelUnit", "L2MutableChannelUnit", "BNScaleMutableChannelUnit",
           "TaylorMutableChannelUnit", "ActivationMutableChannelUnit", "RandomMutableChannelUnit",
           "MinitronMutableChannelUnit", "WandaMutableChannelUnit"]


class ImportanceMutableChannelUnit(CachedImportanceMixin, SequentialMutableChannelUnit):
    """Keeps the channels of highest importance by ``criterion`` (any subset, not a prefix)."""

    criterion = ""

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)

    def importance(self) -> torch.Tensor:
        """The cached score of each channel position (computed now if stale)."""
        return self.importance_cache().scores

    def compute_importance(self) -> torch.Tensor:
        """``scores()``, or, for a unit with none, a prefix order (with one warning saying why)."""
        scores = self.scores()
        if scores is None:  # no score of this kind: keep a prefix, and say so once
            if not self.__dict__.get("_said_no_score"):
                self.__dict__["_said_no_score"] = True
                warnings.warn(f"unit {self.name!r} ({type(self).__name__}): {self.no_score_reason}; "
                              "it keeps a prefix of its channels", stacklevel=2)
            return -torch.arange(self.base_channels, dtype=torch.float64)
        return scores

    no_score_reason = "no score"

    def scores(self) -> torch.Tensor | None:
        """The criterion's scores, or None where the unit has none."""
        raise NotImplementedError


@MODELS.register_module()
class L2MutableChannelUnit(ImportanceMutableChannelUnit):
    """Keeps the channels whose weights have the largest L2 norm."""

    criterion = "l2"

    def scores(self) -> torch.Tensor:
        """The L2 norm of each channel's weights (``criteria.l2_scores``)."""
        return criteria.l2_scores(self)


@MODELS.register_module()
class BNScaleMutableChannelUnit(ImportanceMutableChannelUnit):
    """Keeps the channels whose batch norm scale ``|gamma|`` is largest (Network Slimming).
    A unit no batch norm normalises has no such score: it warns and keeps a prefix."""

    criterion = "bn_scale"
    no_score_reason = "no batch norm normalises its channels, so it has no BN scale"

    def scores(self) -> torch.Tensor | None:
        """``|gamma|`` of the unit's batch norms, or None where no batch norm normalises it."""
        return criteria.bn_scale_scores(self)

    def watched_parameters(self) -> list:
        """The gammas it reads."""
        return [(c.module, "weight") for c in self.output_related + self.input_related
                if c.param_dim is None and getattr(c.module, "layer_kind", None) is not None
                and c.module.layer_kind.channel_scale(c.module) is not None]


class DataMutableChannelUnit(ImportanceMutableChannelUnit):
    """A unit scored on calibration data (``calibrate(mutator, data)``). It scores
    again when the weights of its own layers change (a training step changes them all; a
    change elsewhere alone needs ``refresh_importance()``)."""

    def watched_parameters(self) -> list:
        """The weights of the layers whose outputs it reads."""
        return [(c.module, attr) for c in self.output_related if c.param_dim is None and c.module is not None
                for attr in ("weight",) if c.module.__dict__.get("_parameters", {}).get(attr) is not None]

    def use_calibration(self, run: Any) -> None:
        """Score from ``run``'s calibration batches from now on; the cached ranking is dropped."""
        self.__dict__["_calibration"] = run
        self.refresh_importance()

    def importance_cache(self) -> Any:
        """The cached ranking; ``ValueError`` saying how to calibrate when no data was given yet."""
        if self.__dict__.get("_calibration") is None:
            raise ValueError(f"unit {self.name!r} ({type(self).__name__}) needs calibration data: "
                             "calibrate(mutator, data) or PruningExplorer(model, x, calibration=data)")
        return super().importance_cache()

    def compute_importance(self) -> torch.Tensor:
        """The calibration scores, after the run scores every unit again if the weights changed."""
        self.__dict__["_calibration"].score_if_stale()  # one pass scores every unit of the run
        return super().compute_importance()

    def scores(self) -> torch.Tensor | None:
        """This unit's scores from the last calibration pass, or None where they are all zero (or missing)."""
        scores = self.__dict__["_calibration"].scores.get(id(self))
        return None if scores is None or not bool(scores.any()) else scores

    no_score_reason = "none of its layers gives an output tensor with its channels"


@MODELS.register_module()
class TaylorMutableChannelUnit(DataMutableChannelUnit):
    """Keeps the channels of largest first-order Taylor score ``|sum a * dL/da|``."""

    criterion = "taylor"


@MODELS.register_module()
class ActivationMutableChannelUnit(DataMutableChannelUnit):
    """Keeps the channels of largest mean ``|activation|`` on calibration data."""

    criterion = "activation"


@MODELS.register_module()
class RandomMutableChannelUnit(ImportanceMutableChannelUnit):
    """Keeps a seeded random subset of channels: the baseline every criterion is compared with."""

    criterion = "random"

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)
        self.seed = int(seed)

    @property
    def init_args(self) -> dict[str, Any]:
        """The sequential unit's arguments plus ``seed``."""
        return {**super().init_args, "seed": self.seed}

    def watched_parameters(self) -> list:
        """No parameter: a random ranking reads no weight, so it never goes stale."""
        return []  # the ranking reads no weight

    def scores(self) -> torch.Tensor:
        """A random ranking, the same for the same seed and unit name."""
        return criteria.random_scores(self, self.seed)


class ReaderDataMutableChannelUnit(DataMutableChannelUnit):
    """A data unit scored at the inputs of the layers that multiply its channels
    (``token_criteria.py``): it watches their weights too."""

    def watched_parameters(self) -> list:
        """The weights of the layers that write its channels and of those that read them."""
        readers = [(c.module, "weight") for c in self.input_related if c.param_dim is None and c.module is not None
                   and c.module.__dict__.get("_parameters", {}).get("weight") is not None]
        return super().watched_parameters() + readers

    no_score_reason = "no linear or conv layer reads its channels"


@MODELS.register_module()
class MinitronMutableChannelUnit(ReaderDataMutableChannelUnit):
    """Keeps the channels that carry the largest activations into the layers that read them
    (NVIDIA Minitron): L2 over each sequence's tokens, mean over the sequences."""

    criterion = "minitron"


@MODELS.register_module()
class WandaMutableChannelUnit(ReaderDataMutableChannelUnit):
    """Keeps the channels of largest structured Wanda score ``||X_c||_2 * sum |W[:, c]|`` over
    the layers that read them (X: every calibration token)."""

    criterion = "wanda"
