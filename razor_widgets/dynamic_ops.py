"""Dynamic ops: layers whose input and output channels follow mutable masks.

A dynamic op is the original layer (same parameters, buffers, hooks and mode) with
``mutable_attrs`` added. When every mask is full it runs the original code untouched, so
outputs are bit-identical. With partial masks, pruned channels are exactly zero at its
output and ignored at its input: the weights a caller reads (``op.weight``) are masked, which
also covers code that uses them outside the layer's own forward. ``to_static_op()`` returns a
plain layer holding only the kept weights, which computes the same as the masked layer.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .mutables.mutable_channel import BaseMutableChannel, MutableChannelContainer
from .registry import MODELS

_MODULE_DICTS = ("_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks",
                 "_backward_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")


def _raw(module: nn.Module, name: str) -> Any:
    params = module.__dict__.get("_parameters")
    if params is None or name not in params:
        raise AttributeError(name)
    return params[name]


class DynamicChannelMixin:
    """What every dynamic op has: containers in ``mutable_attrs``, conversion and export."""

    static_class: type[nn.Module] = nn.Module
    container_names: dict[str, str] = {"in_channels": "in_channels", "out_channels": "out_channels"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.static_class.__init__(self, *args, **kwargs)
        self._init_mutable_attrs()

    # -- containers -----------------------------------------------------------------------
    def _channel_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def _init_mutable_attrs(self) -> None:
        nn.Module.__setattr__(self, "mutable_attrs", nn.ModuleDict())
        for name, n in self._channel_counts().items():
            self.mutable_attrs[name] = MutableChannelContainer(n)

    def get_mutable_attr(self, attr: str) -> MutableChannelContainer | None:
        name = self.container_names.get(attr, attr)
        attrs = self.__dict__["_modules"].get("mutable_attrs")
        return attrs[name] if attrs is not None and name in attrs else None

    def register_mutable_attr(self, attr: str, mutable: BaseMutableChannel) -> None:
        self.get_mutable_attr(attr).register_mutable(mutable, 0, mutable.num_channels)

    def mask(self, attr: str) -> torch.Tensor | None:
        """The current mask of one side, or None while it keeps every channel."""
        container = self.get_mutable_attr(attr)
        if container is None or not container.mutable_channels:
            return None
        mask = container.current_mask
        return None if bool(mask.all()) else mask

    # -- conversion -----------------------------------------------------------------------
    @classmethod
    def convert_from(cls, module: nn.Module) -> nn.Module:
        """A dynamic op sharing ``module``'s parameters, buffers, hooks and train/eval mode."""
        dynamic_cls = cls if type(module) is cls.static_class else _dynamic_subclass(cls, type(module))
        new = dynamic_cls.__new__(dynamic_cls)
        new.__dict__.update(module.__dict__)
        for key in _MODULE_DICTS:
            if key in module.__dict__:
                new.__dict__[key] = OrderedDict(module.__dict__[key])
        new._init_mutable_attrs()
        return new

    def _static_copy(self, params: dict[str, torch.Tensor | None],
                     buffers: dict[str, torch.Tensor | None], **attrs: Any) -> nn.Module:
        cls = self.static_class
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        for key in _MODULE_DICTS:
            if key in self.__dict__:
                new.__dict__[key] = OrderedDict(self.__dict__[key])
        new._modules.pop("mutable_attrs", None)
        for name, value in params.items():
            old = self._parameters[name]
            new._parameters[name] = None if value is None else nn.Parameter(
                value.detach().clone(), requires_grad=old.requires_grad)
        for name, value in buffers.items():
            new._buffers[name] = None if value is None else value.detach().clone()
        for name, value in attrs.items():
            setattr(new, name, value)
        return new

    def to_static_op(self) -> nn.Module:
        raise NotImplementedError


_SUBCLASSES: dict[tuple[type, type], type] = {}


def _dynamic_subclass(dynamic_cls: type, original: type) -> type:
    """``Dynamic<Original>`` for subclasses of supported layers (their forward is kept)."""
    key = (dynamic_cls, original)
    if key not in _SUBCLASSES:
        mixin = dynamic_cls.__mro__[1]
        _SUBCLASSES[key] = type(f"Dynamic{original.__name__}", (mixin, original),
                                {"static_class": original, "__module__": __name__})
    return _SUBCLASSES[key]


def _index(mask: torch.Tensor | None, n: int) -> torch.Tensor:
    return torch.arange(n) if mask is None else mask.nonzero().squeeze(1)


