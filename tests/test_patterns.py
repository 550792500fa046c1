"""Channel units of small structural patterns, derived by hand, and pruning checked against them.

Each model below holds one pattern (a chain, a residual add, a concat, a grouped conv, an
attention block...). For each one the expected units were worked out by hand from the rules:

* a layer's output channels and every reader of them form a unit; norms and depthwise convs
  pass channels through, so they sit on both sides of one unit;
* adds and muls join the channels at the same position; a cat places its parts side by side,
  so a reader of a cat holds several units, each on a sub-range of its input;
* a grouped conv joins the same position of every group (``repeats == groups``); attention
  keeps or prunes whole heads (a unit channel is a head: ``expand_ratio == head_dim``);
* equal chunks join the same position of each part, so a layer that writes both parts holds
  the unit twice (its range spans two copies of the unit's channels);
* a flatten of ``[C, H, W]`` spreads each channel over ``H * W`` inputs of the next Linear
  (``expand_ratio == H * W``);
* the channels of the model input and of the model output form units that cannot be pruned.

An item is ``(layer name, start, end, expand_ratio)`` in that layer's own coordinates.

Then, for every pattern: outputs at full choices are bit-identical to the unprepared model's;
with L1 units (any subset of channels kept) the exported model computes what the masked
model computes, which is also what the original model computes with the pruned channels
zeroed where they are read (``oracle.zeroed_model``); and the exported layers have the kept
channel counts.
"""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator, UnprunableChannelsWarning

from conftest import make_nontrivial
from oracle import zeroed_model

IMAGE = (2, 3, 8, 8)
TOKENS = (2, 5, 6)
SEEDS = (0, 1, 2)


# -- the patterns -------------------------------------------------------------------------------
class ConvBnChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.bn0(self.conv0(x)))
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.conv2(x)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn_stem = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn_stem(self.stem(x)))
        r = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(s)))))
        return self.head(torch.relu(s + r))


class ThreeBranchAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 6, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 1)
        self.c = nn.Conv2d(8, 6, 3, padding=2, dilation=2)
        self.bn_sum = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn(self.stem(x)))
        y = self.a(s) + self.b(s) + self.c(s)
        return self.head(torch.relu(self.bn_sum(y)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 4, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.cat([self.a(s), self.b(s)], dim=1)
        return self.head(torch.relu(self.bn(y)))


class NestedConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 2, 1)
        self.b = nn.Conv2d(8, 3, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.bn_inner = nn.BatchNorm2d(5)
        self.head = nn.Conv2d(9, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        inner = self.bn_inner(torch.cat([self.a(s), self.b(s)], dim=1))
        y = torch.cat([inner, self.c(s)], dim=1)
        return self.head(torch.relu(y))


class AddOfConcats(nn.Module):
    """cat(a: 2, b: 6) + cat(c: 4, d: 4): positions 0-2, 2-4 and 4-8 are three units."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 2, 1)
        self.b = nn.Conv2d(8, 6, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.d = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.cat([self.a(s), self.b(s)], dim=1) + torch.cat([self.c(s), self.d(s)], dim=1)
        return self.head(torch.relu(y))


class GroupedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.bn0 = nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 16, 3, padding=1, groups=4)
        self.bn1 = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        return self.head(torch.relu(self.bn1(self.g(s))))


class GroupedResidual(nn.Module):
    """A grouped conv 8 -> 8 (groups=4) whose output is added to its input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return self.head(torch.relu(s + self.g(s)))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        return self.pw(torch.relu(self.bn1(self.dw(s))))


class SharedConvCat(nn.Module):
    """One conv module called on two branches, its two outputs concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.proj = nn.Conv2d(8, 8, 1)
        self.shared = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.cat([self.shared(s), self.shared(self.proj(s))], dim=1)
        return self.head(torch.relu(y))


class SharedConvAdd(nn.Module):
    """One conv module called on two branches, its two outputs added."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.proj = nn.Conv2d(8, 8, 1)
        self.shared = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = self.shared(s) + self.shared(self.proj(s))
        return self.head(torch.relu(y))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(s)))))
        return self.head(s * gate)


class PoolFlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(6 * 4, 10)
        self.fc2 = nn.Linear(10, 5)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        f = torch.flatten(self.pool(torch.relu(self.conv1(s))), 1)
        return self.fc2(torch.relu(self.fc1(f)))


class Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(4, 5, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 5, 1)
        self.head = nn.Conv2d(5, 4, 1)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        a, b = s.chunk(2, dim=1)
        return self.head(torch.relu(self.conv_a(a) + self.conv_b(b)))


class ChannelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        b, c, h, w = s.shape
        s = s.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.conv1(s)


class AttentionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True)
        self.norm1 = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.norm2 = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm1(h + a)
        h = self.norm2(h + self.fc2(F.gelu(self.fc1(h))))
        return self.head(h)


# -- the expected units, by hand ------------------------------------------------------------------
def unit(num, out=(), inp=(), repeats=1, fixed=None):
    """An expected unit; items are (layer, start, end) or (layer, start, end, expand_ratio)."""

    def items(seq):
        return {(*i, 1) if len(i) == 3 else tuple(i) for i in seq}

    return {"num": num, "out": items(out), "in": items(inp), "repeats": repeats, "fixed": fixed}


def model_input(layers, n=3):
    return unit(n, inp=[(name, 0, n) for name in layers], fixed="model input")


def model_output(layer, n):
    return unit(n, out=[(layer, 0, n)], fixed="model output")


def no_check(static):
    pass


def check_grouped(static):
    assert static.g.groups == 4
    assert static.g.in_channels % 4 == 0 and static.g.out_channels % 4 == 0
    assert static.g.weight.shape[1] == static.g.in_channels // 4


def check_depthwise(static):
    assert static.dw.groups == static.dw.in_channels == static.dw.out_channels
    assert static.dw.weight.shape[:2] == (static.dw.out_channels, 1)


def check_chunk(static):
    assert static.stem.out_channels == 2 * static.conv_a.in_channels
    assert static.conv_a.in_channels == static.conv_b.in_channels


def check_shuffle(static):
    assert static.stem.out_channels % 2 == 0
    assert static.conv1.in_channels == static.stem.out_channels


def check_attention(static):
    attn = static.attn
    e = attn.embed_dim
    assert e % attn.num_heads == 0 and attn.head_dim == e // attn.num_heads
    assert attn.kdim == attn.vdim == e and attn._qkv_same_embed_dim
    assert attn.in_proj_weight.shape == (3 * e, e) and attn.in_proj_bias.shape == (3 * e,)
    assert attn.out_proj.weight.shape == (e, e) and attn.out_proj.bias.shape == (e,)
    assert static.embed.out_features == e == static.fc1.in_features == static.fc2.out_features
    assert static.norm1.normalized_shape == (e,) == static.norm2.normalized_shape
    assert static.head.in_features == e and static.head.out_features == 3
    assert static.fc1.out_features == static.fc2.in_features


