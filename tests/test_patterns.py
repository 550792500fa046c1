"""Channel units of small structural patterns, derived by hand, and pruning checked against them.

Each model of ``helpers.CASES`` holds one pattern (a chain, a residual add, a concat, a grouped conv, an
attention block...). For each one the expected units were worked out by hand from the rules:

* a layer's output channels and every reader of them form a unit; norms and depthwise convs
  pass channels through, so they sit on both sides of one unit;
* adds and muls join the channels at the same position; a cat places its parts side by side,
  so a reader of a cat holds several units, each on a sub-range of its input;
* a grouped conv joins the same position of every group (``repeats == groups``); attention
  keeps or prunes whole heads (a unit channel is a head: ``expand_ratio == head_dim``);
* equal chunks join the same position of each part, so a layer that writes both parts holds
  the unit twice (its range spans two copies of the unit's channels);
* a flatten of ``[C, H, W]`` spreads each channel over ``H * W`` inputs of the next Linear
  (``expand_ratio == H * W``);
* the channels of the model input and of the model output form units that cannot be pruned.

An item is ``(layer name, start, end, expand_ratio)`` in that layer's own coordinates.

Then, for every pattern: outputs at full choices are bit-identical to the unprepared model's;
with L1 units (any subset of channels kept) the exported model computes what the masked
model computes, which is also what the original model computes with the pruned channels
zeroed where they are read (``helpers.zeroed_model``); and the exported layers have the kept
channel counts.
"""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, UnprunableChannelsWarning

from helpers import CASES, HAS_LAYER_NORM, make_nontrivial, zeroed_model

SEEDS = (0, 1, 2)


def cases(xfail=None):
    """The case names as parameters; ``xfail`` maps a name to the reason it is expected to fail."""
    xfail = xfail or {}
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=xfail[name]))
            if name in xfail else name for name in CASES]


# -- fixtures and helpers -------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny layers: a second thread only adds overhead


@pytest.fixture
def model(name):
    torch.manual_seed(0)
    return make_nontrivial(CASES[name][0](), seed=0)


@pytest.fixture
def x(name):
    return torch.randn(*CASES[name][1], generator=torch.Generator().manual_seed(1))


@pytest.fixture
def expected(name):
    return CASES[name][3]


def prepare(model, x, unit_type="SequentialMutableChannelUnit"):
    """Prepare ``model`` in place; return the mutator and an unprepared copy of the model."""
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit_type))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    unprunable = [str(w.message) for w in caught if w.category is UnprunableChannelsWarning]
    assert not unprunable, unprunable
    return mutator, original


def items_of(channels):
    return {(c.name, c.start, c.end, c.expand_ratio) for c in channels}


def cfg_items(cfgs):
    return {(c["name"], c["start"], c["end"], c["expand_ratio"]) for c in cfgs}


def tiled(mask, start, end, expand):
    """A unit's mask as seen by a range (start, end) that holds it with this expand ratio."""
    copies = (end - start) // (expand * mask.numel())
    assert copies * expand * mask.numel() == end - start
    return mask.repeat(copies).repeat_interleave(expand)


def choice_sets(mutator):
    """Set a few seeded random choices, then the minimum choices; yield after each."""
    for seed in SEEDS:
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        while all(bool(u.current_mask.all()) for u in mutator.mutable_units):
            mutator.set_choices(mutator.sample_choices())  # a sample that prunes something
        yield f"seed {seed}"
    mutator.set_choices(mutator.min_choices)
    yield "min"


