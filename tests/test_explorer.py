"""PruningExplorer driven without a front end: sliders, counters, graph colours, whole-model
controls, budget, undo/redo and plans."""
from __future__ import annotations

import json
import time

import ipywidgets as widgets
import pytest
import torch
import torchvision
from torch import nn

import razor_widgets
from razor_widgets import ChannelMutator, PlanError, PruningExplorer, fit_budget
from razor_widgets.widgets.counters import format_counts
from razor_widgets.widgets.debounce import Debouncer
from razor_widgets.widgets.graph_view import NOT_PRUNABLE, node_colour

from helpers import Small, prepare

UNIT = "layer1.0.conv1_(0, 64)_64"


def assert_counters_follow(ex):
    res = ex.mutator.resources()
    assert ex.counters.text == format_counts(res)
    assert f"{res.params:,}" in ex.counters.widget.value and f"{res.flops:,}" in ex.counters.widget.value


def test_flat_import_and_display(ex):
    assert razor_widgets.PruningExplorer is PruningExplorer and "PruningExplorer" in razor_widgets.__all__
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_one_slider_per_unit_in_its_mode(ex):
    assert set(ex.sliders) == {u.name for u in ex.mutator.mutable_units}
    slider = ex.sliders[UNIT]
    assert isinstance(slider, widgets.FloatSlider) and slider.continuous_update
    assert slider.description == "channels of layer1.0.conv1 · 3 layers"
    assert UNIT in slider.tooltip and "64 channels" in slider.tooltip
    assert set(ex.panel.sections) == {"conv1", "layer1", "layer2", "layer3", "layer4"}


def test_slider_moves_choice_counters_and_colours(ex):
    ex.sliders[UNIT].value = 0.5
    assert ex.mutator.current_choices[UNIT] == 0.5
    assert ex.panel.kept[UNIT].value == "32/64"
    assert_counters_follow(ex)
    assert ex.counters.resources.params < ex.counters.resources.original_params
    colours = ex.graph_view.colours
    assert colours["layer1.0.conv1"] == colours["layer1.0.bn1"] == node_colour(0.5, True)
    assert colours["layer1.1.conv1"] == node_colour(1.0, True)
    assert colours["fc"] == colours["input"] == NOT_PRUNABLE
    ex.sliders[UNIT].value = 0.25
    assert ex.mutator.current_choices[UNIT] == 0.25
    assert ex.graph_view.colours["layer1.0.conv1"] == node_colour(0.25, True)
    assert_counters_follow(ex)


def test_counters_update_on_every_event_redraws_debounced(explorer, monkeypatch):
    explorer.reset()
    monkeypatch.setattr(explorer._redraw, "delay", 60.0)
    import razor_widgets.analysis.model_graph as model_graph
    monkeypatch.setattr(model_graph, "layered_layout", lambda *a: pytest.fail("layout recomputed"))
    runs = explorer._redraw.runs
    for value in (0.9, 0.8, 0.7, 0.6, 0.5):
        explorer.sliders[UNIT].value = value
        assert explorer.mutator.current_choices[UNIT] == pytest.approx(value, abs=1 / 64)
        assert_counters_follow(explorer)
    assert explorer._redraw.runs == runs and explorer._redraw.pending
    stale = explorer.graph_view.colours["layer1.0.conv1"]
    explorer.flush()
    assert explorer._redraw.runs == runs + 1 and not explorer._redraw.pending
    assert explorer.graph_view.colours["layer1.0.conv1"] == node_colour(0.5, True) != stale
    explorer._redraw.delay = 0
    explorer.reset()


def test_debouncer_runs_once_after_a_burst():
    calls = []
    debouncer = Debouncer(lambda: calls.append(time.monotonic()), delay=0.05)
    for _ in range(20):
        debouncer.schedule()
    assert calls == [] and debouncer.pending
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(calls) == 1 and not debouncer.pending


def test_global_slider_sets_every_unit(ex):
    ex.global_slider.value = 0.5
    assert all(u.current_choice == 0.5 for u in ex.mutator.mutable_units)
    assert all(s.value == 0.5 for s in ex.sliders.values())
    assert_counters_follow(ex)
    assert ex.graph_view.colours["layer3.0.conv2"] == node_colour(0.5, True)
    ex.reset()
    assert ex.mutator.current_choices == ex.mutator.max_choices and ex.global_slider.value == 1.0
    assert_counters_follow(ex)


