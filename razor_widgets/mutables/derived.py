"""Derived mutables: a choice (and mask) computed from other mutables, never set directly.

Reference 002's two cases: ``in_channels`` of a conv after a concat follows the output
channels of the concatenated convs (``derive_concat_mutable``), and the hidden width of a
block follows its input width times an expand ratio (``derive_expand_mutable``). The
derived value is recomputed on every read, so it stays consistent when a source changes.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .base import BaseMutable
from .units import make_divisible


def is_mutable(obj: Any) -> bool:
    """A mutable, or anything that quacks like one (a current choice that can be fixed)."""
    return isinstance(obj, BaseMutable) or (hasattr(obj, "current_choice") and hasattr(obj, "is_fixed"))


def _choice_value(mutable: Any) -> Any:
    """A mutable's choice as a number: kept channels for channel mutables, else the choice."""
    if hasattr(mutable, "current_mask"):
        return int(mutable.current_mask.sum())
    return mutable.current_choice


def _prefix_mask(size: int, kept: int) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[:kept] = True
    return mask


def _max_value(ratio: Any) -> Any:
    return ratio.max_choice if hasattr(ratio, "max_choice") else max(ratio.choices)


class DerivedMethodMixin:
    """Methods that derive new mutables from this one (its choice, and mask if it has one)."""

    def derive_same_mutable(self) -> DerivedMutable:
        """A derived mutable that follows this one unchanged (expand ratio 1)."""
        return derive_expand_mutable(self, 1)

    def derive_expand_mutable(self, expand_ratio: int | float | BaseMutable) -> DerivedMutable:
        """A derived mutable of this one's choice times ``expand_ratio`` (see ``derive_expand_mutable``)."""
        return derive_expand_mutable(self, expand_ratio)

    def derive_divide_mutable(self, ratio: int | float, divisor: int = 8) -> DerivedMutable:
        """A derived mutable of this one's choice divided by ``ratio``, made divisible by ``divisor``."""
        return derive_divide_mutable(self, ratio, divisor)

    @staticmethod
    def derive_concat_mutable(mutables: Iterable[Any]) -> DerivedMutable:
        """A derived mutable of several concatenated: choices summed, masks joined in order."""
        return derive_concat_mutable(mutables)

    def __floordiv__(self, other: Any) -> DerivedMutable:
        """``m // ratio`` or ``m // (ratio, divisor)``: a divided mutable, made divisible."""
        if isinstance(other, tuple) and len(other) == 2:
            return derive_divide_mutable(self, *other)
        if isinstance(other, (int, float)):
            return derive_divide_mutable(self, other)
        return NotImplemented