CASES = {
    "conv_bn_chain": (ConvBnChain, IMAGE, no_check, {
        "conv0_(0, 3)_3": model_input(["conv0"]),
        "conv0_(0, 8)_8": unit(8, out=[("conv0", 0, 8), ("bn0", 0, 8)],
                               inp=[("bn0", 0, 8), ("conv1", 0, 8)]),
        "conv1_(0, 16)_16": unit(16, out=[("conv1", 0, 16), ("bn1", 0, 16)],
                                 inp=[("bn1", 0, 16), ("conv2", 0, 16)]),
        "conv2_(0, 4)_4": model_output("conv2", 4),
    }),
    "residual": (Residual, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn_stem", 0, 8), ("conv2", 0, 8),
                                      ("bn2", 0, 8)],
                              inp=[("bn_stem", 0, 8), ("conv1", 0, 8), ("bn2", 0, 8),
                                   ("head", 0, 8)]),
        "conv1_(0, 6)_6": unit(6, out=[("conv1", 0, 6), ("bn1", 0, 6)],
                               inp=[("bn1", 0, 6), ("conv2", 0, 6)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "three_branch_add": (ThreeBranchAdd, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn", 0, 8)],
                              inp=[("bn", 0, 8), ("a", 0, 8), ("b", 0, 8), ("c", 0, 8)]),
        "a_(0, 6)_6": unit(6, out=[("a", 0, 6), ("b", 0, 6), ("c", 0, 6), ("bn_sum", 0, 6)],
                           inp=[("bn_sum", 0, 6), ("head", 0, 6)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "concat": (Concat, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8)], inp=[("a", 0, 8), ("b", 0, 8)]),
        "a_(0, 4)_4": unit(4, out=[("a", 0, 4), ("bn", 0, 4)],
                           inp=[("bn", 0, 4), ("head", 0, 4)]),
        "b_(0, 6)_6": unit(6, out=[("b", 0, 6), ("bn", 4, 10)],
                           inp=[("bn", 4, 10), ("head", 4, 10)]),
        "head_(0, 5)_5": model_output("head", 5),
    }),
    "nested_concat": (NestedConcat, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8)],
                              inp=[("a", 0, 8), ("b", 0, 8), ("c", 0, 8)]),
        "a_(0, 2)_2": unit(2, out=[("a", 0, 2), ("bn_inner", 0, 2)],
                           inp=[("bn_inner", 0, 2), ("head", 0, 2)]),
        "b_(0, 3)_3": unit(3, out=[("b", 0, 3), ("bn_inner", 2, 5)],
                           inp=[("bn_inner", 2, 5), ("head", 2, 5)]),
        "c_(0, 4)_4": unit(4, out=[("c", 0, 4)], inp=[("head", 5, 9)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "add_of_concats": (AddOfConcats, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8)],
                              inp=[("a", 0, 8), ("b", 0, 8), ("c", 0, 8), ("d", 0, 8)]),
        "a_(0, 2)_2": unit(2, out=[("a", 0, 2), ("c", 0, 2)], inp=[("head", 0, 2)]),
        "b_(0, 2)_2": unit(2, out=[("b", 0, 2), ("c", 2, 4)], inp=[("head", 2, 4)]),
        "b_(2, 6)_4": unit(4, out=[("b", 2, 6), ("d", 0, 4)], inp=[("head", 4, 8)]),
        "head_(0, 3)_3": model_output("head", 3),
    }),
    "grouped_conv": (GroupedConv, IMAGE, check_grouped, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn0", 0, 8)],
                              inp=[("bn0", 0, 8), ("g", 0, 8)], repeats=4),
        "g_(0, 16)_16": unit(16, out=[("g", 0, 16), ("bn1", 0, 16)],
                             inp=[("bn1", 0, 16), ("head", 0, 16)], repeats=4),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "grouped_residual": (GroupedResidual, IMAGE, check_grouped, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("g", 0, 8)],
                              inp=[("g", 0, 8), ("head", 0, 8)], repeats=4),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "depthwise": (Depthwise, IMAGE, check_depthwise, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn0", 0, 8), ("dw", 0, 8), ("bn1", 0, 8)],
                              inp=[("bn0", 0, 8), ("dw", 0, 8), ("bn1", 0, 8), ("pw", 0, 8)]),
        "pw_(0, 4)_4": model_output("pw", 4),
    }),
    # The shared conv has one set of input weights: the channels of both inputs it reads
    # (stem's and proj's outputs) are one unit.
    "shared_conv_cat": (SharedConvCat, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("proj", 0, 8)],
                              inp=[("shared", 0, 8), ("proj", 0, 8)]),
        "shared_(0, 6)_6": unit(6, out=[("shared", 0, 6)], inp=[("head", 0, 12)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "shared_conv_add": (SharedConvAdd, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("proj", 0, 8)],
                              inp=[("shared", 0, 8), ("proj", 0, 8)]),
        "shared_(0, 6)_6": unit(6, out=[("shared", 0, 6)], inp=[("head", 0, 6)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "squeeze_excite": (SqueezeExcite, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn0", 0, 8), ("fc2", 0, 8)],
                              inp=[("bn0", 0, 8), ("fc1", 0, 8), ("head", 0, 8)]),
        "fc1_(0, 4)_4": unit(4, out=[("fc1", 0, 4)], inp=[("fc2", 0, 4)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    "pool_flatten_linear": (PoolFlattenLinear, IMAGE, no_check, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_8": unit(8, out=[("stem", 0, 8), ("bn0", 0, 8)],
                              inp=[("bn0", 0, 8), ("conv1", 0, 8)]),
        "conv1_(0, 6)_6": unit(6, out=[("conv1", 0, 6)], inp=[("fc1", 0, 24, 4)]),
        "fc1_(0, 10)_10": unit(10, out=[("fc1", 0, 10)], inp=[("fc2", 0, 10)]),
        "fc2_(0, 5)_5": model_output("fc2", 5),
    }),
    # Channel i and i + 4 of stem are one channel of the unit: stem and bn0 hold two copies
    # of its 4 channels, each of conv_a and conv_b one copy.
    "chunk": (Chunk, IMAGE, check_chunk, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_4": unit(4, out=[("stem", 0, 8), ("bn0", 0, 8)],
                              inp=[("bn0", 0, 8), ("conv_a", 0, 4), ("conv_b", 0, 4)]),
        "conv_a_(0, 5)_5": unit(5, out=[("conv_a", 0, 5), ("conv_b", 0, 5)],
                                inp=[("head", 0, 5)]),
        "head_(0, 4)_4": model_output("head", 4),
    }),
    # view(b, 2, 4, h, w): channel j and 4 + j are the same position of the two groups, one
    # channel of the unit; after the transpose they are neighbours at conv1's input
    # (2j and 2j + 1), hence expand_ratio 2 there.
    "channel_shuffle": (ChannelShuffle, IMAGE, check_shuffle, {
        "stem_(0, 3)_3": model_input(["stem"]),
        "stem_(0, 8)_4": unit(4, out=[("stem", 0, 8), ("bn0", 0, 8)],
                              inp=[("bn0", 0, 8), ("conv1", 0, 8, 2)]),
        "conv1_(0, 6)_6": model_output("conv1", 6),
    }),
    "attention": (AttentionBlock, TOKENS, check_attention, {
        "embed_(0, 6)_6": model_input(["embed"], 6),
        "embed_(0, 16)_4": unit(  # 4 whole heads of 4 channels
            4,
            out=[("embed", 0, 16, 4), ("attn", 0, 16, 4), ("norm1", 0, 16, 4), ("fc2", 0, 16, 4),
                 ("norm2", 0, 16, 4)],
            inp=[("attn", 0, 16, 4), ("norm1", 0, 16, 4), ("fc1", 0, 16, 4), ("norm2", 0, 16, 4),
                 ("head", 0, 16, 4)]),
        "fc1_(0, 32)_32": unit(32, out=[("fc1", 0, 32)], inp=[("fc2", 0, 32)]),
        "head_(0, 3)_3": model_output("head", 3),
    }),
}
HAS_LAYER_NORM = {"attention"}


