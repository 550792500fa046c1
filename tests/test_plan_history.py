"""The explorer's plan history: every plan evaluated, fitted or exported is an entry (choices,
counts, score, time) in ``explorer.history.plans`` and the Plan history table; Restore applies an
entry as one Undo step; Compare lists the units whose kept channels differ and colours the graph
by the difference; the entries travel in the plan file, which plain loaders still read."""
from __future__ import annotations

import json

import pytest
import torch

from razor_widgets import PlanError, PruningExplorer, load_choices
from razor_widgets.widgets.plan_history_view import COMPARE_SCALE

from helpers import Accuracy, digits_net


def kept(ex) -> dict:
    return {str(u.name): u.activated_channels for u in ex.mutator.mutable_units}


def test_fits_and_exports_are_entries_with_their_counts(ex) -> None:
    ex.apply_budget(50, "MACs")
    fitted_plan, fitted_res = ex.session.plan(), ex.resources()
    ex.sample(seed=3)
    ex.export()
    first, second = ex.history.plans
    assert (first.number, first.action, second.number, second.action) == (1, "fitted", 2, "exported")
    assert first.plan == fitted_plan and (first.params, first.macs) == (fitted_res.params, fitted_res.macs)
    assert second.plan == ex.session.plan() and second.kept == kept(ex) and second.macs == ex.resources().macs
    assert first.score is None and first.time <= second.time
    assert len(ex.plan_history.rows.children) == 2
    assert "Restore #2" in ex.plan_history.rows.children[1].children[0].description


def test_restore_is_one_undo_step(ex) -> None:
    ex.apply_budget(40, "Params")
    fitted = ex.session.plan()
    ex.sample(seed=1)
    sampled = ex.session.plan()
    ex.plan_history.rows.children[0].children[0].click()  # the row's Restore button
    assert ex.session.plan() == fitted and "restored plan #1" in ex.status.value
    ex.undo()
    assert ex.session.plan() == sampled
    ex.redo()
    assert ex.session.plan() == fitted
    with pytest.raises(KeyError, match="no plan #7"):
        ex.restore_plan(7)


def test_compare_lists_the_differing_units_and_colours_the_graph(ex) -> None:
    ex.apply_budget(50, "MACs")
    a = kept(ex)
    ex.sample(seed=2)
    ex.export()
    b = kept(ex)
    boxes = [row.children[1] for row in ex.plan_history.rows.children]
    boxes[0].value, boxes[1].value = True, True  # a person ticks Compare on both rows
    comparison = ex.plan_history.comparison
    assert comparison is not None and (comparison.a.number, comparison.b.number) == (1, 2)
    assert {d.unit: (d.kept_a, d.kept_b) for d in comparison.units} == {n: (a[n], b[n]) for n in a if a[n] != b[n]}
    names = [str(u.name) for u in ex.mutator.mutable_units]
    values = ex.graph_view.unit_values
    for name, value in zip(names, values):
        unit = ex.mutator.unit(name)
        assert value == pytest.approx(0.5 + 0.5 * (a[name] - b[name]) / unit.num_channels)
    assert COMPARE_SCALE in ex.graph_view.html.value
    text = ex.plan_history.result.value
    assert f"{comparison.a.params:,}" in text and f"{comparison.b.macs:,}" in text
    assert f"{len(comparison.units)} units keep different channels" in text
    ex.plan_history.stop.click()
    assert ex.graph_view.unit_values is None and not any(box.value for box in boxes)


def test_the_history_travels_with_the_plan_file(ex, tmp_path) -> None:
    ex.apply_budget(50, "MACs")
    ex.sample(seed=5)
    ex.export()
    path = tmp_path / "plan.json"
    ex.save_choices(path)
    saved = json.loads(path.read_text())
    assert [e["action"] for e in saved["#history"]] == ["fitted", "exported"]
    plain = ex.mutator.current_choices
    ex.reset()
    assert load_choices(ex.mutator, path) == plain  # a loader of choices skips the history
    ex.reset()
    entries = list(ex.history.plans)
    ex.history.plans.clear()
    ex.load_choices(path)
    assert [(e.action, e.plan, e.macs, e.time) for e in ex.history.plans] == [
        (e.action, e.plan, e.macs, e.time) for e in entries]
    saved["#history"][1]["macs"] = "many"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(saved))
    ex.reset()
    with pytest.raises(PlanError, match="history entry 2 needs 'macs' as a whole number"):
        ex.load_choices(bad)
    assert all(v in (1.0, "keep") for v in ex.mutator.current_choices.values())  # nothing changed


def test_an_evaluation_is_an_entry_with_its_score(one_thread) -> None:
    accuracy = Accuracy()
    ex = PruningExplorer(digits_net().eval(), torch.zeros(1, 1, 8, 8), eval_fn=accuracy, redraw_delay=0)
    try:
        ex.sample(seed=0)
        score = ex.evaluate()
        ex.export()  # the same plan: its score comes along
        assert [(e.action, e.score) for e in ex.history.plans] == [("evaluated", score), ("exported", score)]
        assert f"{score:.4g}" in ex.plan_history.rows.children[0].children[2].value
    finally:
        ex.quality.close()
