"""Bar charts: kept vs. pruned channels per unit, and params and MACs per layer before and after."""
from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np

from ..analysis.unit_labels import unit_label
from .figures import figure_png, new_figure

KEPT, PRUNED, BEFORE, AFTER = "#2e8b57", "#e0a0a0", "#d8d8d8", "#3b6ea8"
BAR_INCHES = 0.16


def _image(png: bytes) -> widgets.Image:
    return widgets.Image(value=png, format="png", layout=widgets.Layout(max_width="none"))


def _boxed(image: widgets.Image) -> widgets.Box:
    return widgets.Box([image], layout=widgets.Layout(max_height="640px", overflow="auto", border="1px solid #ddd"))


class ChannelPlot:
    """Kept and pruned channels of every mutable unit, as stacked horizontal bars."""

    def __init__(self, mutator: Any) -> None:
        self.mutator = mutator
        self.image = _image(b"")
        self.widget = _boxed(self.image)

    def data(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Unit names, kept channels and pruned channels, in ``mutable_units`` order."""
        units = self.mutator.mutable_units
        kept = np.array([u.activated_channels for u in units])
        total = np.array([u.num_channels for u in units])
        return [str(u.name) for u in units], kept, total - kept

    def labels(self) -> list[str]:
        """What each unit is (``unit_label``), as the bars are labelled."""
        return [unit_label(u) for u in self.mutator.mutable_units]

    def redraw(self) -> None:
        """Draw the kept and pruned channels of every unit as stacked bars."""
        _, kept, pruned = self.data()
        names = self.labels()
        fig, canvas = new_figure(9, 0.9 + BAR_INCHES * max(1, len(names)))
        ax = fig.add_axes((0.42, 0.5 / fig.get_figheight(), 0.55, 1 - 0.8 / fig.get_figheight()))
        y = np.arange(len(names))
        ax.barh(y, kept, color=KEPT, label="kept")
        ax.barh(y, pruned, left=kept, color=PRUNED, label="pruned")
        ax.set_yticks(y, names, fontsize=6)
        ax.invert_yaxis()
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("channels", fontsize=7)
        ax.legend(fontsize=7, loc="lower right", ncols=2, bbox_to_anchor=(1, 1), frameon=False)
        self.image.value = figure_png(fig, canvas)


class LayerPlot:
    """Params and MACs of every counted layer, before (light) and after (dark) pruning."""

    def __init__(self, mutator: Any) -> None:
        self.mutator = mutator
        self.image = _image(b"")
        self.widget = _boxed(self.image)

    def data(self) -> dict[str, Any]:
        """``mutator.resources(by_layer=True)``: the figures the plot shows."""
        return self.mutator.resources(by_layer=True)

    def redraw(self) -> None:
        """Draw each layer's params and MACs, before and after pruning."""
        layers = self.data()
        names = list(layers)
        fig, canvas = new_figure(10, 1.0 + BAR_INCHES * max(1, len(names)))
        y = np.arange(len(names))
        height = fig.get_figheight()
        for col, (attr, title) in enumerate((("params", "Params"), ("macs", "MACs"))):
            ax = fig.add_axes((0.3 + col * 0.36, 0.5 / height, 0.3, 1 - 0.9 / height))
            before = np.array([getattr(layers[n], f"original_{attr}") for n in names], dtype=float)
            after = np.array([getattr(layers[n], attr) for n in names], dtype=float)
            ax.barh(y, before, color=BEFORE, label="before")
            ax.barh(y, after, height=0.5, color=AFTER, label="after")
            ax.set_ylim(len(names) - 0.5, -0.5)
            ax.set_yticks(y, names if col == 0 else [""] * len(names), fontsize=6)
            ax.tick_params(axis="x", labelsize=7)
            ax.xaxis.get_offset_text().set_fontsize(7)
            ax.set_title(f"{title} per layer", fontsize=8)
            if col == 1:
                ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 1.02), ncols=2, frameon=False)
        self.image.value = figure_png(fig, canvas)
