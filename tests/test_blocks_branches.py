"""Inline residual branches (issue 28): a module whose parent's forward adds its output to its
input (``x = x + self.f(x)``, the add outside the module) is a block unit of kind "branch";
dropped, its contribution is zero, and the export puts a ``ZeroBranch`` in its place."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import MODELS, block_importance, count_resources
from razor_widgets.export.block_removal import ZeroBranch

from helpers import prepare, with_bn_statistics


class Scaled(nn.Module):
    """A conv whose call also takes a number: ``conv(x) * k``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, k: float = 1.0):
        return self.conv(x) * k


class Inline(nn.Module):
    """Residual branches written inline in one forward, and modules that are no branch."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                  nn.Conv2d(2 * c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.refine = nn.Conv2d(c, c, 1)
        self.scaled = Scaled(c)  # called with a number beside the tensor
        self.gate = nn.Conv2d(c, c, 1)  # its output is added and also read again: no branch
        self.other = nn.Conv2d(c, c, 3, padding=1)  # added to another tensor than its input: no branch
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.body(x))
        x = self.refine(x) + x
        x = x + self.scaled(x, k=0.5)
        g = self.gate(x)
        x = x + g * torch.sigmoid(g)
        x = x + self.other(F.relu(x))
        return self.head(x.mean((2, 3)))


def _model() -> Inline:
    torch.manual_seed(0)
    model = Inline().eval()
    return with_bn_statistics(model)


@pytest.fixture
def prepared():
    model, x = _model(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    mutator, original = prepare(model, x)
    return mutator, model, original, x


def test_inline_branches_are_found_and_the_others_are_not(prepared):
    mutator, model, original, x = prepared
    assert [(b.path, b.kind) for b in mutator.block_units] == [("body", "branch"), ("refine", "branch"),
                                                                ("scaled", "branch")]
    assert all(b.is_mutable for b in mutator.block_units)
    assert "inline" in mutator.block("body").form
    with torch.no_grad():
        assert torch.equal(model(x), original(x))  # full choices: bit-identical


def test_a_dropped_branch_adds_zero_and_the_export_holds_a_zero_branch(prepared):
    mutator, model, original, x = prepared
    mutator.set_choices({"block:body": "drop"})
    oracle = copy.deepcopy(original)
    oracle.body.forward = lambda t: torch.zeros_like(t)
    with torch.no_grad():
        assert torch.equal(model(x), oracle(x))
    static = mutator.to_static()  # checks export == masked itself
    assert isinstance(static.body, ZeroBranch) and isinstance(static.refine, nn.Conv2d)
    with torch.no_grad():
        assert torch.equal(static(x), model(x))
    mutator.set_choices({"block:scaled": "drop"})
    static = mutator.to_static()  # a ZeroBranch takes the number too
    assert isinstance(static.scaled, ZeroBranch)
    with torch.no_grad():
        assert torch.equal(static(x), model(x))
    mutator.set_choices({"block:scaled": "keep"})
    mutator.set_choices({"block:body": "keep"})
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_random_mixes_of_branches_and_widths_export_exactly_and_count_exactly(prepared):
    mutator, model, _, x = prepared
    rng = random.Random(0)
    for trial in range(3):
        torch.manual_seed(trial)
        choices = mutator.sample_choices()
        choices.update({b.name: rng.choice(["keep", "drop"]) for b in mutator.removable_blocks})
        mutator.set_choices(choices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            static = mutator.to_static()
            reference = count_resources(static, x)
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-6)
        counted = mutator.resources()
        assert (counted.params, counted.macs, counted.flops) == (reference.params, reference.macs, reference.flops)


def test_branch_importance_config_and_plans(prepared):
    mutator, _, _, x = prepared
    scores = block_importance(mutator, [x])
    assert set(scores) == {"block:body", "block:refine", "block:scaled"} and all(s > 0 for s in scores.values())
    mutator.set_choices({"block:refine": "drop"})
    cfg = mutator.config_template()
    assert cfg["channel_unit_cfg"]["blocks"]["block:refine"]["kind"] == "branch"
    built = MODELS.build(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built.prepare_from_supernet(_model(), x)
    assert built.dropped_branches() == ["refine"] and built.block("body").kind == "branch"
