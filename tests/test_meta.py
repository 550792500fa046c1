"""Models built on the meta device (``with torch.device("meta")``): shapes without data.

* preparing on meta gives the units, names, choices and counts of preparing on cpu;
* ``to_static()`` on a meta model raises ``MetaDeviceError`` saying what to do, and changes nothing;
* a plan made on the meta model, loaded into the same architecture with real weights, exports
  a model that computes what the masked model computes, with exact counts.
"""
from __future__ import annotations

import random
import warnings

import pytest
import torch
import torchvision
from torch import nn

from razor_widgets import ChannelMutator, MetaDeviceError, count_resources, is_meta_model, load_choices, save_choices

from helpers import make_nontrivial


class TinyDecoder(nn.Module):
    """A decoder shaped like a language model: token embedding, a learned position table,
    pre-norm attention and MLP blocks, and a head tied to the embedding."""

    def __init__(self, vocab: int = 500, width: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.zeros(1, 16, width))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                                               batch_first=True, norm_first=True)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.positions[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build(name: str, device: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    with torch.device(device):
        if name == "decoder":
            return TinyDecoder().eval(), torch.randint(0, 500, (1, 16))
        return getattr(torchvision.models, name)(weights=None).eval(), torch.randn(1, 3, 64, 64)


def prepared(model: nn.Module, x: torch.Tensor) -> ChannelMutator:
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator


def summary(mutator: ChannelMutator) -> dict:
    units = [(u.name, u.num_channels, [c.config() if hasattr(c, "config") else repr(c) for c in u.channels])
             for u in mutator.mutable_units]
    return {"units": units, "template": repr(mutator.config_template(with_unit_init_args=True)),
            "max": mutator.resources(), "min": mutator.resources(mutator.min_choices)}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "decoder"])
def test_meta_prepare_equals_cpu_prepare(name: str, one_thread) -> None:
    on_cpu, on_meta = prepared(*build(name, "cpu")), prepared(*build(name, "meta"))
    assert is_meta_model(on_meta.model) and not is_meta_model(on_cpu.model)
    assert on_meta.mutable_units
    assert summary(on_meta) == summary(on_cpu)
    full = on_meta.resources()
    assert full.params == sum(p.numel() for p in build(name, "cpu")[0].parameters())


def test_to_static_on_meta_says_what_to_do(one_thread) -> None:
    mutator = prepared(*build("resnet18", "meta"))
    mutator.set_choices(mutator.min_choices)
    before = mutator.current_choices
    with pytest.raises(MetaDeviceError, match=r"meta device.*load_choices"):
        mutator.to_static()
    assert mutator.current_choices == before


@pytest.mark.parametrize("name", ["resnet18", "decoder"])
def test_plan_made_on_meta_applies_to_real_weights(name: str, tmp_path, one_thread) -> None:
    meta_model, _ = build(name, "meta")
    on_meta = prepared(meta_model, build(name, "meta")[1])
    random.seed(3)
    on_meta.set_choices(on_meta.sample_choices())
    planned = on_meta.resources()
    save_choices(on_meta, tmp_path / "plan.json")

    real, x = build(name, "cpu")
    real = make_nontrivial(real)
    on_cpu = prepared(real, x)
    load_choices(on_cpu, tmp_path / "plan.json")
    assert on_cpu.current_choices == on_meta.current_choices
    live = on_cpu.resources()
    assert (live.params, live.macs, live.flops) == (planned.params, planned.macs, planned.flops)
    static = on_cpu.to_static().eval()
    with torch.no_grad():
        masked, exported = real(x), static(x)
    assert torch.allclose(masked, exported, atol=1e-5, rtol=1e-4)
    ref = count_resources(static, x)
    assert live.params == ref.params == sum(p.numel() for p in static.parameters())
    assert live.flops == ref.flops and live.macs == ref.macs
    assert live.params < sum(p.numel() for p in build(name, "cpu")[0].parameters())


def test_explorer_sliders_on_meta_count_as_on_cpu(one_thread) -> None:
    from razor_widgets import PruningExplorer

    shown = {}
    for device in ("cpu", "meta"):
        model, x = build("resnet18", device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explorer = PruningExplorer(model, x)
        name, slider = next(iter(explorer.sliders.items()))
        slider.value = slider.min  # a person moves the first unit's slider to its smallest choice
        shown[device] = (name, explorer.counters.widget.value, explorer.session.mutator.resources())
    assert shown["meta"] == shown["cpu"]
    assert shown["meta"][2].params < sum(p.numel() for p in build("resnet18", "cpu")[0].parameters())


def test_a_moe_kernel_that_needs_bfloat16_on_meta_says_so():
    pytest.importorskip("transformers")
    from razor_widgets import TraceError
    from razor_widgets.models.tiny_hf import language_model_class, tiny_config

    config = tiny_config("mixtral")
    with torch.device("meta"):
        model = language_model_class(config)(config).eval()
    with pytest.raises(TraceError, match="in bfloat16"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ChannelMutator().prepare_from_supernet(model, example_inputs=torch.randint(3, 100, (1, 8)))
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model.to(torch.bfloat16), example_inputs=torch.randint(3, 100, (1, 8)))
    assert mutator.resources().params == sum(p.numel() for p in model.parameters())
