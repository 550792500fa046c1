"""Channel units: the channels of several layers that are pruned together, by one choice."""
from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from ..channels.channel_range import Channel
from ..registry import MODELS
from .base import BaseMutable
from .importance_cache import CachedImportanceMixin
from .mutable_channel import BaseMutableChannel, DerivedMutableChannel, MutableChannelContainer, SimpleMutableChannel


def make_divisible(value: float, divisor: int, min_value: int | None = None,
                   min_ratio: float = 0.9) -> int:
    """Round to a multiple of ``divisor`` without losing more than ``1 - min_ratio`` of value."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < min_ratio * value:
        new += divisor
    return new


class ChannelUnit(BaseMutable):
    """Layers whose channels must be pruned together: ``output_related`` and ``input_related``.

    A unit of ``num_channels`` channels may be made of ``repeats`` identical blocks (the groups of
    a grouped convolution, the heads of an attention layer): a choice then keeps the same
    positions in every block.
    """

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(**{k: v for k, v in kwargs.items() if k in ("alias", "init_cfg")})
        self.num_channels = int(num_channels)
        self.repeats = 1
        self.name: Any = ""
        self.output_related: list[Channel] = []
        self.input_related: list[Channel] = []
        self.fixed_reasons: list[str] = []

    def add_output_related(self, channel: Channel) -> None:
        """Add a channel range of a layer output that this unit's choice prunes."""
        self.output_related.append(channel)

    def add_input_related(self, channel: Channel) -> None:
        """Add a channel range of a layer input that reads this unit's channels."""
        self.input_related.append(channel)

    @property
    def channels(self) -> list[Channel]:
        """Every channel range of the unit: output-related, then input-related."""
        return self.output_related + self.input_related

    def config_template_channels(self) -> dict[str, Any]:
        """The unit's channel ranges as config data (with ``repeats`` when the unit has blocks)."""
        cfg: dict[str, Any] = {
            "input_related": [c.config_template() for c in self.input_related],
            "output_related": [c.config_template() for c in self.output_related],
        }
        if self.repeats > 1:
            cfg["repeats"] = self.repeats
        return cfg

    def extra_repr(self) -> str:
        """The unit's name and channel count, for ``repr``."""
        return f"name={self.name}, num_channels={self.num_channels}"


