"""``torch.einsum`` follows the same channel rule as the matmuls it stands for."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator


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


def test_head_split_to_a_literal_size_stays_fixed():
    """``self.dim // self.heads`` and ``self.dim`` are plain ints: pruning would not fit either
    reshape, so q/k/v stay fixed with those reasons (and not as "contracted": ``attn @ v`` sums
    over tokens)."""
    for use_einsum in (True, False):
        _, _, mutator = units(use_einsum)
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