def side_sizes(module):
    """(input channels, output channels) of a plain layer."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features, module.num_features
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1], module.normalized_shape[-1]
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim, module.embed_dim
    return None


def kept_sizes(original, mutator, expected):
    """Kept (input, output) channels of each layer, from the hand-derived items of the expected
    units and the masks of the engine's units of the same names."""
    masks = {}
    for layer, module in original.named_modules():
        if ".out_proj" in layer:  # inside attention: checked by the pattern's own check
            continue
        sizes = side_sizes(module)
        if sizes is not None:
            masks[layer] = [torch.ones(n, dtype=torch.bool) for n in sizes]
    units = {u.name: u for u in mutator.mutable_units}
    for unit_name, spec in expected.items():
        if spec["fixed"] is not None:
            continue
        mask = units[unit_name].current_mask
        for side, key in ((0, "in"), (1, "out")):
            for layer, start, end, expand in spec[key]:
                masks[layer][side][start:end] = tiled(mask, start, end, expand)
    return {layer: tuple(int(m.sum()) for m in sides) for layer, sides in masks.items()}


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", cases())
def test_units_match_hand_derivation(name, model, x, expected):
    mutator, _ = prepare(model, x)
    units = {u.name: u for u in mutator.units}
    assert list(units) == list(expected)  # trace order: by the first layer side they hold
    assert [u.name for u in mutator.mutable_units] == [
        n for n in units if expected[n]["fixed"] is None]
    template = mutator.config_template(with_channels=True)["channel_unit_cfg"]["units"]
    for unit_name, spec in expected.items():
        got = units[unit_name]
        assert got.num_channels == spec["num"], unit_name
        assert got.repeats == spec["repeats"], unit_name
        assert items_of(got.output_related) == spec["out"], unit_name
        assert items_of(got.input_related) == spec["in"], unit_name
        assert all(c.param_dim is None for c in got.channels)
        assert all(c.is_output_channel for c in got.output_related)
        assert not any(c.is_output_channel for c in got.input_related)
        assert got.current_mask.shape == (spec["num"],)
        channels = template[unit_name]["channels"]
        assert cfg_items(channels["output_related"]) == spec["out"], unit_name
        assert cfg_items(channels["input_related"]) == spec["in"], unit_name
        assert channels.get("repeats", 1) == spec["repeats"], unit_name
        if spec["fixed"] is None:
            assert got.is_mutable and not got.fixed_reasons, (unit_name, got.fixed_reasons)
        else:
            assert not got.is_mutable, unit_name
            assert any(spec["fixed"] in r for r in got.fixed_reasons), got.fixed_reasons


@pytest.mark.parametrize("name", cases())
def test_full_choices_are_bit_identical(name, model, x):
    mutator, original = prepare(model, x)
    assert all(bool(u.current_mask.all()) for u in mutator.mutable_units)
    with torch.no_grad():
        for mode in ("train", "eval", "train"):
            model.train(mode == "train")
            original.train(mode == "train")
            assert torch.equal(model(x), original(x)), mode  # train mode updates BN stats
        for (key, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
            assert torch.equal(a, b), key


@pytest.mark.parametrize("name", cases())
def test_export_matches_masked_and_zeroed(name, model, x):
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    model.eval()
    original.eval()
    for label in choice_sets(mutator):
        assert any(not bool(u.current_mask.all()) for u in mutator.mutable_units), label
        static = mutator.to_static().eval()
        with torch.no_grad():
            masked = model(x)
            exported = static(x)
            torch.testing.assert_close(exported, masked, msg=lambda m, lb=label: f"{lb}: {m}")
            if name not in HAS_LAYER_NORM:
                zeroed = zeroed_model(original, mutator).eval()(x)
                torch.testing.assert_close(masked, zeroed, msg=lambda m, lb=label: f"{lb}: {m}")
                torch.testing.assert_close(exported, zeroed, msg=lambda m, lb=label: f"{lb}: {m}")


@pytest.mark.parametrize("name", cases())
def test_export_keeps_the_chosen_channel_counts(name, model, x, expected):
    mutator, original = prepare(model, x, "L1MutableChannelUnit")
    check = CASES[name][2]
    for label in choice_sets(mutator):
        static = mutator.to_static()
        modules = dict(static.named_modules())
        for layer, sizes in kept_sizes(original, mutator, expected).items():
            assert side_sizes(modules[layer]) == sizes, (label, layer)
            module = modules[layer]
            if isinstance(module, nn.modules.conv._ConvNd):
                assert module.weight.shape[:2] == (
                    module.out_channels, module.in_channels // module.groups), (label, layer)
                assert module.bias.shape == (module.out_channels,), (label, layer)
            elif isinstance(module, nn.Linear):
                assert module.weight.shape == (module.out_features, module.in_features)
                assert module.bias.shape == (module.out_features,), (label, layer)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                for t in (module.weight, module.bias, module.running_mean, module.running_var):
                    assert t.shape == (n,), (label, layer)
            elif isinstance(module, nn.LayerNorm):
                n = module.normalized_shape[-1]
                assert module.weight.shape == module.bias.shape == (n,), (label, layer)
        check(static)
        assert not any(hasattr(m, "mutable_attrs") for m in static.modules())
