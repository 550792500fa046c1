"""Calibration criteria of language-model pruning, read at the layers that consume a channel.

``minitron`` (NVIDIA Minitron, Muralidharan et al. 2024): the activation a channel carries into
the layers that multiply it (down_proj's input for an MLP neuron, o_proj's for a head, the
normalised stream for a hidden channel), aggregated as the paper's best: L2 norm over the tokens
of a sequence, mean over the sequences. ``wanda`` (a structured Wanda, Sun et al. 2024):
``||X_c||_2 * sum |W[:, c]|`` over those layers, X over every calibration token. Formulas: docs/importance.md.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .folding import fold

__all__ = ["INPUT_CRITERIA", "input_scores"]

INPUT_CRITERIA = ("minitron", "wanda")


def _readers(unit: Any) -> list[tuple[Any, torch.Tensor]]:
    """(channel, weight rows of its input channels) of the unit's layers that multiply its
    channels by a weight matrix (linear and conv layers)."""
    found = []
    for channel in unit.input_related:
        kind = getattr(channel.module, "layer_kind", None)
        if kind is None or channel.param_dim is not None:
            continue
        weight = kind.input_channel_weights(channel.module).get("weight")
        if weight is not None and weight.dim() >= 2:
            rows = weight.detach()[channel.start:channel.end]
            found.append((channel, rows.reshape(rows.shape[0], -1).to(torch.float64)))
    return found


def input_scores(model: nn.Module, units: list[Any], batches: list[Any], call: Any) -> dict[int, torch.Tensor]:
    """``{id(unit): scores}`` of the units (criterion ``minitron`` or ``wanda``) summed over the
    batches (``call(model, inputs)`` runs one); the caller fixes choices and mode."""
    readers = {id(u): _readers(u) for u in units}
    modules = {id(c.module): c.module for rs in readers.values() for c, _ in rs}
    minitron = {id(u): torch.zeros(u.base_channels, dtype=torch.float64) for u in units}
    squares: dict[tuple[int, int], torch.Tensor] = {}  # (unit, reader) -> sum of x^2 per channel
    for batch in batches:
        inputs: dict[int, list[torch.Tensor]] = {}
        hooks = [m.register_forward_pre_hook(_recorder(inputs)) for m in modules.values()]
        try:
            with torch.no_grad():
                call(model, batch.inputs)
        finally:
            for hook in hooks:
                hook.remove()
        for unit in units:
            for r, (channel, _) in enumerate(readers[id(unit)]):
                for x in inputs.get(id(channel.module), []):
                    per_token = _channels_first(channel, x)
                    if per_token is None:
                        continue
                    # Minitron: L2 over each sequence's tokens, mean over sequences
                    per_sequence = per_token.pow(2).sum(-1).sqrt() if per_token.dim() == 3 else per_token.abs()
                    minitron[id(unit)] += fold(unit, channel, per_sequence.reshape(per_sequence.shape[0], -1).mean(1))
                    key = (id(unit), r)
                    squares[key] = squares.get(key, 0) + per_token.pow(2).reshape(per_token.shape[0], -1).sum(1)
    if all(u.criterion == "minitron" for u in units):
        return minitron
    scores = dict(minitron)
    for unit in units:
        if unit.criterion == "wanda":
            total = torch.zeros(unit.base_channels, dtype=torch.float64)
            for r, (channel, rows) in enumerate(readers[id(unit)]):
                if (id(unit), r) in squares:
                    total += fold(unit, channel, squares[id(unit), r].sqrt() * rows.abs().sum(1))
            scores[id(unit)] = total * len(batches)  # the caller averages over batches
    return scores


def _channels_first(channel: Any, x: torch.Tensor) -> torch.Tensor | None:
    """The input ``x`` of a reading layer as ``[channels, sequences, tokens]`` (or
    ``[channels, positions]`` when it has no sequence dim), float64, for the channel's range."""
    kind = channel.module.layer_kind
    dim = kind.output_channel_dim(channel.module, x)  # linear and conv read channels where they write them
    if dim is None:
        return None
    x = x.detach().to(torch.float64).movedim(dim, 0)[channel.start:channel.end]
    if x.dim() >= 3:  # [channels, batch, tokens...]
        return x.reshape(x.shape[0], x.shape[1], -1)
    return x.reshape(x.shape[0], -1)


def _recorder(inputs: dict[int, list[torch.Tensor]]) -> Any:
    def hook(module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor):
            inputs.setdefault(id(module), []).append(args[0])
    return hook
