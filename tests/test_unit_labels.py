"""What a unit is, decided from what the analysis saw (attention heads, residual joins, layer
kinds) and placed among the model's repeated blocks: never from a model's or module's name.
The Hugging Face models' labels are in ``test_hf.py``."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from razor_widgets import ChannelMutator, describe_unit, unit_label, unit_role


def _prepared(model: nn.Module, x, **parse) -> ChannelMutator:
    mutator = ChannelMutator(parse_cfg=dict(type="ChannelAnalyzer", **parse)) if parse else ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, x)
    return mutator


@pytest.fixture(scope="module")
def resnet18(one_thread) -> ChannelMutator:
    return _prepared(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))


@pytest.fixture(scope="module")
def vit_b_16(one_thread) -> ChannelMutator:
    return _prepared(torchvision.models.vit_b_16(), torch.randn(1, 3, 224, 224))


def test_resnet_units_are_conv_channels_and_residual_streams(resnet18):
    labels = [unit_label(u) for u in resnet18.mutable_units]
    assert labels == [
        "residual stream of layer1 (2 blocks)", "channels of layer1.0.conv1", "channels of layer1.1.conv1",
        "channels of layer2.0.conv1", "residual stream of layer2 (2 blocks)", "channels of layer2.1.conv1",
        "channels of layer3.0.conv1", "residual stream of layer3 (2 blocks)", "channels of layer3.1.conv1",
        "channels of layer4.0.conv1", "residual stream of layer4 (2 blocks)", "channels of layer4.1.conv1"]
    assert {unit_role(u).kind for u in resnet18.mutable_units} == {"residual", "channels"}
    assert describe_unit(resnet18.mutable_units[4]) == "residual stream of layer2 (2 blocks): 128"


def test_a_resnet_unit_is_never_the_hidden_size(resnet18):
    """Its streams span several numbered blocks but no norm over the channels normalises them
    (batch norm is per channel): they are residual streams, not a hidden size."""
    assert not any("hidden" in unit_label(u) or unit_role(u).kind == "hidden" for u in resnet18.units)


def test_mobilenet_v2_units(one_thread):
    mutator = _prepared(torchvision.models.mobilenet_v2(), torch.randn(1, 3, 64, 64))
    labels = {u.name: unit_label(u) for u in mutator.mutable_units}
    assert labels["features.2.conv.0.0_(0, 96)_96"] == "channels of features.2.conv.0.0"  # the expansion
    assert labels["features.1.conv.1_(0, 16)_16"] == "channels of features.1.conv.1"  # no residual join
    assert labels["features.2.conv.2_(0, 24)_24"] == "residual stream of features.3"  # one block adds it
    assert labels["features.4.conv.2_(0, 32)_32"] == "residual stream of features.5–6"  # two of 17 blocks
    assert not any(unit_role(u).kind in ("hidden", "mlp", "heads") for u in mutator.units)


def test_vit_mlp_units_are_the_mlp_of_layer_i(vit_b_16):
    """torchvision's blocks are called ``encoder_layer_3``: their index is their place in the
    ``encoder.layers`` container, not a number in the name."""
    units = vit_b_16.mutable_units
    mlps = [u for u in units if unit_role(u).kind == "mlp"]
    assert [unit_label(u) for u in mlps] == [f"MLP of layer {i}" for i in range(12)]
    assert [unit_role(u).layer for u in mlps] == list(range(12))
    assert describe_unit(mlps[3]) == "MLP of layer 3: 3072 (encoder.layers.encoder_layer_3.mlp)"


def test_vit_stream_is_the_hidden_size_held_in_heads(vit_b_16):
    """``nn.MultiheadAttention`` ties its embed dim to the stream: the stream is pruned in whole
    heads, and it is the hidden size (layer norms over it, added in every block)."""
    (hidden,) = [u for u in vit_b_16.mutable_units if unit_role(u).kind == "hidden"]
    assert unit_label(hidden) == "hidden size"
    assert describe_unit(hidden) == "hidden size: 768 in 12 heads of 64"


def test_head_dims_mode_labels_positions_in_every_head(one_thread):
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    net = nn.Sequential(nn.Linear(8, 32), _Attend(mha), nn.Linear(32, 8))
    mutator = _prepared(net, torch.randn(2, 5, 8), attention="head_dims")
    (unit,) = mutator.mutable_units
    assert unit_role(unit).kind == "head_dims"
    assert describe_unit(unit) == "head dims of the model: 8 in each of 4 heads"


class _Attend(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _Flattened(nn.Module):
    """A conv's channels read by a linear through ``flatten``: 16 inputs per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def test_channels_read_in_blocks_are_not_heads(one_thread):
    """The linear reads 16 channels per conv channel (an expand ratio, as heads have), but no
    attention op holds them: they are the conv's channels. The linear-to-linear width is an
    MLP without a block: it is placed by its module path."""
    mutator = _prepared(_Flattened(), torch.randn(2, 3, 4, 4))
    labels = [unit_label(u) for u in mutator.mutable_units]
    assert labels == ["channels of conv", "MLP of the model"]


