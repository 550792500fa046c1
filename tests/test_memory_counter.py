"""The explorer's Memory counter without a browser: it shows the engine's weights + KV cache at
the typed sequence length and batch, follows the counters, and has no inputs without a cache."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from razor_widgets import ChannelMutator, PruningExplorer, unit_role  # noqa: E402
from razor_widgets.models.tiny_hf import build_language_model, tiny_config  # noqa: E402


def test_the_memory_counter_follows_length_batch_and_choices():
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(build_language_model(tiny_config("llama")),
                                      example_inputs=torch.randint(3, 100, (1, 8)))
        ex = PruningExplorer(mutator, redraw_delay=0)
    memory = ex.memory
    res = mutator.resources()
    assert f"Memory {res.memory(2048, 1):,} B of {res.memory(2048, 1, original=True):,} B" in memory.text
    memory.seq_len.value, memory.batch.value = 100, 3
    assert f"Memory {res.memory(100, 3):,} B" in memory.text and f"{res.memory(100, 3):,} B" in memory.figure.value
    kv = next(name for name in ex.sliders if unit_role(mutator.unit(name)).kind == "kv_groups")
    ex.sliders[kv].value = 0.5  # one KV group of two, in one of the two layers
    dropped = mutator.resources()
    assert dropped.kv_cache_bytes(100, 3) == res.kv_cache_bytes(100, 3) * 3 // 4
    assert f"Memory {dropped.memory(100, 3):,} B" in memory.text


def test_a_model_without_a_cache_shows_weights_only():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    ex = PruningExplorer(net, torch.randn(1, 3, 8, 8), redraw_delay=0)
    res = ex.resources()
    assert f"Memory {res.weight_bytes():,} B" in ex.memory.text and "KV" not in ex.memory.text
    assert ex.memory.seq_len not in ex.memory.widget.children
