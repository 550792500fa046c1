"""The model graph as SVG: top to bottom, nodes coloured by the fraction of channels they keep.

The SVG sits in an ``ipywidgets.HTML`` (sharp text, native zoom, no front-end extension); its
layout is built once and a recolour rewrites only the node markers. Inline handlers zoom, show
tooltips and report clicks through a hidden ``Text`` widget (``clicks``). Why: docs/graph-view.md.
"""
from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import matplotlib as mpl
import numpy as np
from matplotlib.colors import to_hex

from ..analysis.model_graph import KeptFractions, layered_layout
from .debounce import Debouncer

CMAP = mpl.colormaps["RdYlGn"]  # red: most channels pruned, green: all kept
NOT_PRUNABLE = "#c8c8c8"  # nodes that touch no prunable unit
DROPPED = "#f2f2f2"  # nodes in a dropped block (the export leaves them out)
X_PX, ROW_PX, MARGIN_PX, FONT_PX, CHAR_PX = 26.0, 22.0, 16.0, 12, 7.0
_IDS = itertools.count()

# the browser side: zoom (a CSS variable on the HTML widget's element), tooltip and clicks
_ZOOM_JS = ("var w=this.closest('.rw-graph'),b=w.querySelector('.rw-graph-box'),s=b.querySelector('svg'),"
            "z=parseFloat(w.style.getPropertyValue('--rw-zoom')||'1'),a='{action}',v=s.viewBox.baseVal;"
            "z=a=='fit'?Math.min((b.clientWidth-4)/v.width,(b.clientHeight-4)/v.height):a=='1'?1:z*parseFloat(a);"
            "w.style.setProperty('--rw-zoom',Math.max(0.05,Math.min(z,8)));")
_TIP_JS = ("var g=event.target.closest('[data-tip]'),b=this.parentNode,t=b.querySelector('.rw-tip');"
           "if(!g){t.style.display='none';return;}t.textContent=g.getAttribute('data-tip');"
           "var r=b.getBoundingClientRect();t.style.left=(event.clientX-r.left+b.scrollLeft+14)+'px';"
           "t.style.top=(event.clientY-r.top+b.scrollTop+14)+'px';t.style.display='block';")
_CLICK_JS = ("var g=event.target.closest('[data-node]');if(!g)return;"
             "var i=this.closest('.rw-graph').querySelector('.rw-graph-clicks input');"
             "i.value=g.getAttribute('data-node')+'\\t'+Date.now();"
             "i.dispatchEvent(new Event('input',{bubbles:true}));i.dispatchEvent(new Event('change',{bubbles:true}));")
_WHEEL_JS = ("if(!event.ctrlKey)return;event.preventDefault();"
             "var w=this.closest('.rw-graph'),z=parseFloat(w.style.getPropertyValue('--rw-zoom')||'1');"
             "w.style.setProperty('--rw-zoom',Math.max(0.05,Math.min(z*(event.deltaY<0?1.15:1/1.15),8)));")


def node_colour(fraction: float, prunable: bool) -> str:
    """The colour of a node keeping ``fraction`` of its channels (grey when none can be pruned)."""
    return to_hex(CMAP(fraction)) if prunable else NOT_PRUNABLE


def _in_blocks(node: str, paths: tuple[str, ...]) -> bool:
    """Whether ``node`` lies in one of the (dropped) blocks at ``paths``."""
    return any(node == p or node.startswith(p + ".") for p in paths)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


