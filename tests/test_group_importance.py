"""Group importance (every slice a unit moves) and the budgets built on it: ``global`` (one
ranking over all units) and ``measured`` (the best measured candidate, never below uniform)."""
from __future__ import annotations

import copy
import random
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import (
    ChannelMutator,
    GroupMagnitudeMutableChannelUnit,
    GroupTaylorMutableChannelUnit,
    calibrate,
    count_resources,
    fit_budget,
)

from helpers import ResidualConcatNet, make_nontrivial, zeroed_model

GROUP_TYPES = ["GroupMagnitudeMutableChannelUnit", "GroupTaylorMutableChannelUnit"]


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
    if unit == "GroupTaylorMutableChannelUnit":
        calibrate(mutator, [x[:2], x[2:]])
    return mutator, model, original


def res_slices(model: nn.Module, tensors: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Every slice of the residual block's hidden unit (24 channels), one row per channel: the
    writer conv's weight and bias, the norm's scale and bias, the reader conv's input slice."""
    t = tensors or {n: p.detach() for n, p in model.named_parameters()}
    return [t["res.0.weight"].reshape(24, -1), t["res.0.bias"].reshape(24, 1), t["res.1.weight"].reshape(24, 1),
            t["res.1.bias"].reshape(24, 1), t["res.3.weight"].transpose(0, 1).reshape(24, -1)]


@pytest.mark.parametrize("unit", GROUP_TYPES)
def test_group_types_export_what_they_mask_with_exact_counts(unit, x):
    mutator, model, original = build(unit, x)
    assert len(mutator.mutable_units) == 5
    for seed in range(3):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static()
        with torch.no_grad():
            masked, exported, oracle = model(x), static(x), zeroed_model(original, mutator)(x)
        assert torch.allclose(masked, exported, atol=1e-5) and torch.allclose(masked, oracle, atol=1e-5)
        live, counted = mutator.resources(), count_resources(static, x[:1])
        assert (live.params, live.macs, live.flops) == (counted.params, counted.macs, counted.flops)
    mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


@pytest.mark.parametrize("p, reduction", [(2, "sum"), (1, "mean"), (2, "max")])
def test_group_magnitude_scores_every_slice_the_unit_moves(x, p, reduction):
    mutator, _, original = build("GroupMagnitudeMutableChannelUnit", x, p=p, reduction=reduction, normalize=None)
    per_slice = torch.stack([s.double().abs().pow(p).sum(1) for s in res_slices(original)])
    expected = {"sum": per_slice.sum(0), "mean": per_slice.mean(0), "max": per_slice.max(0).values}[reduction]
    unit = mutator.unit("res.0_(0, 24)_24")
    assert torch.allclose(unit.importance(), expected)
    mutator.set_choices({unit.name: 0.25})
    kept = set(unit.current_mask.nonzero().flatten().tolist())
    assert kept == set(torch.argsort(-expected, stable=True)[:6].tolist())


def test_group_taylor_is_weight_times_gradient_over_the_same_slices(x):
    mutator, _, original = build("GroupTaylorMutableChannelUnit", x, normalize=None)
    params = dict(original.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in (x[:2], x[2:]):
        logits = original(batch)
        found = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(1)), list(params.values()))
        for n, g in zip(params, found):
            grads[n] += g / 2
    products = {n: (params[n] * grads[n]).detach() for n in params}
    expected = sum(s.double().abs().sum(1) for s in res_slices(original, products))
    assert torch.allclose(mutator.unit("res.0_(0, 24)_24").importance(), expected, rtol=1e-4)
    assert all(p.grad is None for p in mutator.model.parameters())


