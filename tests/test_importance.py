"""Importance criteria as unit types: each ranks by its definition, export == masked with exact
counts for every type, rankings are cached until the weights change, data criteria need
calibration, units without a batch norm say so."""
from __future__ import annotations

import copy
import pickle
import random
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import (
    MODELS,
    ActivationMutableChannelUnit,
    BNScaleMutableChannelUnit,
    ChannelMutator,
    L2MutableChannelUnit,
    PruningExplorer,
    RandomMutableChannelUnit,
    TaylorMutableChannelUnit,
    calibrate,
    count_resources,
    sensitivity_scan,
)
from razor_widgets.importance import criteria

from helpers import ResidualConcatNet, make_nontrivial, zeroed_model

TYPES = ["L1MutableChannelUnit", "L2MutableChannelUnit", "BNScaleMutableChannelUnit", "TaylorMutableChannelUnit",
         "ActivationMutableChannelUnit", "RandomMutableChannelUnit"]
DATA = ("TaylorMutableChannelUnit", "ActivationMutableChannelUnit")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def build(unit: str, x: torch.Tensor, **args) -> tuple[ChannelMutator, nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = make_nontrivial(ResidualConcatNet()).eval()
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args=args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x[:1])
        if unit in DATA:
            calibrate(mutator, [x[:2], x[2:]])
    return mutator, model, original


@pytest.mark.parametrize("unit", TYPES)
def test_every_type_exports_what_it_masks_with_exact_counts(unit, x):
    mutator, model, original = build(unit, x)
    assert len(mutator.mutable_units) == 5
    for seed in range(3):
        random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static()
        with torch.no_grad():
            masked, exported, oracle = model(x), static(x), zeroed_model(original, mutator)(x)
        assert torch.allclose(masked, exported, atol=1e-5) and torch.allclose(masked, oracle, atol=1e-5)
        live, counted = mutator.resources(), count_resources(static, x[:1])
        assert (live.params, live.macs, live.flops) == (counted.params, counted.macs, counted.flops)
    mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(model(x), original(x))  # full choices: bit-identical


def kept_positions(unit) -> set[int]:
    return set(unit.current_mask.nonzero().flatten().tolist())


def top(scores: torch.Tensor, k: int, repeats: int = 1) -> set[int]:
    """The ``k`` best channels; with repeated blocks, scores add up per position and the best
    ``k / repeats`` positions are kept in every block."""
    base = len(scores) // repeats
    best = torch.argsort(-scores.reshape(repeats, base).sum(0), stable=True)[:k // repeats].tolist()
    return {p + b * base for p in best for b in range(repeats)}


def test_l2_and_bn_scale_keep_the_channels_their_formula_ranks_first(x):
    mutator, model, original = build("L2MutableChannelUnit", x)
    stem = mutator.unit("stem.0_(0, 16)_16")
    mutator.set_choices({stem.name: 0.5})
    norms = [conv.weight.detach().double().pow(2).sum((1, 2, 3)).sqrt() for conv in (original.stem[0], original.res[3])]
    assert stem.repeats == 4  # the grouped conv reads the same position of each of 4 blocks
    assert kept_positions(stem) == top(norms[0] + norms[1], 8, 4)  # both convs that write the residual stream
    mutator, model, original = build("BNScaleMutableChannelUnit", x)
    res = mutator.unit("res.0_(0, 24)_24")
    mutator.set_choices({res.name: 0.25})
    assert kept_positions(res) == top(original.res[1].weight.detach().abs().double(), 6)
    # the residual unit has two batch norms: |gamma| of both, summed
    stem = mutator.unit("stem.0_(0, 16)_16")
    mutator.set_choices({stem.name: 0.5})
    gammas = original.stem[1].weight.abs() + original.res[4].weight.abs()
    assert kept_positions(stem) == top(gammas.detach().double(), 8, 4)


def layer_outputs(model: nn.Module, layers: list[str], x: torch.Tensor) -> tuple[torch.Tensor, list]:
    outputs, modules = [], dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, a, out: outputs.append(out)) for n in layers]
    logits = model(x)
    for hook in hooks:
        hook.remove()
    return logits, outputs


