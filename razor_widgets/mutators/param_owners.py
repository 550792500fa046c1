"""Parameters that a layer kind runs as a layer (3-D expert weights): their owner module is
converted to its kind's dynamic op, which reads them masked in the prepared model."""
from __future__ import annotations

from torch import nn

from ..layers import kind_of
from ..layers.dynamic_ops import DynamicChannelMixin, set_submodule
from ..mutables.units import MutableChannelUnit


def convert_param_owners(model: nn.Module, units: list[MutableChannelUnit]) -> None:
    """Modules whose parameter slots the masked model must read masked (3-D expert weights):
    their kind's dynamic op, told which unit masks which dim of which parameter."""
    modules = dict(model.named_modules())
    converted: dict[str, nn.Module] = {}
    for unit in units:
        for channel in unit.channels:
            owner_name, _, attr = channel.name.rpartition(".")
            module = converted.get(owner_name, modules.get(owner_name))
            kind = kind_of(module)
            if channel.param_dim is None or not getattr(kind, "masks_param_slots", False):
                continue
            if owner_name not in converted and isinstance(module, DynamicChannelMixin):
                converted[owner_name] = module  # a layer made dynamic for its own sides already
            if owner_name not in converted:
                converted[owner_name] = kind.dynamic_op_for(type(module)).convert_from(module)
                set_submodule(model, owner_name, converted[owner_name])
            converted[owner_name].add_param_channel(attr, channel.param_dim, unit, channel)
            channel.module = converted[owner_name]
