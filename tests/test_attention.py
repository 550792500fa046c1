"""Attention units: whole heads by default, the same positions in every head on request.

For ``nn.MultiheadAttention`` (torchvision ViT) the embed dim is also the residual stream, so the
stream unit counts heads: a unit channel is one head (``expand_ratio == head_dim``). The export
then has fewer heads of the original size, its attributes consistent, and computes what the
masked model computes.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

from razor_widgets import ChannelMutator, DynamicChannelMixin, count_resources

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
