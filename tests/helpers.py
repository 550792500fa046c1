"""Helpers the tests share; no test file imports another (tests/test_code_structure.py checks).

- models with non-degenerate weights: ``make_nontrivial``, ``prepare``;
- the zeroing oracle: ``zeroed_model`` (an independent check of pruning);
- one check for a whole model, shared by the vision tests: ``check_model``;
- the structural patterns: ``CASES`` (a model per pattern and its units, worked out by hand);
- small models, also loaded by name (``helpers:SmallNet`` on the command line and in the
  dashboard's kernel, which gets this folder on its PYTHONPATH);
- a small CNN trained on scikit-learn's digits and its eval functions, for the quality tests;
- ``LargestIdTensor``: the largest int64 tensor an op writes while a model is prepared.

The real-browser page driver is tests/browser_pages.py (playwright, servers, notebooks in
JupyterLab): only the browser tests need it. benchmarks/coverage_checks.py imports this module
too, so it needs nothing beyond the library and torch (no pytest).
"""
from __future__ import annotations

import copy
import functools
import random
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from razor_widgets import ChannelMutator, OneShotMutableOP, count_resources


# -- models with non-degenerate weights -------------------------------------------------------------
def make_nontrivial(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norms random statistics and affine parameters and re-draw all-zero parameters,
    so that outputs depend on every channel (torchvision zero-inits some heads and gammas)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            for name, p in module.named_parameters(recurse=False):
                if name in ("weight",) and isinstance(module, (nn.modules.batchnorm._BatchNorm,
                                                               nn.LayerNorm, nn.GroupNorm)):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                elif not bool(p.any()) or (name == "bias" and p.dim() == 1):
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def with_bn_statistics(model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm2d running statistics drawn at random (mean in [-0.2, 0.2], var in
    [0.5, 1.5]; torch's global generator), so that eval-mode outputs depend on them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def prepare(model: nn.Module, x: torch.Tensor, unit: str = "SequentialMutableChannelUnit",
            **unit_args) -> tuple[ChannelMutator, nn.Module]:
    """Prepare ``model`` (in place) and return the mutator and an unprepared copy."""
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args=unit_args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator, original


# -- the zeroing oracle -----------------------------------------------------------------------------
# An independent check of pruning: the original model with pruned channels zeroed.
#
# For every layer that reads a unit's channels, the pruned channels are set to zero at that
# layer's input (forward pre-hooks on a copy of the unprepared model; for convs and linears also the
# weight's input columns). For attention, the q/k/v channels the unit prunes are zeroed where they
# are made (rows of ``in_proj``). A correct engine's masked model and exported model both compute
# exactly this.
def _input_dim(module: nn.Module, x: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return 1 if x.dim() == len(module.kernel_size) + 2 else 0
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                           nn.modules.instancenorm._InstanceNorm, nn.PReLU)):
        return 1 if x.dim() > 1 else 0
    if isinstance(module, nn.LayerNorm) and x.shape[-1] != module.normalized_shape[-1]:
        return 1  # a channels-first LayerNorm (LayerNorm2d)
    return -1


def zeroed_model(original: nn.Module, mutator) -> nn.Module:
    """A copy of ``original`` in which every pruned channel is zeroed where it is read."""
    model = copy.deepcopy(original)
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    second: dict[str, torch.Tensor] = {}  # a bilinear layer's second input (its weight's dim 2)
    for unit in mutator.mutable_units:
        for channel in unit.input_related:
            if channel.param_dim == 2 and isinstance(modules.get(channel.owner_name), nn.Bilinear):
                size = modules[channel.owner_name].in2_features
                mask = second.setdefault(channel.owner_name, torch.ones(size, dtype=torch.bool))
                mask[channel.start:channel.end] = unit.channel_mask(channel)
            if channel.param_dim is not None:
                continue
            module = modules[channel.name]
            size = _size_in(module)
            mask = masks.setdefault(channel.name, torch.ones(size, dtype=torch.bool))
            mask[channel.start:channel.end] = unit.channel_mask(channel)
    for name, mask in masks.items():
        module = modules[name]
        if isinstance(module, nn.MultiheadAttention):
            with torch.no_grad():
                rows = mask.repeat(3).to(module.in_proj_weight.dtype)
                module.in_proj_weight.mul_(rows.unsqueeze(1))
                if module.in_proj_bias is not None:
                    module.in_proj_bias.mul_(rows)
        _zero_weight_columns(module, mask)
        module.register_forward_pre_hook(_zero_hook(mask))
    for name, mask in second.items():
        modules[name].register_forward_pre_hook(_zero_hook(mask, arg=1))
    return model


def _zero_weight_columns(module: nn.Module, mask: torch.Tensor) -> None:
    """For a conv (groups 1) or linear, zeroing the pruned input columns of the weight is the
    same as zeroing its input; it also covers weights used without calling the layer
    (``F.conv2d(x, self.conv3.weight + F.pad(self.conv1.weight, ...))``)."""
    plain_conv = isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and not module.transposed
    if plain_conv or isinstance(module, nn.Linear):
        with torch.no_grad():
            shape = [1, -1] + [1] * (module.weight.dim() - 2)
            module.weight.mul_(mask.view(shape).to(module.weight.dtype))


def _size_in(module: nn.Module) -> int:
    for attr in ("in_channels", "in_features", "in1_features", "num_features", "num_channels", "embed_dim",
                 "num_parameters"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return int(module.normalized_shape[-1])


def _zero_hook(mask: torch.Tensor, arg: int = 0):
    def hook(module, args):
        x = args[arg]
        dim = _input_dim(module, x)
        shape = [1] * x.dim()
        shape[dim] = -1
        zeroed = x * mask.view(shape).to(x.dtype)
        return (*args[:arg], zeroed, *args[arg + 1:])

    return hook


# -- one check for a whole model (the vision tests) -------------------------------------------------
# ``check_model`` prepares a model with L1 units and asserts: full choices bit-identical to the
# unprepared copy; counts exact at full choices; for random choice sets, the export computes what
# the masked model computes, the masked model what the zeroing oracle computes (where it applies)
# and the counts equal a FlopCounterMode count of the export; back at full choices, bit-identical.
@dataclass
class Checked:
    """What the check found: the mutator, the unprepared copy and the warnings it gave."""

    mutator: ChannelMutator
    original: nn.Module
    warnings: list[str] = field(default_factory=list)


def _run(model: nn.Module, x: torch.Tensor | tuple) -> torch.Tensor:
    """The model's outputs as one flat tensor (several outputs concatenated)."""
    out = model(*x) if isinstance(x, tuple) else model(x)
    return torch.cat([t.reshape(-1) for t in out]) if isinstance(out, (tuple, list)) else out


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max()) or 1.0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


def oracle_applies(mutator: ChannelMutator, original: nn.Module) -> bool:
    """The zeroing oracle does not apply where a LayerNorm, GroupNorm or local response norm
    normalises over pruned channels (zeroing them changes its statistics; the engine normalises over the kept ones), nor
    where a conv with its own forward reads pruned inputs (a weight standardised over them)."""
    modules = dict(original.named_modules())
    if any(conv_with_own_forward(modules.get(c.name)) for unit in mutator.mutable_units for c in unit.input_related):
        return False  # a conv computing its weight in its own forward (standardised over its kept inputs)
    across = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)  # over several channels
    return not any(isinstance(modules.get(c.name), across) for unit in mutator.mutable_units for c in unit.channels)


