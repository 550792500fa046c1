"""Importance computed once per unit and cached: the keep order and the masks it gives.

The ranking is recomputed only when a watched parameter is written in place or replaced (its
version counter and storage), or on ``refresh_importance()``; a slider move then reads no
weight. Copies carry their ranking. How staleness is detected: docs/importance.md.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["CachedImportanceMixin", "ImportanceCache"]

_ADOPT = "adopt"  # a cache that was pickled or copied: the next key is taken as its own


class ImportanceCache:
    """One unit's ranking: the scores, the keep order, masks per kept count, and the key of the
    watched tensors they were computed from."""

    def __init__(self, key: Any, scores: torch.Tensor, order: torch.Tensor) -> None:
        self.key = key
        self.scores = scores
        self.order = order
        self.masks: dict[int, torch.Tensor] = {}

    def __getstate__(self) -> dict:
        return {"key": _ADOPT, "scores": self.scores, "order": self.order, "masks": self.masks}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def _weight_of(channel: Any) -> torch.Tensor | None:
    if channel.module is None or channel.param_dim is not None:
        return None
    return channel.module.__dict__.get("_parameters", {}).get("weight")


class CachedImportanceMixin:
    """For channel units: keeps the channels of highest ``compute_importance()``, ranked once.

    Subclasses give ``compute_importance() -> tensor of base_channels scores`` and may change
    ``watched_parameters()`` (default: the weight matrices of the layers that write the unit's
    channels, else of those that read them: what weight criteria read)."""

    def compute_importance(self) -> torch.Tensor:
        """One score per ``base_channels`` position, higher kept first; each subclass gives its criterion."""
        raise NotImplementedError

    def watched_parameters(self) -> list[tuple[Any, str]]:
        """``(module, parameter name)`` pairs whose change makes the ranking stale."""
        pairs = self.__dict__.get("_watched")
        if pairs is None:
            pairs = []
            for related in (self.output_related, self.input_related):
                for channel in related:
                    weight = _weight_of(channel)
                    if weight is not None and weight.dim() >= 2 and (channel.module, "weight") not in pairs:
                        pairs.append((channel.module, "weight"))
                if pairs:
                    break
            self.__dict__["_watched"] = pairs
        return pairs

    def importance_key(self) -> tuple:
        """Changes when a watched tensor is written in place or replaced (no element read):
        every slider move checks it, so it is one tight pass over the parameter dicts."""
        stores = self.__dict__.get("_watched_stores")
        if stores is None:
            stores = self.__dict__["_watched_stores"] = [
                (module.__dict__.get("_parameters", {}), attr) for module, attr in self.watched_parameters()]
        return tuple([(t._version, t.data_ptr()) if (t := store.get(attr)) is not None else None
                      for store, attr in stores])

    def importance_cache(self) -> ImportanceCache:
        """The cache, recomputed first when it is stale."""
        cache = self.__dict__.get("_importance_cache")
        key = self.importance_key()
        if cache is not None and cache.key == _ADOPT:
            cache.key = key
        if cache is None or cache.key != key:
            scores = self.compute_importance().to(torch.float64)
            cache = ImportanceCache(key, scores, torch.argsort(-scores, stable=True))
            self.__dict__["_importance_cache"] = cache
        return cache

    def refresh_importance(self) -> None:
        """Forget the ranking: the next choice computes it again."""
        self.__dict__.pop("_importance_cache", None)

    def _order(self) -> torch.Tensor:
        return self.importance_cache().order

    def _set_kept(self, kept_per_block: int) -> None:
        if kept_per_block >= self.base_channels:  # every channel: no ranking needed
            full = self.__dict__.get("_full_mask")
            if full is None:
                full = self.__dict__["_full_mask"] = torch.ones(self.num_channels, dtype=torch.bool)
            self.mutable_channel.set_valid_mask(full)
            return
        cache = self.importance_cache()
        mask = cache.masks.get(kept_per_block)
        if mask is None:
            mask = torch.zeros(self.base_channels, dtype=torch.bool)
            mask[cache.order[:kept_per_block]] = True
            mask = cache.masks[kept_per_block] = mask.repeat(self.repeats)
        self.mutable_channel.set_valid_mask(mask)
