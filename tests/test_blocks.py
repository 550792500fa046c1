"""Depth as a choice (issue 28): block units found from the trace, keep/drop choices, masks,
exact counts and the export, on a model written for it with blocks of every kind and blocks
that must stay."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from torch import nn

from razor_widgets import MODELS, ChannelMutator, count_resources
from razor_widgets.export.plans import apply_plan, plan_of

from block_net import BlockNet, Residual
from helpers import prepare, with_bn_statistics

REMOVABLE = ["convs.0", "convs.2", "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "alone"]
MUST_STAY = {"convs.1": "shortcut is not the identity", "leaky": "also feeds", "twice": "called 2 times"}


def _model(seed: int = 0) -> BlockNet:
    torch.manual_seed(seed)
    model = BlockNet().eval()
    return with_bn_statistics(model)


@pytest.fixture
def prepared():
    model, x = _model(), torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    mutator, original = prepare(model, x)
    return mutator, model, original, x


def test_blocks_of_every_kind_are_found_and_the_ones_that_must_stay_say_why(prepared):
    mutator = prepared[0]
    assert [b.path for b in mutator.removable_blocks] == REMOVABLE
    stay = {b.path: b.fixed_reasons for b in mutator.block_units if not b.is_mutable}
    assert set(stay) == set(MUST_STAY) and len(mutator.block_units) == len(REMOVABLE) + len(MUST_STAY)
    for path, words in MUST_STAY.items():
        assert any(words in reason for reason in stay[path]), (path, stay[path])
    assert "'convs.1.shortcut.0' (Conv2d)" in stay["convs.1"][0]
    assert "LayerNorm on the stream" in mutator.block("layers.3").form
    with pytest.raises(ValueError, match="cannot be dropped: .*shortcut"):
        mutator.set_choices({"block:convs.1": "drop"})


def test_full_choices_are_bit_identical_and_choices_are_listed(prepared):
    mutator, model, original, x = prepared
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    choices = mutator.current_choices
    assert all(choices[f"block:{p}"] == "keep" for p in REMOVABLE)
    assert not any(f"block:{p}" in choices for p in MUST_STAY)
    cfg = mutator.config_template()
    assert cfg["channel_unit_cfg"]["blocks"]["block:layers.2"]["choice"] == "keep"
    assert "fixed_reasons" in cfg["channel_unit_cfg"]["blocks"]["block:leaky"]


def _without(model: nn.Module, paths: list[str]) -> nn.Module:
    """The oracle: the original model with the blocks' modules bypassed (their stream input returned)."""
    model = copy.deepcopy(model)
    for path in paths:
        model.get_submodule(path).forward = lambda x, *args, **kwargs: x
    return model


def test_dropping_masks_the_block_and_bad_choices_change_nothing(prepared):
    mutator, model, original, x = prepared
    with pytest.raises(ValueError, match="'keep' or 'drop'"):
        mutator.set_choices({"block:layers.1": "drop", "block:layers.2": "half"})
    assert mutator.block("layers.1").current_choice == "keep"
    with pytest.raises(KeyError):
        mutator.set_choices({"block:nowhere": "drop"})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mutator.set_choices({"block:layers.1": 1.5})
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})  # half the channels, every block kept
    assert mutator.dropped_paths() == [] and mutator.set_choices({"block:layers.4": 0}) is None
    assert mutator.dropped_paths() == ["layers.4"]
    mutator.set_choices(mutator.max_choices)
    mutator.set_choices({"block:layers.1": "drop", "block:convs.2": False, "block:alone": "drop"})
    with torch.no_grad():
        assert torch.equal(model(x), _without(original, ["layers.1", "convs.2", "alone"])(x))
    mutator.set_choices({"block:layers.1": "keep", "block:convs.2": True, "block:alone": "keep"})
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_random_mixes_of_depth_and_width_export_what_the_masked_model_computes(prepared):
    mutator, model, _, x = prepared
    rng = random.Random(0)
    for trial in range(4):
        torch.manual_seed(trial)
        choices = mutator.sample_choices()
        choices.update({b.name: rng.choice(["keep", "drop"]) for b in mutator.removable_blocks})
        mutator.set_choices(choices)
        static = mutator.to_static()  # checks export == masked itself
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-6)
        reference = count_resources(static, x)
        counted = mutator.resources()
        assert (counted.params, counted.macs) == (reference.params, reference.macs)
        dropped = [b.path for b in mutator.removable_blocks if b.dropped]
        assert len(static.layers) == 5 - sum(p.startswith("layers.") for p in dropped)
        assert len(static.convs) == 3 - sum(p.startswith("convs.") for p in dropped)
        assert all(not m._forward_hooks for m in static.modules())  # plain torch: the masks' hooks are gone
        if "alone" in dropped:
            assert isinstance(static.alone, nn.Identity)


