"""Mutables: the searchable parts of a model (channel masks and the units that set them)."""
from .base import BaseMutable
from .mutable_channel import (
    BaseMutableChannel,
    DerivedMutableChannel,
    MutableChannelContainer,
    SequentialMutableChannel,
    SimpleMutableChannel,
    SquentialMutableChannel,
)
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
    "SequentialMutableChannelUnit", "SlimmableChannelUnit",
]
