"""Depth as a choice in the explorer (issue 28): a keep/drop toggle per block, the blocks that
must stay with their reason, counters on every click, the graph greying a dropped block, and
Undo/Redo, plans and the budget covering blocks and channels alike."""
from __future__ import annotations

import warnings

import pytest
import torch

from razor_widgets import PruningExplorer, block_importance, sensitivity_scan
from razor_widgets.widgets.counters import format_counts
from razor_widgets.widgets.graph_view import DROPPED

from block_net import BlockNet


@pytest.fixture
def ex():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PruningExplorer(BlockNet().eval(), torch.randn(2, 3, 6, 6), redraw_delay=0)


def _counts_follow(ex) -> None:
    assert ex.counters.text == format_counts(ex.mutator.resources())


def test_a_toggle_per_block_and_the_ones_that_must_stay_say_why(ex):
    assert list(ex.blocks.toggles) == [b.name for b in ex.mutator.removable_blocks]
    assert ex.blocks.title == "Blocks (depth): 8 removable, 3 must stay"
    text = " ".join(getattr(w, "value", "") for _, row in ex.blocks.rows.values() for w in row.children)
    assert "must stay: its shortcut is not the identity" in text and "called 2 times" in text


def test_each_toggle_sits_in_its_stages_section_and_the_filter_finds_it(ex):
    for name, (path, row) in ex.blocks.rows.items():
        holders = [key for key, section in ex.panel.sections.items() if row in section.children[0].children]
        assert holders == [path.split(".")[0]], name  # BlockNet's sections are its top-level modules
    rows = ex.panel.sections["layers"].children[0].children
    own = rows.index(ex.panel.rows["layers.2.up_(0, 32)_32"])
    assert rows.index(ex.blocks.rows["block:layers.2"][1]) == own + 1  # right after its own layers' slider
    assert "· 5 blocks" in ex.panel.sections["layers"].get_title(0)
    assert ex.panel.widget.children[0] is ex.blocks.summary and "Blocks (depth)" in ex.blocks.summary.value
    ex.panel.apply_filter("layers.2")
    assert ex.blocks.rows["block:layers.2"][1].layout.display is None
    assert ex.blocks.rows["block:convs.0"][1].layout.display == "none"
    assert ex.panel.sections["convs"].layout.display == "none"
    ex.panel.apply_filter("")
    assert all(row.layout.display is None for _, row in ex.blocks.rows.values())


def test_dropping_a_block_counts_greys_and_undoes(ex):
    full = ex.mutator.resources()
    ex.blocks.toggles["block:layers.2"].value = "drop"
    assert ex.mutator.dropped_paths() == ["layers.2"]
    _counts_follow(ex)
    assert ex.mutator.resources().params < full.params
    ex.graph_view.recolour()
    assert ex.graph_view.colours["layers.2.qkv"] == DROPPED and ex.graph_view.colours["layers.1.fc1"] != DROPPED
    assert "in a dropped block" in ex.graph_view.html.value
    ex.sliders[next(iter(ex.sliders))].value = 0.5  # a width step after the depth step
    ex.undo()
    assert ex.mutator.dropped_paths() == ["layers.2"]
    ex.undo()
    assert ex.mutator.dropped_paths() == [] and ex.blocks.toggles["block:layers.2"].value == "keep"
    assert ex.mutator.resources() == full
    ex.redo()
    assert ex.blocks.toggles["block:layers.2"].value == "drop" and ex.mutator.dropped_paths() == ["layers.2"]
    _counts_follow(ex)
    ex.reset()
    assert ex.mutator.dropped_paths() == [] and ex.blocks.toggles["block:layers.2"].value == "keep"


def test_plans_and_the_sensitivity_budget_cover_blocks(ex, tmp_path):
    ex.blocks.toggles["block:alone"].value = "drop"
    ex.save_choices(tmp_path / "plan.json")
    ex.reset()
    ex.load_choices(tmp_path / "plan.json")
    assert ex.mutator.dropped_paths() == ["alone"] and ex.blocks.toggles["block:alone"].value == "drop"
    ex.reset()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = ex.mutator.model(x)
    sens = sensitivity_scan(ex.mutator, lambda m: -float((m(x) - want).pow(2).mean()), ratios=(0.5,),
                            progress=False)
    ex.budget.enable_sensitivity(sens)
    fit = ex.apply_budget(60, "Params", "by sensitivity")
    assert fit.met and any(c == "drop" for n, c in fit.choices.items() if n.startswith("block:"))
    assert {n: t.value for n, t in ex.blocks.toggles.items()} == {n: fit.choices[n] for n in ex.blocks.toggles}
    _counts_follow(ex)
    ex.undo()
    assert ex.mutator.dropped_paths() == []


def test_without_calibration_data_the_budget_line_says_depth_needs_it(ex):
    assert "needs calibration data" in ex.budget.depth_note.value
    fit = ex.apply_budget(50, "MACs", "uniform")
    assert not any(n.startswith("block:") and c == "drop" for n, c in fit.choices.items())


@pytest.mark.parametrize("mode", ["uniform", "by L1 importance", "global"])
def test_with_calibration_data_uniform_l1_and_global_budgets_drop_the_least_important_blocks(mode):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = PruningExplorer(BlockNet().eval(), x[:2], calibration=[x[:2], x[2:]], redraw_delay=0)
    assert "also drop blocks" in ex.budget.depth_note.value
    scores = block_importance(ex.mutator, [x[:2], x[2:]])
    fit = ex.apply_budget(50, "MACs", mode)
    dropped = [n for n, c in fit.choices.items() if n.startswith("block:") and c == "drop"]
    assert fit.met and dropped
    assert set(dropped) == set(sorted(scores, key=scores.get)[:len(dropped)])
    assert ex.mutator.dropped_paths() == [n.split(":", 1)[1] for n in ex.blocks.toggles if n in dropped]
    assert all(ex.blocks.toggles[n].value == "drop" for n in dropped)
    _counts_follow(ex)
    ex.undo()
    assert ex.mutator.dropped_paths() == []
