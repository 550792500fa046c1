"""The recorded forward pass: ops (``Node``) on tensors (``TensorRef``) in execution order.

Records only: ``tracer.py`` fills them; the analysis, the counter and the layer kinds read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .traced_size import Source


@dataclass(frozen=True)
class TensorRef:
    """A tensor seen during the trace: its handle and its concrete shape."""

    handle: int
    shape: tuple[int, ...]
    param: str | None = None  # qualified name when the tensor is a parameter or buffer
    is_float: bool = True


@dataclass
class Node:
    """One recorded call: a leaf module (``kind='module'``) or a torch function."""

    index: int
    kind: str
    target: Any
    name: str  # module path for modules, function name for functions
    scope: str  # path of the module whose forward made the call
    args: tuple
    kwargs: dict
    outputs: Any
    _inputs: list[TensorRef] | None = field(default=None, repr=False)
    _outputs: list[TensorRef] | None = field(default=None, repr=False)

    def input_refs(self) -> list[TensorRef]:
        """The tensors among the node's arguments (positional and keyword), in order; computed once."""
        if self._inputs is None:
            self._inputs = [x for x in leaves((self.args, self.kwargs)) if isinstance(x, TensorRef)]
        return self._inputs

    def output_refs(self) -> list[TensorRef]:
        """The tensors among the node's outputs, in order; computed once."""
        if self._outputs is None:
            self._outputs = [x for x in leaves(self.outputs) if isinstance(x, TensorRef)]
        return self._outputs


@dataclass
class ModuleCall:
    """One call of a module that is not a leaf: its path, its tensor arguments and outputs (in
    ``leaves`` order, tensors only) and the nodes it made (``start <= index < end``)."""

    path: str
    start: int
    inputs: list[TensorRef]
    end: int = -1
    outputs: list[TensorRef] = field(default_factory=list)
    output_is_tensor: bool = False  # the call returned a bare tensor (not a tuple, list or dict)


@dataclass
class TracedGraph:
    """The recorded forward: nodes in execution order, inputs and outputs as tensor refs."""

    nodes: list[Node]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    modules: dict[str, nn.Module]
    unreached: list[str] = field(default_factory=list)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    # sizes used as numbers: (sources, why, the value used)
    size_uses: list[tuple[tuple[Source, ...], str, int]] = field(default_factory=list)
    value_reads: list[str] = field(default_factory=list)  # where the forward read a tensor's value
    output_paths: list[tuple] = field(default_factory=list)  # where each output sits in the model's output
    calls: list[ModuleCall] = field(default_factory=list)  # calls of non-leaf modules, in call order
    held: list[tuple[tuple, TensorRef]] = field(default_factory=list)  # tensors inside unwalkable outputs (a cache)



def leaves(tree: Any) -> list[Any]:
    """The leaves of nested tuples, lists and dicts, in order."""
    if isinstance(tree, (list, tuple)):
        return [leaf for x in tree for leaf in leaves(x)]
    if isinstance(tree, dict):
        return [leaf for x in tree.values() for leaf in leaves(x)]
    return [tree]