def cases(xfail=None):
    """The case names as parameters; ``xfail`` maps a name to the reason it is expected to fail."""
    xfail = xfail or {}
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=xfail[name]))
            if name in xfail else name for name in CASES]


# -- fixtures and helpers -------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny layers: a second thread only adds overhead


@pytest.fixture
def model(name):
    torch.manual_seed(0)
    return make_nontrivial(CASES[name][0](), seed=0)


@pytest.fixture
def x(name):
    return torch.randn(*CASES[name][1], generator=torch.Generator().manual_seed(1))


@pytest.fixture
def expected(name):
    return CASES[name][3]


def prepare(model, x, unit_type="SequentialMutableChannelUnit"):
    """Prepare ``model`` in place; return the mutator and an unprepared copy of the model."""
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit_type))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    unprunable = [str(w.message) for w in caught if w.category is UnprunableChannelsWarning]
    assert not unprunable, unprunable
    return mutator, original


def items_of(channels):
    return {(c.name, c.start, c.end, c.expand_ratio) for c in channels}


def cfg_items(cfgs):
    return {(c["name"], c["start"], c["end"], c["expand_ratio"]) for c in cfgs}


def tiled(mask, start, end, expand):
    """A unit's mask as seen by a range (start, end) that holds it with this expand ratio."""
    copies = (end - start) // (expand * mask.numel())
    assert copies * expand * mask.numel() == end - start
    return mask.repeat(copies).repeat_interleave(expand)


def choice_sets(mutator):
    """Set a few seeded random choices, then the minimum choices; yield after each."""
    for seed in SEEDS:
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        while all(bool(u.current_mask.all()) for u in mutator.mutable_units):
            mutator.set_choices(mutator.sample_choices())  # a sample that prunes something
        yield f"seed {seed}"
    mutator.set_choices(mutator.min_choices)
    yield "min"


