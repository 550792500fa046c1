"""Attention units: whole heads by default, the same positions in every head on request.

For ``nn.MultiheadAttention`` (torchvision ViT) the embed dim is also the residual stream, so the
stream unit counts heads: a unit channel is one head (``expand_ratio == head_dim``). Attention
written with torch functions (Swin, MaxViT, timm-style blocks) reshapes q/k/v by a heads
attribute of its module; each head is then one element, and the export sets that attribute to
the heads kept. Either way the export computes what the masked model computes, with exact
counts.
"""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from razor_widgets import MODELS, ChannelMutator, DynamicChannelMixin, count_resources

VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48, num_classes=10)
HEAD_DIM = VIT["hidden_dim"] // VIT["num_heads"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(**VIT).eval()


@pytest.fixture
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def prepare(model, x, **parse):
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"),
                             parse_cfg=dict(type="ChannelAnalyzer", **parse))
    mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator


def stream_unit(mutator):
    (unit,) = [u for u in mutator.mutable_units if any(c.name == "conv_proj" for c in u.output_related)]
    return unit


def attentions(model):
    return [layer.self_attention for layer in model.encoder.layers]


def check_export(model, x, mutator):
    static = mutator.to_static().eval()
    assert not any(isinstance(m, DynamicChannelMixin) for m in static.modules())
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-5)
    counted = count_resources(static, x)
    assert (counted.params, counted.flops) == (mutator.resources().params, mutator.resources().flops)
    return static


def test_stream_unit_counts_whole_heads(vit, image):
    mutator = prepare(vit, image)
    unit = stream_unit(mutator)
    assert unit.num_channels == VIT["num_heads"] and unit.repeats == 1
    assert {c.expand_ratio for c in unit.channels if c.param_dim is None} == {HEAD_DIM}
    assert {c.end - c.start for c in unit.channels} == {VIT["hidden_dim"]}


def test_pruned_heads_export_fewer_heads_of_the_same_size(vit, image):
    mutator = prepare(vit, image)
    with torch.no_grad():
        reference = vit(image)
    mutator.set_choices({stream_unit(mutator).name: 0.5})
    static = check_export(vit, image, mutator)
    for attn in attentions(static):
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, HEAD_DIM, 2 * HEAD_DIM)
        assert attn.in_proj_weight.shape == (3 * attn.embed_dim, attn.embed_dim)
    assert static.hidden_dim == 2 * HEAD_DIM
    mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(vit(image), reference)


def test_kept_heads_follow_l1_importance(vit, image):
    """L1 units keep the heads with the largest weights, whichever they are, not a prefix."""
    mutator = prepare(vit, image)
    unit = stream_unit(mutator)
    mutator.set_choices({unit.name: 0.25})  # one head of four
    kept = unit.current_mask
    assert int(kept.sum()) == 1
    head = int(kept.nonzero())
    norms = unit.importance().reshape(-1)
    assert head == int(norms.argmax())
    check_export(vit, image, mutator)


def test_head_dims_mode_prunes_the_same_positions_in_every_head(vit, image):
    mutator = prepare(vit, image, attention="head_dims")
    unit = stream_unit(mutator)
    assert unit.num_channels == VIT["hidden_dim"] and unit.repeats == VIT["num_heads"]
    mutator.set_choices({unit.name: 0.5})
    static = check_export(vit, image, mutator)
    for attn in attentions(static):
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (4, HEAD_DIM // 2, 2 * HEAD_DIM)


def test_unknown_attention_mode_is_refused_and_nothing_changes(vit, image):
    with pytest.raises(ValueError, match="attention must be one of heads, head_dims"):
        prepare(vit, image, attention="tokens")
    assert not any(isinstance(m, DynamicChannelMixin) for m in vit.modules())


# -- attention written with torch functions: heads sized by module attributes ------------------
SWIN = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10)


def unit_writing(mutator, layer):
    (unit,) = [u for u in mutator.units if any(c.name == layer and c.is_output_channel for c in u.output_related)]
    return unit


