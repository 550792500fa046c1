"""Mutators: managers of the mutables of a model."""
from .base import BaseMutator
from .channel_mutator import ChannelMutator, OneShotChannelMutator, SlimmableChannelMutator
from .module_mutator import DiffModuleMutator, ModuleMutator, OneShotModuleMutator

__all__ = ["BaseMutator", "ChannelMutator", "DiffModuleMutator", "ModuleMutator", "OneShotChannelMutator",
           "OneShotModuleMutator", "SlimmableChannelMutator"]
