"""Dynamic ops: layers whose input and output channels follow mutable masks (the base class).

A dynamic op is the original layer with ``mutable_attrs`` added: at full masks it runs the
original code (bit-identical outputs); with partial masks pruned channels are exactly zero at its
output and ignored at its input; ``to_static_op()`` returns a plain layer of the kept weights.
This module holds what every dynamic op shares; each layer kind's own dynamic op lives in its
module of ``razor_widgets/layers/``. The contract: docs/layer-kinds.md.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..mutables.mutable_channel import BaseMutableChannel, MutableChannelContainer

_MODULE_DICTS = ("_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks",
                 "_backward_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")


def raw(module: nn.Module, name: str) -> Any:
    """A parameter as stored in ``module._parameters`` (unmasked, bypassing a dynamic op's
    property); ``AttributeError`` if absent."""
    params = module.__dict__.get("_parameters")
    if params is None or name not in params:
        raise AttributeError(name)
    return params[name]


class DynamicChannelMixin:
    """What every dynamic op has: containers in ``mutable_attrs``, conversion and export."""

    static_class: type[nn.Module] = nn.Module
    dynamic_children: tuple[str, ...] = ()  # child layers made dynamic with it and exported by it
    layer_kind: Any = None  # the LayerKind owning this op (set by ``layers.register_kind``)
    container_names: dict[str, str] = {"in_channels": "in_channels", "out_channels": "out_channels"}
    sides_from_units = False  # True: the layer holds no channel count; ``convert_from`` is given it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.static_class.__init__(self, *args, **kwargs)
        self._init_mutable_attrs()

    # -- containers -----------------------------------------------------------------------
    def _channel_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def _init_mutable_attrs(self, container_class: type[MutableChannelContainer] = MutableChannelContainer
                            ) -> None:
        nn.Module.__setattr__(self, "mutable_attrs", nn.ModuleDict())
        for name, n in self._channel_counts().items():
            self.mutable_attrs[name] = container_class(n)

    def get_mutable_attr(self, attr: str) -> MutableChannelContainer | None:
        """The channel container of side ``attr`` (``in_channels``, ``out_channels``...), or None."""
        name = self.container_names.get(attr, attr)
        attrs = self.__dict__["_modules"].get("mutable_attrs")
        return attrs[name] if attrs is not None and name in attrs else None

    def register_mutable_attr(self, attr: str, mutable: BaseMutableChannel) -> None:
        """Let the mutable channel ``mutable`` drive side ``attr`` (all of its channels)."""
        self.get_mutable_attr(attr).register_mutable(mutable, 0, mutable.num_channels)

    def mask(self, attr: str) -> torch.Tensor | None:
        """The current mask of one side, or None while it keeps every channel."""
        container = self.get_mutable_attr(attr)
        if container is None or not container.mutable_channels:
            return None
        mask = container.current_mask
        return None if bool(mask.all()) else mask

    # -- conversion -----------------------------------------------------------------------
    @classmethod
    def convert_from(cls, module: nn.Module, side_sizes: dict[bool, int] | None = None) -> nn.Module:
        """A dynamic op sharing ``module``'s parameters, buffers, hooks and train/eval mode.
        ``side_sizes``: ``{is_output: channels}`` for a layer that holds no channel count
        (``sides_from_units``: the mutator reads them from the units' channel ranges)."""
        dynamic_cls = cls if type(module) is cls.static_class else _dynamic_subclass(cls, type(module))
        new = dynamic_cls.__new__(dynamic_cls)
        new.__dict__.update(module.__dict__)
        for key in _MODULE_DICTS:
            if key in module.__dict__:
                new.__dict__[key] = OrderedDict(module.__dict__[key])
        if side_sizes is not None:
            new.__dict__["_side_sizes"] = dict(side_sizes)
        new._init_mutable_attrs()
        return new

    def _static_copy(self, params: dict[str, torch.Tensor | None],
                     buffers: dict[str, torch.Tensor | None], **attrs: Any) -> nn.Module:
        cls = self.static_class
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        for key in _MODULE_DICTS:
            if key in self.__dict__:
                new.__dict__[key] = OrderedDict(self.__dict__[key])
        new._modules.pop("mutable_attrs", None)
        new.__dict__.pop("_side_sizes", None)
        for name, value in params.items():
            old = self._parameters[name]
            new._parameters[name] = None if value is None else nn.Parameter(
                value.detach().clone(), requires_grad=old.requires_grad)
        for name, value in buffers.items():
            new._buffers[name] = None if value is None else value.detach().clone()
        for name, value in attrs.items():
            setattr(new, name, value)
        return new

    def to_static_op(self) -> nn.Module:
        """A plain layer of the static class holding only the kept weights (each dynamic op implements it)."""
        raise NotImplementedError


_SUBCLASSES: dict[tuple[type, type], type] = {}


def _dynamic_subclass(dynamic_cls: type, original: type) -> type:
    """``Dynamic<Original>`` for subclasses of supported layers (their forward is kept)."""
    key = (dynamic_cls, original)
    if key not in _SUBCLASSES:
        mixin = dynamic_cls.__mro__[1]
        _SUBCLASSES[key] = type(f"Dynamic{original.__name__}", (mixin, original),
                                {"static_class": original, "layer_kind": dynamic_cls.layer_kind,
                                 "__module__": __name__})
    return _SUBCLASSES[key]


def index_of(mask: torch.Tensor | None, n: int) -> torch.Tensor:
    """The kept channel indices of a mask (all ``n`` when the side is unmasked)."""
    return torch.arange(n) if mask is None else mask.nonzero().squeeze(1)


def kept_rows(t: torch.Tensor | None, idx: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    """``t`` with only the entries ``idx`` along ``dim`` (None stays None)."""
    return None if t is None else t.index_select(dim, idx.to(t.device))


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at ``name`` in ``model``'s module tree (a layer swapped for its dynamic op,
    or for its exported static op)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
