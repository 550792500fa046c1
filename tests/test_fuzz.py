"""Fuzzed choices (hypothesis): any choice vector, extremes included, forwards, exports, matches
the masked model and the zeroing oracle, counts exactly, and full choices restore the model.

Budget in CI (derandomized, so every run draws the same examples): ``PATTERN_EXAMPLES`` per
structural pattern of ``helpers.CASES`` and ``TORCHVISION_EXAMPLES`` per torchvision model of
the engine issue (64x64 inputs). Every strategy includes "every unit at its minimum" and "every
unit at full" as explicit examples.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from razor_widgets import ChannelMutator, ExportError, UncheckedExportWarning, count_resources

from helpers import CASES, make_nontrivial, zeroed_model
from helpers import HAS_LAYER_NORM as PATTERN_LAYER_NORM

PATTERN_EXAMPLES = 15
TORCHVISION_EXAMPLES = 4
TORCHVISION = ["resnet18", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_y_400mf",
               "resnext50_32x4d", "shufflenet_v2_x0_5", "googlenet", "squeezenet1_0", "convnext_tiny"]
LAYER_NORM = PATTERN_LAYER_NORM | {"convnext_tiny"}
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# a unit's choice: its minimum, full, or any ratio in between
CHOICE = st.one_of(st.just("min"), st.just("max"), st.floats(0.0, 1.0, exclude_min=True))
ALL_MIN, ALL_MAX = {"*": "min"}, {"*": "max"}

_prepared: dict[str, tuple] = {}


def prepared(name: str) -> tuple:
    """Prepare each model once per session (L1 units); examples restore full choices."""
    if name not in _prepared:
        torch.manual_seed(0)
        if name in CASES:
            build, shape = CASES[name][0], CASES[name][1]
        else:
            build, shape = (lambda: getattr(torchvision.models, name)(weights=None)), (1, 3, 64, 64)
        model = make_nontrivial(build()).eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        original = copy.deepcopy(model)
        mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mutator.prepare_from_supernet(model, example_inputs=x)
        _prepared[name] = model, original, mutator, x
    return _prepared[name]


def check(name: str, picks: dict) -> None:
    model, original, mutator, x = prepared(name)
    units = mutator.mutable_units
    choices = {}
    for i, unit in enumerate(units):
        pick = picks.get("*", picks.get(i, "max"))
        choices[unit.name] = unit.min_choice if pick == "min" else unit.max_choice if pick == "max" else \
            unit.validate_choice(pick)
    mutator.set_choices(choices)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UncheckedExportWarning)
            try:
                static = mutator.to_static(check=True).eval()
            except ExportError as error:  # the export's own check must never fire on these patterns
                pytest.fail(f"the export check fired: {error}")
        with torch.no_grad():
            masked, exported = model(x), static(x)
            torch.testing.assert_close(exported, masked, rtol=1e-4, atol=1e-5)
            if name not in LAYER_NORM:
                torch.testing.assert_close(zeroed_model(original, mutator)(x), masked, rtol=1e-4, atol=1e-5)
        counted, live = count_resources(static, x), mutator.resources()
        assert (live.params, live.flops) == (counted.params, counted.flops)
        assert live.params == sum(p.numel() for p in static.parameters())
    finally:
        mutator.set_max_choices()
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def picks_for(name: str) -> st.SearchStrategy:
    n = len(prepared(name)[2].mutable_units)
    return st.fixed_dictionaries({i: CHOICE for i in range(n)})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=PATTERN_EXAMPLES, **SETTINGS)
@example(picks=ALL_MIN)
@example(picks=ALL_MAX)
@given(picks=st.data())
def test_fuzzed_patterns(name, picks):
    check(name, picks if isinstance(picks, dict) else picks.draw(picks_for(name)))


@pytest.mark.sweep
@pytest.mark.parametrize("name", TORCHVISION)
@settings(max_examples=TORCHVISION_EXAMPLES, **SETTINGS)
@example(picks=ALL_MIN)
@given(picks=st.data())
def test_fuzzed_torchvision(name, picks):
    check(name, picks if isinstance(picks, dict) else picks.draw(picks_for(name)))
