"""A ChannelMutator's config: unit-config defaults, channel ranges and size attributes read
from a config (the ``Config`` parse) or placed from the analysis, and plain config values."""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ..analysis import ChannelAnalysis
from ..channel_range import Channel
from ..layers import kind_of
from ..mutables.units import MutableChannelUnit

DEFAULT_UNIT_CFG = {"type": "SequentialMutableChannelUnit", "default_args": {"choice_mode": "ratio"},
                    "units": {}}


def attributes_from_cfg(cfg: dict, modules: dict[str, nn.Module], units: list[MutableChannelUnit]
                         ) -> dict[tuple[str, str], list[tuple[MutableChannelUnit | None, int]]]:
    """``parse_cfg['size_attributes']`` of a config template, checked against the model."""
    by_name = {u.name: u for u in units}
    out = {}
    for key, positions in cfg.items():
        owner, _, attr = str(key).rpartition(".")
        if owner not in modules or not isinstance(getattr(modules[owner], attr, None), int):
            raise ValueError(f"size attribute {key!r}: the model has no int attribute of that name")
        resolved = []
        for entry in positions:
            name, pos = entry
            if name is not None and name not in by_name:
                raise ValueError(f"size attribute {key!r} names unit {name!r}, which the config does not have")
            resolved.append((by_name.get(name), int(pos)))
        out[(owner, attr)] = resolved
    return out


def attribute_positions(analysis: ChannelAnalysis, units: list[MutableChannelUnit]
                         ) -> dict[tuple[str, str], list[tuple[MutableChannelUnit | None, int]]]:
    """Where each element counted by a size attribute sits: (its unit, position in a block).

    Looked up in arrays indexed by root, so the cost follows the attributes' elements, not
    every unit's channels (the vocabulary of an LM head); (None, 0): an element in no layer."""
    if not analysis.size_attributes:
        return {}
    roots = analysis.roots
    unit_of = np.full(len(roots), -1, dtype=np.int64)
    pos_of = np.zeros(len(roots), dtype=np.int64)
    for index, spec in enumerate(analysis.units):
        chain = np.asarray(spec.roots, dtype=np.int64)
        unit_of[chain] = index
        pos_of[chain] = np.arange(len(chain))
    out = {}
    for key, line in analysis.size_attributes.items():
        found = roots[line.numpy()]
        out[key] = [(units[u] if u >= 0 else None, p)
                    for u, p in zip(unit_of[found].tolist(), pos_of[found].tolist())]
    return out


def normalized_unit_cfg(cfg: dict | str | None, default_type: str) -> dict[str, Any]:
    if cfg is None:
        cfg = dict(DEFAULT_UNIT_CFG, type=default_type)
    elif isinstance(cfg, str):
        cfg = {"type": cfg}
    cfg = dict(cfg)
    cfg.setdefault("type", default_type)
    cfg.setdefault("default_args", {})
    cfg.setdefault("units", {})
    return cfg


def plain(cfg: Any) -> Any:
    if isinstance(cfg, dict):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return list(cfg)
    return cfg


def channel_from_cfg(ch: dict, is_output: bool, modules: dict, params: dict, unit: str) -> Channel:
    name = ch["name"]
    param_dim = ch.get("param_dim")
    if param_dim is not None:
        if name not in params:
            raise KeyError(f"unit {unit!r}: the model has no parameter {name!r}")
        size = params[name].shape[param_dim]
    else:
        if name not in modules:
            raise KeyError(f"unit {unit!r}: the model has no layer {name!r}")
        size = side_size(modules[name], is_output)
    start, end, expand = int(ch.get("start", 0)), int(ch.get("end", size)), int(ch.get("expand_ratio", 1))
    side = f"dim {param_dim}" if param_dim is not None else ("output" if is_output else "input")
    if not 0 <= start < end <= size or expand < 1:
        raise ValueError(f"unit {unit!r}: channels ({start}, {end}) with expand_ratio {expand} do not fit the "
                         f"{size} {side} channels of {name!r}")
    channel = Channel(name, None, (start, end), is_output, expand, param_dim)
    channel.module = modules.get(channel.owner_name)  # bound as a traced unit's channels are
    return channel


def side_size(module: nn.Module, is_output: bool) -> int:
    kind = kind_of(module)
    if kind is None:
        raise TypeError(f"cannot tell the channel count of {type(module).__name__}")
    return kind.channels(module, is_output)