def test_bad_slider_value_changes_nothing():
    mutator, _ = prepare(Small(), torch.randn(1, 3, 8, 8), choice_mode="number", divisor=4)
    ex = PruningExplorer(mutator, redraw_delay=0)
    slider = ex.sliders["conv0_(0, 16)_16"]
    assert isinstance(slider, widgets.IntSlider) and (slider.min, slider.max, slider.step) == (4, 16, 4)
    slider.value = 8
    before = mutator.current_choices
    assert before["conv0_(0, 16)_16"] == 8
    slider.value = 10  # not a multiple of the divisor
    assert mutator.current_choices == before and slider.value == 8
    assert "not a valid choice" in ex.status.value
    assert_counters_follow(ex)


def test_random_and_undo_redo(ex):
    start = ex.mutator.current_choices
    for value in (0.9, 0.7, 0.5):  # one drag: one step
        ex.sliders[UNIT].value = value
    dragged = ex.mutator.current_choices
    sampled = ex.sample(seed=3)
    assert ex.mutator.current_choices == {**dragged, **sampled} != dragged  # blocks stay as they were
    assert [s.value for s in ex.sliders.values()] == list(sampled.values())
    ex.undo()
    assert ex.mutator.current_choices == dragged and ex.sliders[UNIT].value == 0.5
    assert_counters_follow(ex)
    ex.undo()
    assert ex.mutator.current_choices == start and ex.buttons["undo"].disabled
    ex.redo()
    assert ex.mutator.current_choices == dragged and not ex.buttons["redo"].disabled
    ex.global_slider.value = 0.75  # a new action drops what could be redone
    assert not ex.history.can_redo and ex.buttons["redo"].disabled
    with pytest.raises(IndexError):
        ex.redo()


@pytest.mark.parametrize("metric", ["MACs", "Params"])
@pytest.mark.parametrize("mode", ["uniform", "by L1 importance"])
def test_budget_control(ex, metric, mode):
    fit = ex.apply_budget(40, metric, mode)
    res = ex.mutator.resources()
    attr = "macs" if metric == "MACs" else "params"
    assert fit.met and fit.resources == res == ex.mutator.resources(choices=fit.choices)
    assert 0.36 <= getattr(res, attr) / getattr(res, f"original_{attr}") <= 0.40
    assert_counters_follow(ex)
    assert "met" in ex.budget.result.value
    if mode == "uniform":
        assert len(set(fit.choices.values())) == 1  # the same fraction for every unit
    else:
        assert len(set(fit.choices.values())) > 3
    ex.undo()
    assert ex.mutator.current_choices == ex.mutator.max_choices


def test_budget_out_of_reach_and_bad_input(ex):
    fit = fit_budget(ex.mutator, 0.001)
    assert not fit.met and fit.choices == ex.mutator.min_choices
    assert ex.mutator.current_choices == ex.mutator.max_choices  # a search changes nothing
    for bad in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="keep"):
            fit_budget(ex.mutator, bad)
    with pytest.raises(ValueError, match="metric"):
        fit_budget(ex.mutator, 0.5, metric="joules")


def test_plans_round_trip(ex, tmp_path):
    ex.sample(seed=1)
    plan = ex.mutator.current_choices
    ex.save_choices(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text()) == plan
    ex.reset()
    ex.load_choices(tmp_path / "plan.json")
    assert ex.mutator.current_choices == plan
    assert {n: s.value for n, s in ex.sliders.items()} == {n: c for n, c in plan.items() if n in ex.sliders}
    blocks = {n: c for n, c in plan.items() if n.startswith("block:")}
    assert {n: t.value for n, t in ex.blocks.toggles.items()} == blocks
    assert_counters_follow(ex)
    ex.undo()
    assert ex.mutator.current_choices == ex.mutator.max_choices


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[0.5]", "JSON object"),
    ('{"nope_(0, 1)_1": 0.5}', "does not have"),
    ('{"fc_(0, 1000)_1000": 0.5}', "not prunable"),
    ("{}", "leaves out"),
    ("BAD_VALUE", "outside"),
    ("NAN_VALUE", "NaN"),
])
def test_bad_plans_change_nothing(ex, tmp_path, content, message):
    ex.global_slider.value = 0.5
    before = ex.mutator.current_choices
    if content == "BAD_VALUE":
        content = json.dumps({**before, UNIT: 1.5})
    elif content == "NAN_VALUE":
        content = json.dumps(before)[:-1] + ', "x": NaN}'
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(PlanError, match=message):
        ex.load_choices(path)
    assert ex.mutator.current_choices == before
    assert message in ex.status.value or message in ex.status.value.replace("&#x27;", "'")