def test_activation_and_taylor_follow_their_definitions(x):
    layers = ["res.0", "res.1"]  # the layers that write the unit's channels: a conv and its norm
    mutator, _, original = build("ActivationMutableChannelUnit", x)
    expected = torch.zeros(24, dtype=torch.float64)
    for batch in (x[:2], x[2:]):
        with torch.no_grad():
            _, outs = layer_outputs(original, layers, batch)
        expected += sum(o.abs().mean((0, 2, 3)).double() for o in outs) / 2
    unit = mutator.unit("res.0_(0, 24)_24")
    assert torch.allclose(unit.importance(), expected)
    mutator, _, original = build("TaylorMutableChannelUnit", x)
    expected = torch.zeros(24, dtype=torch.float64)
    for batch in (x[:2], x[2:]):
        logits, outs = layer_outputs(original, layers, batch)
        grads = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(1)), outs)
        expected += sum((o * g).sum((0, 2, 3)).abs().double() for o, g in zip(outs, grads)) / 2
    unit = mutator.unit("res.0_(0, 24)_24")
    assert torch.allclose(unit.importance(), expected, rtol=1e-4)
    assert all(p.grad is None for p in mutator.model.parameters())  # calibration leaves no gradients


def test_taylor_with_targets_uses_them(x):
    mutator, _, original = build("TaylorMutableChannelUnit", x)
    targets = torch.tensor([3, 1, 4, 1])
    calibrate(mutator, [(x, targets)])
    logits, outs = layer_outputs(original, ["left"], x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets), outs)
    expected = (outs[0] * grad).sum((0, 2, 3)).abs().double()
    assert torch.allclose(mutator.unit("left_(0, 8)_8").importance(), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="fit neither class indices nor the output's shape"):
        calibrate(mutator, [(x, torch.randn(4, 3))])


def test_rankings_are_computed_once_and_again_when_the_weights_change(x, monkeypatch):
    calls = []
    scores = criteria.l2_scores
    monkeypatch.setattr(criteria, "l2_scores", lambda unit: calls.append(unit.name) or scores(unit))
    mutator, model, _ = build("L2MutableChannelUnit", x)
    unit = mutator.unit("stem.0_(0, 16)_16")
    for i in range(20):
        mutator.set_choices({unit.name: (0.25, 0.5, 0.75)[i % 3]})
    assert calls == [unit.name]
    before = kept_positions(unit)
    weight = dict(model.named_parameters())["stem.0.weight"]
    with torch.no_grad():  # an in-place write (an optimiser step): the version counter moves
        weight[sorted(before)] *= 0.01
    mutator.set_choices({unit.name: 0.5})
    assert len(calls) == 2 and kept_positions(unit).isdisjoint(before)
    model.stem[0].weight = nn.Parameter(torch.randn(16, 3, 3, 3))  # a new tensor
    mutator.set_choices({unit.name: 0.25})
    assert len(calls) == 3
    unit.refresh_importance()
    mutator.set_choices({unit.name: 0.5})
    assert len(calls) == 4


def test_data_criteria_score_again_from_their_data_when_the_weights_change(x):
    mutator, model, _ = build("ActivationMutableChannelUnit", x)
    unit = mutator.unit("stem.0_(0, 16)_16")
    first = unit.importance().clone()
    with torch.no_grad():
        dict(model.named_parameters())["stem.0.weight"].mul_(2)
    assert not torch.allclose(unit.importance(), first)


def test_data_criteria_without_calibration_refuse_to_prune(x):
    mutator = ChannelMutator(channel_unit_cfg="TaylorMutableChannelUnit")
    mutator.prepare_from_supernet(make_nontrivial(ResidualConcatNet()).eval(), example_inputs=x[:1])
    mutator.set_max_choices()  # full needs no ranking
    with pytest.raises(ValueError, match=r"unit 'stem.0_\(0, 16\)_16' \(TaylorMutableChannelUnit\) needs calibration"):
        mutator.set_choices({"stem.0_(0, 16)_16": 0.5})
    assert mutator.current_choices == mutator.max_choices
    with pytest.raises(ValueError, match="holds no batch"):
        calibrate(mutator, [])


