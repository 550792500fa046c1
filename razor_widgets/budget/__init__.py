"""Budget: choices that meet a budget ("keep X % of MACs"), spread uniformly, by L1
importance or by measured sensitivity, and a unit's valid choice for a wanted fraction."""
from ..mutables.unit_choices import choice_for_fraction, number_step, smallest_number
from .fit import BudgetFit, fit_budget, l1_importance

__all__ = ["BudgetFit", "choice_for_fraction", "fit_budget", "l1_importance", "number_step", "smallest_number"]