def test_what_if_counts_plans_and_configs_carry_block_choices(prepared, tmp_path):
    mutator = prepared[0]
    full = mutator.resources()
    dropped = mutator.resources({"block:layers.2": "drop"})
    assert dropped.params < full.params and dropped.macs < full.macs
    assert mutator.block("layers.2").current_choice == "keep" and mutator.resources() == full
    by_layer = mutator.resources({"block:layers.2": "drop"}, by_layer=True)
    assert all(r.params == 0 for name, r in by_layer.items() if name.startswith("layers.2."))
    mutator.set_choices({"block:layers.2": "drop", "block:convs.0": "drop"})
    plan = plan_of(mutator)
    assert plan["block:layers.2"] == "drop"
    model2, x = _model(), torch.randn(1, 3, 6, 6)
    other = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other.prepare_from_supernet(model2, x)
    apply_plan(other, plan, "test")
    assert other.current_choices == mutator.current_choices
    built = MODELS.build(mutator.config_template())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built.prepare_from_supernet(_model(), x)
    assert built.dropped_paths() == ["convs.0", "layers.2"]


class InPlace(nn.Module):
    """``x += f(x)``: the block writes its input."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        x += self.fc(x)
        return x


class TwoInputs(nn.Module):
    """A residual block that also reads a second tensor (a mask)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x, scale):
        return x + self.fc(x) * scale


class Odd(nn.Module):
    """Blocks that must stay for the other reasons: one writes its input in place, one outside
    any container takes two tensors; and one in a ModuleDict that can go."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.inplace, self.two = InPlace(d), TwoInputs(d)
        self.named = nn.ModuleDict({"a": TwoInputs(d), "b": TwoInputs(d)})
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        scale = torch.sigmoid(x.mean(-1, keepdim=True))
        x = self.two(self.inplace(x * 1.0), scale)
        for block in self.named.values():
            x = block(x, scale)
        return self.head(x)


def test_blocks_that_write_their_input_or_cannot_leave_the_export_stay():
    torch.manual_seed(0)
    model, x = Odd().eval(), torch.randn(2, 4, 8)
    original = copy.deepcopy(model)
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, x)
    reasons = {b.path: " ".join(b.fixed_reasons) for b in mutator.block_units}
    assert "changes its input in place" in reasons["inplace"]
    assert "outside a ModuleList, Sequential or ModuleDict" in reasons["two"]
    assert reasons["named.a"] == reasons["named.b"] == ""
    mutator.set_choices({"block:named.a": "drop"})
    static = mutator.to_static()
    assert list(static.named) == ["b"]
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))
        assert not torch.equal(model(x), original(x))


def test_a_block_whose_weight_is_tied_outside_stays():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Sequential(Residual(nn.Linear(8, 8)), Residual(nn.Linear(8, 8))))
    model[0].weight = model[1][0].f.weight  # tied
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, torch.randn(2, 8))
    reasons = {b.path: b.fixed_reasons for b in mutator.block_units}
    assert reasons["1.0"] == ["its parameters are shared outside it ('0.weight')"] and reasons["1.1"] == []
