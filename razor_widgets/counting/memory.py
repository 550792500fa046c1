"""What a language model needs in memory besides its MACs: the KV cache and MoE active params.

**KV cache** (decoder-only HF models whose layers all attend to the whole sequence): per token,
every layer caches ``2 * kv_heads * head_dim`` elements (from the config); each unit of KV groups
(or of ungrouped heads) moves it by ``2 * head_dim`` per kept element. Only where such units exist
with the config's head dim (MLA caches latents: no figure rather than a wrong one). **Active
params** (MoE): a layer of 3-D expert parameters ``[experts, ...]`` counts ``top_k / experts`` of
its params. Both exact against the export and a real cache (tests/test_memory.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ..analysis.unit_labels import unit_role

__all__ = ["MemoryTerms"]

FULL_ATTENTION = "full_attention"


class MemoryTerms:
    """The KV-cache and active-param terms of a prepared model, over the live counter's state."""

    def __init__(self, model: nn.Module, units: list[Any], layer_names: list[str], term_layer: np.ndarray,
                 term_param: np.ndarray) -> None:
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        self.kv_const, self.kv_coefs = _kv_terms(model, units)
        self._kv_units = np.array([u for u, _ in self.kv_coefs], dtype=np.int64)
        self._kv_weights = np.array([c for _, c in self.kv_coefs], dtype=np.int64)
        self._experts = _expert_terms(model, layer_names, term_layer, term_param)
        self._original: dict[str, int | None] = {}

    def record_original(self, kept: np.ndarray, terms: np.ndarray, params: int) -> None:
        """The full-choice figures (``kept``, ``terms`` at full choices)."""
        self._original = {"kv": self.kv_per_token(kept), "active": self.active_params(terms, params)}

    def kv_per_token(self, kept: np.ndarray) -> int | None:
        """KV cache elements per token and sequence at the units' kept counts ``kept``."""
        if self.kv_const is None:
            return None
        return int(self.kv_const + self._kv_weights @ kept[self._kv_units])

    def active_params(self, terms: np.ndarray, params: int) -> int | None:
        """Params one token uses: ``params`` less the experts it does not use."""
        if not self._experts:
            return None
        idle = sum(int(terms[idx].sum()) * (experts - top_k) // experts for idx, experts, top_k in self._experts)
        return params - idle

    def fields(self, kept: np.ndarray, terms: np.ndarray, params: int) -> dict[str, Any]:
        """The memory fields of ``Resources`` at the counter's state (``params``: its params now)."""
        return {"kv_per_token": self.kv_per_token(kept), "original_kv_per_token": self._original.get("kv"),
                "active_params": self.active_params(terms, params) if self._experts else None,
                "original_active_params": self._original.get("active"), "dtype": self.dtype}


def _kv_terms(model: nn.Module, units: list[Any]) -> tuple[int | None, list[tuple[int, int]]]:
    """(constant, [(unit index, elements per kept element)]) of the per-token KV cache, or
    (None, []) for a model whose cache this does not know."""
    config = getattr(model, "config", None)
    shape = _cache_shape(model, config)
    if shape is None:
        return None, []
    layers, kv_heads, heads, head_dim = shape
    const, coefs = layers * 2 * kv_heads * head_dim, []
    for u, unit in enumerate(units):
        role = unit_role(unit)
        if role.kind == "kv_groups" or (role.kind == "heads" and kv_heads == heads):
            if role.head_dim != head_dim or len(coefs) == layers:
                return None, []  # the heads the analysis saw are not the config's: not counted
            coef = 2 * role.head_dim
            coefs.append((u, coef))
            const -= coef * (unit.num_channels // max(unit.repeats, 1))
    if not coefs:  # no unit says the analysis saw the config's KV heads (MLA caches latents): not counted
        return None, []
    return const, coefs


def _cache_shape(model: nn.Module, config: Any) -> tuple[int, int, int, int] | None:
    """(layers, KV heads, query heads, head dim) of a decoder-only HF model caching every layer."""
    can_generate = getattr(model, "can_generate", None)
    if config is None or not hasattr(config, "to_dict") or not callable(can_generate) or not can_generate():
        return None
    if getattr(config, "is_encoder_decoder", False):
        return None  # cross-attention caches are not counted
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None and getattr(config, "sliding_window", None) is not None:
        return None  # windowed caches (capped at the window) are not counted
    if any(kind != FULL_ATTENTION for kind in layer_types or ()):
        return None
    layers, heads = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
    if not isinstance(layers, int) or not isinstance(heads, int) or heads <= 0:
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "hidden_size", 0) // heads
    return (layers, kv_heads, heads, head_dim) if head_dim else None


def _expert_terms(model: nn.Module, layer_names: list[str], term_layer: np.ndarray,
                  term_param: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """[(param term indices, experts, top_k)] per expert count: the counted layers that are a
    module holding 3-D expert parameters (dim 0: the experts, as in every param it holds) or
    one of its parameters."""
    top_k = getattr(getattr(model, "config", None), "num_experts_per_tok", None)
    if not isinstance(top_k, int) or top_k <= 0:
        return []
    params = dict(model.named_parameters())
    experts_of: dict[str, int] = {}  # owner module -> its expert count
    for name, param in params.items():
        if param.dim() == 3:
            experts_of.setdefault(name.rpartition(".")[0], param.shape[0])
    for owner, experts in list(experts_of.items()):  # every param of an expert module is per expert
        prefix = owner + "." if owner else ""
        if any(n.startswith(prefix) and "." not in n[len(prefix):] and (p.dim() < 2 or p.shape[0] != experts)
               for n, p in params.items()):
            del experts_of[owner]
    by_count: dict[int, list[int]] = {}
    for i, layer in enumerate(layer_names):  # the owner module, or one of its parameters
        experts = experts_of.get(layer) or (experts_of.get(layer.rpartition(".")[0]) if layer in params else None)
        if experts:
            by_count.setdefault(experts, []).append(i)
    terms = []
    for experts, layers in by_count.items():
        idx = np.flatnonzero(np.isin(term_layer, layers) & (term_param == 1))
        terms.append((idx, experts, min(top_k, experts)))
    return terms