def conv_with_own_forward(module: nn.Module | None) -> bool:
    """A (not transposed) conv whose class has its own forward: it may compute its weight from its
    inputs' columns (weight standardisation), which zeroing pruned inputs does not reproduce."""
    plain = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)
    return isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and type(module).forward not in plain


def check_model(model: nn.Module, x: torch.Tensor | tuple, choice_sets: int = 2, oracle: bool | None = None,
                min_mutable: int = 1) -> Checked:
    """``oracle=None``: compare with the zeroing oracle where it applies."""
    model.eval()
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    assert len(mutator.mutable_units) >= min_mutable, [u.fixed_reasons for u in mutator.units]
    with torch.no_grad():
        want = _run(original, x)
        assert torch.equal(_run(model, x), want)
    oracle = oracle_applies(mutator, original) if oracle is None else oracle
    full, reference = mutator.resources(), count_resources(original, x)
    assert (full.params, full.flops) == (reference.params, reference.flops)
    for k in range(choice_sets):
        random.seed(k)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        with torch.no_grad():
            masked = _run(model, x)
            _close(_run(static, x), masked, f"set {k}: export vs masked")
            if oracle:
                _close(masked, _run(zeroed_model(original, mutator), x), f"set {k}: masked vs zeroing oracle")
        counted, exported = mutator.resources(), count_resources(static, x)
        kept = sum(p.numel() for p in static.parameters())
        assert counted.params == exported.params == kept and counted.flops == exported.flops, k
    mutator.set_choices(mutator.max_choices)
    with torch.no_grad():
        assert torch.equal(_run(model, x), want)
    return Checked(mutator, original, [str(w.message) for w in caught])


