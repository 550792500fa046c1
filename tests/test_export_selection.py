"""The export check and selection outside modules: a top-k over nearly tied scores may pick
another candidate in the export after float rounding (a detector's post-processing). When every
module's output matches, ``to_static()`` warns ``ExportCheckWarning`` instead of raising; a real
error still raises ``ExportError`` naming its module, also where modules return objects (an
``ImageList``) that hold the tensors."""
from __future__ import annotations

import warnings
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from razor_widgets import ChannelMutator, ExportCheckWarning, ExportError
from razor_widgets.mutators import channel_mutator
from razor_widgets.trace.structured_values import structural_leaves

from helpers import make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")

Features = namedtuple("Features", ["maps", "sizes"])


class Wrap(nn.Module):
    """No weights: the image in an ``ImageList`` (as torchvision's detection transform returns it)."""

    def forward(self, x):
        return ImageList(x * 2, [tuple(x.shape[-2:])] * len(x))


class Backbone(nn.Module):
    """Returns a named tuple that holds its feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, images):
        maps = F.relu(self.conv2(F.relu(self.bn1(self.conv1(images.tensors)))))
        return Features(maps, images.image_sizes)


class TopPick(nn.Module):
    """Scores for 4 candidates and, in its own forward (no module), the best one by ``topk``:
    candidates 0 and 1 score exactly the same (rows 0 and 1 of ``score`` are equal)."""

    def __init__(self):
        super().__init__()
        self.wrap, self.backbone = Wrap(), Backbone()
        self.gate = nn.Identity()
        self.score = nn.Linear(8, 4)

    def forward(self, x):
        scores = self.gate(self.score(self.backbone(self.wrap(x)).maps.mean((2, 3))))
        return {"scores": scores, "best": scores.topk(1, dim=1).indices.float() * 10}


@pytest.fixture
def image():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def pruned(image):
    """The model, its mutator (conv1's and conv2's channels halved) and the example input."""
    torch.manual_seed(0)
    model = make_nontrivial(TopPick()).eval()
    with torch.no_grad():
        model.score.weight[1] = model.score.weight[0]
        model.score.bias[1] = model.score.bias[0] + 10  # the tied pair wins
        model.score.bias[0] += 10
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=image)
    units = [u for u in mutator.mutable_units if any(c.name in ("backbone.conv1", "backbone.conv2")
                                                     for c in u.output_related)]
    assert len(units) == 2
    mutator.set_choices({u.name: 0.5 for u in units})
    return model, mutator, image


def change_export(monkeypatch, change):
    """Apply ``change`` to the exported model before ``to_static()`` checks it."""
    check = channel_mutator.verify_export

    def changed(mutator, static, example_inputs=None):
        change(static)
        return check(mutator, static, example_inputs)

    monkeypatch.setattr(channel_mutator, "verify_export", changed)


def nudge_the_loser(model, image):
    """Raise the tied candidate the masked model does not pick by far less than the tolerance
    (1e-4 of the scores' scale, about 10): the export picks it."""
    with torch.no_grad():
        loser = 1 - int(model(image)["best"][0, 0]) // 10

    def nudge(static):
        with torch.no_grad():
            static.score.bias[loser] += 1e-5
    return nudge


def test_the_tied_export_checks_without_a_warning(pruned):
    model, mutator, image = pruned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        static = mutator.to_static()
    with torch.no_grad():
        assert torch.equal(static(image)["best"], model(image)["best"])


def test_a_pick_flipped_by_rounding_warns_instead_of_raising(monkeypatch, pruned):
    model, mutator, image = pruned
    change_export(monkeypatch, nudge_the_loser(model, image))
    with pytest.warns(ExportCheckWarning, match=r"born in 'the model' \(TopPick\).*selects \(top-k"):
        static = mutator.to_static()
    with torch.no_grad():
        exported, masked = static(image), model(image)
    assert set(masked["best"].flatten().tolist()) | set(exported["best"].flatten().tolist()) == {0.0, 10.0}
    assert not torch.equal(exported["best"], masked["best"])
    torch.testing.assert_close(exported["scores"], masked["scores"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer, change", [
    ("score", lambda static: static.score.bias.data.__setitem__(1, static.score.bias[1] + 1.0)),
    ("backbone.conv2", lambda static: static.backbone.conv2.weight.data.copy_(static.backbone.conv2.weight.roll(1, 0))),
    ("gate", lambda static: setattr(static, "gate", nn.Hardtanh(-1.0, 1.0))),  # no weights, same inputs, no pick
])
def test_a_real_error_still_raises_naming_its_module(monkeypatch, pruned, layer, change):
    model, mutator, image = pruned
    change_export(monkeypatch, change)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportCheckWarning)
        with pytest.raises(ExportError) as caught:
            mutator.to_static()
    assert caught.value.layer == layer
    assert f"First layer that differs: {layer!r}" in str(caught.value)


def test_the_finder_looks_into_objects_that_hold_tensors(monkeypatch, pruned):
    """``wrap`` returns an ``ImageList``, ``backbone`` a named tuple: they are compared by the
    tensors they hold, so a wrong ``wrap`` is named, and a right one is not."""
    model, mutator, image = pruned

    class WrongWrap(nn.Module):
        def forward(self, x):
            return ImageList(x * 3, [tuple(x.shape[-2:])] * len(x))

    change_export(monkeypatch, lambda static: setattr(static, "wrap", WrongWrap()))
    with pytest.raises(ExportError, match=r"'wrap' \(WrongWrap\): output \.tensors differs by up to") as caught:
        mutator.to_static()
    assert caught.value.layer == "wrap"


def test_structural_leaves_name_the_tensors_inside_objects():
    held = ImageList(torch.ones(1), [(2, 3)])
    leaves = structural_leaves((held, Features(torch.zeros(2), None), {"k": [torch.ones(3)]}))
    assert [path for path, _ in leaves] == ["[0].tensors", "[0].image_sizes[0][0]", "[0].image_sizes[0][1]",
                                            "[1].maps", "[1].sizes", "[2]['k'][0]"]
    assert leaves[0][1] is held.tensors and [leaves[1][1], leaves[2][1]] == [2, 3]