def side_sizes(module):
    """(input channels, output channels) of a plain layer."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features, module.num_features
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1], module.normalized_shape[-1]
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim, module.embed_dim
    return None


def kept_sizes(original, mutator, expected):
    """Kept (input, output) channels of each layer, from the hand-derived items of the expected
    units and the masks of the engine's units of the same names."""
    masks = {}
    for layer, module in original.named_modules():
        if ".out_proj" in layer:  # inside attention: checked by the pattern's own check
            continue
        sizes = side_sizes(module)
        if sizes is not None:
            masks[layer] = [torch.ones(n, dtype=torch.bool) for n in sizes]
    units = {u.name: u for u in mutator.mutable_units}
    for unit_name, spec in expected.items():
        if spec["fixed"] is not None:
            continue
        mask = units[unit_name].current_mask
        for side, key in ((0, "in"), (1, "out")):
            for layer, start, end, expand in spec[key]:
                masks[layer][side][start:end] = tiled(mask, start, end, expand)
    return {layer: tuple(int(m.sum()) for m in sides) for layer, sides in masks.items()}


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", cases())
def test_units_match_hand_derivation(name, model, x, expected):
    mutator, _ = prepare(model, x)
    units = {u.name: u for u in mutator.units}
    assert list(units) == list(expected)  # trace order: by the first layer side they hold
    assert [u.name for u in mutator.mutable_units] == [
        n for n in units if expected[n]["fixed"] is None]
    template = mutator.config_template(with_channels=True)["channel_unit_cfg"]["units"]
    for unit_name, spec in expected.items():
        got = units[unit_name]
        assert got.num_channels == spec["num"], unit_name
        assert got.repeats == spec["repeats"], unit_name
        assert items_of(got.output_related) == spec["out"], unit_name
        assert items_of(got.input_related) == spec["in"], unit_name
        assert all(c.param_dim is None for c in got.channels)
        assert all(c.is_output_channel for c in got.output_related)
        assert not any(c.is_output_channel for c in got.input_related)
        assert got.current_mask.shape == (spec["num"],)
        channels = template[unit_name]["channels"]
        assert cfg_items(channels["output_related"]) == spec["out"], unit_name
        assert cfg_items(channels["input_related"]) == spec["in"], unit_name
        assert channels.get("repeats", 1) == spec["repeats"], unit_name
        if spec["fixed"] is None:
            assert got.is_mutable and not got.fixed_reasons, (unit_name, got.fixed_reasons)
        else:
            assert not got.is_mutable, unit_name
            assert any(spec["fixed"] in r for r in got.fixed_reasons), got.fixed_reasons


@pytest.mark.parametrize("name", cases())
def test_full_choices_are_bit_identical(name, model, x):
    mutator, original = prepare(model, x)
    assert all(bool(u.current_mask.all()) for u in mutator.mutable_units)
    with torch.no_grad():
        for mode in ("train", "eval", "train"):
            model.train(mode == "train")
            original.train(mode == "train")
            assert torch.equal(model(x), original(x)), mode  # train mode updates BN stats
        for (key, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
            assert torch.equal(a, b), key


@pytest.mark.parametrize("name", cases())
def test_export_matches_masked_and_zeroed(name, model, x):
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    model.eval()
    original.eval()
    for label in choice_sets(mutator):
        assert any(not bool(u.current_mask.all()) for u in mutator.mutable_units), label
        static = mutator.to_static().eval()
        with torch.no_grad():
            masked = model(x)
            exported = static(x)
            torch.testing.assert_close(exported, masked, msg=lambda m, lb=label: f"{lb}: {m}")
            if name not in HAS_LAYER_NORM:
                zeroed = zeroed_model(original, mutator).eval()(x)
                torch.testing.assert_close(masked, zeroed, msg=lambda m, lb=label: f"{lb}: {m}")
                torch.testing.assert_close(exported, zeroed, msg=lambda m, lb=label: f"{lb}: {m}")


@pytest.mark.parametrize("name", cases())
def test_export_keeps_the_chosen_channel_counts(name, model, x, expected):
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    check = CASES[name][2]
    for label in choice_sets(mutator):
        static = mutator.to_static()
        modules = dict(static.named_modules())
        for layer, sizes in kept_sizes(original, mutator, expected).items():
            assert side_sizes(modules[layer]) == sizes, (label, layer)
            module = modules[layer]
            if isinstance(module, nn.modules.conv._ConvNd):
                assert module.weight.shape[:2] == (
                    module.out_channels, module.in_channels // module.groups), (label, layer)
                assert module.bias.shape == (module.out_channels,), (label, layer)
            elif isinstance(module, nn.Linear):
                assert module.weight.shape == (module.out_features, module.in_features)
                assert module.bias.shape == (module.out_features,), (label, layer)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                for t in (module.weight, module.bias, module.running_mean, module.running_var):
                    assert t.shape == (n,), (label, layer)
            elif isinstance(module, nn.LayerNorm):
                n = module.normalized_shape[-1]
                assert module.weight.shape == module.bias.shape == (n,), (label, layer)
        check(static)
        assert not any(hasattr(m, "mutable_attrs") for m in static.modules())
