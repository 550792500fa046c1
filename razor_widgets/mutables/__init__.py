"""Mutables: the searchable parts of a model (channel masks and the units that set them)."""
from .base import BaseMutable
from .derived import (
    DerivedMethodMixin,
    DerivedMutable,
    derive_concat_mutable,
    derive_divide_mutable,
    derive_expand_mutable,
)
from .diff_mutable_module import DiffMutableModule, DiffMutableOP
from .mutable_channel import (
    BaseMutableChannel,
    DerivedMutableChannel,
    MutableChannelContainer,
    SequentialMutableChannel,
    SimpleMutableChannel,
    SquentialMutableChannel,
)
from .mutable_module import MutableModule, OneShotMutableModule, OneShotMutableOP
from .mutable_value import MutableValue, OneShotMutableValue
from .units import (
    Channel,
    ChannelUnit,
    L1MutableChannelUnit,
    MutableChannelUnit,
    OneShotMutableChannelUnit,
    SequentialMutableChannelUnit,
    SlimmableChannelUnit,
)

__all__ = [
    "BaseMutable", "BaseMutableChannel", "DerivedMutableChannel", "MutableChannelContainer",
    "SequentialMutableChannel", "SimpleMutableChannel", "SquentialMutableChannel", "Channel",
    "ChannelUnit", "L1MutableChannelUnit", "MutableChannelUnit", "OneShotMutableChannelUnit",
    "SequentialMutableChannelUnit", "SlimmableChannelUnit", "DerivedMethodMixin", "DerivedMutable",
    "derive_concat_mutable", "derive_divide_mutable", "derive_expand_mutable", "DiffMutableModule",
    "DiffMutableOP", "MutableModule", "OneShotMutableModule", "OneShotMutableOP", "MutableValue",
    "OneShotMutableValue",
]
