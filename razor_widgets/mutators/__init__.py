"""Mutators: managers of the mutables of a model."""
from .base import BaseMutator
from .channel_mutator import ChannelMutator, OneShotChannelMutator, SlimmableChannelMutator

__all__ = ["BaseMutator", "ChannelMutator", "OneShotChannelMutator", "SlimmableChannelMutator"]
