"""The engine on real torchvision classifiers: units found, outputs untouched at full choices,
exported models that compute what the masked model computes."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils._pytree import tree_flatten

from razor_widgets import count_resources

from helpers import make_nontrivial, prepare, zeroed_model

# The representative dozen and more: every structural family of torchvision's classifiers.
FAMILIES = {
    "resnet18": "residual", "resnet50": "residual (bottleneck)", "vgg11_bn": "plain chain",
    "squeezenet1_0": "fire concat", "googlenet": "inception concat", "densenet121": "dense concat",
    "mobilenet_v2": "depthwise", "mobilenet_v3_small": "depthwise + SE", "efficientnet_b0": "depthwise + SE",
    "regnet_y_400mf": "grouped + SE", "resnext50_32x4d": "grouped", "shufflenet_v2_x1_0": "channel shuffle",
    "convnext_tiny": "ConvNeXt (LayerNorm, layer scale)", "vit_b_16": "ViT (nn.MultiheadAttention)",
    "swin_t": "Swin (shifted-window attention)", "maxvit_t": "MaxViT (einsum attention)",
}
MODELS = list(FAMILIES)
SIZES = {"swin_t": 112}  # the smallest input each model takes, where smaller than 224
HAS_LAYER_NORM = {"convnext_tiny", "vit_b_16", "swin_t", "maxvit_t"}  # the zeroing oracle does not apply


def build(name: str) -> torch.nn.Module:
    return make_nontrivial(getattr(torchvision.models, name)(weights=None))


def outputs(model: torch.nn.Module, x: torch.Tensor, train: bool) -> list[torch.Tensor]:
    model.train(train)
    torch.manual_seed(0)  # dropout draws the same masks on both sides
    with torch.no_grad():
        return tree_flatten(model(x))[0]


@pytest.mark.sweep
@pytest.mark.parametrize("name", MODELS)
def test_prepare_export_and_equal_forwards(name: str) -> None:
    size = SIZES.get(name, 224)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    model = build(name)
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    assert mutator.mutable_units

    for train in (False, True):  # bit-identical at full choices, in eval and in train mode
        for got, want in zip(outputs(model, x, train), outputs(original, x, train), strict=True):
            assert torch.equal(got, want)
    assert model.training  # train/eval flags are the model's own

    head = [u for u in mutator.units if any("model output" in r for r in u.fixed_reasons)]
    assert head and not any(u.is_mutable for u in head)  # no classifier output is pruned

    # counts are of the forward as traced: here in train mode (GoogLeNet's aux heads included)
    full = count_resources(original.train(), x)
    assert (mutator.resources().params, mutator.resources().flops) == (full.params, full.flops)
    model.eval()
    original.eval()
    torch.manual_seed(3)
    for _ in range(2):
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        with torch.no_grad():
            masked = model(x)
            exported = static(x)
        assert exported.shape == masked.shape == (1, 1000)
        torch.testing.assert_close(exported, masked, rtol=1e-4, atol=1e-4)
        if name not in HAS_LAYER_NORM:
            with torch.no_grad():
                torch.testing.assert_close(zeroed_model(original, mutator)(x), masked,
                                           rtol=1e-4, atol=1e-4)
        kept = sum(p.numel() for p in static.parameters())
        assert kept < sum(p.numel() for p in original.parameters())
        counted, reference = mutator.resources(), count_resources(static.train(), x)
        assert counted.params == reference.params == kept
        assert counted.flops == reference.flops and counted.original_flops == full.flops
    # the prepared model stays explorable after export
    mutator.set_choices(mutator.max_choices)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_vit_b_16_counts_attention_exactly() -> None:
    """ViT's attention runs in nn.MultiheadAttention: both counting traps apply here."""
    x = torch.randn(1, 3, 224, 224)
    model = torchvision.models.vit_b_16(weights=None).eval()
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    full = mutator.resources()
    assert (full.params, full.flops) == (86_567_656, 35_127_656_448)  # docs/counting.md
    torch.manual_seed(4)
    for _ in range(2):
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        reference = count_resources(static, x)
        counted = mutator.resources()
        assert counted.params == reference.params == sum(p.numel() for p in static.parameters())
        assert counted.flops == reference.flops < full.flops


@pytest.mark.parametrize(("name", "count"), [("resnet50", 37), ("mobilenet_v2", 25)])
def test_unit_counts_match_mmrazor_and_torch_pruning(name: str, count: int) -> None:
    model = getattr(torchvision.models, name)()
    mutator, _ = prepare(model, torch.randn(1, 3, 224, 224))
    assert len(mutator.mutable_units) == count


def test_resnet50_units_and_choices() -> None:
    mutator, _ = prepare(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224))
    names = list(mutator.current_choices)
    assert names[:2] == ["conv1_(0, 64)_64", "layer1.0.conv1_(0, 64)_64"]
    assert set(mutator.current_choices.values()) == {1.0, "keep"}  # channel units and blocks (issue 28)
    stem = mutator.units[1]
    outs = {(c.name, c.start, c.end) for c in stem.output_related}
    ins = {(c.name, c.start, c.end) for c in stem.input_related}
    assert outs == {("conv1", 0, 64), ("bn1", 0, 64)}
    assert ins == {("bn1", 0, 64), ("layer1.0.conv1", 0, 64), ("layer1.0.downsample.0", 0, 64)}
    stream = next(u for u in mutator.units if u.name == "layer1.0.conv3_(0, 256)_256")
    writers = {c.name for c in stream.output_related}
    assert {"layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"} <= writers
    assert mutator.units[0].name == "conv1_(0, 3)_3" and not mutator.units[0].is_mutable

    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    assert set(mutator.current_choices.values()) == {0.5, "keep"}  # a block above 0 is kept whole
    small = mutator.to_static()
    assert small.conv1.out_channels == 32 and small.layer1[0].conv3.out_channels == 128
    assert small.fc.in_features == 1024 and small.fc.out_features == 1000
