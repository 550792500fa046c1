"""Sizes read from tensor shapes while tracing, remembering the tensor dim they came from.

A :class:`TracedSize` is the ``int`` the model reads, carrying its sources, so the channel rules
can keep computed shapes (``reshape(B, N, 3, heads, C // heads)``) consistent after pruning and
report the channels whose count the model uses as a number. Int attributes of modules
(``self.num_heads``) are traced the same way, with an :class:`AttrRef` as their source. Why:
docs/tracing.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Source = tuple[Any, int]  # (TensorRef of the tensor whose shape was read, dim) or (AttrRef, -1)


@dataclass(frozen=True)
class AttrRef:
    """An int attribute of a module, read while tracing: ``(module name, attribute, value)``."""

    module: str
    attr: str
    value: int

    def __str__(self) -> str:
        return f"{self.module + '.' if self.module else ''}{self.attr}"


def attribute_sources(sources: tuple[Source, ...]) -> list[AttrRef]:
    """The module attributes among a size's sources, each once, in order."""
    return list(dict.fromkeys(ref for ref, _ in sources if isinstance(ref, AttrRef)))


def shape_sources(sources: tuple[Source, ...]) -> list[Source]:
    """The sources of a size that are tensor dims (not module attributes)."""
    return [(ref, dim) for ref, dim in sources if not isinstance(ref, AttrRef)]


def bare_attribute(size: Any) -> AttrRef | None:
    """The attribute a size is, when it is one attribute as read (not a result computed from it)."""
    if isinstance(size, TracedSize) and len(size.sources) == 1:
        ref = size.sources[0][0]
        if isinstance(ref, AttrRef) and int(size) == ref.value:
            return ref
    return None


class TracedSize(int):
    """An ``int`` read from ``tensor.shape`` or ``tensor.size()`` during a trace.

    It is the very same number; integer arithmetic with it keeps its sources, and using it as
    a real number (``/``, ``**``, ``float()``) calls ``on_value_use(sources, what, value)``.
    """

    sources: tuple[Source, ...]
    on_value_use: Callable[[tuple[Source, ...], str, int], None] | None

    def __new__(cls, value: int, sources: tuple[Source, ...],
                on_value_use: Callable[[tuple[Source, ...], str, int], None] | None = None) -> TracedSize:
        size = super().__new__(cls, value)
        size.sources = sources
        size.on_value_use = on_value_use
        return size

    def __reduce__(self):  # copies and pickles are plain ints
        return (int, (int(self),))

    def _report(self, other: Any, what: str) -> None:
        sources = self.sources + (other.sources if isinstance(other, TracedSize) else ())
        if self.on_value_use is not None:
            self.on_value_use(sources, what, int(self))

    def __float__(self) -> float:
        self._report(None, "float()")
        return float(int(self))


def _arithmetic(name: str) -> Callable[[TracedSize, Any], Any]:
    """``int``'s operator ``name``: an integer result keeps the sources, a float one reports them."""
    plain = getattr(int, name)

    def op(self: TracedSize, other: Any) -> Any:
        result = plain(int(self), int(other) if isinstance(other, int) else other)
        if result is NotImplemented and isinstance(other, float):
            result = getattr(float(int(self)), name)(other)
        if isinstance(result, float):
            self._report(other, f"{name.strip('_')} gives {result!r}")
        elif isinstance(result, int) and not isinstance(result, bool):
            sources = self.sources + (other.sources if isinstance(other, TracedSize) else ())
            return TracedSize(result, sources, self.on_value_use)
        return result

    op.__name__ = name
    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
              "__rfloordiv__", "__mod__", "__rmod__", "__truediv__", "__rtruediv__", "__pow__", "__rpow__"):
    setattr(TracedSize, _name, _arithmetic(_name))


COMPARED = "compared with"  # how a comparison names itself in the value uses it reports


def _comparison(name: str, symbol: str) -> Callable[[TracedSize, Any], Any]:
    """``int``'s comparison ``name``: the result depends on the value, so the sources are
    reported (``x.shape[1] == self.channels``: the analysis may then let the export update the
    attribute); the result is a plain bool."""
    plain = getattr(int, name)

    def op(self: TracedSize, other: Any) -> Any:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            self._report(other, f"{COMPARED} {symbol} {int(other) if isinstance(other, int) else other!r}")
        return plain(int(self), int(other) if isinstance(other, int) else other)

    op.__name__ = name
    return op


for _name, _symbol in (("__eq__", "=="), ("__ne__", "!="), ("__lt__", "<"), ("__le__", "<="),
                       ("__gt__", ">"), ("__ge__", ">=")):
    setattr(TracedSize, _name, _comparison(_name, _symbol))
TracedSize.__hash__ = int.__hash__  # defining __eq__ would unset it
