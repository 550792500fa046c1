"""The model as a ``networkx.DiGraph``: layers, joins and the units that touch them.

Built from a prepared mutator's trace (``mutator.graph_trace``) and its units: nodes are the
layers with weights, the joining ops, the parameters that belong to a unit and the model's inputs
and outputs; every other op is collapsed into the edges, which follow the tensors (a DAG in
execution order). The nodes and their attributes: docs/model-graph.md.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx
import numpy as np

__all__ = ["build_model_graph", "layered_layout", "KeptFractions"]


def build_model_graph(mutator: Any) -> nx.DiGraph:
    """The DiGraph of a mutator prepared by tracing (see the module docstring)."""
    trace = getattr(mutator, "graph_trace", None)
    if trace is None:
        raise RuntimeError("the model graph needs a traced model: prepare the mutator with a tracing "
                           "parse_cfg (ChannelAnalyzer), not from a config or predefined ops")
    unit_params = {c.name for u in mutator.units for c in u.channels if c.param_dim is not None}
    graph = nx.DiGraph()
    producers: dict[int, frozenset[str]] = {}  # tensor handle -> the kept nodes it comes from
    for i, ref in enumerate(trace.inputs):
        node = "input" if len(trace.inputs) == 1 else f"input {i}"
        graph.add_node(node, layer=node, op="input", kind="input", shape=ref.shape)
        producers[ref.handle] = frozenset([node])
    calls: dict[str, int] = defaultdict(int)
    for n in trace.nodes:
        sources: set[str] = set()
        for ref in n.input_refs():
            if ref.param is not None and ref.param in unit_params:
                if ref.param not in graph:
                    graph.add_node(ref.param, layer=ref.param, op="parameter", kind="parameter",
                                   shape=ref.shape)
                sources.add(ref.param)
            else:
                sources |= producers.get(ref.handle, frozenset())
        outputs = n.output_refs()
        if n.kind == "module" or len(sources) >= 2:
            base = n.name if n.kind == "module" else (f"{n.scope}.{n.name}" if n.scope else n.name)
            calls[base] += 1
            node = base if calls[base] == 1 else f"{base} (call {calls[base]})"
            layer = n.name if n.kind == "module" else (n.scope or node)
            op = type(n.target).__name__ if n.kind == "module" else n.name
            graph.add_node(node, layer=layer, op=op, kind=n.kind,
                           shape=outputs[0].shape if outputs else None)
            graph.add_edges_from((s, node) for s in sorted(sources))
            produced = frozenset([node])
        else:  # a pass-through op: its outputs come from where its inputs came from
            produced = frozenset(sources)
        for ref in outputs:
            producers[ref.handle] = produced
    for i, ref in enumerate(trace.outputs):
        node = "output" if len(trace.outputs) == 1 else f"output {i}"
        graph.add_node(node, layer=node, op="output", kind="output", shape=ref.shape)
        graph.add_edges_from((s, node) for s in sorted(producers.get(ref.handle, ())))
    _attach_units(graph, mutator.units)
    return graph


def _attach_units(graph: nx.DiGraph, units: list[Any]) -> None:
    """Set ``units``, ``in_channels``, ``out_channels`` and ``unit_channels`` (per side, the
    channels of each unit: ``{"in": {unit: n}, "out": {unit: n}}``)."""
    by_layer: dict[str, list[str]] = defaultdict(list)
    for node, data in graph.nodes(data=True):
        if data["kind"] in ("module", "parameter"):
            by_layer[data["layer"]].append(node)
    sides: dict[str, dict[str, dict[str, int]]] = {n: {"in": {}, "out": {}} for n in graph}
    for unit in units:
        for channel in unit.channels:
            side = "out" if channel.is_output_channel else "in"
            for node in by_layer.get(channel.name) or _owner_nodes(by_layer, channel.name):
                counts = sides[node][side]
                counts[unit.name] = counts.get(unit.name, 0) + channel.num_channels
    for node in nx.topological_sort(graph):  # joins and outputs: the channels flowing in
        data = graph.nodes[node]
        if data["kind"] in ("function", "output"):
            flowing: dict[str, int] = {}
            for pred in graph.predecessors(node):
                pred_sides = sides[pred]
                for name, count in (pred_sides["out"] or pred_sides["in"]).items():
                    flowing[name] = max(flowing.get(name, 0), count)
            sides[node]["in"] = flowing
    for node, data in graph.nodes(data=True):
        s = sides[node]
        data["units"] = tuple(dict.fromkeys([*s["out"], *s["in"]]))
        data["out_channels"] = sum(s["out"].values()) if s["out"] else None
        data["in_channels"] = sum(s["in"].values()) if s["in"] and data["kind"] != "function" else None
        data["unit_channels"] = s


def _owner_nodes(by_layer: dict[str, list[str]], name: str) -> list[str]:
    """The nodes of the closest traced layer that holds ``name`` (a submodule of a leaf)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        nodes = by_layer.get(".".join(parts[:i]))
        if nodes:
            return nodes
    return []