class _GeluMLP(nn.Module):
    """``x + 0.044715 * x ** 3`` adds a function of one tensor to itself: no residual join."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(16), nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        h = self.up(self.norm(x))
        h = 0.5 * h * (1 + torch.tanh(0.79788 * (h + 0.044715 * h ** 3)))
        return x + self.down(h)


def test_an_elementwise_function_of_one_tensor_is_no_residual_join(one_thread):
    net = nn.Sequential(nn.Linear(4, 16), _GeluMLP(), _GeluMLP(), nn.Linear(16, 3))
    mutator = _prepared(net, torch.randn(2, 4))
    kinds = {unit_label(u): unit_role(u).kind for u in mutator.mutable_units}
    assert kinds == {"hidden size": "hidden", "MLP of layer 1": "mlp", "MLP of layer 2": "mlp"}


def test_units_from_a_config_get_roles_without_the_analysis(resnet18):
    """A 'Config' parse runs no analysis: roles come from the channels and the blocks alone
    (a unit that spans blocks is taken for a residual stream)."""
    cfg = resnet18.config_template(with_channels=True, with_unit_init_args=True)["channel_unit_cfg"]
    mutator = ChannelMutator(channel_unit_cfg=cfg, parse_cfg=dict(type="Config"))
    mutator.prepare_from_supernet(torchvision.models.resnet18())
    labels = {u.name: unit_label(u) for u in mutator.mutable_units}
    assert labels["layer1.0.conv1_(0, 64)_64"] == "channels of layer1.0.conv1"
    assert labels["layer2.0.conv2_(0, 128)_128"] == "residual stream of layer2 (2 blocks)"


def test_the_explorer_shows_the_labels(one_thread):
    """Sliders, the highlight list, the channels chart and the filter box use the labels."""
    from torchvision.models.vision_transformer import VisionTransformer

    from razor_widgets import PruningExplorer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=10).eval()
    ex = PruningExplorer(net, torch.randn(1, 3, 32, 32))
    units = ex.mutator.mutable_units
    assert [ex.sliders[u.name].description for u in units] == [
        "hidden size · 15 layers", "MLP of layer 0 · 2 layers", "MLP of layer 1 · 2 layers"]
    assert "MLP of layer 1: 64 (encoder.layers.encoder_layer_1.mlp)" in ex.sliders[units[2].name].tooltip
    assert ex.unit_selector.options[2] == (f"MLP of layer 0 · {units[1].name}", units[1].name)
    assert ex.channel_plot.labels() == ["hidden size", "MLP of layer 0", "MLP of layer 1"]
    assert ex.panel.apply_filter("mlp") == 2 and ex.panel.apply_filter("layer 1") == 1
    assert ex.panel.apply_filter("") == 3


def test_the_layer_kinds_roles_read_are_registered():
    """Roles read layer kinds by name: a renamed kind would silently change labels."""
    from razor_widgets.analysis.unit_labels import CHANNEL_NORM_KINDS, EXPERT_KINDS, LINEAR_KINDS
    from razor_widgets.layers.registry import KINDS

    assert CHANNEL_NORM_KINDS | EXPERT_KINDS | LINEAR_KINDS <= {kind.name for kind in KINDS}


class _TopLevelResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.conv(x))


def test_a_residual_add_in_the_model_itself_is_placed_in_the_model(one_thread):
    mutator = _prepared(_TopLevelResidual(), torch.randn(1, 3, 8, 8))
    assert [unit_label(u) for u in mutator.mutable_units] == ["residual stream of the model"]