def _kept(t: torch.Tensor | None, idx: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    return None if t is None else t.index_select(dim, idx.to(t.device))


# -- convolution and linear ---------------------------------------------------------------------
class DynamicConvMixin(DynamicChannelMixin):
    def _channel_counts(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels}

    def _weight_mask(self, w: torch.Tensor) -> torch.Tensor | None:
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        if m_in is None and m_out is None:
            return None
        out_c, in_per_group = w.shape[0], w.shape[1]
        groups = self.in_channels // in_per_group
        m_in = torch.ones(self.in_channels, dtype=torch.bool) if m_in is None else m_in
        m_out = torch.ones(out_c, dtype=torch.bool) if m_out is None else m_out
        per_out = m_in.view(groups, in_per_group).repeat_interleave(out_c // groups, dim=0)
        mask = per_out & m_out.unsqueeze(1)
        return mask.view(*mask.shape, *([1] * (w.dim() - 2))).to(device=w.device, dtype=w.dtype)

    @property
    def weight(self) -> torch.Tensor:
        w = _raw(self, "weight")
        mask = self._weight_mask(w) if "mutable_attrs" in self._modules else None
        return w if mask is None else w * mask

    @property
    def bias(self) -> torch.Tensor | None:
        b = _raw(self, "bias")
        m_out = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if m_out is None else b * m_out.to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        w, b = _raw(self, "weight"), _raw(self, "bias")
        m_in, m_out = self.mask("in_channels"), self.mask("out_channels")
        out_idx = _index(m_out, self.out_channels)
        groups = self.groups
        if groups == 1:
            in_idx = _index(m_in, self.in_channels)
            weight = _kept(w, out_idx)[:, in_idx.to(w.device)]
            new_in, new_groups = len(in_idx), 1
        elif groups == self.in_channels == self.out_channels:
            in_idx = _index(m_in, self.in_channels)
            if not torch.equal(in_idx, out_idx):
                raise RuntimeError(f"depthwise {type(self).__name__}: input and output masks differ")
            weight, new_in, new_groups = _kept(w, out_idx), len(out_idx), len(out_idx)
        else:
            pos = _group_positions(m_in, groups, self.in_channels)
            _group_positions(m_out, groups, self.out_channels)
            weight = _kept(w, out_idx)[:, pos.to(w.device)]
            new_in, new_groups = groups * len(pos), groups
        return self._static_copy({"weight": weight, "bias": _kept(b, out_idx)}, {},
                                 in_channels=new_in, out_channels=len(out_idx), groups=new_groups)


def _group_positions(mask: torch.Tensor | None, groups: int, n: int) -> torch.Tensor:
    """Kept positions inside a group; every group must keep the same ones."""
    if mask is None:
        return torch.arange(n // groups)
    blocks = mask.view(groups, -1)
    if not bool((blocks == blocks[:1]).all()):
        raise RuntimeError("a grouped layer's mask must keep the same positions in every group")
    return blocks[0].nonzero().squeeze(1)


class DynamicConv1d(DynamicConvMixin, nn.Conv1d):
    static_class = nn.Conv1d


class DynamicConv2d(DynamicConvMixin, nn.Conv2d):
    static_class = nn.Conv2d


class DynamicConv3d(DynamicConvMixin, nn.Conv3d):
    static_class = nn.Conv3d


class DynamicLinearMixin(DynamicConvMixin):
    container_names = {"in_channels": "in_features", "out_channels": "out_features",
                       "in_features": "in_features", "out_features": "out_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def groups(self) -> int:
        return 1

    def to_static_op(self) -> nn.Module:
        w, b = _raw(self, "weight"), _raw(self, "bias")
        out_idx = _index(self.mask("out_channels"), self.out_features)
        in_idx = _index(self.mask("in_channels"), self.in_features)
        weight = _kept(w, out_idx)[:, in_idx.to(w.device)]
        return self._static_copy({"weight": weight, "bias": _kept(b, out_idx)}, {},
                                 in_features=len(in_idx), out_features=len(out_idx))


class DynamicLinear(DynamicLinearMixin, nn.Linear):
    static_class = nn.Linear


# -- normalisation ------------------------------------------------------------------------------
class DynamicNormMixin(DynamicChannelMixin):
    """Per-channel norms (batch and instance norm): pruned channels output zero."""

    container_names = {"in_channels": "num_features", "out_channels": "num_features"}
    channel_attr = "num_features"

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": getattr(self, self.channel_attr)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        mask = self.mask("out_channels")
        if mask is None:
            return out
        dim = 1 if x.dim() > 1 and not (x.dim() == self._unbatched_ndim()) else 0
        shape = [1] * out.dim()
        shape[dim] = -1
        return out * mask.view(shape).to(device=out.device, dtype=out.dtype)

    def _unbatched_ndim(self) -> int:
        return -1

    def to_static_op(self) -> nn.Module:
        idx = _index(self.mask("out_channels"), getattr(self, self.channel_attr))
        params = {k: _kept(v, idx) for k, v in self._parameters.items()}
        buffers = {k: (_kept(v, idx) if v is not None and v.dim() > 0 else v)
                   for k, v in self._buffers.items()}
        return self._static_copy(params, buffers, **{self.channel_attr: len(idx)})


class _BatchNormMixin(DynamicNormMixin):
    pass


class DynamicBatchNorm1d(_BatchNormMixin, nn.BatchNorm1d):
    static_class = nn.BatchNorm1d


class DynamicBatchNorm2d(_BatchNormMixin, nn.BatchNorm2d):
    static_class = nn.BatchNorm2d


class DynamicBatchNorm3d(_BatchNormMixin, nn.BatchNorm3d):
    static_class = nn.BatchNorm3d


class _InstanceNormMixin(DynamicNormMixin):
    def _unbatched_ndim(self) -> int:
        return self._get_no_batch_dim()


class DynamicInstanceNorm1d(_InstanceNormMixin, nn.InstanceNorm1d):
    static_class = nn.InstanceNorm1d


class DynamicInstanceNorm2d(_InstanceNormMixin, nn.InstanceNorm2d):
    static_class = nn.InstanceNorm2d


class DynamicInstanceNorm3d(_InstanceNormMixin, nn.InstanceNorm3d):
    static_class = nn.InstanceNorm3d


class _KeptLayerNorm(TorchFunctionMode):
    """Inside a LayerNorm's forward: normalise over the kept channels only, as the export does."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.idx = mask.nonzero().squeeze(1)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.layer_norm:
            return func(*args, **kwargs)
        names = ("input", "normalized_shape", "weight", "bias", "eps")
        bound = {**dict(zip(names, args)), **kwargs}
        x, idx = bound["input"], self.idx.to(bound["input"].device)
        out = torch.zeros_like(x)
        kept = F.layer_norm(x.index_select(-1, idx), (len(idx),), _kept(bound.get("weight"), idx),
                            _kept(bound.get("bias"), idx), bound.get("eps", 1e-5))
        return out.index_copy(-1, idx, kept)


class DynamicLayerNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_features", "out_channels": "num_features"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_features": self.normalized_shape[-1]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        with _KeptLayerNorm(mask):
            return super().forward(x)

    def to_static_op(self) -> nn.Module:
        idx = _index(self.mask("out_channels"), self.normalized_shape[-1])
        params = {k: _kept(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, normalized_shape=(len(idx),))


class DynamicLayerNorm(DynamicLayerNormMixin, nn.LayerNorm):
    static_class = nn.LayerNorm


class DynamicGroupNormMixin(DynamicChannelMixin):
    container_names = {"in_channels": "num_channels", "out_channels": "num_channels"}

    def _channel_counts(self) -> dict[str, int]:
        return {"num_channels": self.num_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask("out_channels")
        if mask is None:
            return super().forward(x)
        idx = mask.nonzero().squeeze(1).to(x.device)
        kept = F.group_norm(x.index_select(1, idx), self.num_groups, _kept(_raw(self, "weight"), idx),
                            _kept(_raw(self, "bias"), idx), self.eps)
        return torch.zeros_like(x).index_copy(1, idx, kept)

    def to_static_op(self) -> nn.Module:
        idx = _index(self.mask("out_channels"), self.num_channels)
        params = {k: _kept(v, idx) for k, v in self._parameters.items()}
        return self._static_copy(params, {}, num_channels=len(idx))


class DynamicGroupNorm(DynamicGroupNormMixin, nn.GroupNorm):
    static_class = nn.GroupNorm


# -- attention ----------------------------------------------------------------------------------
class DynamicMultiheadAttentionMixin(DynamicChannelMixin):
    """``nn.MultiheadAttention`` whose embed dim is pruned by whole heads (the export has fewer
    heads of the same size) or at the same positions in every head (the export has smaller
    heads).

    With smaller heads the masked layer keeps the original ``1/sqrt(head_dim)`` scaling; the
    export folds the ratio of old to new scale into the query projection so that both compute
    the same.
    """

    container_names = {"in_channels": "embed_dim", "out_channels": "embed_dim"}

    def _channel_counts(self) -> dict[str, int]:
        return {"embed_dim": self.embed_dim}

    def _init_mutable_attrs(self) -> None:
        super()._init_mutable_attrs()
        out_proj = self._modules["out_proj"]
        if not isinstance(out_proj, DynamicChannelMixin):
            out_proj = DynamicLinear.convert_from(out_proj)
            self._modules["out_proj"] = out_proj
        container = self.mutable_attrs["embed_dim"]
        out_proj.mutable_attrs["in_features"] = container
        out_proj.mutable_attrs["out_features"] = container

    @property
    def in_proj_weight(self) -> torch.Tensor:
        w = _raw(self, "in_proj_weight")
        mask = self.mask("out_channels") if w is not None and "mutable_attrs" in self._modules else None
        if mask is None:
            return w
        keep = mask.repeat(3).unsqueeze(1) & mask.unsqueeze(0)
        return w * keep.to(device=w.device, dtype=w.dtype)

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        b = _raw(self, "in_proj_bias")
        mask = self.mask("out_channels") if b is not None and "mutable_attrs" in self._modules else None
        return b if mask is None else b * mask.repeat(3).to(device=b.device, dtype=b.dtype)

    def to_static_op(self) -> nn.Module:
        mask = self.mask("out_channels")
        idx = _index(mask, self.embed_dim)
        kept = len(idx)
        heads, head_dim = _kept_heads(mask, self.num_heads, self.embed_dim)
        w, b = _raw(self, "in_proj_weight"), _raw(self, "in_proj_bias")
        rows = torch.cat([idx + i * self.embed_dim for i in range(3)])
        weight = _kept(w, rows)[:, idx.to(w.device)]
        bias = _kept(b, rows)
        scale = math.sqrt(head_dim / self.head_dim)
        if scale != 1.0:  # keep the original 1/sqrt(head_dim) of the unpruned layer
            weight = torch.cat([weight[:kept] * scale, weight[kept:]])
            bias = None if bias is None else torch.cat([bias[:kept] * scale, bias[kept:]])
        static = self._static_copy({"in_proj_weight": weight, "in_proj_bias": bias}, {},
                                   embed_dim=kept, kdim=kept, vdim=kept, num_heads=heads,
                                   head_dim=head_dim)
        static._modules["out_proj"] = self._modules["out_proj"].to_static_op()
        return static



def _kept_heads(mask: torch.Tensor | None, num_heads: int, embed_dim: int) -> tuple[int, int]:
    """(heads, head_dim) after pruning: whole heads kept, or the same positions in every head."""
    head_dim = embed_dim // num_heads
    if mask is None:
        return num_heads, head_dim
    per_head = mask.reshape(num_heads, head_dim).cpu()
    kept_rows = per_head.all(dim=1)
    if bool((kept_rows | ~per_head.any(dim=1)).all()):
        return int(kept_rows.sum()), head_dim
    if bool((per_head == per_head[:1]).all()):
        return num_heads, int(per_head[0].sum())
    raise ValueError(f"the embed dim of a MultiheadAttention ({embed_dim} channels, {num_heads} heads) is "
                     "pruned neither by whole heads nor at the same positions in every head")


class DynamicMultiheadAttention(DynamicMultiheadAttentionMixin, nn.MultiheadAttention):
    static_class = nn.MultiheadAttention


# -- which dynamic op for which layer -----------------------------------------------------------
DYNAMIC_OPS: dict[type, type] = {
    nn.Conv1d: DynamicConv1d, nn.Conv2d: DynamicConv2d, nn.Conv3d: DynamicConv3d,
    nn.Linear: DynamicLinear,
    nn.BatchNorm1d: DynamicBatchNorm1d, nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm3d: DynamicBatchNorm3d,
    nn.InstanceNorm1d: DynamicInstanceNorm1d, nn.InstanceNorm2d: DynamicInstanceNorm2d,
    nn.InstanceNorm3d: DynamicInstanceNorm3d,
    nn.LayerNorm: DynamicLayerNorm, nn.GroupNorm: DynamicGroupNorm,
    nn.MultiheadAttention: DynamicMultiheadAttention,
}
for _cls in set(DYNAMIC_OPS.values()):
    MODELS.register_module(module=_cls)


def dynamic_op_for(module: nn.Module) -> type | None:
    """The dynamic op class for a layer (its own class, or the one of the nearest base)."""
    if isinstance(module, DynamicChannelMixin):
        return None
    for base in type(module).__mro__:
        if base in DYNAMIC_OPS:
            return DYNAMIC_OPS[base]
    from .channel_mean import CHANNEL_MEAN_TYPES, DynamicChannelMean  # builds on this module

    return DynamicChannelMean if type(module) in CHANNEL_MEAN_TYPES else None
