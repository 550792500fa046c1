"""A ChannelMutator's config: unit-config defaults, channel ranges and size attributes read
from a config (the ``Config`` parse) or placed from the analysis, and plain config values."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..channels.analysis_result import ChannelAnalysis
from ..channels.channel_range import Channel
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


def _unit_positions(analysis: ChannelAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """Per root: the index of its unit (-1: in no unit) and its position in a block, as arrays,
    so that looking elements up costs what they are, not every unit's channels (an LM head's
    vocabulary) in a Python loop."""
    unit_of = np.full(len(analysis.roots), -1, dtype=np.int64)
    pos_of = np.zeros(len(analysis.roots), dtype=np.int64)
    for index, spec in enumerate(analysis.units):
        chain = np.asarray(spec.roots, dtype=np.int64)
        unit_of[chain] = index
        pos_of[chain] = np.arange(len(chain))
    return unit_of, pos_of


def _positions(found: np.ndarray, unit_of: np.ndarray, pos_of: np.ndarray, units: list[MutableChannelUnit]
               ) -> list[tuple[MutableChannelUnit | None, int]]:
    """(unit, position) of each root in ``found``; (None, 0) for a root in no unit."""
    return [(units[u], p) if u >= 0 else (None, 0) for u, p in zip(unit_of[found].tolist(), pos_of[found].tolist())]


def attribute_positions(analysis: ChannelAnalysis, units: list[MutableChannelUnit]
                         ) -> dict[tuple[str, str], list[tuple[MutableChannelUnit | None, int]]]:
    """Where each element counted by a size attribute sits: (its unit, position in a block);
    (None, 0): in no layer."""
    if not analysis.size_attributes:
        return {}
    unit_of, pos_of = _unit_positions(analysis)
    return {key: _positions(analysis.roots[line.numpy()], unit_of, pos_of, units)
            for key, line in analysis.size_attributes.items()}


def output_positions(analysis: ChannelAnalysis, units: list[MutableChannelUnit]
                     ) -> dict[tuple, dict[int, list[tuple[MutableChannelUnit | None, int]]]]:
    """Where each channel of an output that follows the pruned model sits, per dim it varies
    along: (its unit, position in a block); (None, 0): in no unit (always kept)."""
    if not analysis.free_outputs:
        return {}
    unit_of, pos_of = _unit_positions(analysis)
    out = {}
    for path, dims in analysis.free_outputs.items():
        if dims is None:  # an output the check cannot cut (``model_outputs.NotNarrowed``)
            out[path] = None
            continue
        out[path] = {}
        for dim, line in dims.items():
            found = analysis.roots[line.clamp(min=0).numpy()]
            where = _positions(found, unit_of, pos_of, units)
            out[path][dim] = [w if e >= 0 else (None, 0) for e, w in zip(line.tolist(), where)]
    return out


def kept_output_positions(positions: dict[tuple, dict[int, list[tuple[MutableChannelUnit | None, int]]]]
                          ) -> dict[tuple, dict[int, torch.Tensor]]:
    """Output path -> dim -> the positions kept at the units' current choices."""
    return {path: None if dims is None else {
        dim: torch.tensor([i for i, (unit, pos) in enumerate(where) if unit is None or bool(unit.current_mask[pos])],
                          dtype=torch.long) for dim, where in dims.items()}
            for path, dims in positions.items()}


def output_positions_cfg(positions: dict, units: dict) -> list[dict]:
    """The outputs that follow the pruned model, as config data (``parse_cfg['free_outputs']``)."""
    return [{"path": list(path), "dims": None if dims is None else [
        [dim, [[u.name if u is not None and u.name in units else None, pos] for u, pos in where]]
        for dim, where in dims.items()]} for path, dims in positions.items()]


def outputs_from_cfg(cfg: list, units: list[MutableChannelUnit]
                     ) -> dict[tuple, dict[int, list[tuple[MutableChannelUnit | None, int]]]]:
    """``parse_cfg['free_outputs']`` of a config template, checked against its units."""
    by_name = {u.name: u for u in units}
    out = {}
    for entry in cfg:
        if entry["dims"] is None:  # an output the check cannot cut
            out[tuple(entry["path"])] = None
            continue
        dims = {}
        for dim, where in entry["dims"]:
            unknown = [name for name, _ in where if name is not None and name not in by_name]
            if unknown:
                raise ValueError(f"free output {entry['path']!r} names unit {unknown[0]!r}, which the config "
                                 "does not have")
            dims[int(dim)] = [(by_name.get(name), int(pos)) for name, pos in where]
        out[tuple(entry["path"])] = dims
    return out


def normalized_unit_cfg(cfg: dict | str | None, default_type: str) -> dict[str, Any]:
    """``channel_unit_cfg`` as a full dict (``type``, ``default_args``, ``units``); None gives the default."""
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
    """A config with tuples turned into lists, recursively through dicts, so it compares and dumps as JSON."""
    if isinstance(cfg, dict):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return list(cfg)
    return cfg


def channel_from_cfg(ch: dict, is_output: bool, modules: dict, params: dict, unit: str) -> Channel:
    """The ``Channel`` a config entry describes, checked against the model's layers and parameters."""
    name = ch["name"]
    param_dim = ch.get("param_dim")
    if param_dim is not None:
        if name not in params:
            raise KeyError(f"unit {unit!r}: the model has no parameter {name!r}")
        size = params[name].shape[param_dim]
    else:
        if name not in modules:
            raise KeyError(f"unit {unit!r}: the model has no layer {name!r}")
        try:
            size = side_size(modules[name], is_output)
        except TypeError:  # a layer holding no channel count (a local response norm): the range says it
            if "end" not in ch:
                raise ValueError(f"unit {unit!r}: {name!r} holds no channel count; give its channels an 'end'") \
                    from None
            size = int(ch["end"])
    start, end, expand = int(ch.get("start", 0)), int(ch.get("end", size)), int(ch.get("expand_ratio", 1))
    side = f"dim {param_dim}" if param_dim is not None else ("output" if is_output else "input")
    if not 0 <= start < end <= size or expand < 1:
        raise ValueError(f"unit {unit!r}: channels ({start}, {end}) with expand_ratio {expand} do not fit the "
                         f"{size} {side} channels of {name!r}")
    channel = Channel(name, None, (start, end), is_output, expand, param_dim)
    channel.module = modules.get(channel.owner_name)  # bound as a traced unit's channels are
    return channel


def side_size(module: nn.Module, is_output: bool) -> int:
    """The channel count of a layer's output or input side, as its layer kind reports it."""
    kind = kind_of(module)
    if kind is None:
        raise TypeError(f"cannot tell the channel count of {type(module).__name__}")
    return kind.channels(module, is_output)


def side_sizes(units: list, name: str) -> dict[bool, int]:
    """``{is_output: channels}`` of layer ``name`` from the units' channel ranges (the traced
    slots' sizes): for a layer that holds no channel count of its own (a local response norm)."""
    sizes: dict[bool, int] = {}
    for unit in units:
        for channel in unit.channels:
            if channel.name == name and channel.param_dim is None:
                side = channel.is_output_channel
                sizes[side] = max(sizes.get(side, 0), channel.end)
    return sizes