def layered_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Top-to-bottom positions: one row per topological generation (parameters one row above
    their first reader), rows ordered so that a node sits near its predecessors (one
    barycentre sweep), centred on x = 0."""
    depth: dict[str, int] = {}
    for d, generation in enumerate(nx.topological_generations(graph)):
        for node in generation:
            depth[node] = d
    for node, data in graph.nodes(data=True):
        if data.get("kind") == "parameter" and graph.out_degree(node):
            depth[node] = max(0, min(depth[s] for s in graph.successors(node)) - 1)
    rows: dict[int, list[str]] = defaultdict(list)
    for node in graph:  # insertion order: execution order
        rows[depth[node]].append(node)
    pos: dict[str, tuple[float, float]] = {}
    for d in sorted(rows):
        def barycentre(node: str) -> float:
            xs = [pos[p][0] for p in graph.predecessors(node) if p in pos]
            return sum(xs) / len(xs) if xs else 0.0

        row = sorted(rows[d], key=lambda n: (barycentre(n), _order(graph, n)))
        for i, node in enumerate(row):
            pos[node] = (i - (len(row) - 1) / 2, -float(d))
    return pos


def _order(graph: nx.DiGraph, node: str) -> int:
    return 0 if graph.nodes[node]["kind"] == "module" else 1


class KeptFractions:
    """The kept fraction of every node's channels at the mutator's current choices.

    A node's fraction is the channel-weighted mean of its units' kept fractions on its output
    side (the input side for layers that only read a unit, the flowing channels for joins);
    fixed units count as fully kept. Built once; each call reads only the units' masks.
    """

    def __init__(self, mutator: Any, graph: nx.DiGraph) -> None:
        self.nodes = list(graph.nodes)
        self._units = [u for u in mutator.units if u.is_mutable]
        index = {u.name: i for i, u in enumerate(self._units)}
        rows, cols, weights = [], [], []
        fixed = np.zeros(len(self.nodes))
        total = np.zeros(len(self.nodes))
        for r, node in enumerate(self.nodes):
            s = graph.nodes[node]["unit_channels"]
            for name, count in (s["out"] or s["in"]).items():
                total[r] += count
                if name in index:
                    rows.append(r)
                    cols.append(index[name])
                    weights.append(count)
                else:
                    fixed[r] += count
        self._rows = np.array(rows, dtype=np.int64)
        self._cols = np.array(cols, dtype=np.int64)
        self._weights = np.array(weights, dtype=np.float64)
        self._fixed = fixed
        self.channels = total.copy()  # channels counted per node (0 where no unit names them)
        self._total = np.where(total > 0, total, 1.0)
        self._has_units = total > 0
        self.prunable = np.bincount(self._rows, minlength=len(self.nodes)) > 0  # touches a mutable unit
        self._sizes = np.array([u.num_channels for u in self._units], dtype=np.float64)

    def unit_fractions(self) -> np.ndarray:
        """Kept fraction of each mutable unit, in ``mutator.mutable_units`` order."""
        kept = np.array([u.activated_channels for u in self._units], dtype=np.float64)
        return kept / self._sizes if len(kept) else kept

    def __call__(self) -> np.ndarray:
        """Kept fraction per node, in ``self.nodes`` order (1.0 for nodes without units)."""
        return self.spread(self.unit_fractions())

    def spread(self, frac: np.ndarray) -> np.ndarray:
        """Per node, the channel-weighted mean of one value per mutable unit (in
        ``mutator.mutable_units`` order; fixed channels count as 1.0)."""
        kept = np.bincount(self._rows, weights=self._weights * frac[self._cols], minlength=len(self.nodes))
        return np.where(self._has_units, (kept + self._fixed) / self._total, 1.0)
