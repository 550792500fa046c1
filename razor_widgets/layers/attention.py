"""Multi-head attention (``nn.MultiheadAttention``).

Channels: inputs, q/k/v projections and output share one width (``embed_dim``). Whole heads
are kept or pruned (``num_heads`` shrinks, ``head_dim`` stays), or, with
``attention='head_dims'``, every head keeps the same positions (``head_dim`` shrinks); either
way ``embed_dim % num_heads == 0`` by construction. MACs: the q/k/v and output projections
plus Q·Kᵀ and A·V, all inside the formula (the layer reads ``out_proj.weight`` directly, so
no hook would see it).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..channels.channel_space import NONE
from ..mutables.mutable_channel import MutableChannelContainer
from ..registry import MODELS
from ..trace.graph import Node
from .base import LayerGeometry, LayerKind, Term, group_union, raw_param
from .dynamic_ops import DynamicChannelMixin, index_of, kept_rows, raw
from .linear import DynamicLinear

if TYPE_CHECKING:
    from ..channels.context import AnalysisContext


def head_union(ctx: AnalysisContext, ids: torch.Tensor, heads: int) -> None:
    """Channels of ``heads`` equal heads: one element per head, or one per position in a head."""
    if ctx.attention == "head_dims":
        return group_union(ctx, ids, heads)
    blocks = ids.reshape(heads, -1)
    ctx.space.union(blocks[:, :1].expand_as(blocks), blocks)


class MultiheadAttentionKind(LayerKind):
    """The layer kind of ``nn.MultiheadAttention`` (with the same embed dim for q, k and v)."""

    name = "multihead_attention"
    module_types = (nn.MultiheadAttention,)
    child_params = ("out_proj",)

    def module_rule(self, ctx: AnalysisContext, node: Node) -> None:
        """Query, key, value and output share the embed dim's channels, held as heads; other forms
        (``kdim``/``vdim``, ``bias_k``) have no rule."""
        m: nn.MultiheadAttention = node.target
        refs = node.input_refs()[:3]
        out = node.output_refs()[0]
        if not m._qkv_same_embed_dim or m.bias_k is not None:
            return ctx.unknown(node)
        dim = -1 if m.batch_first or len(refs[0].shape) == 2 else 2
        ids = ctx.read(refs[0], dim)
        for ref in refs[1:]:
            ctx.space.union(ids, ctx.read(ref, dim))
        head_union(ctx, ids, m.num_heads)
        ctx.head_elements.append(ids)
        ctx.slot(node.name, False, ids)
        ctx.slot(node.name, True, ids)
        ctx.write(out, dim, ids)
        for extra in node.output_refs()[1:]:
            ctx.set(extra, torch.full([1] * len(extra.shape), NONE, dtype=torch.long))

    def channels(self, module: nn.Module, is_output: bool) -> int:
        """``embed_dim`` on both sides."""
        return int(module.embed_dim)

    def macs(self, call: LayerGeometry) -> list[Term]:
        """The q/k/v and output projections plus Q·Kᵀ and A·V of one call."""
        m: nn.MultiheadAttention = call.module
        q, k = call.input_shapes[:2]
        if len(q) == 2:
            n, length, source = 1, q[0], k[0]
        elif m.batch_first:
            n, length, source = q[0], q[1], k[1]
        else:
            n, length, source = q[1], q[0], k[0]
        embed = call.kept(True)
        keys = source + (m.bias_k is not None) + bool(m.add_zero_attn)
        if m._qkv_same_embed_dim:
            terms = [Term((2 * length + 2 * source) * n, (embed, embed))]  # q, k, v, out
        else:
            terms = [Term(2 * length * n, (embed, embed)),  # q and out projections
                     Term(source * n * (m.kdim + m.vdim), (embed,))]
        return [*terms, Term(2 * n * length * keys, (embed,))]  # Q·Kᵀ and A·V

    def param_size(self, param: LayerGeometry, attr: str, shape: tuple[int, ...]) -> Term | None:
        """``in_proj`` (three ``embed`` blocks) and ``out_proj`` weights and biases; other
        parameters are counted whole."""
        if attr not in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            return None
        embed = param.kept(True)
        factor = 3 if attr.startswith("in_proj") else 1
        return Term(factor, (embed, embed) if attr.endswith("weight") else (embed,))

    def output_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``out_proj``'s weight and bias, whose dim 0 is the output channel."""
        out_proj = module.out_proj
        return {f"out_proj.{k}": t for k in ("weight", "bias") if (t := raw_param(out_proj, k)) is not None}

    def input_channel_weights(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``in_proj_weight`` with its input channels first."""
        weight = raw_param(module, "in_proj_weight")
        return {} if weight is None else {"in_proj_weight": weight.transpose(0, 1)}


class DynamicMultiheadAttentionMixin(DynamicChannelMixin):
    """``nn.MultiheadAttention`` whose embed dim is pruned by whole heads (the export has fewer
    heads of the same size) or at the same positions in every head (the export has smaller
    heads).

    With smaller heads the masked layer keeps the original ``1/sqrt(head_dim)`` scaling; the
    export folds the ratio of old to new scale into the query projection so that both compute
    the same.
    """

    container_names = {"in_channels": "embed_dim", "out_channels": "embed_dim"}
    dynamic_children = ("out_proj",)

    def _channel_counts(self) -> dict[str, int]:
        return {"embed_dim": self.embed_dim}

    def _init_mutable_attrs(self, container_class: type[MutableChannelContainer] = MutableChannelContainer
                            ) -> None:
        super()._init_mutable_attrs(container_class)
        out_proj = self._modules["out_proj"]
        if not isinstance(out_proj, DynamicChannelMixin):
            out_proj = DynamicLinear.convert_from(out_proj)
            self._modules["out_proj"] = out_proj
        container = self.mutable_attrs["embed_dim"]
        out_proj.mutable_attrs["in_features"] = container
        out_proj.mutable_attrs["out_features"] = container

    @property
    def in_proj_weight(self) -> torch.Tensor:
        """``in_proj_weight`` with the pruned rows (in each of q, k and v) and columns zeroed."""
        w = raw(self, "in_proj_weight")
        mask = self.mask("out_channels") if w is not None and "mutable_attrs" in self._modules else None
        if mask is None:
            return w
        keep = mask.repeat(3).unsqueeze(1) & mask.unsqueeze(0)
        return w * keep.to(device=w.device, dtype=w.dtype)

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        """``in_proj_bias`` with the pruned channels of q, k and v zeroed (None without a bias)."""
        b = raw(self, "in_proj_bias")
        mask = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if mask is None else b * mask.repeat(3).to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        """A plain ``nn.MultiheadAttention`` of the kept heads (or smaller heads, the query rescaled)."""
        mask = self.mask("out_channels")
        idx = index_of(mask, self.embed_dim)
        kept = len(idx)
        heads, head_dim = kept_heads(mask, self.num_heads, self.embed_dim)
        w, b = raw(self, "in_proj_weight"), raw(self, "in_proj_bias")
        rows = torch.cat([idx + i * self.embed_dim for i in range(3)])
        weight = kept_rows(w, rows)[:, idx.to(w.device)]
        bias = kept_rows(b, rows)
        scale = math.sqrt(head_dim / self.head_dim)
        if scale != 1.0:  # keep the original 1/sqrt(head_dim) of the unpruned layer
            weight = torch.cat([weight[:kept] * scale, weight[kept:]])
            bias = None if bias is None else torch.cat([bias[:kept] * scale, bias[kept:]])
        static = self._static_copy({"in_proj_weight": weight, "in_proj_bias": bias}, {},
                                   embed_dim=kept, kdim=kept, vdim=kept, num_heads=heads,
                                   head_dim=head_dim)
        static._modules["out_proj"] = self._modules["out_proj"].to_static_op()
        return static


def kept_heads(mask: torch.Tensor | None, num_heads: int, embed_dim: int) -> tuple[int, int]:
    """(heads, head_dim) after pruning: whole heads kept, or the same positions in every head."""
    head_dim = embed_dim // num_heads
    if mask is None:
        return num_heads, head_dim
    per_head = mask.reshape(num_heads, head_dim).cpu()
    kept_rows_ = per_head.all(dim=1)
    if bool((kept_rows_ | ~per_head.any(dim=1)).all()):
        return int(kept_rows_.sum()), head_dim
    if bool((per_head == per_head[:1]).all()):
        return num_heads, int(per_head[0].sum())
    raise ValueError(f"the embed dim of a MultiheadAttention ({embed_dim} channels, {num_heads} heads) is "
                     "pruned neither by whole heads nor at the same positions in every head")


class DynamicMultiheadAttention(DynamicMultiheadAttentionMixin, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with its embed dim following a mask."""

    static_class = nn.MultiheadAttention


MultiheadAttentionKind.dynamic_ops = {nn.MultiheadAttention: DynamicMultiheadAttention}
MODELS.register_module(module=DynamicMultiheadAttention)
MULTIHEAD_ATTENTION = MultiheadAttentionKind()
