"""The model graph drawn top to bottom, nodes coloured by the fraction of channels they keep.

The layout and everything that does not change with the choices (edges, labels, colour bar)
are drawn once; a recolour only paints the node markers over that background and encodes the
PNG, so it costs a few tens of milliseconds even for hundreds of nodes.
"""
from __future__ import annotations

import math
from typing import Any

import ipywidgets as widgets
import matplotlib as mpl
import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.colors import Normalize, to_hex
from matplotlib.path import Path

from ..model_graph import KeptFractions, layered_layout
from .debounce import Debouncer
from .figures import canvas_png, new_figure

CMAP = mpl.colormaps["RdYlGn"]  # red: most channels pruned, green: all kept
NOT_PRUNABLE = "#c8c8c8"  # nodes that touch no prunable unit
MARKERS = {"module": "o", "function": "D", "parameter": "s", "input": "^", "output": "v"}
ROW_INCHES, UNIT_INCHES, CHAR_INCHES, TOP_INCHES = 0.2, 0.8, 0.052, 0.6


def node_colour(fraction: float, prunable: bool) -> str:
    """The colour of a node keeping ``fraction`` of its channels (grey when none can be pruned)."""
    return to_hex(CMAP(fraction)) if prunable else NOT_PRUNABLE


class GraphView:
    """``mutator.graph`` as an image; ``recolour()`` redraws now, ``redraw.schedule()`` later.

    ``colours`` maps each node to its colour at the last recolour; ``highlight(unit)`` rings
    every node the unit touches.
    """

    def __init__(self, mutator: Any, delay: float = 0.15, dpi: int = 80) -> None:
        self.graph = mutator.graph
        self.positions = layered_layout(self.graph)
        self.fractions = KeptFractions(mutator, self.graph)
        self.nodes = self.fractions.nodes
        self.highlighted: Any = None
        self.colours: dict[str, str] = {}
        self.unit_values: np.ndarray | None = None  # set by colour_units(): shown instead of kept fractions
        self.redraw = Debouncer(self.recolour, delay)
        self._build(dpi)
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            width=f"{self._size[0]}px", height=f"{self._size[1]}px", max_width="none"))
        self.widget = widgets.Box([self.image], layout=widgets.Layout(max_height="640px", overflow="auto",
                                                                      border="1px solid #ddd"))
        self.recolour()

    # -- drawing once ---------------------------------------------------------------------
    def _build(self, dpi: int) -> None:
        xy = np.array([self.positions[n] for n in self.nodes]) if self.nodes else np.zeros((0, 2))
        rows = int(-xy[:, 1].min()) + 1 if len(xy) else 1
        longest = max([self._span(u, v) for u, v in self.graph.edges] + [1])
        bulge = self._bulge(longest)
        left, right = xy[:, 0].min() - bulge - 0.4 if len(xy) else -1, (xy[:, 0].max() if len(xy) else 0) + 0.3
        self._label_x = right - 0.1
        self._rows: dict[float, list[int]] = {}  # one label per row: its nodes left to right
        for i in np.lexsort((xy[:, 0], -xy[:, 1])) if len(xy) else []:
            self._rows.setdefault(float(xy[i, 1]), []).append(int(i))
        label_in = max([len(self._row_label(m)) for m in self._rows.values()] + [20]) * CHAR_INCHES + 0.3
        width_in = UNIT_INCHES * (right - left) + label_in
        height_in = ROW_INCHES * (rows + 1) + TOP_INCHES
        fig, canvas = new_figure(width_in, height_in, dpi)
        top = 1 - TOP_INCHES / height_in
        ax = fig.add_axes((0, 0, 1, top))
        ax.set_xlim(left, right + label_in / UNIT_INCHES)
        ax.set_ylim(-rows + 0.5, 0.5)
        ax.axis("off")
        paths = [self._edge_path(u, v) for u, v in self.graph.edges]
        ax.add_collection(PathCollection(paths, facecolors="none", edgecolors="#9a9a9a", linewidths=0.6))
        for y, members in self._rows.items():
            ax.text(self._label_x, y, self._row_label(members), fontsize=6.5, va="center", ha="left", color="#333")
        cax = fig.add_axes((0.08, 1 - 0.32 / height_in, 0.5, 0.12 / height_in))
        fig.colorbar(mpl.cm.ScalarMappable(Normalize(0, 1), CMAP), cax=cax, orientation="horizontal")
        cax.tick_params(labelsize=6, length=2, pad=1)
        cax.set_title("kept fraction of channels (grey: not prunable)", fontsize=7, pad=2)
        self._markers = []
        for kind, marker in MARKERS.items():
            idx = np.array([i for i, n in enumerate(self.nodes) if self.graph.nodes[n]["kind"] == kind], dtype=int)
            if len(idx):
                sc = ax.scatter(xy[idx, 0], xy[idx, 1], s=36, marker=marker, zorder=3, animated=True,
                                edgecolors="none")
                self._markers.append((sc, idx))
        self._fig, self._canvas, self._ax, self._xy = fig, canvas, ax, xy
        self._highlight_texts: list[Any] = []
        canvas.draw()
        self._background = canvas.copy_from_bbox(fig.bbox)
        self._size = canvas.get_width_height()

    def _span(self, u: str, v: str) -> int:
        return int(round(self.positions[u][1] - self.positions[v][1]))

    @staticmethod
    def _bulge(span: int) -> float:
        return 0.0 if span <= 1 else 0.35 + 0.3 * math.log2(span)

    def _edge_path(self, u: str, v: str) -> Path:
        (x0, y0), (x1, y1) = self.positions[u], self.positions[v]
        span = self._span(u, v)
        if span <= 1:
            return Path([(x0, y0), (x1, y1)])
        cx = min(x0, x1) - 2 * self._bulge(span)  # a quadratic curve whose apex is bulge to the left
        return Path([(x0, y0), (cx, (y0 + y1) / 2), (x1, y1)], [Path.MOVETO, Path.CURVE3, Path.CURVE3])

    # -- drawing on every change ----------------------------------------------------------
    def recolour(self) -> None:
        """Recolour the nodes at the current choices and show the new image (no new layout)."""
        self.redraw.cancel()
        fractions = self.fractions() if self.unit_values is None else self.fractions.spread(self.unit_values)
        prunable = self.fractions.prunable
        rgba = CMAP(fractions)
        rgba[~prunable] = mpl.colors.to_rgba(NOT_PRUNABLE)
        self.colours = {n: (to_hex(c) if p else NOT_PRUNABLE) for n, c, p in zip(self.nodes, rgba, prunable)}
        ringed = self._ringed()
        canvas = self._canvas
        canvas.restore_region(self._background)
        for sc, idx in self._markers:
            sc.set_facecolors(rgba[idx])
            ring = ringed[idx]
            sc.set_edgecolors(np.where(ring[:, None], [[0, 0, 0, 1]], [[0, 0, 0, 0]]))
            sc.set_linewidths(np.where(ring, 1.6, 0.0))
            sc.set_sizes(np.where(ring, 70, 36))
            self._ax.draw_artist(sc)
        for text in self._highlight_texts:
            self._ax.draw_artist(text)
        self.image.value = canvas_png(canvas)

    def colour_units(self, values: Any) -> None:
        """Colour by one value per mutable unit in [0, 1] (green 1, red 0; ``mutable_units``
        order) instead of the kept fractions, e.g. robustness to pruning; None goes back."""
        self.unit_values = None if values is None else np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        self.recolour()

    def _ringed(self) -> np.ndarray:
        if self.highlighted is None:
            return np.zeros(len(self.nodes), dtype=bool)
        return np.array([self.highlighted in self.graph.nodes[n]["units"] for n in self.nodes], dtype=bool)

    def highlight(self, unit_name: Any) -> list[str]:
        """Ring (and write in bold) every node of the unit ``unit_name`` (None: no unit)."""
        self.highlighted = unit_name
        ringed = self._ringed()
        self._highlight_texts = [
            self._ax.text(self._label_x, y, self._row_label(members), fontsize=6.5, va="center", ha="left",
                          color="black", fontweight="bold", animated=True, backgroundcolor="#fff3b0")
            for y, members in self._rows.items() if ringed[members].any()]
        self.recolour()
        return [n for n, ring in zip(self.nodes, ringed) if ring]

    def _row_label(self, members: list[int]) -> str:
        return "  |  ".join(_label(self.nodes[i], self.graph.nodes[self.nodes[i]]) for i in members)

    @property
    def highlighted_nodes(self) -> list[str]:
        return [n for n, ring in zip(self.nodes, self._ringed()) if ring]


def _label(node: str, data: dict) -> str:
    channels = data.get("out_channels") or data.get("in_channels")
    suffix = f"  {data['op']}" + (f" ({channels})" if channels else "")
    return f"{node}{suffix}"