class MutableChannelUnit(ChannelUnit):
    """A unit with a choice: how many (and, for some types, which) channels it keeps."""

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        self.mutable_channel: BaseMutableChannel = SimpleMutableChannel(self.num_channels)
        self._from_predefined = False

    # -- state ----------------------------------------------------------------------------
    @property
    def base_channels(self) -> int:
        """Channels per block (``num_channels // repeats``): the positions a choice ranks."""
        return self.num_channels // self.repeats

    @property
    def is_mutable(self) -> bool:
        """Whether the unit can be pruned: nothing fixes it and a block has more than one channel."""
        return not self.fixed_reasons and self.base_channels > 1

    @property
    def current_mask(self) -> torch.Tensor:
        """The mask of kept channels, ``num_channels`` long."""
        return self.mutable_channel.current_mask

    @property
    def activated_channels(self) -> int:
        """How many channels the unit keeps now."""
        return int(self.current_mask.sum())

    @property
    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this unit from a config."""
        return {"num_channels": self.num_channels}

    def config_template(self, with_init_args: bool = False, with_channels: bool = False) -> dict:
        """The unit as config data, as in MMRazor: its choice, and optionally ``init_args`` and ``channels``."""
        cfg: dict[str, Any] = {}
        if with_init_args:
            cfg["init_args"] = dict(self.init_args)
        if with_channels:
            cfg["channels"] = self.config_template_channels()
        cfg["choice"] = self.current_choice
        return cfg

    # -- choices --------------------------------------------------------------------------
    def validate_choice(self, choice: Any) -> Any:
        """Return the normalised choice, or raise ValueError naming this unit."""
        raise NotImplementedError

    def set_valid_choice(self, choice: Any) -> None:
        """Apply a choice that ``validate_choice`` returned."""
        self.current_choice = choice

    def _set_kept(self, kept_per_block: int) -> None:
        prefix = type(self)._order is MutableChannelUnit._order
        cache = self.__dict__.setdefault("_prefix_masks", {})
        mask = cache.get(kept_per_block) if prefix else None
        if mask is None:
            mask = torch.zeros(self.base_channels, dtype=torch.bool)
            mask[self._order()[:kept_per_block]] = True
            mask = mask.repeat(self.repeats)
            if prefix:  # a slider visits the same few masks again and again: build each once
                cache[kept_per_block] = mask
        self.mutable_channel.set_valid_mask(mask)

    def _order(self) -> torch.Tensor:
        """Channel positions in the order they are kept (a prefix by default)."""
        return torch.arange(self.base_channels)

    @property
    def num_choices(self) -> int:
        """How many kept counts there are: one per channel of a block."""
        return self.base_channels

    # -- preparing the model --------------------------------------------------------------
    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Register this unit's mask with the dynamic ops of every layer it touches."""
        for channel in self.channels:
            module = channel.module
            if channel.param_dim is not None or module is None:
                continue
            attr = "out_channels" if channel.is_output_channel else "in_channels"
            container = module.get_mutable_attr(attr)
            span = channel.end - channel.start
            repeat = span // (channel.expand_ratio * self.num_channels)
            derived = DerivedMutableChannel(self.mutable_channel, channel.expand_ratio, repeat)
            container.register_mutable(derived, channel.start, channel.end)

    def channel_mask(self, channel: Channel) -> torch.Tensor:
        """This unit's mask as seen by one of its channel ranges (tiled and expanded)."""
        span = channel.end - channel.start
        mask = self.current_mask.repeat(span // (channel.expand_ratio * self.num_channels))
        return mask.repeat_interleave(channel.expand_ratio) if channel.expand_ratio > 1 else mask

    @classmethod
    def init_from_mutable_channel(cls, mutable_channel: BaseMutableChannel) -> MutableChannelUnit:
        """A unit driven by a model's own (predefined) mutable channel, as MMRazor's predefined parsing builds."""
        mode = getattr(mutable_channel, "choice_mode", None)
        unit = cls(mutable_channel.num_channels, **({"choice_mode": mode} if mode else {}))
        unit.mutable_channel = mutable_channel
        unit._from_predefined = True
        return unit

    @staticmethod
    def _register_channel_container(model: nn.Module,
                                    container_class: type[MutableChannelContainer] = MutableChannelContainer) -> None:
        """Make sure every dynamic op of ``model`` has containers (of ``container_class``) for
        both sides (reference 000 calls it with ``MutableChannelContainer``)."""
        for module in model.modules():
            if hasattr(module, "get_mutable_attr") and "mutable_attrs" not in module._modules:
                module._init_mutable_attrs(container_class)


@MODELS.register_module()
class SequentialMutableChannelUnit(MutableChannelUnit):
    """Keeps a prefix of the channels; the choice is a ratio or a number of channels."""

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        if choice_mode not in ("ratio", "number"):
            raise ValueError(f"choice_mode must be 'ratio' or 'number', got {choice_mode!r}")
        self.choice_mode = choice_mode
        self.divisor = int(divisor)
        self.min_value = int(min_value)
        self.min_ratio = float(min_ratio)

    @property
    def is_num_mode(self) -> bool:
        """Whether the choice is a channel count (``'number'``) rather than a ratio."""
        return self.choice_mode == "number"

    @property
    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this unit: channels, choice mode and rounding."""
        return {"num_channels": self.num_channels, "choice_mode": self.choice_mode,
                "divisor": self.divisor, "min_value": self.min_value, "min_ratio": self.min_ratio}

    def _kept_per_block(self, choice: Any) -> int:
        """How many positions per block a valid choice keeps."""
        if self.is_num_mode:
            return int(choice) // self.repeats
        base = self.base_channels
        return min(base, max(1, make_divisible(float(choice) * base, self.divisor,
                                               self.min_value, self.min_ratio)))

    def validate_choice(self, choice: Any) -> Any:
        """The choice as an int (number mode, a valid multiple) or a ratio in (0, 1]; else an error naming the unit."""
        name = self.name
        if isinstance(choice, bool) or not isinstance(choice, (int, float)):
            if isinstance(choice, torch.Tensor) and choice.numel() == 1:
                choice = choice.item()
            else:
                raise TypeError(f"unit {name!r}: a choice is a number, got {type(choice).__name__}")
        if self.is_num_mode:
            if float(choice) != int(choice):
                raise ValueError(f"unit {name!r} counts channels: {choice!r} is not a whole number")
            choice = int(choice)
            step = self.repeats * (self.divisor if choice != self.num_channels else 1)
            if not 1 <= choice <= self.num_channels or choice % step:
                raise ValueError(
                    f"unit {name!r}: {choice} channels is not a valid choice; "
                    f"choose a multiple of {self.repeats * self.divisor} in [1, {self.num_channels}]")
            least = min(self.min_value, self.base_channels) * self.repeats
            if choice < least:
                raise ValueError(f"unit {name!r}: {choice} channels is not a valid choice; it keeps at least {least}")
            return choice
        choice = float(choice)
        if not 0.0 < choice <= 1.0:
            raise ValueError(f"unit {name!r}: ratio {choice!r} is outside (0, 1]")
        return choice

    @property
    def current_choice(self) -> int | float:
        """The kept channels as a count or a fraction of ``num_channels``; a setting is validated first."""
        if self._from_predefined and hasattr(self.mutable_channel, "choice_mode"):
            return self.mutable_channel.current_choice
        kept = self.activated_channels
        return kept if self.is_num_mode else kept / self.num_channels

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        self.set_valid_choice(self.validate_choice(choice))

    def set_valid_choice(self, choice: Any) -> None:
        """Apply a choice that ``validate_choice`` returned."""
        if self._from_predefined:
            self.mutable_channel.current_choice = choice
            return
        self._set_kept(self._kept_per_block(choice))

    def _choice_of(self, kept_per_block: int) -> int | float:
        kept = kept_per_block * self.repeats
        return kept if self.is_num_mode else kept / self.num_channels

    @property
    def max_choice(self) -> int | float:
        """The choice that keeps every channel."""
        return self._choice_of(self.base_channels)

    @property
    def min_choice(self) -> int | float:
        """The smallest valid choice: the fewest channels per block that ``divisor`` and ``min_value`` allow."""
        return self._choice_of(self._valid_kept(1))

    def sample_choice(self) -> int | float:
        """A random valid choice (a uniform kept count per block, rounded by the divisor)."""
        return self._choice_of(self._valid_kept(random.randint(1, self.base_channels)))

    def _valid_kept(self, wanted: int) -> int:
        """Channels per block near ``wanted`` that make a valid choice: rounded by the divisor
        (in number mode a multiple of it, unless every channel is kept)."""
        base = self.base_channels
        kept = max(1, make_divisible(wanted, self.divisor, self.min_value, self.min_ratio))
        if self.is_num_mode and kept % self.divisor:
            kept = -(-kept // self.divisor) * self.divisor
        return min(base, kept)


MODELS.register_module("SequentialChannelUnit", module=SequentialMutableChannelUnit)


@MODELS.register_module()
class L1MutableChannelUnit(CachedImportanceMixin, SequentialMutableChannelUnit):
    """Keeps the channels whose weights have the largest L1 norm (any subset, not a prefix);
    the ranking is computed once and cached until the weights change (``importance_cache.py``)."""

    def __init__(self, num_channels: int, choice_mode: str = "ratio", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)

    def compute_importance(self) -> torch.Tensor:
        """The L1 scores the cached ranking is built from (``importance``)."""
        return self.importance()

    def importance(self) -> torch.Tensor:
        """L1 norm per channel position of the writing layers' weights (else the readers')."""
        for related in (self.output_related, self.input_related):
            total = torch.zeros(self.base_channels, dtype=torch.float64)
            found = False
            for channel in related:
                norms = _l1_norms(channel)
                if norms is None:
                    continue
                norms = norms.reshape(-1, channel.expand_ratio).sum(1)
                total += norms.reshape(-1, self.base_channels).sum(0)
                found = True
            if found:
                return total
        return torch.zeros(self.base_channels, dtype=torch.float64)


def _l1_norms(channel: Channel) -> torch.Tensor | None:
    """L1 norm of the ``weight`` slice of every channel in the range (none for 1-D weights)."""
    module = channel.module
    kind = getattr(module, "layer_kind", None)  # a dynamic op knows its layer kind
    if kind is None or channel.param_dim is not None:
        return None
    weights = (kind.output_channel_weights if channel.is_output_channel else kind.input_channel_weights)(module)
    weight = weights.get("weight")
    if weight is None or weight.dim() < 2:
        return None
    w = weight.detach().to(torch.float64).abs()
    return w.reshape(w.shape[0], -1).sum(1)[channel.start:channel.end]


MODELS.register_module(["L1ChannelUnit"], module=L1MutableChannelUnit)


@MODELS.register_module()
class OneShotMutableChannelUnit(SequentialMutableChannelUnit):
    """A unit whose choice is one of ``candidate_choices`` (ratios or numbers)."""

    def __init__(self, num_channels: int, candidate_choices: list | None = None,
                 choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio, **kwargs)
        default = [1.0] if choice_mode == "ratio" else [num_channels]
        self.candidate_choices = list(candidate_choices or default)

    @property
    def init_args(self) -> dict[str, Any]:
        """The sequential unit's arguments plus ``candidate_choices``."""
        return {**super().init_args, "candidate_choices": list(self.candidate_choices)}

    def sample_choice(self) -> int | float:
        """One of ``candidate_choices``, uniformly at random."""
        return random.choice(self.candidate_choices)

    @property
    def max_choice(self) -> int | float:
        """The largest candidate choice."""
        return max(self.candidate_choices)

    @property
    def min_choice(self) -> int | float:
        """The smallest candidate choice."""
        return min(self.candidate_choices)

    @property
    def num_choices(self) -> int:
        """How many candidate choices there are."""
        return len(self.candidate_choices)


@MODELS.register_module()
class SlimmableChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit in number mode whose candidates line up with the subnets of a
    slimmable network: subnet ``i`` takes every unit's ``i``-th candidate."""

    def __init__(self, num_channels: int, candidate_choices: list | None = None,
                 choice_mode: str = "number", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_channels, candidate_choices, choice_mode, divisor, min_value,
                         min_ratio, **kwargs)

    def alter_candidates_of_current_choice(self, index: int) -> None:
        """Choose candidate ``index``: the unit's width in subnet ``index`` of the slimmable network."""
        self.current_choice = self.candidate_choices[index]


__all__ = [
    "Channel", "ChannelUnit", "MutableChannelUnit", "SequentialMutableChannelUnit",
    "L1MutableChannelUnit", "OneShotMutableChannelUnit", "SlimmableChannelUnit",
    "make_divisible", "MutableChannelContainer",
]
