"""Depth as a choice in quality and budgets (issue 28): block importance (1 - cosine of the
stream before and after), blocks in the sensitivity scan (one "ratio": dropped) and in the
budget modes, trading depth against width."""
from __future__ import annotations

import pytest
import torch

from razor_widgets import block_importance, fit_budget, sensitivity_scan

from block_net import BlockNet
from helpers import prepare


@pytest.fixture
def prepared():
    torch.manual_seed(0)
    model = BlockNet().eval()
    with torch.no_grad():  # layers.0 barely turns the stream: its branch is almost zero
        model.layers[0].f[2].weight.mul_(1e-4)
        model.layers[0].f[2].bias.zero_()
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    mutator, original = prepare(model, x)
    return mutator, model, original, x


def test_block_importance_ranks_the_block_that_barely_changes_the_stream_last(prepared):
    mutator, _, _, x = prepared
    mutator.set_choices({"block:layers.2": "drop"})
    before = mutator.current_choices
    scores = block_importance(mutator, [x[:2], x[2:]])
    assert mutator.current_choices == before
    assert set(scores) == {b.name for b in mutator.removable_blocks}
    assert all(0.0 <= s <= 2.0 for s in scores.values())
    assert min(scores, key=scores.get) == "block:layers.0" and scores["block:layers.0"] < 1e-6
    assert scores["block:layers.2"] > 1e-3  # measured with every block kept


def _eval_fn(original, x):
    with torch.no_grad():
        want = original(x)

    def score(model) -> float:
        with torch.no_grad():
            return -float((model(x) - want).pow(2).mean())
    return score


def test_the_scan_drops_each_block_once_and_the_budget_trades_depth_for_width(prepared):
    mutator, model, original, x = prepared
    score = _eval_fn(original, x)
    sens = sensitivity_scan(mutator, score, ratios=(0.5,), progress=False)
    blocks = [b.name for b in mutator.removable_blocks]
    assert all(list(sens.table[name]) == [0.0] for name in blocks)
    assert sens.evaluations == len(mutator.mutable_units) + len(blocks) + 1
    mutator.set_choices({"block:layers.3": "drop"})
    assert sens.table["block:layers.3"][0.0] == score(model)
    mutator.set_choices({"block:layers.3": "keep"})
    assert sens.drop("block:layers.0", 0.0) < 1e-6
    fit = fit_budget(mutator, 0.9, "params", "sensitivity", sensitivity=sens)
    assert fit.met and fit.choices["block:layers.0"] == "drop"  # the free block goes first
    assert mutator.current_choices["block:layers.0"] == "keep"
    assert fit.resources == mutator.resources(fit.choices)


def test_uniform_and_l1_budgets_drop_the_least_important_blocks(prepared):
    mutator, _, _, x = prepared
    scores = block_importance(mutator, x)
    for mode in ("uniform", "l1"):
        fit = fit_budget(mutator, 0.5, "macs", mode, block_scores=scores)
        dropped = [name for name, choice in fit.choices.items() if choice == "drop"]
        assert fit.met and dropped
        ranked = sorted(scores, key=scores.get)
        assert set(dropped) == set(ranked[:len(dropped)])
        assert fit.resources == mutator.resources(fit.choices)
    with pytest.raises(ValueError, match="cannot drop"):
        fit_budget(mutator, 0.5, block_scores={"block:convs.1": 1.0})
