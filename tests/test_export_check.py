"""The export checks itself (``to_static()`` compares it with the masked model), and the two
patterns that used to export wrongly: a layer scale after a token-mixing linear, and a per-head
relative-position bias passed to ``scaled_dot_product_attention`` as ``attn_mask``."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import MODELS, ChannelMutator, ExportError, MetaDeviceError, UncheckedExportWarning, count_resources
from razor_widgets.analysis.unit_building import _no_layer_reason
from razor_widgets.channels.analysis_result import UnitSpec
from razor_widgets.channels.channel_range import Channel
from razor_widgets.export.output_comparison import compare_outputs
from razor_widgets.layers.conv import DynamicConvMixin

from helpers import make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the models -----------------------------------------------------------------------------------
class Affine(nn.Module):
    """ResMLP's norm: a per-channel scale and shift, applied with torch functions."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.alpha * x + self.beta


class LayerScaleBlock(nn.Module):
    """``x + ls1 * token_mix(x)`` and ``x + ls2 * mlp(x)``, ``ls`` owned by the block (ResMLP, CaiT)."""

    def __init__(self, dim, tokens):
        super().__init__()
        self.norm1, self.norm2 = Affine(dim), Affine(dim)
        self.linear_tokens = nn.Linear(tokens, tokens)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.ls1 = nn.Parameter(torch.full((dim,), 0.5))
        self.ls2 = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        x = x + self.ls1 * self.linear_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class LayerScaleNet(nn.Module):
    def __init__(self, dim=12, tokens=6):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.blocks = nn.Sequential(LayerScaleBlock(dim, tokens), LayerScaleBlock(dim, tokens))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean(1))


def relative_index(window):
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).reshape(-1)


class BiasAttention(nn.Module):
    """Attention with a relative-position bias per head, given to SDPA as ``attn_mask``:
    ``table`` is indexed from a bias table ((2w-1)^2, heads), ``mlp`` made by a small MLP
    whose output channels are the heads, ``shared`` one table for every head."""

    def __init__(self, dim=32, heads=4, window=4, bias="table", batch_dim=True):
        super().__init__()
        self.heads, self.bias, self.batch_dim = heads, bias, batch_dim
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, 1 if bias == "shared" else heads))
        self.register_buffer("index", relative_index(window), persistent=False)
        if bias == "mlp":
            self.register_buffer("coords", torch.randn(window ** 4, 2), persistent=False)
            self.mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, heads))
        if bias.startswith("timm"):  # timm's own bias modules (MaxViT, CoAtNet), shape (1, heads, n, n)
            from timm.layers.pos_embed_rel import RelPosBias, RelPosMlp

            self.rel_pos = (RelPosMlp if bias == "timm-mlp" else RelPosBias)((window, window), heads)

    def attention_bias(self, n):
        if self.bias.startswith("timm"):
            return self.rel_pos.get_bias()[0]
        if self.bias == "mlp":
            return self.mlp(self.coords).view(n, n, -1).permute(2, 0, 1)
        return self.table[self.index].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.attention_bias(n)
        if self.batch_dim:
            bias = bias.unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class BiasNet(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attn = BiasAttention(**kwargs)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.embed(x)
        return self.head(self.norm(x + self.attn(x)).mean(1))


class ConvNet(nn.Module):
    """Convs, batch norms and in-place ReLUs (in-place ops change recorded outputs)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.conv3 = nn.Conv2d(12, 8, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = x + self.conv3(self.relu(self.bn2(self.conv2(x))))
        return self.fc(self.drop(x.mean((2, 3))))


class CountingNet(ConvNet):
    """Its forward writes a buffer in place and replaces another, in eval mode too."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("last", torch.zeros(2))

    def forward(self, x):
        self.calls.add_(1)
        self.last = x.detach().flatten()[:2].clone()
        return super().forward(x)


BIAS_CASES = {"table": dict(bias="table"), "table-3d": dict(bias="table", batch_dim=False),
              "mlp": dict(bias="mlp"), "shared": dict(bias="shared"), "timm-table": dict(bias="timm-table"),
              "timm-mlp": dict(bias="timm-mlp")}


def prepared(model, x):
    torch.manual_seed(0)
    model = make_nontrivial(model).eval()
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x)
    return model, original, mutator


