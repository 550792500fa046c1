"""What a budget measures: a ``Resources`` figure by name, or memory at a sequence length and batch.

``"macs"``, ``"params"``, ``"flops"`` read the field of that name; ``"memory"`` is weights plus
the KV cache of ``batch`` sequences of ``seq_len`` tokens (``Resources.memory``), in bytes at the
model's dtype; ``"active_params"`` the params one token uses (MoE models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..counting.resources import Resources

__all__ = ["MEMORY_METRICS", "Metric", "metric_of", "metric_value", "original_value"]

MEMORY_METRICS = ("memory", "active_params")


@dataclass(frozen=True)
class Metric:
    """A budget's measure: a name, and for ``"memory"`` the sequence length and batch."""

    name: str
    seq_len: int | None = None
    batch: int = 1

    def value(self, res: Resources, original: bool = False) -> int:
        """The figure of ``res`` (its full-choice figure with ``original``)."""
        if self.name == "memory":
            return res.memory(self.seq_len or 0, self.batch, original=original)
        value = getattr(res, f"original_{self.name}" if original else self.name)
        if value is None:
            raise ValueError(f"metric {self.name!r} is not known for this model (active_params: MoE models "
                             "whose experts are 3-D parameters)")
        return value


def metric_of(metric: str | Metric, seq_len: int | None = None, batch: int = 1) -> Metric:
    """``metric`` as a :class:`Metric`; ``ValueError`` for a sequence length or batch that is
    not a whole number, or given to a metric that does not read them."""
    if isinstance(metric, Metric):
        return metric
    if metric != "memory":
        if seq_len is not None or batch != 1:
            raise ValueError(f"seq_len= and batch= are for metric='memory', not {metric!r}")
        return Metric(metric)
    for name, value, least in (("seq_len", seq_len, 0), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"metric='memory' needs {name}= a whole number >= {least}, got {value!r}")
    return Metric(metric, seq_len, batch)


def metric_value(res: Resources, metric: str | Metric) -> int:
    """The figure ``metric`` (a name or a :class:`Metric`) of ``res``."""
    return metric_of(metric).value(res) if isinstance(metric, Metric) else _named(res, metric, False)


def original_value(res: Resources, metric: str | Metric) -> int:
    """The full-choice figure ``metric`` of ``res``."""
    return metric.value(res, original=True) if isinstance(metric, Metric) else _named(res, metric, True)


def _named(res: Resources, name: str, original: bool) -> Any:
    return Metric(name).value(res, original)
