"""The registry of layer kinds: module types (MRO-aware) and functional op names to kinds."""
from __future__ import annotations

from torch import nn

from ..dynamic_ops import DynamicChannelMixin
from .base import LayerKind

_LEAF_TYPES: dict[type, LayerKind] = {}  # types whose own forward a kind's rule describes
_FAMILY_TYPES: dict[type, LayerKind] = {}  # further base types: counted and sized, never leaves
_FUNCTIONS: dict[str, LayerKind] = {}
KINDS: list[LayerKind] = []
_LEAF_CACHE: dict[type, LayerKind | None] = {}  # per module type: cleared when a kind is added
_KIND_CACHE: dict[type, LayerKind | None] = {}


def register_kind(kind: LayerKind) -> LayerKind:
    """Add a kind: its module types, family types and functional op names."""
    for table, keys in ((_LEAF_TYPES, kind.module_types), (_FAMILY_TYPES, kind.family_types),
                        (_FUNCTIONS, kind.functions)):
        for key in keys:
            if key in table and table[key] is not kind:
                raise ValueError(f"{key!r} already belongs to {table[key]!r}")
            table[key] = kind
    for dynamic_cls in kind.dynamic_ops.values():
        dynamic_cls.layer_kind = kind
    KINDS.append(kind)
    _LEAF_CACHE.clear()
    _KIND_CACHE.clear()
    return kind


def register_family_type(kind: LayerKind, module_type: type) -> None:
    """Add one more type to a kind's family as the analysis meets it (a module whose own code
    averages over its channels, say): counted and converted by that kind, never a leaf."""
    if module_type not in _LEAF_TYPES and _FAMILY_TYPES.get(module_type) in (None, kind):
        _FAMILY_TYPES[module_type] = kind


def leaf_kind(module: nn.Module) -> LayerKind | None:
    """The kind whose rule describes ``module`` as one op: its type or a base type, as long as
    the module keeps that base's forward (a subclass with its own forward is traced through)."""
    module_type = type(module)
    if module_type not in _LEAF_CACHE:
        _LEAF_CACHE[module_type] = None
        for base in module_type.__mro__:
            kind = _LEAF_TYPES.get(base)
            if kind is not None:
                _LEAF_CACHE[module_type] = kind if module_type.forward is base.forward else None
                break
    return _LEAF_CACHE[module_type]


def kind_of(module: nn.Module | None) -> LayerKind | None:
    """The kind of ``module``'s type or of its nearest registered base, whatever its forward."""
    if module is None:
        return None
    module_type = type(module)
    if module_type not in _KIND_CACHE:
        _KIND_CACHE[module_type] = next(
            (kind for base in module_type.__mro__ if (kind := _LEAF_TYPES.get(base) or _FAMILY_TYPES.get(base))),
            None)
    return _KIND_CACHE[module_type]


def function_kind(name: str) -> LayerKind | None:
    """The kind that owns a functional op (``conv2d``, ``linear``, ``batch_norm``...)."""
    return _FUNCTIONS.get(name)


def function_names() -> frozenset[str]:
    return frozenset(_FUNCTIONS)


def dynamic_op_for(module: nn.Module) -> type | None:
    """The dynamic op class for a layer (its own class, or the one of the nearest base)."""
    if isinstance(module, DynamicChannelMixin):
        return None
    kind = kind_of(module)
    return None if kind is None else kind.dynamic_op_for(type(module))
