"""What a unit is, in words: the heads of layer 0, the MLP of layer 1, the hidden size, the
channels of ``layer1.0.conv1``, the residual stream of ``layer2``.

A role (heads, hidden, experts, residual, mlp, channels) is decided from what the analysis knows
about the unit's channels, never from the names of architectures or modules; where a unit sits is
its position among the model's repeated blocks (``module_blocks.py``). :func:`unit_role` computes
the role of a unit that has none. The roles: docs/unit-labels.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ..channels.unit_traits import UnitTraits
from ..layers.embedding import is_embedding
from ..layers.registry import kind_of
from .module_blocks import Block, BlockTree

LINEAR_KINDS = frozenset({"linear", "transposed_linear", "owned_linear"})
CHANNEL_NORM_KINDS = frozenset({"layer_norm", "rms_norm", "channel_mean"})
EXPERT_KINDS = frozenset({"fused_experts"})
LAYER_ROLES = ("heads", "kv_groups", "head_dims", "mlp", "experts")  # placed by layer index


@dataclass(frozen=True)
class UnitRole:
    """What a unit prunes: ``kind`` is 'heads', 'kv_groups', 'head_dims', 'hidden', 'mlp',
    'experts', 'residual' or 'channels'; ``scope`` the module path its layers share; ``layer``
    the index of its (outermost) block; ``where`` the place in words ("layer 0", "layer2 (2
    blocks)", "layer1.0.conv1"); ``heads_per_element`` the query heads per element (the group
    size of a KV group); ``head_dim`` the channels of one head."""

    kind: str
    scope: str
    layer: int | None = None
    heads_per_element: int = 1
    head_dim: int = 1
    where: str = ""


def unit_role(unit: Any) -> UnitRole:
    """The role of a channel unit: the one its mutator gave it, else one computed from its
    channels (and its traits where the analysis gave it any)."""
    role = getattr(unit, "role", None)
    return role if isinstance(role, UnitRole) else _unplaced_hidden(role_of(unit, BlockTree(None)))


def assign_roles(units: list, modules: dict[str, Any]) -> None:
    """Give every unit its role (``unit.role``), placed in ``modules``' blocks; where several
    units are the hidden size, each says where it is."""
    tree = BlockTree(modules)
    roles = [role_of(unit, tree) for unit in units]
    if sum(r.kind == "hidden" for r, u in zip(roles, units) if u.is_mutable) <= 1:
        roles = [_unplaced_hidden(r) for r in roles]
    for unit, role in zip(units, _told_apart(units, roles, tree)):
        unit.role = role


def _told_apart(units: list, roles: list[UnitRole], tree: BlockTree) -> list[UnitRole]:
    """Roles that would read alike (the self- and cross-attention heads of one decoder layer)
    say which module of the block they are: ``heads of decoder layer 0 (encoder_attn)``."""
    seen: dict[tuple[str, str], int] = {}
    for unit, role in zip(units, roles):
        if unit.is_mutable:  # the units a person sees side by side
            seen[role.kind, role.where] = seen.get((role.kind, role.where), 0) + 1
    told = []
    for unit, role in zip(units, roles):
        inside = _inside_block(unit, tree) if seen.get((role.kind, role.where), 0) > 1 and role.where else ""
        told.append(replace(role, where=f"{role.where} ({inside})") if inside else role)
    return told


def _inside_block(unit: Any, tree: BlockTree) -> str:
    """The module that holds the unit's first layer, relative to its block."""
    first = (unit.output_related or unit.input_related or [None])[0]
    if first is None:
        return ""
    block = tree.innermost(first.owner_name)
    inner = first.owner_name[len(block.path) + 1:] if block is not None else first.owner_name
    return inner.rpartition(".")[0] or inner


def _unplaced_hidden(role: UnitRole) -> UnitRole:
    """The hidden size, when a model has one, needs no place."""
    return replace(role, where="") if role.kind == "hidden" else role