def choice_sets(mutator):
    for seed in range(4):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        yield
    mutator.set_min_choices()
    yield


def check_exports(model, original, mutator, x):
    """Export == masked (also without the built-in check), exact counts; full choices restore
    the model bit for bit."""
    for _ in choice_sets(mutator):
        static = mutator.to_static().eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-6)
        counted, live = count_resources(static, x), mutator.resources()
        assert (live.params, live.macs, live.flops) == (counted.params, counted.macs, counted.flops)
        assert live.params == sum(p.numel() for p in static.parameters())
    mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def unit_of(mutator, layer):
    """The unit of ``layer``'s output channels."""
    return next(u for u in mutator.units if any(c.name == layer for c in u.output_related))


@pytest.fixture
def tokens():
    return torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def windows():
    return torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def image():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# -- case a: a layer scale after a token-mixing linear --------------------------------------------
def test_layer_scale_joins_the_stream_it_scales(tokens):
    _, _, mutator = prepared(LayerScaleNet(), tokens)
    stream = unit_of(mutator, "embed")
    assert stream.is_mutable and stream.num_channels == 12
    names = {c.name for c in stream.channels}
    assert {"blocks.0.ls1", "blocks.0.ls2", "blocks.1.ls1", "blocks.0.norm1.alpha", "blocks.0.fc2"} <= names
    assert not any(all(c.param_dim is not None for c in u.channels) for u in mutator.mutable_units)
    mixing = unit_of(mutator, "blocks.0.linear_tokens")
    assert not mixing.is_mutable and "maps a dim without channels" in mixing.fixed_reasons[0]


def test_layer_scale_exports_what_the_masked_model_computes(tokens):
    check_exports(*prepared(LayerScaleNet(), tokens), tokens)


# -- case b: a per-head bias given to SDPA as attn_mask -------------------------------------------
@pytest.mark.parametrize("case", ["table", "table-3d", "mlp", "shared"])
def test_attention_bias_exports_with_the_heads(case, windows):
    model, original, mutator = prepared(BiasNet(**BIAS_CASES[case]), windows)
    heads = unit_of(mutator, "attn.qkv")
    assert heads.is_mutable and heads.num_channels == 4
    if case == "shared":  # one bias for every head: nothing of it is pruned
        assert not any(c.name == "attn.table" for u in mutator.mutable_units for c in u.channels)
    else:  # the table's head dim (or the MLP's output channels) are cut with the heads
        follows = "attn.mlp.2" if case == "mlp" else "attn.table"
        assert any(c.name == follows for c in heads.output_related)
    check_exports(model, original, mutator, windows)
    mutator.set_choices({heads.name: 0.75})
    static = mutator.to_static()
    assert static.attn.heads == 3
    if case in ("table", "table-3d"):
        assert static.attn.table.shape[1] == 3


@pytest.mark.parametrize("case", ["timm-table", "timm-mlp"])
def test_timm_bias_modules_keep_their_heads_with_a_reason(case, windows):
    """timm's RelPosBias/RelPosMlp reshape to ``self.bias_shape``, a tuple of plain numbers that
    the export cannot update: the heads stay fixed, and everything else still exports."""
    model, original, mutator = prepared(BiasNet(**BIAS_CASES[case]), windows)
    heads = unit_of(mutator, "attn.qkv")
    assert not heads.is_mutable and "fixed size 4" in heads.fixed_reasons[0]
    check_exports(model, original, mutator, windows)


def test_a_unit_of_parameter_entries_only_is_fixed():
    only_params = UnitSpec(4, 1, output_related=[Channel("a.ls", None, (0, 4), True, param_dim=0),
                                                 Channel("b.scale", None, (0, 4), True, param_dim=1)])
    assert "only the parameter(s) a.ls, b.scale" in _no_layer_reason(only_params)[0]
    with_layer = UnitSpec(4, 1, output_related=[Channel("fc", None, (0, 4), True),
                                                Channel("a.ls", None, (0, 4), True, param_dim=0)])
    assert _no_layer_reason(with_layer) == []


