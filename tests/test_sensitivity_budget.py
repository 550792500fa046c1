"""fit_budget(mode="sensitivity"): meets the budget, beats a uniform spread on a trained net, and
refuses a missing or foreign scan."""
from __future__ import annotations

import pytest

from razor_widgets import Sensitivity, fit_budget, sensitivity_scan

from helpers import Accuracy, digits_net, prepared, trained_digits_net


@pytest.fixture(scope="module")
def trained(one_thread):
    mutator = prepared(trained_digits_net())
    accuracy = Accuracy()
    return mutator, accuracy, sensitivity_scan(mutator, accuracy, (0.125, 0.25, 0.5, 0.75), progress=False)


def score_of(mutator, accuracy, choices) -> float:
    before = mutator.current_choices
    mutator.set_choices(choices)
    try:
        return accuracy(mutator.model)
    finally:
        mutator.set_choices(before)


@pytest.mark.parametrize("metric", ["macs", "params"])
@pytest.mark.parametrize("keep", [0.3, 0.5])
def test_the_sensitivity_budget_scores_at_least_as_well_as_uniform(trained, keep, metric):
    mutator, accuracy, sens = trained
    before = dict(mutator.current_choices)
    by_sens = fit_budget(mutator, keep, metric, mode="sensitivity", sensitivity=sens)
    uniform = fit_budget(mutator, keep, metric, mode="uniform")
    assert mutator.current_choices == before  # a fit changes nothing
    assert by_sens.met and uniform.met and by_sens.mode == "sensitivity"
    assert by_sens.resources == mutator.resources(choices=by_sens.choices)
    assert getattr(by_sens.resources, metric) <= keep * getattr(by_sens.resources, f"original_{metric}")
    ours, theirs = score_of(mutator, accuracy, by_sens.choices), score_of(mutator, accuracy, uniform.choices)
    assert ours >= theirs
    if keep == 0.3:  # a real difference where the cut is deep: the robust units take it
        assert ours > theirs + 0.05


def test_the_budget_follows_the_curves(trained):
    mutator, _, sens = trained
    fit = fit_budget(mutator, 0.5, "macs", mode="sensitivity", sensitivity=sens)
    kept = {u.name: fit.choices[u.name] for u in mutator.mutable_units}
    drops = sens.mean_drop()
    robust, fragile = min(drops, key=drops.get), max(drops, key=drops.get)
    assert kept[robust] < kept[fragile]


def test_an_unreachable_budget_returns_the_smallest_choices(trained):
    mutator, _, sens = trained
    fit = fit_budget(mutator, 0.001, "macs", mode="sensitivity", sensitivity=sens)
    assert not fit.met
    assert fit.resources.macs == mutator.resources(choices=mutator.min_choices).macs


def test_units_the_scan_left_out_stay_full(trained):
    mutator, accuracy, _ = trained
    first = mutator.mutable_units[0].name
    partial = sensitivity_scan(mutator, accuracy, (0.25, 0.5), units=[first], progress=False)
    fit = fit_budget(mutator, 0.7, "params", mode="sensitivity", sensitivity=partial)
    assert all(fit.choices[u.name] == u.max_choice for u in mutator.mutable_units[1:])


def test_a_table_read_from_csv_fits_the_same(trained):
    mutator, _, sens = trained
    again = Sensitivity.from_csv(sens.to_csv())
    assert fit_budget(mutator, 0.4, "macs", "sensitivity", sensitivity=again).choices == \
        fit_budget(mutator, 0.4, "macs", "sensitivity", sensitivity=sens).choices


def test_a_missing_or_foreign_scan_is_refused(trained):
    mutator, _, sens = trained
    with pytest.raises(ValueError, match="needs sensitivity="):
        fit_budget(mutator, 0.5, "macs", mode="sensitivity")
    with pytest.raises(ValueError, match="is for mode='sensitivity'"):
        fit_budget(mutator, 0.5, "macs", mode="uniform", sensitivity=sens)
    foreign = Sensitivity(1.0, {"conv9_(0, 8)_8": {0.5: 0.9}})
    with pytest.raises(ValueError, match="names units this mutator does not have: 'conv9"):
        fit_budget(mutator, 0.5, "macs", mode="sensitivity", sensitivity=foreign)
    other = prepared(digits_net())
    assert fit_budget(other, 0.5, "macs", mode="sensitivity", sensitivity=sens).met  # same names, other weights
