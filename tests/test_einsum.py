"""``torch.einsum`` follows the same channel rule as the matmuls it stands for, and attention
written either way gets whole-head units through the attributes its reshapes read."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, count_resources


class Attention(nn.Module):
    """Self-attention whose products are written with einsum or with matmul."""

    def __init__(self, use_einsum: bool, heads: int = 4, dim: int = 16):
        super().__init__()
        self.use_einsum, self.heads, self.dim = use_einsum, heads, dim
        self.embed = nn.Linear(6, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 24)
        self.fc2 = nn.Linear(24, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        b, n = x.shape[0], x.shape[1]
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.use_einsum:
            o = torch.einsum("bhij,bhjd->bhid", torch.einsum("bhid,bhjd->bhij", q, k).softmax(-1), v)
        else:
            o = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        h = h + self.proj(o.transpose(1, 2).reshape(b, n, self.dim))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h.mean(1))


def units(use_einsum: bool):
    torch.manual_seed(0)
    model = Attention(use_einsum).eval()
    x = torch.randn(2, 5, 6)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    return model, x, mutator


def structure(mutator):
    return [(u.name, u.is_mutable, sorted((c.name, c.start, c.end, c.is_output_channel) for c in u.channels))
            for u in mutator.units]


def test_einsum_gives_the_units_of_matmul():
    assert structure(units(True)[2]) == structure(units(False)[2])


class LiteralAttention(Attention):
    """The same attention with its head split written as plain numbers."""

    def forward(self, x):
        h = self.embed(x)
        b, n = x.shape[0], x.shape[1]
        q, k, v = self.qkv(h).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4)
        o = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        h = h + self.proj(o.transpose(1, 2).reshape(b, n, 16))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h.mean(1))


@pytest.mark.parametrize("use_einsum", [True, False])
def test_attributes_sizing_the_heads_give_a_whole_head_unit(use_einsum):
    """``reshape(b, n, 3, self.heads, self.dim // self.heads)``: one element per head (q, k and
    v of a head together), so the unit counts heads; ``attn @ v`` sums over tokens and fixes
    nothing."""
    _, _, mutator = units(use_einsum)
    (qkv,) = [u for u in mutator.units if u.name.startswith("qkv_")]
    assert qkv.name == "qkv_(0, 48)_4" and qkv.is_mutable
    assert sorted((c.name, c.start, c.end, c.expand_ratio) for c in qkv.channels) == [
        ("proj", 0, 16, 4), ("qkv", 0, 48, 4)]


@pytest.mark.parametrize("use_einsum", [True, False])
def test_pruned_heads_update_the_attributes_the_forward_reads(use_einsum):
    model, x, mutator = units(use_einsum)
    mutator.set_choices({"qkv_(0, 48)_4": 0.5, "embed_(0, 16)_16": 0.5})
    static = mutator.to_static().eval()
    assert (static.heads, static.dim) == (2, 8) and (model.heads, model.dim) == (4, 16)
    assert static.qkv.out_features == 24 and static.proj.in_features == 8
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))
    counted = count_resources(static, x)
    assert (mutator.resources().params, mutator.resources().macs) == (counted.params, counted.macs)


def test_head_split_to_literal_sizes_stays_fixed():
    """Plain numbers cannot follow pruning: q/k/v stay fixed, and the reasons say where."""
    torch.manual_seed(0)
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(LiteralAttention(False).eval(), example_inputs=torch.randn(2, 5, 6))
    (qkv,) = [u for u in mutator.units if u.name.startswith("qkv_")]
    assert not qkv.is_mutable
    assert qkv.fixed_reasons == ["split to the fixed size 4 by 'reshape' in 'the model'",
                                 "reshaped to the fixed size 16 by 'reshape' in 'the model'"]
    assert [u.name for u in mutator.mutable_units] == ["embed_(0, 16)_16", "fc1_(0, 24)_24"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_einsum_model_exports(seed):
    model, x, mutator = units(True)
    random.seed(seed)
    mutator.set_choices(mutator.sample_choices())
    static = mutator.to_static().eval()
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))
    counted = count_resources(static, x)
    assert (mutator.resources().params, mutator.resources().macs) == (counted.params, counted.macs)
