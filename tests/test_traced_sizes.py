"""Sizes the model's code computes from channel counts (``x.shape[1]``, ``C // heads``).

The trace sees only numbers; the engine must still keep an exported model consistent with
what the code will compute from the pruned shapes, and never prune channels whose count the
model uses as a value (a scale), since that would change what it computes.
"""
from __future__ import annotations

import random
import warnings

import pytest
import torch
import torchvision
from torch import nn

from razor_widgets import ChannelMutator, UnprunableChannelsWarning, count_resources
from razor_widgets.trace.traced_size import TracedSize


class ReshapeBySize(nn.Module):
    """conv_b's output is reshaped with a channel count read from conv_a's output."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 1)
        self.head_a = nn.Conv2d(8, 4, 1)
        self.head_b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a = torch.relu(self.conv_a(x))
        n, _, h, w = x.shape
        b = torch.relu(self.conv_b(x)).flatten(2).reshape(n, a.shape[1], h, w)
        return self.head_a(a) + self.head_b(b)


class ScaleBySize(nn.Module):
    """The data is scaled by a channel count: those channels must stay."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if self.how == "divide":
            y = y / y.shape[1]
        else:
            y = y * (y.size(1) // 2) ** -0.5
        return self.head(torch.relu(self.mid(y)))


class ConstantShuffle(nn.Module):
    """A channel shuffle written with literal sizes: pruning would break its view."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        y = torch.relu(self.stem(x)).view(b, 2, 4, h, w).transpose(1, 2).reshape(b, 8, h, w)
        return self.head(torch.relu(self.mid(y)))


def prepare(model, x):
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    return mutator


def unit_of(mutator, layer):
    return [u for u in mutator.units if any(c.name == layer and c.is_output_channel for c in u.output_related)]


def test_traced_size_is_the_same_int_and_keeps_its_sources():
    uses = []
    c = TracedSize(96, (("x", 3),), lambda sources, what, value: uses.append(sources))
    assert int(c) == 96 and isinstance(c // 3, TracedSize) and (c // 3).sources == (("x", 3),)
    assert int((c // 3) * 2) == 64 and not uses
    assert (c // 3) ** -0.5 == 32 ** -0.5 and uses == [(("x", 3),)]
    assert c == 96 and not c < 96 and uses[1:] == [(("x", 3),)] * 2  # a comparison is a value use


def test_a_size_read_from_another_tensor_couples_the_channels():
    torch.manual_seed(0)
    model, x = ReshapeBySize().eval(), torch.randn(2, 3, 6, 6)
    mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "conv_a")
    assert unit.is_mutable and unit_of(mutator, "conv_b") == [unit]
    for seed in range(3):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        assert static.conv_a.out_channels == static.conv_b.out_channels == int(unit.current_mask.sum())
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x))
    mutator.set_choices({unit.name: 0.375})  # 3 of 8 channels
    static = mutator.to_static().eval()
    assert static.conv_a.out_channels == static.conv_b.out_channels == 3
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))


def test_a_split_to_literal_sizes_is_not_pruned():
    model, x = ConstantShuffle().eval(), torch.randn(1, 3, 6, 6)
    mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "stem")
    assert not unit.is_mutable
    assert any("split to the fixed size 4" in r for r in unit.fixed_reasons), unit.fixed_reasons
    assert [u.name for u in mutator.mutable_units] == ["mid_(0, 8)_8"]
    random.seed(0)
    mutator.set_choices({"mid_(0, 8)_8": 0.5})
    with torch.no_grad():
        torch.testing.assert_close(mutator.to_static().eval()(x), model(x))


@pytest.mark.parametrize("how", ["divide", "power"])
def test_a_channel_count_used_as_a_number_is_not_pruned(how):
    model, x = ScaleBySize(how).eval(), torch.randn(1, 3, 6, 6)
    mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "conv")
    assert not unit.is_mutable
    assert any("channel count" in r for r in unit.fixed_reasons), unit.fixed_reasons
    assert [u.name for u in mutator.mutable_units] == ["mid_(0, 6)_6"]


def test_swin_exports_at_random_choices_with_exact_counts():
    """Swin's attention computes its head size as ``C // num_heads`` and scales by it."""
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 112, 112)
    with warnings.catch_warnings():  # channels fixed for another reason anyway: no warning
        warnings.simplefilter("error", UnprunableChannelsWarning)
        mutator = prepare(model, x)
    assert len(mutator.mutable_units) >= 12  # at least every MLP hidden size
    for seed in range(2):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x))
        reference = count_resources(static, x)
        assert mutator.resources().params == reference.params == sum(p.numel() for p in static.parameters())
        assert mutator.resources().flops == reference.flops


class FillSizedByChannels(nn.Module):
    """A head whose values reach nothing (no boxes to decode, as in a detector's keypoint head
    on an image without detections) but whose channel count sizes the output, read into Python:
    ``torch.zeros((n, 3, maps.shape[1]))``. ``how`` = "computed" sizes it by ``2 * c`` instead,
    and "bias" adds a fill sized by the channels back to them (``h + h.new_zeros(1, c, 1, 1)``)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.predictor = nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        maps = self.predictor(torch.relu(self.stem(x)))
        if self.how == "bias":
            return self.head(maps + maps.new_zeros(1, maps.shape[1], 1, 1))
        size = maps.shape[1] if self.how == "bare" else 2 * maps.shape[1]
        return torch.relu(self.stem(x)).mean() + torch.zeros((x.shape[0], 3, size))


@pytest.mark.parametrize("how", ["bare", "computed"])
def test_a_fill_sized_by_channels_pins_them_where_it_reaches_the_output(how):
    torch.manual_seed(0)
    model, x = FillSizedByChannels(how).eval(), torch.randn(2, 3, 6, 6)
    mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "predictor")
    assert not unit.is_mutable, unit.fixed_reasons
    random.seed(0)
    mutator.set_choices(mutator.sample_choices())
    with torch.no_grad():
        assert mutator.to_static().eval()(x).shape == model(x).shape == (2, 3, 6 if how == "bare" else 12)
    if how == "computed":
        assert any("sizes a new tensor" in r for r in unit.fixed_reasons), unit.fixed_reasons


def test_a_fill_sized_by_channels_follows_them():
    torch.manual_seed(0)
    model, x = FillSizedByChannels("bias").eval(), torch.randn(2, 3, 6, 6)
    mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "predictor")
    assert unit.is_mutable
    mutator.set_choices({unit.name: 0.5})
    static = mutator.to_static().eval()
    assert static.predictor.out_channels == 3
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))



def test_a_head_run_on_no_boxes_exports_with_its_output_shape():
    """Keypoint R-CNN without detections: the keypoint predictor runs on an empty tensor (no
    boxes) and its channel count sizes the ``keypoints`` output (``zeros((n, 3, maps.shape[1]))``)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=128, max_size=128).eval()
    model.roi_heads.score_thresh = 1.0  # no box passes: the keypoint head runs on none
    model.rpn._pre_nms_top_n["testing"] = model.rpn._post_nms_top_n["testing"] = 100  # one NMS path
    x = ([torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(2))],)
    with pytest.warns(UnprunableChannelsWarning, match="empty tensor"):
        mutator = prepare(model, x)
    (unit,) = unit_of(mutator, "roi_heads.keypoint_predictor.kps_score_lowres")
    assert not unit.is_mutable
    random.seed(0)
    mutator.set_choices(mutator.sample_choices())
    static = mutator.to_static().eval()  # checked: raised ExportError on the keypoints' shape
    with torch.no_grad():
        assert static(*x)[0]["keypoints"].shape == (0, 17, 3)
