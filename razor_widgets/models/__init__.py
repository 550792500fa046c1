"""Searchable models and the candidate ops their blocks choose from."""
from .candidate_ops import BaseOP, ConvBnAct, ShuffleBlock, ShuffleXception, channel_shuffle
from .searchable_shufflenet import ARCH_SETTING, STAGE_MUTABLE, SearchableShuffleNetV2

__all__ = ["ARCH_SETTING", "STAGE_MUTABLE", "BaseOP", "ConvBnAct", "SearchableShuffleNetV2", "ShuffleBlock",
           "ShuffleXception", "channel_shuffle"]