def role_of(unit: Any, tree: BlockTree) -> UnitRole:
    """The role of ``unit`` (see the module docstring), placed in ``tree``."""
    channels = list(unit.channels)
    traits = getattr(unit, "traits", None)
    owners = [c.owner_name for c in channels]
    scope = _common_prefix(owners)
    if not isinstance(traits, UnitTraits):
        traits = _traits_from_channels(channels, tree)
    layer_kinds = {_kind_name(c.module) for c in channels if c.param_dim is None}
    all_kinds = {_kind_name(c.module) for c in channels}
    normalised = bool(all_kinds & CHANNEL_NORM_KINDS)
    embedded = any(c.param_dim == 1 and is_embedding(c.module) for c in channels)
    sums = traits.sum_scopes
    if traits.attention:
        if sums and normalised:  # the stream itself, held in heads by the attention layers
            return _stream_role("hidden", unit, channels, scope, sums, tree)
        return _heads_role(unit, channels, owners, scope, tree)
    if embedded or (sums and normalised):
        return _stream_role("hidden", unit, channels, scope, sums, tree)
    if all_kinds & EXPERT_KINDS or any(c.param_dim is not None and _param_dims(c) == 3 for c in channels):
        return _placed("experts", owners, scope, tree)
    if sums:
        return _stream_role("residual", unit, channels, scope, sums, tree)
    writers = {c.owner_name for c in channels if c.param_dim is None and c.is_output_channel}
    readers = {c.owner_name for c in channels if c.param_dim is None and not c.is_output_channel}
    if writers and readers and layer_kinds <= LINEAR_KINDS:
        return _placed("mlp", owners, scope, tree)
    return UnitRole("channels", scope, where=_writer(unit, channels))


def _heads_role(unit: Any, channels: list, owners: list[str], scope: str, tree: BlockTree) -> UnitRole:
    ratios = [c.expand_ratio for c in channels if c.param_dim is None and c.expand_ratio > 1]
    if not ratios:
        return _placed("head_dims", owners, scope, tree)
    written = [c.expand_ratio for c in channels if c.param_dim is None and c.is_output_channel]
    group, head_dim = max(written) // min(written) if written else 1, min(ratios)
    fused = _fused_group(written, [c.expand_ratio for c in channels if c.param_dim is None
                                   and not c.is_output_channel and c.expand_ratio > 1])
    if fused is not None:
        group, head_dim = fused
    role = _placed("kv_groups" if group > 1 else "heads", owners, scope, tree)
    return UnitRole(role.kind, scope, role.layer, group, head_dim, role.where)


def _fused_group(written: list[int], read: list[int]) -> tuple[int, int] | None:
    """One fused layer writes a group's query heads, key and value as one element (``g + 2``
    heads), the output layer reads its ``g`` query heads: ``(g, head_dim)``, or None."""
    if len(set(written)) != 1 or len(set(read)) != 1 or written[0] <= read[0]:
        return None
    extra = written[0] - read[0]  # the key and value heads: 2 * head_dim
    if extra % 2 or (2 * read[0]) % extra:
        return None
    return 2 * read[0] // extra, extra // 2


def _placed(kind: str, owners: list[str], scope: str, tree: BlockTree) -> UnitRole:
    """A role placed by its block: "layer 3", "decoder layer 1", "layers 0–1" (a unit shared by
    several blocks), else the module path the layers share."""
    on_scope = tree.blocks_on(scope)
    if on_scope:
        outer = on_scope[0]
        index = ".".join(str(b.index) for b in on_scope)
        return UnitRole(kind, scope, outer.index, where=_in_layer(tree, outer, f"layer {index}"))
    blocks = {b.path: b for b in (tree.innermost(o) for o in owners) if b is not None}
    containers = {b.container for b in blocks.values()}
    if len(blocks) > 1 and len(containers) == 1:
        first = next(iter(blocks.values()))
        indices = sorted(b.index for b in blocks.values())
        return UnitRole(kind, scope, None, where=_in_layer(tree, first, f"layers {_span(indices)}"))
    return UnitRole(kind, scope, None, where=scope or "the model")


def _in_layer(tree: BlockTree, block: Block, text: str) -> str:
    qualifier = tree.qualifier(block)
    return f"{qualifier} {text}" if qualifier else text


def _stream_role(kind: str, unit: Any, channels: list, scope: str, sums: tuple[str, ...],
                 tree: BlockTree) -> UnitRole:
    """The hidden size or a residual stream, placed by the blocks whose forward adds it (a
    module that is no block stands for itself)."""
    places: dict[str, Block | str] = {}
    for path in sums:
        block = tree.innermost(path)
        places.setdefault(block.path if block is not None else path, block or path)
    heads = [c.expand_ratio for c in channels if c.param_dim is None and c.expand_ratio > 1]
    return UnitRole(kind, scope, None, 1, min(heads) if heads else 1, _blocks_text(places, tree, scope))


