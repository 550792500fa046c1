"""The explorer's state as a person sees it, driven without a front end: a value the code sets
never comes back as a move (the browser's echo), whole-model actions are one step, nothing
stale stays on the page, the graph's SVG, clicks and tooltips, downloads and uploads."""
from __future__ import annotations

import datetime
import io
import json

import torch
import torchvision

from razor_widgets import PruningExplorer, mmrazor_channel_config, torch_pruning_ratios
from razor_widgets.widgets.counters import format_counts
from razor_widgets.widgets.graph_view import node_colour
from razor_widgets.widgets.whole_model import kept_fraction

from helpers import Small


def echo(ex) -> None:
    """What the browser does after the kernel moved the sliders: send each value back snapped
    to the slider's grid, a rounding away (0.953125 -> 0.9531249999999999)."""
    for slider in [*ex.sliders.values(), ex.global_slider]:
        if isinstance(slider.value, float):
            slider.value = slider.value - 1e-16 if slider.value > slider.min else slider.value + 1e-16


def test_echoes_of_random_are_not_moves_and_one_undo_restores_full(ex):
    full = ex.counters.text
    ex.sample(seed=1)
    randomised = ex._all_choices()
    echo(ex)
    assert len(ex.history) == 2 and ex._all_choices() == randomised
    ex.undo()
    echo(ex)
    assert ex.mutator.current_choices == ex.mutator.max_choices and ex.counters.text == full
    assert ex.history.can_redo and not ex.buttons["redo"].disabled  # the echo did not drop the redo stack
    ex.redo()
    echo(ex)
    assert ex._all_choices() == randomised
    ex.undo()
    assert ex.mutator.current_choices == ex.mutator.max_choices and ex.global_slider.value == 1.0


def test_a_move_back_to_a_value_the_code_set_counts(ex):
    """After the person moves a slider away, returning to the code's value is a move too."""
    ex.sample(seed=2)
    name = next(n for n, s in ex.sliders.items() if s.value < 1.0)
    slider, set_value = ex.sliders[name], ex.sliders[name].value
    slider.value = 1.0
    assert ex.mutator.current_choices[name] == 1.0
    slider.value = set_value
    assert ex.mutator.current_choices[name] == set_value and len(ex.history) == 3


def test_whole_model_actions_are_one_step_each_and_the_global_slider_follows(ex, tmp_path):
    ex.global_slider.value = 0.8
    ex.global_slider.value = 0.6  # one drag
    assert len(ex.history) == 2 and ex.global_slider.value == 0.6
    ex.undo()
    assert ex.global_slider.value == 1.0 and ex.mutator.current_choices == ex.mutator.max_choices
    ex.sample(seed=0)
    assert ex.global_slider.value == round(kept_fraction(ex.mutator.mutable_units), 2) < 1.0
    fit = ex.apply_budget(40, "MACs", "uniform")
    assert fit.met and len(ex.history) == 3 and ex.budget.result.value
    assert ex.global_slider.value == round(kept_fraction(ex.mutator.mutable_units), 2)
    ex.save_choices(tmp_path / "plan.json")
    ex.reset()
    ex.load_choices(tmp_path / "plan.json")
    assert len(ex.history) == 5
    for _ in range(4):
        ex.undo()
    assert ex.mutator.current_choices == ex.mutator.max_choices and not ex.history.can_undo


def test_budget_message_clears_on_a_later_change(ex):
    ex.apply_budget(50, "Params", "uniform")
    assert "% of the original" in ex.budget.result.value
    ex.sliders[next(iter(ex.sliders))].value = 0.5
    assert ex.budget.result.value == ""


def test_what_the_page_shows_first(ex):
    assert ex.unit_selector.label == "(none)" and ex.graph_view.highlighted is None
    assert all(len(title) <= 17 for title in ex.tabs.titles)  # the tab bar cuts longer titles
    labels = {name: s.description for name, s in ex.sliders.items()}
    assert labels["conv1_(0, 64)_64"].endswith(" layers") and "·" in labels["conv1_(0, 64)_64"]
    layers = {c.name for c in ex.mutator.unit("conv1_(0, 64)_64").channels}
    assert labels["conv1_(0, 64)_64"].endswith(f"· {len(layers)} layers")


