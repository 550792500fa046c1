"""Heads of fused and unusual attention layers: Falcon (``FalconLinear`` runs ``x @ self.weight.T``,
a fused q/k/v viewed as KV groups), Phi-3 (a fused ``qkv_proj`` sliced into q, k and v at fixed
offsets, grouped KV) and BLOOM (ALiBi added by ``baddbmm``), built tiny from config.

For each: preparing works, full choices are bit-identical, the export computes what the masked
model computes at random and uneven choices, the counts equal a count of the export, and the
heads are units (BLOOM's stay fixed, warned: ALiBi's per-head slopes, computed from the model's
head count and shared by every layer, cannot follow pruned heads; the same attention without
ALiBi prunes whole heads, see ``MergedHeads``).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, count_resources
from razor_widgets.analysis.unit_labels import unit_role
from razor_widgets.export.hf_export import HFConfigWarning

transformers = pytest.importorskip("transformers")
VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)


def _falcon():
    return transformers.FalconForCausalLM(transformers.FalconConfig(
        **COMMON, ffn_hidden_size=128, new_decoder_architecture=True, num_kv_heads=2))


def _phi3():
    return transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **COMMON, intermediate_size=128, num_key_value_heads=2, pad_token_id=0))


def _bloom():
    return transformers.BloomForCausalLM(transformers.BloomConfig(vocab_size=VOCAB, hidden_size=64, n_layer=2,
                                                                  n_head=4))


BUILDERS = {"falcon": _falcon, "phi3": _phi3, "bloom": _bloom}


class Prepared:
    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.model = BUILDERS[name]().eval()
        ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
        self.inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        self.original = copy.deepcopy(self.model)
        self.mutator = ChannelMutator()
        with warnings.catch_warnings(record=True) as self.warnings:
            warnings.simplefilter("always")
            self.mutator.prepare_from_supernet(self.model, self.inputs)

    def logits(self, model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(**self.inputs).logits

    def heads(self) -> list:
        return [u for u in self.mutator.mutable_units if unit_role(u).kind in ("heads", "kv_groups")]


@pytest.fixture(scope="module", params=[pytest.param(name, marks=pytest.mark.sweep) for name in BUILDERS])
def prepared(request, one_thread) -> Prepared:
    return Prepared(request.param)


def test_full_choices_are_bit_identical(prepared):
    assert torch.equal(prepared.logits(prepared.model), prepared.logits(prepared.original))


def _check_export(p: Prepared, choices: dict) -> None:
    p.mutator.set_choices(choices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = p.mutator.to_static()
    assert torch.allclose(p.logits(static), p.logits(p.model), atol=1e-5, rtol=1e-4)
    predicted, counted = p.mutator.resources(), count_resources(static, p.inputs)
    assert (predicted.params, predicted.macs) == (counted.params, counted.macs)
    assert predicted.params < sum(x.numel() for x in p.original.parameters())


def test_export_matches_masked_and_counts_are_exact(prepared):
    for seed in range(2):
        torch.manual_seed(seed)
        _check_export(prepared, prepared.mutator.sample_choices())
    heads = prepared.heads()
    if heads:  # one layer keeps half its heads, the other all: HF's config cannot say it, the export runs
        uneven = {u.name: (0.5 if i == 0 else 1.0) for i, u in enumerate(heads)}
        _check_export(prepared, {**prepared.mutator.max_choices, **uneven})
    prepared.mutator.set_choices(prepared.mutator.max_choices)


def test_heads_or_kv_groups_are_units(prepared):
    heads = prepared.heads()
    if isinstance(prepared.model, transformers.BloomForCausalLM):
        assert not heads  # ALiBi: one constant slope per head, shared by every layer
        fixed = [u for u in prepared.mutator.units if "query_key_value" in u.name]
        assert fixed and all(any("'baddbmm'" in r and "ALiBi" in r for r in u.fixed_reasons) for u in fixed)
        warned = [str(w.message) for w in prepared.warnings if "'baddbmm'" in str(w.message)]
        assert len(warned) == 2 and all("query_key_value" in m for m in warned)  # the op and its layers
        return
    assert len(heads) == 2 and all(u.num_channels == 2 for u in heads)  # 2 KV groups per layer
    roles = {(r.kind, r.heads_per_element, r.head_dim) for r in map(unit_role, heads)}
    assert roles == {("kv_groups", 2, 16)}  # a KV head with its 2 query heads of 16
    kinds = {unit_role(u).kind for u in prepared.mutator.mutable_units}
    assert {"hidden", "mlp"} <= kinds


def test_phi3_fused_qkv_slices_give_one_range_per_part():
    p = Prepared("phi3")
    unit = p.heads()[0]
    spans = [(c.start, c.end, c.expand_ratio) for c in unit.output_related if c.name.endswith("qkv_proj")]
    assert spans == [(0, 64, 32), (64, 96, 16), (96, 128, 16)]  # q: 2 heads per group; k, v: 1
    p.mutator.set_choices({**p.mutator.max_choices, unit.name: 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = p.mutator.to_static()
    attn = static.model.layers[0].self_attn
    assert (attn.qkv_proj.out_features, attn.o_proj.in_features) == (64, 32)
    assert (attn.config.num_attention_heads, attn.config.num_key_value_heads) == (2, 1)  # its own copy
    assert static.config.num_attention_heads == 4  # layer 1 keeps its 4


def test_falcon_counts_its_heads_and_kv_heads_in_the_export():
    p = Prepared("falcon")
    unit = p.heads()[0]
    p.mutator.set_choices({**p.mutator.max_choices, **{u.name: 0.5 for u in p.heads()}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = p.mutator.to_static()
    attn = static.transformer.h[0].self_attention
    assert (attn.num_heads, attn.num_kv_heads, attn.query_key_value.out_features) == (2, 1, 64)
    assert type(attn.query_key_value).__name__ == "FalconLinear"
    assert static.config.num_attention_heads == 2 and static.config.num_kv_heads == 1
    assert unit.name.startswith("transformer.h.0.self_attention.query_key_value")


class OwnForwardLinear(nn.Linear):
    """A linear layer whose own forward does the product with its transposed weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = OwnForwardLinear(8, 16)
        self.b = OwnForwardLinear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_a_linear_subclass_with_its_own_matmul_forward_is_prunable():
    torch.manual_seed(0)
    net, x = TwoLayers().eval(), torch.randn(3, 8)
    before = net(x)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(net, x)
    (unit,) = mutator.mutable_units
    assert unit.num_channels == 16 and {c.name for c in unit.channels} == {"a", "b"}
    assert torch.equal(net(x), before)
    mutator.set_choices({unit.name: 0.5})
    static = mutator.to_static()
    assert type(static.a) is OwnForwardLinear and static.a.out_features == 8 == static.b.in_features
    assert torch.allclose(static(x), net(x), atol=1e-6)
    assert mutator.resources().params == count_resources(static, x).params


