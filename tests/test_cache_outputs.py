"""A causal LM's cache in its output (an HF ``DynamicCache``: no value equality, not a registered
container) is checked: the masked model's keys and values are cut to the kept KV heads (or head
dims) and compared layer by layer; no ``UncheckedExportWarning``."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, ExportError, UncheckedExportWarning
from razor_widgets.channels.model_outputs import narrowed_outputs
from razor_widgets.export.export_check import verify_export
from razor_widgets.export.output_comparison import compare_outputs

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def prepared() -> tuple[ChannelMutator, torch.Tensor]:
    model, x = tiny_llama(), torch.randint(0, 64, (1, 6))
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator, x


def kv_units(mutator: ChannelMutator) -> list:
    return [u for u in mutator.mutable_units if any(c.name.endswith("k_proj") for c in u.output_related)]


@pytest.mark.parametrize("prune_kv", [False, True])
def test_the_cache_is_compared_layer_by_layer(prune_kv):
    """KV heads pruned or not: the cache's keys and values, cut to the kept KV heads (dim 1), match
    the export's; a wrong value is found and named by its path."""
    mutator, x = prepared()
    assert kv_units(mutator)
    choices = {u.name: 0.5 for u in mutator.mutable_units if prune_kv or u not in kv_units(mutator)}
    mutator.set_choices(choices)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedExportWarning)
        static = mutator.to_static()
    with torch.no_grad():
        masked = narrowed_outputs(mutator.model(x), mutator.kept_output_channels())
        exported = static(x)
    keys = [(a.keys, b.keys) for a, b in zip(masked.past_key_values.layers, exported.past_key_values.layers)]
    assert len(keys) == 2 and all(a.shape == b.shape for a, b in keys)
    assert keys[0][1].shape[1] == (1 if prune_kv else 2)
    unchecked: list[str] = []
    assert compare_outputs(masked, exported, unchecked=unchecked) is None and unchecked == []
    exported.past_key_values.layers[1].values += 1  # a wrong cache is found, and named
    problem = compare_outputs(masked, exported, unchecked=unchecked)
    assert problem is not None and problem.startswith("output ['past_key_values'].layers[1].values differs")


class Holder:
    """A cache-like object: no value equality, not registered, a tensor in an attribute."""

    def __init__(self, state: torch.Tensor) -> None:
        self.state = state


class Net(nn.Module):
    """Logits beside a held state whose channels lie along one dim, or along two."""

    def __init__(self, split: bool) -> None:
        super().__init__()
        self.split = split
        self.body, self.head = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        y = torch.relu(self.body(x))
        state = y.reshape(y.shape[0], 2, -1) if self.split else y
        return {"logits": self.head(y), "past_key_values": Holder(state)}


@pytest.mark.parametrize("split", [False, True])
def test_a_held_state_is_cut_or_reported(split):
    """Along one dim: cut and compared, no warning; along two: reported by path, never pinned."""
    torch.manual_seed(0)
    model, x = Net(split).eval(), torch.randn(2, 3)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, example_inputs=x)
    assert len(mutator.mutable_units) == 1  # the held state fixes nothing
    mutator.set_choices({mutator.mutable_units[0].name: 0.5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.to_static()
    unchecked = [str(w.message) for w in caught if issubclass(w.category, UncheckedExportWarning)]
    if split:
        assert len(unchecked) == 1 and "['past_key_values'].state (a tensor of shape (2, 2, 4)" in unchecked[0]
    else:
        assert unchecked == []


def test_with_a_dropped_block_the_cache_is_reported_and_the_logits_still_compared():
    """A dropped decoder layer's entries stay in the masked model's cache: the cache is named as
    not compared (why), every other output is compared (a wrong head is still found)."""
    mutator, x = prepared()
    block = mutator.removable_blocks[0]
    mutator.set_choices({block.name: "drop"})
    with pytest.warns(UncheckedExportWarning, match=r"past_key_values.*dropped block"):
        static = mutator.to_static()
    assert len(static.model.layers) == 1
    with torch.no_grad():
        static.lm_head.weight += 1
    with pytest.raises(ExportError, match="logits"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UncheckedExportWarning)
        verify_export(mutator, static)
