"""PruningExplorer on models with searchable ops (OneShotMutableOP): one dropdown per search
group, counters equal to the count of export(), undo/redo and plans with module choices."""
from __future__ import annotations

import copy
import json
import warnings

import ipywidgets as widgets
import pytest
import torch
from torch import nn

from razor_widgets import (
    ChannelMutator,
    ModuleGroup,
    OneShotMutableOP,
    PlanError,
    PruningExplorer,
    SearchableShuffleNetV2,
    count_resources,
)
from razor_widgets.models import STAGE_MUTABLE
from razor_widgets.widgets.counters import format_counts
from razor_widgets.widgets.module_choices import SUPERNET

CANDIDATES = dict(conv1x1=dict(type='Conv2d', kernel_size=1),
                  conv3x3=dict(type='Conv2d', kernel_size=3, padding=1),
                  conv5x5=dict(type='Conv2d', kernel_size=5, padding=2, bias=False))


def one_shot_op(alias: str | None = None) -> OneShotMutableOP:
    return OneShotMutableOP(CANDIDATES, module_kwargs=dict(in_channels=8, out_channels=8), alias=alias)


class Net(nn.Module):
    """stem -> three searchable ops (two sharing an alias) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = one_shot_op('shared')
        self.block2 = one_shot_op('shared')
        self.block3 = one_shot_op()
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.block3(torch.relu(self.block2(torch.relu(self.block1(self.stem(x))))))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def net_ex(x):
    torch.manual_seed(0)
    net = Net().eval()
    return net, PruningExplorer(net, x, redraw_delay=0)


@pytest.fixture(scope="module")
def shuffle(one_thread):
    torch.manual_seed(0)
    net = SearchableShuffleNetV2([[16, 2, STAGE_MUTABLE], [32, 1, STAGE_MUTABLE]], out_indices=(1, 2)).eval()
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return net, image, PruningExplorer(net, image, redraw_delay=0)


def assert_counts_are_the_export(ex, x):
    res = ex.resources()
    assert ex.counters.text == format_counts(res)
    exported = count_resources(ex.export(), x)
    assert (res.params, res.macs, res.flops) == (exported.params, exported.macs, exported.flops)


def assert_export_computes_the_model(ex, net, x):
    with torch.no_grad():
        expected, got = net(x), ex.export()(x)
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,), strict=True):
        torch.testing.assert_close(a, b)


# -- the dropdowns ------------------------------------------------------------------------------
def test_one_dropdown_per_search_group(net_ex, x):
    net, ex = net_ex
    mm = ex.module_mutator
    assert set(ex.dropdowns) == set(mm.search_groups) == {0, 1}
    assert [d.description for d in ex.dropdowns.values()] == ['shared', 'block3']
    assert all(isinstance(d, widgets.Dropdown) for d in ex.dropdowns.values())
    assert 'block1, block2' in ex.dropdowns[0].tooltip
    assert [v for _, v in ex.dropdowns[0].options] == ['conv1x1', 'conv3x3', 'conv5x5', None]
    assert ex.dropdowns[0].value is None and ex.dropdowns[0].options[-1][0].startswith(SUPERNET)
    # the labels' figures are those the module mutator measures with FlopCounterMode (two mutables)
    mm.measure(x)
    per = mm.candidate_resources(0)
    assert per['conv5x5'].params == 2 * (8 * 8 * 25) and per['conv3x3'].params == 2 * (8 * 8 * 9 + 8)
    assert per == ex.path_counter.candidate_resources(0)
    labels = dict((v, label) for label, v in ex.dropdowns[0].options)
    assert labels['conv5x5'] == 'conv5x5 (3.2 k params, 410 k MACs)' == (
        f"conv5x5 ({per['conv5x5'].params / 1e3:.3g} k params, {per['conv5x5'].macs / 1e3:.3g} k MACs)")
    assert "Searchable ops (2 search groups)" in ex.extra.children[0].titles


def test_supernet_counts_before_any_choice(net_ex, x):
    net, ex = net_ex
    res = ex.resources()
    with torch.no_grad():
        supernet = count_resources(net, x)  # every candidate runs, as the trace did
    assert (res.params, res.macs) == (supernet.params, supernet.macs) == (res.original_params, res.original_macs)
    with pytest.raises(ValueError, match="choose a candidate for every searchable op.*shared, block3"):
        ex.export()
    ex.plan_buttons["export"].click()
    assert "choose a candidate" in ex.status.value


def test_dropdown_is_the_choice_and_counters_follow(net_ex, x):
    net, ex = net_ex
    ex.dropdowns[0].value = 'conv5x5'
    ex.dropdowns[1].value = 'conv1x1'
    assert ex.module_mutator.current_choices == {0: 'conv5x5', 1: 'conv1x1'}
    assert net.block1.current_choice == net.block2.current_choice == 'conv5x5'
    assert_counts_are_the_export(ex, x)
    small = ex.export()
    assert not any(isinstance(m, OneShotMutableOP) for m in small.modules())
    assert small.block1.kernel_size == (5, 5) and small.block3.kernel_size == (1, 1)
    assert_export_computes_the_model(ex, net, x)
    # at full width the two engines agree: the module mutator's own count of the chosen ops
    ex.module_mutator.measure(x)
    mine, theirs = ex.resources(), ex.module_mutator.resources()
    assert (mine.params, mine.macs) == (theirs.params, theirs.macs)
    assert (mine.original_params, mine.original_macs) == (mine.params, mine.macs)  # the chosen ops, unpruned
    before = mine
    ex.dropdowns[1].value = 'conv5x5'
    after = ex.resources()
    assert after.macs - before.macs == 2 * 8 * 8 * 8 * 8 * (25 - 1)  # batch 2, 8x8, 8 -> 8 channels
    assert_counts_are_the_export(ex, x)


def test_channel_pruning_with_chosen_candidates(net_ex, x):
    net, ex = net_ex
    ex.set_module_choices({0: 'conv3x3', 1: 'conv5x5'})
    ex.global_slider.value = 0.5
    res = ex.resources()
    assert res.params < res.original_params and res.macs < res.original_macs
    assert_counts_are_the_export(ex, x)
    assert_export_computes_the_model(ex, net, x)
    assert ex.export().block3.out_channels == 4
    ex.dropdowns[1].value = 'conv1x1'  # another candidate of a pruned path: still exact
    assert_counts_are_the_export(ex, x)
    assert_export_computes_the_model(ex, net, x)


def test_bad_module_choices_change_nothing(net_ex, x):
    net, ex = net_ex
    ex.set_module_choices({0: 'conv3x3', 1: 'conv3x3'})
    ex.global_slider.value = 0.5
    before, text, steps = ex._all_choices(), ex.counters.text, len(ex.history)
    with pytest.raises(ValueError, match="'conv7x7' is not a candidate"):
        ex.set_module_choices({0: 'conv1x1', 1: 'conv7x7'})
    with pytest.raises(KeyError, match="no search group 5"):
        ex.set_module_choices({5: 'conv1x1'})
    with pytest.raises(Exception, match="Invalid selection"):  # a dropdown only takes its options
        ex.dropdowns[0].value = 'conv7x7'
    assert ex._all_choices() == before and ex.counters.text == text and len(ex.history) == steps
    # a fixed op: its dropdown refuses "every candidate", says why, and springs back
    net.block3.fix_chosen()
    ex.dropdowns[1].value = None
    assert "fixed" in ex.status.value and ex.dropdowns[1].value == 'conv3x3'
    assert ex._all_choices() == before and ex.counters.text == text
    assert_counts_are_the_export(ex, x)


def test_undo_redo_cover_dropdowns_and_sliders(net_ex):
    net, ex = net_ex
    start = ex._all_choices()
    assert start[ModuleGroup(0)] is None and ModuleGroup(0) != 0
    unit = next(iter(ex.sliders))
    ex.dropdowns[0].value = 'conv1x1'
    for value in (0.9, 0.75, 0.5):  # one drag: one step
        ex.sliders[unit].value = value
    ex.dropdowns[1].value = 'conv3x3'
    ex.undo()
    assert ex.module_mutator.current_choices == {0: 'conv1x1', 1: None} and ex.dropdowns[1].value is None
    assert ex.mutator.current_choices[unit] == 0.5
    ex.undo()
    assert ex.mutator.current_choices[unit] == 1.0 and ex.sliders[unit].value == 1.0
    ex.undo()
    assert ex._all_choices() == start and ex.dropdowns[0].value is None and ex.buttons["undo"].disabled
    ex.redo()
    assert ex.dropdowns[0].value == 'conv1x1' and ex.module_mutator.current_choices[0] == 'conv1x1'
    assert ex.counters.text == format_counts(ex.resources())
    ex.sample(seed=0)  # random: every unit and every search group, as one step
    sampled = ex._all_choices()
    assert all(v is not None for k, v in sampled.items() if isinstance(k, ModuleGroup))
    ex.undo()
    assert ex.dropdowns[0].value == 'conv1x1' and ex.dropdowns[1].value is None
    ex.redo()
    assert ex._all_choices() == sampled


# -- plans --------------------------------------------------------------------------------------
def test_plans_carry_module_choices(net_ex, x, tmp_path):
    net, ex = net_ex
    ex.set_module_choices({0: 'conv5x5', 1: 'conv1x1'})
    ex.global_slider.value = 0.5
    path = tmp_path / "plan.json"
    ex.save_choices(path)
    plan = json.loads(path.read_text())
    assert {k: plan[k] for k in ('block1', 'block2', 'block3')} == dict(
        block1='conv5x5', block2='conv5x5', block3='conv1x1')
    assert {k: v for k, v in plan.items() if k not in net._modules} == {
        str(k): v for k, v in ex.mutator.current_choices.items()}
    saved, counts = ex._all_choices(), ex.counters.text
    ex.reset()
    ex.set_module_choices({0: None, 1: 'conv3x3'})
    ex.load_choices(path)
    assert ex._all_choices() == saved and ex.counters.text == counts
    assert ex.dropdowns[0].value == 'conv5x5' and ex.dropdowns[1].value == 'conv1x1'
    assert_counts_are_the_export(ex, x)
    ex.undo()  # loading is one step
    assert ex.module_mutator.current_choices == {0: None, 1: 'conv3x3'}
    # MMRazor's subnet form {"chosen": name} loads too
    path.write_text(json.dumps({**plan, 'block3': {'chosen': 'conv5x5'}}))
    ex.load_choices(path)
    assert ex.module_mutator.current_choices == {0: 'conv5x5', 1: 'conv5x5'}


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop('block3'), "leaves out the searchable op 'block3'"),
    (lambda p: p.update(block2='conv1x1'), r"share one choice .* gives \['conv5x5', 'conv1x1'\]"),
    (lambda p: p.update(block3='conv7x7'), "'conv7x7' is not a candidate"),
    (lambda p: p.update(block3=3), "a candidate is a name"),
    (lambda p: p.update(block3={'name': 'conv1x1'}), "needs a 'chosen' or 'choice' key"),
    (lambda p: p.update({next(k for k in p if k.startswith('stem')): 1.5}), "outside"),
    (lambda p: p.update(nope=0.5), "does not have"),
])
def test_bad_plans_change_nothing(net_ex, tmp_path, change, message):
    net, ex = net_ex
    ex.set_module_choices({0: 'conv5x5', 1: 'conv1x1'})
    ex.global_slider.value = 0.5
    path = tmp_path / "plan.json"
    ex.save_choices(path)
    plan = json.loads(path.read_text())
    change(plan)
    path.write_text(json.dumps(plan))
    ex.set_module_choices({0: 'conv3x3', 1: 'conv3x3'})
    before, steps = ex._all_choices(), len(ex.history)
    with pytest.raises(PlanError, match=message):
        ex.load_choices(path)
    assert ex._all_choices() == before and len(ex.history) == steps
    assert "does not fit" in ex.status.value or "outside" in ex.status.value


# -- budget, construction -----------------------------------------------------------------------
def test_budget_counts_the_chosen_candidates(net_ex, x):
    net, ex = net_ex
    ex.set_module_choices({0: 'conv5x5', 1: 'conv5x5'})
    fit = ex.apply_budget(50, "MACs", "uniform")
    res = ex.resources()
    assert fit.met and fit.resources == res and res.macs <= 0.5 * res.original_macs
    assert res.original_macs == count_resources(ex.module_mutator.to_static(), x).macs  # chosen ops, full width
    assert_counts_are_the_export(ex, x)


def test_choices_made_before_are_kept_and_every_candidate_is_traced(x):
    net = Net().eval()
    net.block3.current_choice = 'conv5x5'
    ex = PruningExplorer(net, x, redraw_delay=0)
    assert ex.dropdowns[1].value == 'conv5x5' and net.block3.current_choice == 'conv5x5'
    layers = {data["layer"] for _, data in ex.mutator.graph.nodes(data=True)}
    assert {f"block3._candidates.{c}" for c in CANDIDATES} <= layers


def test_a_prepared_channel_mutator_of_a_searchable_model_is_refused(x):
    net = Net().eval()
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(net, example_inputs=x)
    with pytest.raises(ValueError, match="pass the model itself"):
        PruningExplorer(mutator)


def test_plain_models_have_no_dropdowns(x):
    ex = PruningExplorer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)), x,
                         redraw_delay=0)
    assert ex.module_mutator is None and ex.dropdowns == {} and ex.extra.children == ()
    assert ex._all_choices() == ex.mutator.current_choices and ex.resources() == ex.mutator.resources()
    with pytest.raises(ValueError, match="no searchable ops"):
        ex.set_module_choices({0: 'conv1x1'})


# -- the searchable ShuffleNetV2 ------------------------------------------------------------------
def test_shufflenet_dropdowns_counters_and_export(shuffle):
    net, image, ex = shuffle
    assert len(ex.dropdowns) == 3 and [v for _, v in ex.dropdowns[0].options][:-1] == list(STAGE_MUTABLE[
        'candidates'])
    units_in = {name: {c.name for c in ex.mutator.unit(name).channels} for name in ex.sliders}
    for seed in range(3):
        ex.sample(seed=seed)
        assert_counts_are_the_export(ex, image)
        assert_export_computes_the_model(ex, net, image)
        chosen = ex.module_mutator.current_choices
        for name, slider in ex.sliders.items():  # units only in candidates not chosen: greyed out
            inside_unchosen = all(
                any(layer.startswith(f"layers.{i}.{j}._candidates.{c}.") for (i, j), g in
                    {(0, 0): 0, (0, 1): 1, (1, 0): 2}.items() for c in STAGE_MUTABLE['candidates']
                    if c != chosen[g]) for layer in units_in[name])
            assert slider.disabled == inside_unchosen
        assert any(s.disabled for s in ex.sliders.values()) and not all(s.disabled for s in ex.sliders.values())
    ex.dropdowns[2].value = 'shuffle_7x7'
    assert ex.module_mutator.current_choices[2] == 'shuffle_7x7'
    assert_counts_are_the_export(ex, image)
    small = ex.export()
    assert type(small.layers[1][0]).__name__ == 'ShuffleBlock' and small.layers[1][0].kernel_size == 7
    assert sum(p.numel() for p in small.parameters()) == ex.resources().params
    ex.reset()
    assert_counts_are_the_export(ex, image)
    assert copy.deepcopy(ex.module_mutator.current_choices) == ex.module_mutator.current_choices