def test_a_unit_without_batch_norm_has_no_bn_score_and_says_so(x):
    mutator, _, _ = build("BNScaleMutableChannelUnit", x)
    hidden = mutator.unit("head.0_(0, 32)_32")
    with pytest.warns(UserWarning, match=r"head.0_\(0, 32\)_32.*no batch norm normalises its channels"):
        mutator.set_choices({hidden.name: 0.5})
    assert kept_positions(hidden) == set(range(16))


def test_random_is_seeded_and_configs_round_trip(x):
    a, _, _ = build("RandomMutableChannelUnit", x, seed=3)
    b, _, _ = build("RandomMutableChannelUnit", x, seed=3)
    c, _, _ = build("RandomMutableChannelUnit", x, seed=4)
    for m in (a, b, c):
        m.set_choices({"res.0_(0, 24)_24": 0.5})
    masks = [m.unit("res.0_(0, 24)_24").current_mask for m in (a, b, c)]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    cfg = a.config_template(with_unit_init_args=True)
    assert cfg["channel_unit_cfg"]["units"]["res.0_(0, 24)_24"]["init_args"]["seed"] == 3
    rebuilt = MODELS.build(cfg)
    rebuilt.prepare_from_supernet(make_nontrivial(ResidualConcatNet()).eval(), example_inputs=x[:1])
    assert isinstance(rebuilt.unit("res.0_(0, 24)_24"), RandomMutableChannelUnit)
    for name in ("L2MutableChannelUnit", "BNScaleMutableChannelUnit", "TaylorMutableChannelUnit",
                 "ActivationMutableChannelUnit"):
        assert MODELS.get(name) in (L2MutableChannelUnit, BNScaleMutableChannelUnit, TaylorMutableChannelUnit,
                                    ActivationMutableChannelUnit)


def test_a_copy_keeps_its_ranking_and_scans_agree(x, one_thread):
    """(One thread here too: process workers score on one (quality/executors.py), and a float sum
    over two threads can differ in the last digits.)"""
    mutator, model, _ = build("TaylorMutableChannelUnit", x)
    units = {u.name: u for u in mutator.mutable_units}
    mutator.set_choices({name: 0.5 for name in units})
    copied_model, copied = pickle.loads(pickle.dumps((model, units)))
    for name, unit in copied.items():
        unit.set_valid_choice(0.5)  # the copy has no calibration data, and needs none
        assert torch.equal(unit.current_mask, units[name].current_mask)
    mutator.set_max_choices()

    def score(m):
        with torch.no_grad():
            return -float(m(x).pow(2).mean())

    serial = sensitivity_scan(mutator, score, [0.5], progress=False)
    with ThreadPoolExecutor(2) as pool:
        assert sensitivity_scan(mutator, score, [0.5], executor=pool, progress=False) == serial
    with ProcessPoolExecutor(2) as pool:  # the calibration data stays here: the copies keep their rankings
        assert sensitivity_scan(mutator, score, [0.5], executor=pool, progress=False) == serial


def test_the_explorer_calibrates_data_units(x):
    model = make_nontrivial(ResidualConcatNet()).eval()
    explorer = PruningExplorer(model, x[:1], calibration=x, channel_unit_cfg="ActivationMutableChannelUnit")
    name = "res.0_(0, 24)_24"
    explorer.sliders[name].value = 0.5
    assert explorer.mutator.current_choices[name] == 0.5
    assert isinstance(explorer.mutator.unit(name), ActivationMutableChannelUnit)
    assert bool(explorer.mutator.unit(name).importance().any())
    assert isinstance(explorer.mutator.unit("left_(0, 8)_8"), ActivationMutableChannelUnit)
    assert TaylorMutableChannelUnit.criterion == "taylor"