def test_filter_box_and_fixed_units(ex):
    ex.panel.filter.value = "layer2"
    shown = [n for n, row in ex.panel.rows.items() if row.layout.display != "none"]
    assert shown and all("layer2" in n for n in shown)
    assert ex.panel.sections["layer3"].layout.display == "none"
    assert ex.panel.sections["layer2"].layout.display is None
    ex.panel.filter.value = ""
    assert all(row.layout.display is None for row in ex.panel.rows.values())
    fixed = ex.panel.fixed.children[0].value
    assert "fc_(0, 1000)_1000" in fixed and "conv1_(0, 3)_3" in fixed and "model input" in fixed


def test_select_unit_highlights_its_layers(ex):
    nodes = ex.select_unit(UNIT)
    layers = {c.name for c in ex.mutator.unit(UNIT).channels}
    assert {ex.mutator.graph.nodes[n]["layer"] for n in nodes} == layers
    assert ex.graph_view.highlighted == UNIT and ex.unit_selector.value == UNIT
    ex.select_unit(None)
    assert ex.graph_view.highlighted_nodes == []
    with pytest.raises(KeyError):
        ex.select_unit("fc_(0, 1000)_1000")


def test_plots_follow_the_choices(ex):
    ex.sliders[UNIT].value = 0.5
    ex.tabs.selected_index = 1
    names, kept, pruned = ex.channel_plot.data()
    assert kept[names.index(UNIT)] == 32 and pruned[names.index(UNIT)] == 32
    first = bytes(ex.channel_plot.image.value)
    assert first.startswith(b"\x89PNG")
    ex.sliders[UNIT].value = 0.25  # the visible plot redraws, the hidden ones wait
    assert bytes(ex.channel_plot.image.value) != first and ex._stale == [True, False, True]
    ex.tabs.selected_index = 2
    assert bytes(ex.layer_plot.image.value).startswith(b"\x89PNG") and ex._stale == [True, False, False]
    layers = ex.layer_plot.data()
    assert layers["layer1.0.conv1"].params < layers["layer1.0.conv1"].original_params
    ex.tabs.selected_index = 0


def test_export_is_the_pruned_plain_model(ex):
    ex.global_slider.value = 0.5
    small = ex.export()
    assert sum(p.numel() for p in small.parameters()) == ex.mutator.resources().params
    assert small.layer1[0].conv1.out_channels == 32 and type(small.layer1[0].conv1) is nn.Conv2d


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module or a prepared ChannelMutator"):
        PruningExplorer("resnet18")
    with pytest.raises(ValueError, match="not prepared"):
        PruningExplorer(ChannelMutator())


def test_one_shot_units_get_candidate_sliders():
    mutator, _ = prepare(Small(), torch.randn(1, 3, 8, 8), unit="OneShotMutableChannelUnit",
                         candidate_choices=[0.25, 0.5, 1.0])
    ex = PruningExplorer(mutator, redraw_delay=0)
    slider = ex.sliders["conv0_(0, 16)_16"]
    assert isinstance(slider, widgets.SelectionSlider) and list(slider.options) == [0.25, 0.5, 1.0]
    slider.value = 0.5
    assert mutator.current_choices["conv0_(0, 16)_16"] == 0.5
    ex.global_slider.value = 0.3
    assert set(mutator.current_choices.values()) == {0.25}
    assert_counters_follow(ex)


def test_head_units_say_they_count_heads(one_thread):
    """A ViT's stream unit counts whole heads: the label and tooltip say how big a head is."""
    vit = torchvision.models.VisionTransformer(32, 8, 2, 4, 32, 48, num_classes=10)
    ex = PruningExplorer(vit, torch.randn(1, 3, 32, 32), redraw_delay=0)
    (name,) = [n for n, u in ex.panel.units.items() if any(c.name == "conv_proj" for c in u.output_related)]
    ex.sliders[name].value = 0.5
    assert ex.panel.kept[name].value == "2/4 ×8"
    assert "4 blocks (heads) of 8 channels" in ex.sliders[name].tooltip
    assert_counters_follow(ex)