def _blocks_text(places: dict[str, Block | str], tree: BlockTree, scope: str) -> str:
    """``layer2 (2 blocks)`` (every block of a container), ``features.5–6`` (some of them),
    ``features.3`` (one), else the places' common path (with their number if all are blocks)."""
    if len(places) <= 1:
        return next(iter(places), "") or scope or "the model"
    blocks = [b for b in places.values() if isinstance(b, Block)]
    if len(blocks) == len(places) and len({b.container for b in blocks}) == 1:
        container, span = blocks[0].container, _span(sorted(b.index for b in blocks))
        if tree.modules is None or len(blocks) == tree.siblings(blocks[0]):
            return f"{container or 'the model'} ({len(blocks)} blocks)"
        return f"{container}.{span}" if container else f"blocks {span}"
    if len(blocks) == len(places):
        return f"{_common_prefix(list(places)) or 'the model'} ({len(places)} blocks)"
    return _common_prefix(list(places)) or "the model"


def _span(indices: list[int]) -> str:
    contiguous = indices == list(range(indices[0], indices[-1] + 1))
    return f"{indices[0]}–{indices[-1]}" if contiguous else ", ".join(map(str, indices))


def _writer(unit: Any, channels: list) -> str:
    """The layer that writes the unit's channels (with the range when it writes others too)."""
    layers = [c for c in channels if c.param_dim is None]
    first = next((c for c in layers if c.is_output_channel), None) or (layers or channels or [None])[0]
    if first is None:
        return str(getattr(unit, "name", ""))
    if not first.is_output_channel and first.param_dim is None:  # read only: a model input, say
        return f"the input of {first.owner_name}"
    kind = kind_of(first.module) if first.param_dim is None else None
    try:
        total = kind.channels(first.module, first.is_output_channel) if kind is not None else None
    except (NotImplementedError, AttributeError, TypeError):
        total = None
    whole = total is None or (first.start == 0 and first.end == total)
    return first.owner_name + ("" if whole else f" [{first.start}:{first.end}]")


def unit_label(unit: Any) -> str:
    """A short label: 'KV groups of layer 0', 'MLP of layer 1', 'hidden size', 'channels of
    layer1.0.conv1', 'residual stream of layer2 (2 blocks)'."""
    role = unit_role(unit)
    if role.kind == "hidden":
        return f"hidden size of {role.where}" if role.where else "hidden size"
    return f"{ROLE_WORDS[role.kind]} of {role.where}"


ROLE_WORDS = {"heads": "heads", "kv_groups": "KV groups", "head_dims": "head dims", "mlp": "MLP",
              "experts": "expert MLPs", "residual": "residual stream", "channels": "channels"}


def describe_unit(unit: Any) -> str:
    """The label with the sizes: 'KV groups of layer 0: 2 × 2 query heads of 16
    (model.layers.0.self_attn)', 'hidden size: 64', 'MLP of layer 1: 128 (mlp)'."""
    role = unit_role(unit)
    n = unit.num_channels // max(unit.repeats, 1)
    label, scope = unit_label(unit), f" ({role.scope})" if role.scope and role.kind in LAYER_ROLES else ""
    if role.kind == "kv_groups":
        return f"{label}: {n} × {role.heads_per_element} query heads of {role.head_dim}{scope}"
    if role.kind == "heads":
        return f"{label}: {n} of {role.head_dim}{scope}"
    if role.kind == "head_dims":
        return f"{label}: {n} in each of {unit.repeats} heads{scope}"
    if role.kind == "hidden" and role.head_dim > 1:
        return f"{label}: {n * role.head_dim} in {n} heads of {role.head_dim}"
    if role.kind == "experts":
        return f"{label}: {n} in every expert{scope}"
    return f"{label}: {n}{scope}"


def _traits_from_channels(channels: list, tree: BlockTree) -> UnitTraits:
    """Traits guessed for a unit the analysis did not make (a config's, or one built by hand):
    heads are written and read in blocks of channels; a unit that several blocks write is
    taken for one that is added across them."""
    layers = [c for c in channels if c.param_dim is None]
    attention = any(c.expand_ratio > 1 and c.is_output_channel for c in layers) and \
        any(c.expand_ratio > 1 and not c.is_output_channel for c in layers)
    writers = [c.owner_name for c in channels if c.is_output_channel]
    blocks = list(dict.fromkeys(b.path for b in (tree.innermost(o) for o in writers) if b is not None))
    return UnitTraits(attention, tuple(blocks) if len(blocks) > 1 else ())


def _kind_name(module: Any) -> str | None:
    kind = kind_of(module) if module is not None else None
    return kind.name if kind is not None else None


def _param_dims(channel: Any) -> int:
    param = getattr(channel.module, "__dict__", {}).get("_parameters", {}).get(channel.name.rpartition(".")[2])
    return param.dim() if param is not None else 0


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names if n]
    return ".".join(os.path.commonprefix(parts)) if parts else ""