# -- the structural patterns (tests/test_patterns.py derives their units by hand) -------------------
IMAGE = (2, 3, 8, 8)
TOKENS = (2, 5, 6)


# the models
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


# the expected units, by hand
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


# -- small models, also loaded by name --------------------------------------------------------------
class SmallNet(nn.Module):
    """Two prunable units (conv0 -> conv1 -> head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.conv1(torch.relu(self.conv0(x))).mean((2, 3)))


class Untraceable(nn.Module):
    """Every forward fails: the command line's "cannot trace" error."""

    def forward(self, x):
        raise RuntimeError("this model\ncannot run")


class PathDependsOnInput(nn.Module):
    """Runs on any input, but which conv runs depends on the input's values: tracing it raises
    TraceError (the path changes on the negated input), though a plain forward works."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_a(x) if x.sum() > 0 else self.conv_b(x)
        return self.head(y.mean((2, 3)))


class Small(nn.Module):
    """conv -> batch norm -> conv -> head: two prunable units, for the explorer's tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.conv1(torch.relu(self.bn0(self.conv0(x)))).mean((2, 3)))


CANDIDATES = dict(conv1x1=dict(type='Conv2d', kernel_size=1),
                  conv3x3=dict(type='Conv2d', kernel_size=3, padding=1))


class Searchable(nn.Module):
    """stem -> a searchable op -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = OneShotMutableOP(CANDIDATES, module_kwargs=dict(in_channels=8, out_channels=8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.stem(x))).mean((2, 3)))


# -- a small CNN trained on the digits (the quality tests) ------------------------------------------
def digits_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], a fixed split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def digits_net() -> nn.Module:
    """Two convs and two linears: three prunable units (16, 32 and 64 channels)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))


def trained_digits_net(steps: int = 150, seed: int = 0) -> nn.Module:
    """A new ``digits_net`` with the weights of ``steps`` Adam steps on the training split
    (trained once per test session), in eval mode."""
    net = digits_net()
    net.load_state_dict(_trained_weights(steps, seed))
    return net.eval()


@functools.lru_cache(maxsize=2)
def _trained_weights(steps: int, seed: int) -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(steps, seed).state_dict()
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x, y, _, _ = digits_data()
    net = digits_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net


class Accuracy:
    """``eval_fn``: accuracy on the digits test split (a picklable class: ships to workers)."""

    def __init__(self) -> None:
        _, _, self.x, self.y = digits_data()
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        with torch.no_grad():
            return float((model(self.x).argmax(1) == self.y).float().mean())


class NegativeLoss(Accuracy):
    """``eval_fn``: minus the cross-entropy on the test split (a smooth score)."""

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        with torch.no_grad():
            return -float(nn.functional.cross_entropy(model(self.x), self.y))


def prepared(net: nn.Module, unit: str = "L1MutableChannelUnit") -> ChannelMutator:
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(net, example_inputs=torch.zeros(1, 1, 8, 8))
    return mutator


# -- what the analysis writes -----------------------------------------------------------------------
class LargestIdTensor(TorchDispatchMode):
    """Records the largest storage (in elements) of any int64 cpu tensor an op writes."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.long and t.device.type == "cpu":
                self.largest = max(self.largest, t.untyped_storage().nbytes() // 8)
        return out


class ResidualConcatNet(nn.Module):
    """Conv-BN stem, a residual pair, a concat of a 1x1 and a grouped conv, a hidden linear without
    a norm: every slice kind an importance criterion reads (the importance tests' model)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                 nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 12, 3, padding=1, groups=4)
        self.head = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.res(x))
        x = torch.cat([self.left(x), self.right(x)], 1)
        return self.head(x.mean((2, 3)))