class DerivedMutable(BaseMutable, DerivedMethodMixin):
    """A mutable whose ``current_choice`` is ``choice_fn()`` and ``current_mask`` is ``mask_fn()``.

    It is fixed when all its sources are; its choice cannot be set or fixed directly. With a
    mask it has ``num_channels``, so it can be registered with a dynamic op's channel container.
    """

    def __init__(self, choice_fn: Callable[[], Any], mask_fn: Callable[[], torch.Tensor] | None = None,
                 source_mutables: Iterable[Any] | None = None, alias: str | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        if source_mutables is None:
            source_mutables = _trace_source_mutables(choice_fn, mask_fn)
        sources = []
        for mutable in source_mutables:
            if not any(mutable is s for s in sources):
                sources.append(mutable)
        # in __dict__: the sources belong to their own modules, not to this one
        self.__dict__.update(choice_fn=choice_fn, mask_fn=mask_fn, source_mutables=sources, name="")
        if mask_fn is not None:
            self.__dict__["num_channels"] = int(mask_fn().numel())

    @property
    def current_choice(self) -> Any:
        """``choice_fn()``, recomputed on every read; setting it raises ``RuntimeError``."""
        return self.choice_fn()

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        raise RuntimeError("Choice of drived mutable can not be set.")

    @property
    def current_mask(self) -> torch.Tensor:
        """``mask_fn()``, recomputed on every read; ``AttributeError`` when the sources have no mask."""
        if self.mask_fn is None:
            raise AttributeError("this derived mutable has no mask: its sources have none")
        return self.mask_fn()

    @property
    def activated_channels(self) -> int:
        """How many channels ``current_mask`` keeps."""
        return int(self.current_mask.sum())

    @property
    def is_fixed(self) -> bool:
        """Whether every source mutable is fixed; setting it raises (fix the sources instead)."""
        return all(m.is_fixed for m in self.source_mutables)

    @is_fixed.setter
    def is_fixed(self, is_fixed: bool) -> None:
        raise RuntimeError("`is_fixed` of derived mutable should not be modified, "
                           "please modify `is_fixed` of its source mutables.")

    def fix_chosen(self, chosen: Any = None) -> None:
        """Always raises ``RuntimeError``: a derived mutable is fixed through its sources."""
        raise RuntimeError("`fix_chosen` method of derived mutable should not be called.")

    def dump_chosen(self) -> Any:
        """Always raises ``RuntimeError``: a derived mutable has no choice of its own to dump."""
        raise RuntimeError("`dump_chosen` method of derived mutable should not be called.")

    @property
    def num_choices(self) -> int:
        """Always 1: the choice is determined by the sources."""
        return 1

    def __mul__(self, other: Any) -> DerivedMutable:
        if isinstance(other, (int, float)) or is_mutable(other):
            return derive_expand_mutable(self, other)
        return NotImplemented

    __rmul__ = __mul__

    def __repr__(self) -> str:
        text = f"{type(self).__name__}(current_choice={self.current_choice}, "
        if self.mask_fn is not None:
            text += f"activated_channels={self.activated_channels}, "
        return text + f"source_mutables={self.source_mutables}, is_fixed={self.is_fixed})"


def _trace_source_mutables(*fns: Callable | None) -> list[Any]:
    """The mutables a choice or mask function reads, found in its closure."""
    found: list[Any] = []
    for fn in fns:
        if fn is None:
            continue
        closure = inspect.getclosurevars(fn)
        for value in list(closure.nonlocals.values()) + list(closure.globals.values()):
            found.extend(_sources(*(value if isinstance(value, (list, tuple)) else [value])))
    return found


def _sources(*objs: Any) -> list[Any]:
    out: list[Any] = []
    for obj in objs:
        if isinstance(obj, DerivedMutable):
            out.extend(obj.source_mutables)
        elif is_mutable(obj):
            out.append(obj)
    return out


def derive_expand_mutable(mutable: Any, expand_ratio: int | float | Any) -> DerivedMutable:
    """``mutable``'s choice times ``expand_ratio`` (a number or a mutable value).

    For a channel mutable the mask is a prefix: ``kept * ratio`` of
    ``num_channels * max ratio`` channels (an expand ratio widens a layer, it does not
    repeat channels; for repeated channels use ``expand_mutable_channel``).
    """
    ratio_is_mutable = is_mutable(expand_ratio)
    if not ratio_is_mutable and not isinstance(expand_ratio, (int, float)):
        raise TypeError(f"expand ratio must be a number or a mutable, got {type(expand_ratio).__name__}")

    def ratio_value() -> Any:
        return expand_ratio.current_choice if ratio_is_mutable else expand_ratio

    def choice_fn() -> Any:
        return _scaled(_choice_value(mutable) * ratio_value())

    mask_fn = None
    if hasattr(mutable, "current_mask"):
        size = int(mutable.current_mask.numel() * (_max_value(expand_ratio) if ratio_is_mutable else expand_ratio))

        def mask_fn() -> torch.Tensor:
            return _prefix_mask(size, int(choice_fn()))

    return DerivedMutable(choice_fn, mask_fn, _sources(mutable, expand_ratio))


def derive_divide_mutable(mutable: Any, ratio: int | float, divisor: int = 8) -> DerivedMutable:
    """``make_divisible(choice // ratio, divisor)``: a width that follows a fraction of another."""
    if not isinstance(ratio, (int, float)) or ratio <= 0:
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")

    def choice_fn() -> int:
        return make_divisible(_choice_value(mutable) // ratio, divisor)

    mask_fn = None
    if hasattr(mutable, "current_mask"):
        size = make_divisible(mutable.current_mask.numel() // ratio, divisor)

        def mask_fn() -> torch.Tensor:
            return _prefix_mask(size, min(size, choice_fn()))

    return DerivedMutable(choice_fn, mask_fn, _sources(mutable))


def derive_concat_mutable(mutables: Iterable[Any]) -> DerivedMutable:
    """The concatenation of several mutables: choices summed, masks concatenated in order."""
    mutables = list(mutables)
    if not mutables:
        raise ValueError("derive_concat_mutable needs at least one mutable")

    def choice_fn() -> Any:
        return sum(_choice_value(m) for m in mutables)

    mask_fn = None
    if all(hasattr(m, "current_mask") for m in mutables):
        def mask_fn() -> torch.Tensor:
            return torch.cat([m.current_mask for m in mutables])

    return DerivedMutable(choice_fn, mask_fn, _sources(*mutables))


def _scaled(value: Any) -> Any:
    """Whole numbers as ints (a channel count times an int ratio is a count)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