class AddProduct(nn.Module):
    """``baddbmm`` with a bias that has channels (a layer's output) and one without (zeros)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.bias = nn.Linear(8, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, N, 8]
        scores = torch.baddbmm(torch.zeros(1, 1, 1), self.q(x), self.k(x).transpose(1, 2), alpha=0.5)
        mixed = torch.baddbmm(self.bias(x), scores.softmax(-1), self.bias(x), beta=0.5)
        return self.out(mixed)


def test_baddbmm_joins_its_input_with_the_product():
    torch.manual_seed(0)
    net, x = AddProduct().eval(), torch.randn(2, 5, 8)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(net, x)
    names = {u.name.split("_")[0]: u for u in mutator.mutable_units}
    assert {c.name for c in names["q"].channels} == {"q", "k"}  # contracted together
    assert "bias" in names  # the input's channels pass through to the output layer
    torch.manual_seed(1)
    mutator.set_choices(mutator.sample_choices())
    static = mutator.to_static()
    assert torch.allclose(static(x), net(x), atol=1e-6)
    predicted, counted = mutator.resources(), count_resources(static, x)
    assert (predicted.params, predicted.macs) == (counted.params, counted.macs)


class MergedHeads(nn.Module):
    """BLOOM's attention without ALiBi: batch and heads merged in dim 0 (``B * heads``), scores by
    ``baddbmm`` with a bias shared by every head, heads merged back with ``B * heads // heads``."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = 4, 4
        self.qkv = nn.Linear(16, 48)
        self.dense = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, self.num_heads, 3, self.head_dim)
        q, k, v = (qkv[..., i, :].transpose(1, 2) for i in range(3))
        q = q.reshape(b * self.num_heads, -1, self.head_dim)
        k = k.reshape(b * self.num_heads, -1, self.head_dim).transpose(-1, -2)
        v = v.reshape(b * self.num_heads, -1, self.head_dim)
        scores = torch.zeros(1, 1, s).baddbmm(batch1=q, batch2=k, beta=1.0, alpha=0.5)
        context = torch.bmm(scores.softmax(-1), v)
        batch_heads, length, _ = context.shape
        batch = batch_heads // self.num_heads
        context = context.view(batch, self.num_heads, length, self.head_dim).permute(0, 2, 1, 3)
        return self.dense(context.reshape(batch, length, self.num_heads * self.head_dim))


def test_heads_merged_with_the_batch_are_pruned_whole():
    torch.manual_seed(0)
    net, x = MergedHeads().eval(), torch.randn(2, 5, 16)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(net, x)
    (unit,) = mutator.mutable_units
    assert unit.num_channels == 4 and {(c.name, c.expand_ratio) for c in unit.channels} == {("qkv", 12), ("dense", 4)}
    mutator.set_choices({unit.name: 0.5})
    static = mutator.to_static()
    assert static.num_heads == 2 and torch.allclose(static(x), net(x), atol=1e-6)
    predicted, counted = mutator.resources(), count_resources(static, x)
    assert (predicted.params, predicted.macs) == (counted.params, counted.macs)
