"""What a unit is, in words: the heads of layer 0, the MLP of layer 1, the hidden size.

Read from the unit's channels alone (no names of architectures): a unit whose layers write
several channels per element is attention heads (KV groups when the key/value layers write
fewer per element than the query layers); a unit that holds an embedding's columns or runs
through several blocks is the model's hidden size (the residual stream); a unit whose
layers sit in one block is that block's width (the MLP of a transformer layer).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .layers.embedding import is_embedding


@dataclass(frozen=True)
class UnitRole:
    """What a unit prunes: ``kind`` is 'heads', 'kv_groups', 'hidden', 'mlp', 'experts' or
    'channels'; ``scope`` the module path the unit lives in; ``layer`` its layer index."""

    kind: str
    scope: str
    layer: int | None = None
    heads_per_element: int = 1  # query heads per element (the group size of a KV group)
    head_dim: int = 1


def unit_role(unit: Any) -> UnitRole:
    """The role of a channel unit (see the module docstring)."""
    channels = list(unit.channels)
    layers = [c.name.rpartition(".")[0] if c.param_dim is not None else c.name for c in channels]
    scope = _common_prefix(layers)
    layer = _layer_index(scope)
    ratios = [c.expand_ratio for c in channels if c.param_dim is None and c.expand_ratio > 1]
    if ratios:  # heads: query layers write group * head_dim per element, key/value layers head_dim
        written = [c.expand_ratio for c in channels if c.param_dim is None and c.is_output_channel]
        group = max(written) // min(written) if written else 1
        fused = _fused_group(written, [c.expand_ratio for c in channels if c.param_dim is None
                                       and not c.is_output_channel and c.expand_ratio > 1])
        if fused is not None:
            return UnitRole("kv_groups" if fused[0] > 1 else "heads", scope, layer, *fused)
        return UnitRole("kv_groups" if group > 1 else "heads", scope, layer, group, min(ratios))
    if any(c.param_dim == 1 and is_embedding(c.module) for c in channels) or _blocks(layers) > 1:
        return UnitRole("hidden", scope)
    if any(c.param_dim is not None and _param_dims(c) == 3 for c in channels):
        return UnitRole("experts", scope, layer)  # the intermediate size of every expert
    if layer is not None and len({c.name for c in channels if c.param_dim is None}) > 1:
        return UnitRole("mlp", scope, layer)
    return UnitRole("channels", scope, layer)


def _fused_group(written: list[int], read: list[int]) -> tuple[int, int] | None:
    """One fused layer writes a group's query heads, key and value as one element (``g + 2``
    heads), the output layer reads its ``g`` query heads: ``(g, head_dim)``, or None."""
    if len(set(written)) != 1 or len(set(read)) != 1 or written[0] <= read[0]:
        return None
    extra = written[0] - read[0]  # the key and value heads: 2 * head_dim
    if extra % 2 or (2 * read[0]) % extra:
        return None
    return 2 * read[0] // extra, extra // 2


def describe_unit(unit: Any) -> str:
    """A short label: 'KV groups of layer 0 (model.layers.0.self_attn): 2 × 2 query heads'."""
    role = unit_role(unit)
    n = unit.num_channels // max(unit.repeats, 1)
    where = f"layer {role.layer} ({role.scope})" if role.layer is not None else (role.scope or "the model")
    if role.kind == "kv_groups":
        return f"KV groups of {where}: {n} × {role.heads_per_element} query heads of {role.head_dim}"
    if role.kind == "heads":
        return f"heads of {where}: {n} of {role.head_dim}"
    if role.kind == "hidden":
        return f"hidden size: {n}"
    if role.kind == "mlp":
        return f"MLP of {where}: {n}"
    if role.kind == "experts":
        return f"expert MLPs of {where}: {n} in every expert"
    return f"channels of {where}: {n}"


def _param_dims(channel: Any) -> int:
    param = getattr(channel.module, "__dict__", {}).get("_parameters", {}).get(channel.name.rpartition(".")[2])
    return param.dim() if param is not None else 0


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names if n]
    if not parts:
        return ""
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix)


def _layer_index(scope: str) -> int | None:
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", scope)
    return int(match.group(1)) if match else None


def _blocks(layers: list[str]) -> int:
    """How many numbered blocks (``layers.0``, ``h.1``...) the layers of a unit sit in."""
    return len({m.group(0) for m in (re.search(r"^.*?\.\d+(?=\.|$)", n) for n in layers) if m})