@pytest.mark.parametrize("version", [1, 2])
def test_swin_stream_counts_the_heads_of_its_stage(version):
    """Swin computes ``C // num_heads`` from the stream width, so a stage's stream and its heads
    are one unit of whole heads; the export sets ``num_heads`` and prunes the per-head tables."""
    torch.manual_seed(0)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if version == 2 else {}
    model = SwinTransformer(**SWIN, **extra).eval()
    x = torch.randn(2, 3, 32, 32)
    mutator = prepare(model, x)
    stage1, stage2 = unit_writing(mutator, "features.0.0"), unit_writing(mutator, "features.2.reduction")
    assert (stage1.num_channels, stage2.num_channels) == (2, 4)
    assert stage1.is_mutable and stage2.is_mutable
    mutator.set_choices({stage1.name: 0.5, stage2.name: 0.5})
    static = check_export(model, x, mutator)
    for stage, heads in ((static.features[1], 1), (static.features[3], 2)):
        for block in stage:
            attn = block.attn
            assert attn.num_heads == heads and attn.qkv.out_features == 3 * 8 * heads
            if version == 1:
                assert attn.relative_position_bias_table.shape[1] == heads
            else:
                assert attn.cpb_mlp[2].out_features == heads and attn.logit_scale.shape == (heads, 1, 1)


def test_maxvit_attention_exports_fewer_heads():
    torch.manual_seed(0)
    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                   block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    mutator = prepare(model, x)
    stream = unit_writing(mutator, "blocks.0.layers.0.layers.MBconv.proj.1")
    assert stream.num_channels == 2 and stream.is_mutable  # 16 channels: 2 heads of 8
    mutator.set_choices({stream.name: 0.5})
    static = check_export(model, x, mutator)
    layers = static.blocks[0].layers[0].layers
    for attention in (layers.window_attention, layers.grid_attention):
        attn = attention.attn_layer[1]
        assert (attn.n_heads, attn.head_dim) == (1, 8) and attn.to_qkv.out_features == 24


class HeadsAttention(nn.Module):
    """timm-style attention: heads from attributes, ``scaled_dot_product_attention``."""

    def __init__(self, heads: int = 4, dim: int = 16, divide_by_heads: bool = False):
        super().__init__()
        self.heads, self.dim, self.divide_by_heads = heads, dim, divide_by_heads
        self.embed = nn.Linear(6, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        b, n = x.shape[0], x.shape[1]
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.dim)
        if self.divide_by_heads:
            o = o / self.heads
        return self.head(h + self.proj(o))


def test_sdpa_with_attribute_heads_prunes_whole_heads():
    torch.manual_seed(0)
    model, x = HeadsAttention().eval(), torch.randn(2, 5, 6)
    mutator = prepare(model, x)
    heads = unit_writing(mutator, "qkv")
    assert heads.num_channels == 4 and heads.is_mutable
    mutator.set_choices({heads.name: 0.25})
    static = check_export(model, x, mutator)
    assert (static.heads, static.dim, static.qkv.out_features) == (1, 4, 12)
    assert (model.heads, model.dim) == (4, 16)  # the prepared model keeps its attributes


def test_an_attribute_used_as_a_number_keeps_its_value():
    """``o / self.heads``: pruning heads would change the result, so the heads stay fixed."""
    torch.manual_seed(0)
    model, x = HeadsAttention(divide_by_heads=True).eval(), torch.randn(2, 5, 6)
    mutator = prepare(model, x)
    heads = unit_writing(mutator, "qkv")
    assert not heads.is_mutable
    assert any(r.startswith("attribute heads keeps its value") for r in heads.fixed_reasons)


@pytest.mark.parametrize("kind", ["vit", "timm"])
def test_size_attributes_survive_a_config_round_trip(kind, vit, image):
    """``config_template(with_channels=True)`` carries the attributes the export sets, so a
    mutator rebuilt from the JSON (no tracing) exports the same model."""
    torch.manual_seed(0)
    model, x = (vit, image) if kind == "vit" else (HeadsAttention().eval(), torch.randn(2, 5, 6))
    twin = copy.deepcopy(model)
    mutator = prepare(model, x)
    config = json.loads(json.dumps(mutator.config_template(with_channels=True)))
    assert config["parse_cfg"]["size_attributes"]
    rebuilt = MODELS.build(config)
    rebuilt.prepare_from_supernet(twin)
    random.seed(0)
    choices = mutator.sample_choices()
    mutator.set_choices(choices)
    rebuilt.set_choices(choices)
    ours, theirs = mutator.to_static().eval(), rebuilt.to_static().eval()
    attributes = {(n, a) for n, a in mutator._size_attributes}  # noqa: SLF001 (what the export sets)
    for owner, attr in attributes:
        assert getattr(ours.get_submodule(owner), attr) == getattr(theirs.get_submodule(owner), attr)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x))
