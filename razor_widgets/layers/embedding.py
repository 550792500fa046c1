"""Token and position embeddings (``nn.Embedding``'s ``F.embedding``, ``nn.EmbeddingBag``'s
``F.embedding_bag``): rows are looked up by
position, so they are not channels; the embedding dim is, and it follows the residual stream.

The weight ``[num_embeddings, dim]`` gets one element per column (never one per entry: the
cost grows with channels, not with the vocabulary), and the export slices its columns like a
class token's. A tied LM head reads the same parameter through ``nn.Linear``: its input
channels are the stream's, so both sides of the tie keep the same columns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import LayerGeometry, LayerKind, Term

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext
    from ..trace.graph import Node


def embedding(ctx: AnalysisContext, node: Node) -> None:
    """``F.embedding(indices, weight, padding_idx, max_norm, ...)`` (and ``F.embedding_bag(indices,
    weight, offsets, max_norm, ...)``, which sums, averages or takes the max of rows column by
    column): the output's last dim holds the weight's columns. ``max_norm`` renormalises rows
    over the columns: no rule then."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    max_norm = node.args[3] if len(node.args) > 3 else node.kwargs.get("max_norm")
    refs = node.input_refs()
    if weight not in refs or weight.param is None or len(weight.shape) != 2 or max_norm is not None:
        return ctx.unknown(node)
    n = weight.shape[1]
    if weight.param not in ctx.param_ids and weight.handle not in ctx.ids:
        ids = ctx.space.fresh(n).reshape(1, n)
        ctx.param_ids[weight.param] = (ids, weight.shape)
        ctx.ids[weight.handle] = ids
    table = ctx.get(weight)
    if table.shape[0] > 1:  # read elsewhere first, entry by entry: its rows are one
        ctx.space.union(table[:1].expand_as(table), table)
    line = table[0].expand(n)
    ctx.write(node.output_refs()[0], -1, line)


def tie_shared_weights(ctx: AnalysisContext) -> None:
    """A layer whose weight is an embedding's table (a tied LM head, ``nn.Linear(dim, vocab)``)
    reads the embedding's columns as its input channels: they are one."""
    tables = {}
    for name, (ids, _shape) in ctx.param_ids.items():
        owner, _, attr = name.rpartition(".")
        module = ctx.modules.get(owner)
        param = None if module is None else module.__dict__.get("_parameters", {}).get(attr)
        if isinstance(module, nn.Embedding) and param is not None and ids.shape[0] == 1:
            tables[id(param)] = ids[0]
    if not tables:
        return
    for name, module in ctx.modules.items():
        weight = module.__dict__.get("_parameters", {}).get("weight")
        columns = tables.get(id(weight)) if weight is not None else None
        slot = ctx.first_slot(name, False)
        if columns is not None and not isinstance(module, nn.Embedding) and slot is not None:
            if slot.shape == columns.shape:
                ctx.space.union(slot, columns)
            else:
                ctx.fix(torch.cat([slot, columns]), f"{name!r} shares the weight of an embedding of another width")


class EmbeddingKind(LayerKind):
    """``F.embedding`` (``nn.Embedding`` is traced through to it): no MACs (a lookup); the
    weight's columns are a parameter slot, sliced by the export like a class token's."""

    name = "embedding"
    family_types = (nn.Embedding, nn.EmbeddingBag)
    functions = ("embedding", "embedding_bag")

    def function_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """``F.embedding`` with a table: the output's last dim holds the table's columns
        (:func:`embedding`)."""
        embedding(ctx, node)

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``embedding_dim`` on the output side, ``num_embeddings`` on the input side."""
        return int(module.embedding_dim if is_output else module.num_embeddings)

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """None: the weight is a parameter slot, sized along its columns."""
        return None


EMBEDDING = EmbeddingKind()


def is_embedding(module: object) -> bool:
    """Whether a module is a token or position table (an ``nn.Embedding`` or a subclass)."""
    return isinstance(module, nn.Embedding)


def sync_embedding_sizes(model: nn.Module) -> None:
    """After the export slices an embedding's weight, its sizes follow the weight."""
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            module.num_embeddings, module.embedding_dim = module.weight.shape