def test_the_check_catches_a_bias_left_at_full_width(monkeypatch, windows):
    """Without the attn_mask rule the bias table is a unit of its own entries: it is fixed now,
    and the export that prunes heads but not the bias is caught, naming the attention."""
    monkeypatch.setattr("razor_widgets.analysis.rules_matmul._mask_follows_heads", lambda ctx, node, qi: None)
    model, _, mutator = prepared(BiasNet(), windows)
    table = unit_of(mutator, "attn.table")
    assert not table.is_mutable and "only the parameter(s) attn.table" in table.fixed_reasons[0]
    heads = unit_of(mutator, "attn.qkv")
    mutator.set_choices({heads.name: 0.75})
    with pytest.raises(ExportError, match="size of tensor") as caught:
        mutator.to_static()
    assert caught.value.layer == "attn" and heads.name in caught.value.units
    assert "'attn' (BiasAttention)" in str(caught.value)


# -- a broken export is caught and changes nothing ------------------------------------------------
def patch_to_static_op(monkeypatch, layer, damage):
    """Make the export of ``layer`` (a dynamic conv) wrong in the way ``damage`` says."""
    original = DynamicConvMixin.to_static_op

    def broken(self):
        op = original(self)
        if self._parameters["weight"] is layer._parameters["weight"]:
            op = damage(op)
        return op

    monkeypatch.setattr(DynamicConvMixin, "to_static_op", broken)


def permute_outputs(op):
    with torch.no_grad():
        op.weight.copy_(op.weight.roll(1, 0))
    return op


def drop_last_output(op):
    op.out_channels -= 1
    op.weight = nn.Parameter(op.weight[:-1].detach().clone())
    op.bias = nn.Parameter(op.bias[:-1].detach().clone())
    return op


@pytest.mark.parametrize("damage, says", [(permute_outputs, "differs by up to"),
                                          (drop_last_output, "channels in dim 1 where its units keep")])
def test_a_broken_export_raises_naming_the_layer_and_unit(monkeypatch, image, damage, says):
    model, _, mutator = prepared(ConvNet(), image)
    conv2 = unit_of(mutator, "conv2")
    mutator.set_choices({conv2.name: 8 / 12, unit_of(mutator, "conv1").name: 0.75})
    choices = mutator.current_choices
    model.train()
    bn_state = {k: v.clone() for k, v in model.bn2.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.no_grad():
        masked = model.eval()(image)
    model.train()
    patch_to_static_op(monkeypatch, model.conv2, damage)
    with pytest.raises(ExportError) as caught:
        mutator.to_static()
    error = caught.value
    assert error.layer == "conv2" and conv2.name in error.units
    assert "First layer that differs: 'conv2' (Conv2d)" in str(error) and says in str(error)
    assert mutator.current_choices == choices  # nothing changed: choices, modes, buffers, random state
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.bn2.state_dict()[k]) for k, v in bn_state.items())
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        assert torch.equal(model.eval()(image), masked)
    assert mutator.to_static(check=False) is not None  # the check can be skipped


def test_the_check_leaves_a_training_model_as_it_was(image):
    model, _, mutator = prepared(CountingNet(), image)
    mutator.set_choices({unit_of(mutator, "conv2").name: 0.5})
    model.train()
    stats = model.bn1.running_mean.clone(), model.bn1.num_batches_tracked.clone()
    calls, last = model.calls, model.last
    before = calls.clone(), last.clone()
    rng = torch.get_rng_state()
    static = mutator.to_static()
    assert model.training and static.training and static.drop.training
    assert torch.equal(model.bn1.running_mean, stats[0]) and torch.equal(model.bn1.num_batches_tracked, stats[1])
    assert torch.equal(static.bn1.num_batches_tracked, stats[1])
    assert model.calls is calls and model.last is last  # written and replaced by the forward: restored
    assert torch.equal(calls, before[0]) and torch.equal(last, before[1])
    assert torch.equal(static.calls, before[0]) and torch.equal(static.last, before[1])
    assert torch.equal(torch.get_rng_state(), rng)


