"""The analysis costs nothing per token: a decoder prepared at 32 and at 2048 tokens gives the same
units and counts, and the id tensors it writes do not grow with the tokens (a full-shape id
tensor of the attention's queries alone would hold tokens x heads x head dim elements)."""
from __future__ import annotations

import warnings

import pytest
import torch

from razor_widgets import ChannelMutator

from helpers import LargestIdTensor

transformers = pytest.importorskip("transformers")


def prepare_llama(tokens: int, attention: str) -> tuple[ChannelMutator, int]:
    """A tiny Llama (grouped-query attention) on meta: the mutator and the largest id tensor."""
    cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256)
    cfg._attn_implementation = attention
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg).eval()
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with LargestIdTensor() as watch:
            mutator.prepare_from_supernet(model, example_inputs=torch.zeros(1, tokens, dtype=torch.long, device="meta"))
    return mutator, watch.largest


def summary(mutator: ChannelMutator) -> list:
    return [(u.name, u.num_channels, u.repeats, u.fixed_reasons) for u in mutator.analysis.units]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_tokens_cost_nothing(attention: str) -> None:
    short, short_largest = prepare_llama(32, attention)
    long, long_largest = prepare_llama(2048, attention)
    assert summary(short) == summary(long)
    assert [u.name for u in short.mutable_units] == [u.name for u in long.mutable_units]
    assert len(long.mutable_units) > 0
    assert short.resources().params == long.resources().params
    # index data the model makes itself (positions, masks) may hold a few values per token;
    # ids of attention at full shape would add 2048 x 4 heads x 16 positions = 131,072 elements
    assert long_largest - short_largest < 4 * 2048, (short_largest, long_largest)