def test_graph_svg_tooltips_colours_and_highlight(ex):
    ex.sliders["layer1.0.conv1_(0, 64)_64"].value = 0.5
    html = ex.graph_view.html.value
    assert html.count("class='rw-node'") == len(ex.graph_view.nodes)
    assert "data-tip='layer1.0.conv1\ntype: Conv2d\nkept channels: 32/64'" in html
    assert f"data-node='layer1.0.conv1' data-tip='layer1.0.conv1\ntype: Conv2d\nkept channels: 32/64' " \
           f"fill='{node_colour(0.5, True)}'" in html
    assert "font-size='12'" in html and "rw-zoom" in html and "Fit" in html
    nodes = ex.select_unit("layer1.0.conv1_(0, 64)_64")
    assert "layer1.0.conv1" in nodes and ex.graph_view.html.value.count("stroke-width='2.5'") == len(nodes)


def test_a_click_on_a_layer_selects_its_unit_and_opens_its_section(ex):
    ex.panel.sections["layer3"].selected_index = None
    ex.graph_view.clicks.value = "layer3.0.conv1\t1234"  # what the page's click handler writes
    assert ex.unit_selector.value == "layer3.0.conv1_(0, 256)_256"
    assert ex.graph_view.highlighted == "layer3.0.conv1_(0, 256)_256"
    assert ex.panel.sections["layer3"].selected_index == 0 and "layer3.0.conv1" in ex.status.value
    ex.graph_view.clicks.value = "input\t1235"  # a node without a prunable unit says so
    assert "no prunable unit" in ex.status.value
    ex.graph_view.clicks.value = "no such node\t1236"  # ignored


def test_downloads_are_the_plan_and_the_export(ex):
    ex.sample(seed=4)
    files = {f.name: f for f in ex.offer_downloads()}
    assert set(files) == {"plan.json", "resnet_pruned.pt", "resnet_pruned_state_dict.pt", "plan_torch_pruning.json",
                          "plan_mmrazor_config.json"}
    assert json.loads(files["plan_torch_pruning.json"].data) == torch_pruning_ratios(ex.mutator)
    assert json.loads(files["plan_mmrazor_config.json"].data) == json.loads(
        json.dumps(mmrazor_channel_config(ex.mutator)))
    plan = json.loads(files["plan.json"].data)
    tried = plan.pop("#history")  # the plans tried travel with the plan (a loader of choices skips them)
    assert plan == {str(k): v for k, v in ex.mutator.current_choices.items()}
    assert [(e["number"], e["action"], e["plan"]) for e in tried] == [(1, "exported", plan)]
    model = torch.load(io.BytesIO(files["resnet_pruned.pt"].data), weights_only=False)
    assert sum(p.numel() for p in model.parameters()) == ex.resources().params
    state = torch.load(io.BytesIO(files["resnet_pruned_state_dict.pt"].data), weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert ex.plans.downloads.value.count("class='rw-download'") == 5
    ex.sliders[next(iter(ex.sliders))].value = 0.5  # a later change: the links are stale
    assert ex.plans.downloads.value == ""


def uploaded(name: str, content: bytes) -> tuple:
    """A FileUpload value as the browser sends it."""
    return ({"name": name, "type": "application/json", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_upload_applies_a_plan_as_one_step_and_a_bad_one_changes_nothing(ex):
    plan = {str(u.name): 0.5 for u in ex.mutator.mutable_units}
    ex.plans.upload.value = uploaded("half.json", json.dumps(plan).encode())
    assert ex.plans.upload.value == () and {u.current_choice for u in ex.mutator.mutable_units} == {0.5}
    assert "loaded the uploaded plan half.json" in ex.status.value and len(ex.history) == 2
    text, steps = ex.counters.text, len(ex.history)
    ex.plans.upload.value = uploaded("bad.json", b'{"nope": 1}')
    assert "does not fit this model" in ex.status.value
    assert ex.counters.text == text and len(ex.history) == steps


def test_a_small_model_graph_and_counters(one_thread):
    ex = PruningExplorer(Small(), torch.randn(1, 3, 8, 8), redraw_delay=0)
    assert ex.counters.text == format_counts(ex.resources())
    assert ex.graph_view.width > 0 and ex.graph_view.height > 0


def test_densenet_graph_is_one_svg_with_every_node(one_thread):
    """DenseNet-121 (302 nodes): every node a marker with its tooltip, 12 px labels, one row each."""
    ex = PruningExplorer(torchvision.models.densenet121().eval(), torch.randn(1, 3, 32, 32), redraw_delay=0)
    view = ex.graph_view
    html = view.html.value
    assert html.count("class='rw-node'") == len(view.nodes) == view.graph.number_of_nodes() > 300
    assert html.count("<text ") == len(view._rows) and "font-size='12'" in html
    assert view.height == len(view._rows) * 22 + 32  # ROW_PX per row: labels never overlap