# -- mutators without an example input ------------------------------------------------------------
def test_a_mutator_from_a_config_checks_where_it_is_given_an_input(monkeypatch, image):
    model, _, traced = prepared(ConvNet(), image)
    cfg = traced.config_template(with_channels=True)
    supernet = make_nontrivial(ConvNet()).eval()
    mutator = MODELS.build(cfg)
    mutator.prepare_from_supernet(supernet)
    mutator.set_choices({unit_of(mutator, "conv2").name: 0.5})
    with pytest.warns(UncheckedExportWarning, match="no example input"):
        mutator.to_static()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mutator.to_static(example_inputs=image)
    patch_to_static_op(monkeypatch, supernet.conv2, permute_outputs)
    with pytest.raises(ExportError, match="'conv2'"):
        mutator.to_static(example_inputs=image)


def test_a_model_on_the_meta_device_is_refused_before_any_check(image):
    """Meta tensors cannot run: ``to_static`` says what to do instead, and changes nothing."""
    model, _, mutator = prepared(ConvNet(), image)
    mutator.set_choices({unit_of(mutator, "conv2").name: 0.5})
    choices = mutator.current_choices
    model.to("meta")
    with pytest.raises(MetaDeviceError, match="real weights"):
        mutator.to_static()
    assert mutator.current_choices == choices


# -- comparing outputs ----------------------------------------------------------------------------
def test_outputs_are_compared_relative_to_their_scale():
    big = torch.randn(3, 4) * 1e8
    assert compare_outputs(big, big + 1e2) is None  # 1e-6 of the scale
    assert "differs by up to" in compare_outputs(big, big * 1.01)
    assert compare_outputs(torch.zeros(2), torch.zeros(2)) is None
    assert compare_outputs(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0])) is None
    assert "non-finite" in compare_outputs(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]))
    half = torch.randn(8, dtype=torch.bfloat16)
    assert compare_outputs(half, half * (1 + 2 ** -7)) is None  # bfloat16's precision
    assert compare_outputs(half.float(), half.float() * (1 + 2 ** -7)) is not None


def test_outputs_may_be_any_pytree():
    from transformers.modeling_outputs import BaseModelOutput

    a = {"logits": torch.ones(2), "extra": (torch.zeros(1), 3)}
    assert compare_outputs(a, copy.deepcopy(a)) is None
    b = copy.deepcopy(a)
    b["extra"] = (torch.ones(1), 3)
    assert compare_outputs(a, b).startswith("output ['extra'][0]")
    assert "keys" in compare_outputs(a, {"logits": torch.ones(2)})
    hf = BaseModelOutput(last_hidden_state=torch.ones(2, 3))
    assert compare_outputs(hf, BaseModelOutput(last_hidden_state=torch.ones(2, 3))) is None
    assert "shape" in compare_outputs(hf, BaseModelOutput(last_hidden_state=torch.ones(2, 2)))


# -- the callers of to_static check too -----------------------------------------------------------
def test_the_explorer_and_ite_exports_are_checked(monkeypatch, image):
    from razor_widgets import IteAlgorithm, PruningExplorer

    torch.manual_seed(0)
    explorer = PruningExplorer(make_nontrivial(ConvNet()).eval(), image, redraw_delay=0)
    explorer.mutator.set_choices({unit_of(explorer.mutator, "conv2").name: 0.5})
    patch_to_static_op(monkeypatch, explorer.mutator.model.conv2, permute_outputs)
    with pytest.raises(ExportError, match="'conv2'"):
        explorer.export()
    assert explorer.export(check=False) is not None
    explorer.plan_buttons["export"].click()  # the button says so instead of raising
    assert "does not compute what the masked model computes" in explorer.status.value

    algorithm = IteAlgorithm(make_nontrivial(ConvNet()).eval(), example_inputs=image, target_pruning_ratio=0.5)
    algorithm.step()
    patch_to_static_op(monkeypatch, algorithm.architecture.conv2, permute_outputs)
    with pytest.raises(ExportError, match="'conv2'"):
        algorithm.to_static()
    assert algorithm.to_static(check=False) is not None
