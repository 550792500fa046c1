"""The registry of layer kinds: module types (MRO-aware) and functional op names to kinds."""
from __future__ import annotations

from torch import nn

from .base import LayerKind
from .dynamic_ops import DynamicChannelMixin


class LayerKindRegistry:
    """Which kind a module type or a functional op has. Every registration clears the per-type
    lookups, so a type looked up before its kind (or family type) was registered finds it after."""

    def __init__(self) -> None:
        self.leaf_types: dict[type, LayerKind] = {}  # types whose own forward a kind's rule describes
        self.family_types: dict[type, LayerKind] = {}  # further base types: counted and sized, never leaves
        self.functions: dict[str, LayerKind] = {}
        self.kinds: list[LayerKind] = []
        self._leaf_cache: dict[type, LayerKind | None] = {}  # per module type, from the tables above
        self._kind_cache: dict[type, LayerKind | None] = {}

    def _changed(self) -> None:
        self._leaf_cache.clear()
        self._kind_cache.clear()

    def register_kind(self, kind: LayerKind) -> LayerKind:
        """Add a kind: its module types, family types and functional op names."""
        for table, keys in ((self.leaf_types, kind.module_types), (self.family_types, kind.family_types),
                            (self.functions, kind.functions)):
            for key in keys:
                if key in table and table[key] is not kind:
                    raise ValueError(f"{key!r} already belongs to {table[key]!r}")
                table[key] = kind
        for dynamic_cls in kind.dynamic_ops.values():
            dynamic_cls.layer_kind = kind
        self.kinds.append(kind)
        self._changed()
        return kind

    def register_family_type(self, kind: LayerKind, module_type: type) -> None:
        """Add one more type to a kind's family as the analysis meets it (a module whose own code
        averages over its channels, say): counted and converted by that kind, never a leaf."""
        if module_type not in self.leaf_types and self.family_types.get(module_type) in (None, kind):
            self.family_types[module_type] = kind
            self._changed()

    def leaf_kind(self, module: nn.Module) -> LayerKind | None:
        """The kind whose rule describes ``module`` as one op: its type or a base type, as long as
        the module keeps that base's forward (a subclass with its own forward is traced through)."""
        module_type = type(module)
        if module_type not in self._leaf_cache:
            self._leaf_cache[module_type] = None
            for base in module_type.__mro__:
                kind = self.leaf_types.get(base)
                if kind is not None:
                    self._leaf_cache[module_type] = kind if module_type.forward is base.forward else None
                    break
        return self._leaf_cache[module_type]

    def kind_of(self, module: nn.Module | None) -> LayerKind | None:
        """The kind of ``module``'s type or of its nearest registered base, whatever its forward."""
        if module is None:
            return None
        module_type = type(module)
        if module_type not in self._kind_cache:
            self._kind_cache[module_type] = next(
                (kind for base in module_type.__mro__
                 if (kind := self.leaf_types.get(base) or self.family_types.get(base))), None)
        return self._kind_cache[module_type]

    def function_kind(self, name: str) -> LayerKind | None:
        """The kind that owns a functional op (``conv2d``, ``linear``, ``batch_norm``...)."""
        return self.functions.get(name)

    def function_names(self) -> frozenset[str]:
        """The functional op names some kind owns."""
        return frozenset(self.functions)


LAYER_KINDS = LayerKindRegistry()  # the package's one registry; the functions below are its methods
KINDS = LAYER_KINDS.kinds
register_kind = LAYER_KINDS.register_kind
register_family_type = LAYER_KINDS.register_family_type
leaf_kind = LAYER_KINDS.leaf_kind
kind_of = LAYER_KINDS.kind_of
function_kind = LAYER_KINDS.function_kind
function_names = LAYER_KINDS.function_names


def dynamic_op_for(module: nn.Module) -> type | None:
    """The dynamic op class for a layer (its own class, or the one of the nearest base)."""
    if isinstance(module, DynamicChannelMixin):
        return None
    kind = kind_of(module)
    return None if kind is None else kind.dynamic_op_for(type(module))


def is_layer_weight(modules: dict[str, nn.Module], qualname: str, shape: tuple[int, ...]) -> bool:
    """A layer's weight or bias whose dim 0 holds its output channels (a conv's or a linear's)."""
    owner, _, attr = qualname.rpartition(".")
    module = modules.get(owner)
    if module is None or (attr, len(shape) > 1) not in (("weight", True), ("bias", False)):
        return False
    kind = kind_of(module)
    return kind is not None and kind.weight_rows_are_outputs and shape[0] == kind.channels(module, True)
