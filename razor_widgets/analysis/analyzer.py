"""Find channel units in a traced graph: run the channel rules, then group elements into units.

Each rule (see ``rules.py``) maps the channel ids of an op's inputs to its outputs, unions
elements that must be pruned together and records *slots*: the input or output channels of a
layer (or the channel dim of a parameter) as a sequence of elements. After the union-find,
elements that always appear side by side in the same order in every slot form a unit, so
concatenations and splits give sub-range units, and grouped layers give repeated blocks.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import numpy as np
import torch

from ..channels.analysis_result import ChannelAnalysis, UnitSpec, UnprunableChannelsWarning
from ..channels.context import AnalysisContext
from ..channels.model_outputs import held_outputs, output_paths, pin_outputs, pinned_outputs
from ..channels.unit_traits import assign_traits
from ..layers.embedding import tie_shared_weights
from ..layers.registry import is_layer_weight
from ..trace.graph import TracedGraph
from ..trace.traced_size import attribute_sources, shape_sources
from ..trace.tracer import TraceError
from .compared_sizes import resolve_comparisons
from .unit_building import build_units

ATTENTION_MODES = ("heads", "head_dims")  # how attention units prune: whole heads, or positions in every head


def analysis_error(ctx: AnalysisContext, exc: Exception) -> TraceError:
    """A ``TraceError`` naming the model, the op, its module and its input shapes."""
    model = type(ctx.modules.get("", None)).__name__
    node = ctx.node
    where = "after the rules ran (grouping channels into units)"
    if node is not None:
        shapes = ", ".join(str(tuple(r.shape)) for r in node.input_refs()) or "none"
        where = f"at op {ctx.describe()} (node {node.index}, input shapes {shapes})"
    return TraceError(f"the channel analysis of {model} failed {where}: {type(exc).__name__}: {exc}")


class ChannelAnalyzer:
    """Runs the rule table over a traced graph and returns the units it finds."""

    def __init__(self, rules: Any, attention: str = "heads", fixed_outputs: Any = None) -> None:
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
        self.rules = rules
        self.attention = attention
        self.fixed_outputs = fixed_outputs  # which outputs keep their shape (``model_outputs.py``)

    def analyze(self, graph: TracedGraph) -> ChannelAnalysis:
        """Run every node's channel rule over ``graph``, resolve the union-find and return the units
        found (a rule's crash names the op)."""
        ctx = AnalysisContext(graph, graph.modules, self.attention,
                              partial(is_layer_weight, graph.modules))
        pinned_outputs(output_paths(graph), self.fixed_outputs)  # a name the output lacks: ValueError first
        try:
            for node in graph.nodes:
                ctx.node = node
                self.rules.apply(ctx, node)
            ctx.node = None
            tie_shared_weights(ctx)
            free_outputs = pin_outputs(ctx, self.fixed_outputs)
            free_outputs.update(held_outputs(ctx))  # an HF cache's keys and values: cut, never pinned
            value_uses = resolve_comparisons(ctx, graph.size_uses)
            roots = ctx.space.resolve()
            ctx.resolve_slices(roots)
            _resolve_size_uses(ctx, value_uses, roots)
            units = build_units(ctx, roots)
            assign_traits(units, roots, ctx.head_elements, ctx.sums)
        except Exception as exc:  # a bug of the analysis: say where, never crash raw
            raise analysis_error(ctx, exc) from exc
        _warn_unknown(ctx, units)
        sides: dict[tuple[str, bool, int | None], torch.Tensor] = {}
        for slot in ctx.slots:
            sides.setdefault((slot.name, slot.is_output, slot.param_dim), slot.ids)
        return ChannelAnalysis(units, roots, ctx.ids, sides, ctx.size_attributes, ctx.expert_slices, free_outputs)


def _resolve_size_uses(ctx: AnalysisContext, uses: list, roots: np.ndarray) -> None:
    """Channel counts and attributes the code uses as numbers must not change: fix those
    channels, and the elements an attribute counts. One exception: ``C // heads`` stays the
    same when ``C`` is pruned by whole heads in step with the ``heads`` attribute."""
    for sources, reason, value in uses:
        if not _per_head_size(ctx, sources, value, roots):
            ctx.fix_size_sources(sources, reason)
    for sources, reason, value, ids in ctx.quotient_sizes:
        if not _per_head_size(ctx, sources, value, roots):
            for t in ids:
                ctx.fix(t, reason)
    for attr, reason in ctx.frozen_attributes:
        line = ctx.size_attributes.get((attr.module, attr.attr))
        if line is not None:
            ctx.fix(line, f"attribute {attr} keeps its value: {reason}")


def _per_head_size(ctx: AnalysisContext, sources: tuple, value: int, roots: np.ndarray) -> bool:
    """Whether ``value`` is ``C // heads`` with the ``C`` channels pruned by the same whole heads
    that the ``heads`` attribute counts."""
    shapes, attrs = shape_sources(sources), attribute_sources(sources)
    if ctx.attention != "heads" or len(shapes) != 1 or len(attrs) != 1:
        return False
    (ref, dim), attr = shapes[0], attrs[0]
    heads = ctx.size_attributes.get((attr.module, attr.attr))
    n = ref.shape[dim]
    if heads is None or heads.numel() != attr.value or n % attr.value or value != n // attr.value:
        return False
    ids = ctx.get(ref)
    if ids.shape[dim] != n:
        return False
    line = roots[ids.movedim(dim, -1).reshape(-1, n)[0].numpy()]
    blocks = line.reshape(attr.value, value)  # heads outer: ``C // heads`` channels per head
    if bool((blocks == blocks[:, :1]).all()) and set(blocks[:, 0].tolist()) == set(roots[heads.numpy()].tolist()):
        return True
    copies = line.reshape(value, attr.value)  # heads inner (``B * heads // heads``): every copy the same heads
    return bool((copies == copies[:1]).all()) and copies[0].tolist() == roots[heads.numpy()].tolist()


def _warn_unknown(ctx: AnalysisContext, units: list[UnitSpec]) -> None:
    for tag in dict.fromkeys(ctx.unknown_ops):
        caused = [u for u in units if any(tag in r for r in u.fixed_reasons)
                  and all("no channel rule" in r for r in u.fixed_reasons)]
        if not caused:  # those channels are fixed for another reason too: nothing lost here
            continue
        layers = sorted({item.name for u in caused for item in u.output_related + u.input_related})
        detail = ctx.rule_errors.get(tag)
        model = type(ctx.modules.get("")).__name__
        warnings.warn(
            f"{model}: no channel rule for op {tag}" + (f" ({detail})" if detail else "")
            + ": the channels it touches are not prunable"
            + (f" (layers: {', '.join(layers)})" if layers else ""),
            UnprunableChannelsWarning,
            stacklevel=3,
        )
