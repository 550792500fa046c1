"""Quality in the loop: the evaluation contract, faithful per-unit sensitivity scans (serial,
threads, processes or Dask) and what they feed (sensitivity budgets, the explorer's Quality
section)."""
from .evaluation import EvalFn, EvaluationError, calibration_batches, restored_choices, to_score
from .scan import DEFAULT_RATIOS, sensitivity_scan
from .sensitivity import Sensitivity

__all__ = ["DEFAULT_RATIOS", "EvalFn", "EvaluationError", "Sensitivity", "calibration_batches",
           "restored_choices", "sensitivity_scan", "to_score"]