class GraphView:
    """``mutator.graph`` as an SVG; ``recolour()`` redraws now, ``redraw.schedule()`` later.

    ``colours`` maps each node to its colour at the last recolour; ``highlight(unit)`` rings
    every node the unit touches; a click on a node calls ``on_click(node)``.
    """

    def __init__(self, mutator: Any, delay: float = 0.15, on_click: Callable[[str], None] | None = None) -> None:
        self.graph = mutator.graph
        self.dropped_paths = getattr(mutator, "dropped_paths", list)  # blocks dropped now (greyed)
        self.positions = layered_layout(self.graph)
        self.fractions = KeptFractions(mutator, self.graph)
        self.nodes = self.fractions.nodes
        self.highlighted: Any = None
        self.colours: dict[str, str] = {}
        self.on_click = on_click
        self.unit_values: np.ndarray | None = None  # set by colour_units(): shown instead of kept fractions
        self.unit_scale: str | None = None  # what unit_values mean, for the legend
        self.redraw = Debouncer(self.recolour, delay)
        self._build()
        self.html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.clicks = widgets.Text(continuous_update=False, layout=widgets.Layout(display="none"))
        self.clicks.add_class("rw-graph-clicks")
        self.clicks.observe(self._clicked, "value")
        self.widget = widgets.VBox([self.html, self.clicks], layout=widgets.Layout(width="100%"))
        self.widget.add_class("rw-graph")
        self.widget.add_class(f"rw-graph-{next(_IDS)}")
        self.recolour()

    # -- drawing once ---------------------------------------------------------------------
    def _build(self) -> None:
        xy = np.array([self.positions[n] for n in self.nodes]) if self.nodes else np.zeros((0, 2))
        longest = max([self._span(u, v) for u, v in self.graph.edges] + [1])
        left = (xy[:, 0].min() if len(xy) else 0) - self._bulge(longest) * 2 - 0.5
        right = (xy[:, 0].max() if len(xy) else 0) + 0.6
        rows: dict[float, list[int]] = {}  # one label per row: its nodes left to right
        for i in np.lexsort((xy[:, 0], -xy[:, 1])) if len(xy) else []:
            rows.setdefault(float(xy[i, 1]), []).append(int(i))
        self._rows = rows
        self._left, self._label_x = left, (right - left) * X_PX + MARGIN_PX
        label_px = max([len(self._row_label(m)) for m in rows.values()] + [20]) * CHAR_PX + 20
        self.width = int(self._label_x + label_px)
        self.height = int((len(rows) or 1) * ROW_PX + 2 * MARGIN_PX)
        self._px = {n: self._to_px(self.positions[n]) for n in self.nodes}
        edges = "".join(f"<path d='{self._edge_path(u, v)}'/>" for u, v in self.graph.edges)
        self._edges_svg = f"<g fill='none' stroke='#9a9a9a' stroke-width='1'>{edges}</g>"
        self._label_y = {y: self._to_px((0.0, y))[1] for y in rows}
        self._tips_static = [self._static_tip(n) for n in self.nodes]
        self._units = [tuple(self.graph.nodes[n]["units"]) for n in self.nodes]
        self._channels = self.fractions.channels

    def _to_px(self, pos: tuple[float, float]) -> tuple[float, float]:
        return (pos[0] - self._left) * X_PX + MARGIN_PX, -pos[1] * ROW_PX + MARGIN_PX + ROW_PX / 2

    def _span(self, u: str, v: str) -> int:
        return int(round(self.positions[u][1] - self.positions[v][1]))

    @staticmethod
    def _bulge(span: int) -> float:
        return 0.0 if span <= 1 else 0.35 + 0.3 * math.log2(span)

    def _edge_path(self, u: str, v: str) -> str:
        (x0, y0), (x1, y1) = self._px[u], self._px[v]
        span = self._span(u, v)
        if span <= 1:
            return f"M{x0:.1f},{y0:.1f}L{x1:.1f},{y1:.1f}"
        cx = min(x0, x1) - 2 * self._bulge(span) * X_PX  # a quadratic curve bulging to the left
        return f"M{x0:.1f},{y0:.1f}Q{cx:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{y1:.1f}"

    def _static_tip(self, node: str) -> str:
        data = self.graph.nodes[node]
        return f"{node}\ntype: {data['op']}"

    # -- drawing on every change ----------------------------------------------------------
    def recolour(self) -> None:
        """Recolour the nodes at the current choices and send the new SVG (no new layout)."""
        self.redraw.cancel()
        fractions = self.fractions()
        shades = fractions if self.unit_values is None else self.fractions.spread(self.unit_values)
        prunable = self.fractions.prunable
        paths = tuple(self.dropped_paths())
        self.colours = {n: DROPPED if _in_blocks(n, paths) else node_colour(f, p)
                        for n, f, p in zip(self.nodes, shades, prunable)}
        self.html.value = self.svg(fractions, shades)

    def svg(self, fractions: np.ndarray | None = None, shades: np.ndarray | None = None) -> str:
        """The whole view (toolbar, scroll box, SVG) as HTML at the current choices; nodes are
        coloured by ``shades`` (default: the kept fractions)."""
        fractions = self.fractions() if fractions is None else fractions
        shades = fractions if shades is None else shades
        ringed = self._ringed()
        markers = [self._marker(i, node, fractions[i], ringed[i], shades[i]) for i, node in enumerate(self.nodes)]
        labels = []
        for y, members in self._rows.items():
            bold = bool(ringed[members].any())
            text = _attr(self._row_label(members))
            py = self._label_y[y]
            if bold:
                labels.append(f"<rect x='{self._label_x - 3:.1f}' y='{py - 9:.1f}' height='18' "
                              f"width='{len(self._row_label(members)) * CHAR_PX + 6:.1f}' fill='#fff3b0'/>")
            weight = " font-weight='bold'" if bold else ""
            labels.append(f"<text x='{self._label_x:.1f}' y='{py + 4:.1f}'{weight}>{text}</text>")
        zoom = " ".join(
            f"<button class='rw-zoom' title='{t}' onclick=\"{_ZOOM_JS.format(action=a)}\">{label}</button>"
            for a, label, t in (("fit", "Fit", "fit the whole graph in view"), ("1.25", "+", "zoom in"),
                                ("0.8", "&minus;", "zoom out"), ("1", "100 %", "labels at 12 px")))
        scale = ("kept fraction of channels" if self.unit_values is None
                 else self.unit_scale or "robustness to pruning (sensitivity scan; 0: the most "
                                                           "sensitive unit)")
        legend = (f"<span style='margin-left:12px;font-size:12px'>{scale}: 0 "
                  f"<span style='display:inline-block;width:120px;height:10px;background:linear-gradient(90deg,"
                  f"{','.join(to_hex(CMAP(t)) for t in np.linspace(0, 1, 6))})'></span> 1 · "
                  f"<span style='color:{NOT_PRUNABLE}'>&#9632;</span> not prunable · ctrl+wheel zooms · "
                  "click a layer to select its unit</span>")
        svg = (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {self.width} {self.height}' "
               f"style='width:calc(var(--rw-zoom,1)*{self.width}px);height:calc(var(--rw-zoom,1)*{self.height}px);"
               f"display:block' font-family='sans-serif' font-size='{FONT_PX}' "
               f"onmousemove=\"{_TIP_JS}\" onmouseleave=\"this.parentNode.querySelector('.rw-tip')"
               f".style.display='none'\" onclick=\"{_CLICK_JS}\">"
               f"{self._edges_svg}<g fill='#333'>{''.join(labels)}</g><g>{''.join(markers)}</g></svg>")
        tip = ("<div class='rw-tip' style='position:absolute;display:none;pointer-events:none;white-space:pre;"
               "background:#ffffe8;border:1px solid #999;border-radius:3px;padding:3px 6px;font-size:12px;"
               "line-height:1.3;z-index:10;box-shadow:1px 1px 3px rgba(0,0,0,.2)'></div>")
        return (f"<div class='rw-graph-toolbar' style='margin-bottom:4px'>{zoom}{legend}</div>"
                f"<div class='rw-graph-box' onwheel=\"{_WHEEL_JS}\" style='position:relative;max-height:640px;"
                f"height:640px;overflow:auto;border:1px solid #ddd;line-height:normal'>{svg}{tip}</div>")

    def _marker(self, i: int, node: str, fraction: float, ringed: bool, shade: float) -> str:
        x, y = self._px[node]
        kind = self.graph.nodes[node]["kind"]
        prunable = bool(self.fractions.prunable[i])
        colour = node_colour(shade, prunable)
        total = self._channels[i]
        kept = f"{round(fraction * total)}/{round(total)}" if total else "none counted"
        tip = f"{self._tips_static[i]}\nkept channels: {kept}" + ("" if prunable else " (not prunable)")
        if self.colours.get(node) == DROPPED:
            colour, tip = DROPPED, f"{tip}\nin a dropped block: the export leaves it out"
        r = 8.5 if ringed else 6.0
        stroke = " stroke='#000' stroke-width='2.5'" if ringed else " stroke='#555' stroke-width='0.5'"
        if kind == "module":
            shape = f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r}'/>"
        elif kind == "parameter":
            shape = f"<rect x='{x - r:.1f}' y='{y - r:.1f}' width='{2 * r}' height='{2 * r}'/>"
        elif kind == "function":
            shape = f"<path d='M{x:.1f},{y - r - 1:.1f}l{r + 1},{r + 1}l{-r - 1},{r + 1}l{-r - 1},{-r - 1}z'/>"
        else:  # input and output: triangles
            d = -1 if kind == "output" else 1
            shape = f"<path d='M{x:.1f},{y + d * r:.1f}l{r},{-2 * d * r}h{-2 * r}z'/>"
        return (f"<g class='rw-node' data-node='{_attr(node)}' data-tip='{_attr(tip)}' fill='{colour}'"
                f"{stroke} style='cursor:pointer'>{shape}</g>")

    def colour_units(self, values: Any, scale: str | None = None) -> None:
        """Colour by one value per mutable unit in [0, 1] (green 1, red 0; ``mutable_units``
        order) instead of the kept fractions, e.g. robustness to pruning; None goes back.
        ``scale`` names what the colours mean in the legend (default: robustness to pruning)."""
        self.unit_scale = scale
        self.unit_values = None if values is None else np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        self.recolour()

    def _ringed(self) -> np.ndarray:
        if self.highlighted is None:
            return np.zeros(len(self.nodes), dtype=bool)
        return np.array([self.highlighted in units for units in self._units], dtype=bool)

    def highlight(self, unit_name: Any) -> list[str]:
        """Ring (and write in bold) every node of the unit ``unit_name`` (None: no unit)."""
        self.highlighted = unit_name
        self.recolour()
        return self.highlighted_nodes

    def _row_label(self, members: list[int]) -> str:
        return "  |  ".join(_label(self.nodes[i], self.graph.nodes[self.nodes[i]]) for i in members)

    @property
    def highlighted_nodes(self) -> list[str]:
        """The nodes ringed now: those of the highlighted unit."""
        return [n for n, ring in zip(self.nodes, self._ringed()) if ring]

    # -- clicks from the page -------------------------------------------------------------
    def _clicked(self, change: dict) -> None:
        node = str(change["new"]).split("\t", 1)[0]
        if node in self.graph and self.on_click is not None:
            self.on_click(node)

    def units_of(self, node: str) -> tuple:
        """The names of the units a node belongs to (fixed ones included)."""
        return tuple(self.graph.nodes[node]["units"])


def _label(node: str, data: dict) -> str:
    channels = data.get("out_channels") or data.get("in_channels")
    suffix = f"  {data['op']}" + (f" ({channels})" if channels else "")
    return f"{node}{suffix}"