def test_normalisation_keeps_the_ranking_and_args_round_trip(x):
    plain, _, _ = build("GroupMagnitudeMutableChannelUnit", x, normalize=None)
    for normalize in ("mean", "max", "gaussian"):
        other, _, _ = build("GroupMagnitudeMutableChannelUnit", x, normalize=normalize)
        for a, b in zip(plain.mutable_units, other.mutable_units):
            assert torch.equal(torch.argsort(-a.importance(), stable=True), torch.argsort(-b.importance(), stable=True))
    unit = other.mutable_units[0]
    args = unit.init_args
    assert (args["p"], args["reduction"], args["normalize"]) == (2, "sum", "gaussian")
    for bad in (dict(p=3), dict(reduction="prod"), dict(normalize="lamp")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GroupMagnitudeMutableChannelUnit(8, **bad)
    with pytest.raises(ValueError, match="needs calibration data"):
        GroupTaylorMutableChannelUnit(8).importance()


def test_the_global_budget_ranks_all_units_by_one_threshold(x):
    mutator, _, _ = build("GroupMagnitudeMutableChannelUnit", x, normalize="mean")
    before = dict(mutator.current_choices)
    fit = fit_budget(mutator, 0.5, "macs", mode="global")
    assert fit.met and fit.mode == "global" and mutator.current_choices == before
    assert fit.resources == mutator.resources(choices=fit.choices)
    mutator.set_choices(fit.choices)
    kept, dropped = [], []
    for unit in mutator.mutable_units:
        scores, mask = unit.importance(), unit.current_mask[:unit.base_channels]
        kept += scores[mask].tolist()
        dropped += scores[~mask].tolist()
    # one threshold: up to the rounding of a unit's choice, kept channels outrank dropped ones
    assert sorted(kept)[len(kept) // 10] > sorted(dropped)[-len(dropped) // 10 - 1]
    with pytest.raises(ValueError, match="for mode='measured'"):
        fit_budget(mutator, 0.5, "macs", mode="global", eval_fn=lambda m: 0.0)


def test_the_measured_budget_calibrates_data_units_first(x):
    torch.manual_seed(0)
    model = make_nontrivial(ResidualConcatNet()).eval()
    mutator = ChannelMutator(channel_unit_cfg=dict(type="GroupTaylorMutableChannelUnit", default_args={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x[:1])
    with torch.no_grad():
        reference = model(x)

    def score(m):
        with torch.no_grad():
            return -float((m(x) - reference).pow(2).mean())
    with pytest.raises(ValueError, match="needs calibration data"):
        fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=score, steps=1)
    fit = fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=score, steps=1, calibration=[x[:2], x[2:]])
    assert fit.met and len(fit.candidates) == 3 + len(mutator.mutable_units)
    assert fit.score == max(c.score for c in fit.candidates if c.met)


@pytest.fixture(scope="module")
def digits(one_thread):
    from razor_widgets.models.digits import digits_accuracy, digits_example_inputs, trained_digits_cnn
    mutator = ChannelMutator(channel_unit_cfg=dict(type="GroupMagnitudeMutableChannelUnit", default_args={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(trained_digits_cnn(), example_inputs=digits_example_inputs())
    return mutator, digits_accuracy


def score_of(mutator, eval_fn, choices) -> float:
    before = mutator.current_choices
    mutator.set_choices(choices)
    try:
        return eval_fn(mutator.model)
    finally:
        mutator.set_choices(before)


@pytest.mark.parametrize("keep", [0.2, 0.4, 0.6, 0.8])
def test_the_measured_budget_never_scores_below_uniform(digits, keep):
    mutator, accuracy = digits
    before = dict(mutator.current_choices)
    done = []
    fit = fit_budget(mutator, keep, "macs", mode="measured", eval_fn=accuracy, steps=3,
                     progress=lambda d, total: done.append((d, total)))
    uniform = fit_budget(mutator, keep, "macs", mode="uniform")
    assert mutator.current_choices == before and fit.met and fit.mode == "measured"
    assert fit.score == score_of(mutator, accuracy, fit.choices) >= score_of(mutator, accuracy, uniform.choices)
    assert fit.resources == mutator.resources(choices=fit.choices)
    names = [c.name for c in fit.candidates]
    assert names[:3] == ["uniform", "l1", "global"] and any(n.startswith("step 3") for n in names)
    assert all(c.score == score_of(mutator, accuracy, c.choices) for c in fit.candidates[:3])
    assert done[-1][0] == len(fit.candidates) <= done[0][1] == 3 + 3 * 3  # the stated limit


def test_the_measured_budget_on_threads_equals_the_serial_one(digits):
    mutator, accuracy = digits
    serial = fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=accuracy, steps=2)
    with ThreadPoolExecutor(2) as pool:
        parallel = fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=accuracy, steps=2, executor=pool)
    assert [c.score for c in parallel.candidates] == [c.score for c in serial.candidates]
    assert parallel.choices == serial.choices
    with pytest.raises(ValueError, match="needs eval_fn"):
        fit_budget(mutator, 0.5, "macs", mode="measured")


@pytest.mark.slow
def test_the_measured_budget_on_processes_equals_the_serial_one(digits):
    from concurrent.futures import ProcessPoolExecutor
    mutator, accuracy = digits
    serial = fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=accuracy, steps=2)
    with ProcessPoolExecutor(2) as pool:
        parallel = fit_budget(mutator, 0.5, "macs", mode="measured", eval_fn=accuracy, steps=2, executor=pool)
    assert [c.score for c in parallel.candidates] == [c.score for c in serial.candidates]
    assert parallel.choices == serial.choices


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "vit_b_16"])
def test_group_units_on_torchvision_export_what_they_mask(name):
    import torchvision
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    for unit in GROUP_TYPES:
        model = make_nontrivial(getattr(torchvision.models, name)(weights=None)).eval()
        mutator = ChannelMutator(channel_unit_cfg=dict(type=unit, default_args={}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mutator.prepare_from_supernet(model, example_inputs=x)
        if unit == "GroupTaylorMutableChannelUnit":
            calibrate(mutator, [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))])
        fit = fit_budget(mutator, 0.5, "macs", mode="global")
        assert fit.met
        mutator.set_choices(fit.choices)
        static = mutator.to_static().eval()
        with torch.no_grad():
            expected = model(x)  # within 1e-4 of the output's largest magnitude, as the export check compares
            torch.testing.assert_close(static(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        counted, reference = mutator.resources(), count_resources(static, x)
        assert (counted.params, counted.macs, counted.flops) == (reference.params, reference.macs, reference.flops)
        assert counted.params == sum(p.numel() for p in static.parameters())
