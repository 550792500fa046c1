"""Params, MACs and FLOPs now against the original, as text that follows every slider move."""
from __future__ import annotations

import html

import ipywidgets as widgets

from ..counting.resources import Resources

# (label, attribute, what it counts): the labels of docs/counting.md
ROWS = (
    ("Params", "params", "parameters of the exported model"),
    ("MACs", "macs", "multiply-accumulates of convs, linears and attention matmuls"),
    ("FLOPs", "flops", "2 × MACs, as torch's FlopCounterMode counts"),
)


def format_counts(res: Resources) -> str:
    """Plain text, one line per count: ``Params  6,912,345 of 25,557,032 (27.0 %)``."""
    lines = []
    for label, attr, _ in ROWS:
        now, original = getattr(res, attr), getattr(res, f"original_{attr}")
        lines.append(f"{label:<6} {now:,} of {original:,} ({getattr(res, f'{attr}_percent'):.1f} %)")
    return "\n".join(lines)


def _html(res: Resources) -> str:
    cells = []
    for label, attr, meaning in ROWS:
        now, original = getattr(res, attr), getattr(res, f"original_{attr}")
        percent = getattr(res, f"{attr}_percent")
        cells.append(
            f"<tr title='{html.escape(meaning, quote=True)}'><th style='text-align:left;padding-right:8px'>{label}"
            f"</th><td style='text-align:right;font-family:monospace'>{now:,}</td>"
            f"<td style='padding:0 6px'>of</td><td style='text-align:right;font-family:monospace'>{original:,}</td>"
            f"<td style='text-align:right;padding-left:8px;font-weight:bold'>{percent:.1f} %</td></tr>")
    return "<table style='border-collapse:collapse'>" + "".join(cells) + "</table>"


class ResourceCounters:
    """An HTML table of the counts; ``text`` holds the same figures as plain text."""

    def __init__(self, res: Resources) -> None:
        self.widget = widgets.HTML()
        self.text = ""
        self.listeners: list = []  # called with every update's Resources (the Memory counter)
        self.update(res)

    def update(self, res: Resources) -> None:
        """Show ``res`` (cheap: no counting here, only formatting)."""
        self.resources = res
        self.text = format_counts(res)
        self.widget.value = _html(res)
        for listener in self.listeners:
            listener(res)
