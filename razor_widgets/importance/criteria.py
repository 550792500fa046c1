"""Importance criteria: how much each channel of a unit matters, per position in a block.

``l2``, ``bn_scale`` and ``random`` read the unit's layers; the data criteria (``taylor``,
``activation``; ``minitron`` and ``wanda`` in ``token_criteria.py``) score on calibration
batches, one ``calibrate(mutator, calibration)`` pass for every unit. Each criterion ranks
channels within a unit, summed over its layers. Formulas and sources: docs/importance.md.
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .calibration import Batch, calibration_batches
from .folding import fold
from .token_criteria import INPUT_CRITERIA, input_scores

__all__ = ["l2_scores", "bn_scale_scores", "random_scores", "calibrate", "DATA_CRITERIA", "fold"]

DATA_CRITERIA = ("taylor", "activation", "group_taylor") + INPUT_CRITERIA


def _kind(module: Any) -> Any:
    return getattr(module, "layer_kind", None)  # a dynamic op knows its layer kind


def _weight_rows(channel: Any) -> torch.Tensor | None:
    """The ``weight`` slice of each channel of the range, one row per channel (None when the
    layer has no such slice: 1-D norms, grouped-conv inputs, attention)."""
    kind = _kind(channel.module)
    if kind is None or channel.param_dim is not None:
        return None
    side = kind.output_channel_weights if channel.is_output_channel else kind.input_channel_weights
    weight = side(channel.module).get("weight")
    if weight is None or weight.dim() < 2:
        return None
    w = weight.detach()[channel.start:channel.end]
    return w.reshape(w.shape[0], -1).to(torch.float64)


def l2_scores(unit: Any) -> torch.Tensor:
    """L2 norm of each channel's weights, summed over the writing layers (else the readers)."""
    for related in (unit.output_related, unit.input_related):
        total, found = torch.zeros(unit.base_channels, dtype=torch.float64), False
        for channel in related:
            rows = _weight_rows(channel)
            if rows is not None:
                total += fold(unit, channel, rows.pow(2).sum(1).sqrt())
                found = True
        if found:
            return total
    return torch.zeros(unit.base_channels, dtype=torch.float64)


def bn_scale_scores(unit: Any) -> torch.Tensor | None:
    """``|gamma|`` of every batch norm of the unit, summed; None when the unit has none."""
    total, seen = torch.zeros(unit.base_channels, dtype=torch.float64), set()
    for channel in unit.output_related + unit.input_related:
        kind = _kind(channel.module)
        if kind is None or channel.param_dim is not None or id(channel.module) in seen:
            continue
        gamma = kind.channel_scale(channel.module)
        if gamma is not None:
            seen.add(id(channel.module))
            total += fold(unit, channel, gamma.detach()[channel.start:channel.end].abs())
    return total if seen else None


def random_scores(unit: Any, seed: int) -> torch.Tensor:
    """A random ranking, the same for the same seed and unit name."""
    generator = torch.Generator().manual_seed(int(seed) + zlib.crc32(str(unit.name).encode()))
    return torch.randperm(unit.base_channels, generator=generator).to(torch.float64)


# -- data criteria ------------------------------------------------------------------------------
def calibrate(mutator: Any, calibration: Any) -> None:
    """Score every unit of a data criterion (Taylor, activation) of ``mutator`` on the
    calibration batches, at full choices; the model's choices, mode and gradients are as they
    were afterwards. Units keep the data: when the weights change they score again."""
    units = [u for u in mutator.mutable_units if getattr(u, "criterion", None) in DATA_CRITERIA]
    if not units:
        return
    batches = list(calibration_batches(calibration))
    run = CalibrationRun(mutator.model, units, batches, mutator.mutable_units)
    for unit in units:
        unit.use_calibration(run)
    run.score()


class CalibrationRun:
    """The calibration batches of one model and the data units they score."""

    def __init__(self, model: nn.Module, units: list[Any], batches: list[Batch], every_unit: list[Any]) -> None:
        self.model, self.units, self.batches, self.every_unit = model, units, batches, every_unit
        self.scores: dict[int, torch.Tensor] = {}
        self.scored_key: Any = None

    def __getstate__(self) -> dict:  # a copy keeps the scores (for its own weights), not the data
        return {**self.__dict__, "batches": [], "scored_key": "adopt"}

    def weights_key(self) -> tuple:
        """The importance keys of the run's units: it changes when any of their watched weights do."""
        return tuple(u.importance_key() for u in self.units)

    def score_if_stale(self) -> None:
        """Score again when the units' weights changed since the last pass."""
        key = self.weights_key()
        if self.scored_key == "adopt":
            self.scored_key = key
        if self.scored_key != key:
            self.score()

    def score(self) -> None:
        """Score every unit: one forward (and, for Taylor units, backward) per batch."""
        if not self.batches:
            raise ValueError("the calibration data did not travel with this copy of the model; calibrate it here")
        sums = {id(u): torch.zeros(u.base_channels, dtype=torch.float64) for u in self._output_units()}
        needs_grad = any(u.criterion == "taylor" for u in self.units)
        grouped = [u for u in self.units if u.criterion == "group_taylor"]
        by_input = [u for u in self.units if u.criterion in INPUT_CRITERIA]
        with _full_choices(self.every_unit), _eval_mode(self.model):
            for batch in self.batches if sums else ():
                self._one_batch(batch, sums, needs_grad)
            if by_input:  # read at the layers that consume the channels (token_criteria.py)
                sums.update(input_scores(self.model, by_input, self.batches, _call))
            grads = self._parameter_gradients() if grouped else {}
        self.scores = {key: total / len(self.batches) for key, total in sums.items()}
        self.scores.update({id(u): u.scores_from_gradients(grads) for u in grouped})
        self.scored_key = self.weights_key()

    def _parameter_gradients(self) -> dict[int, torch.Tensor]:
        """``dL/dw`` of every trainable parameter, averaged over the batches (by id of the parameter)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        total: dict[int, torch.Tensor] = {}
        for batch in self.batches if params else []:  # frozen weights: no gradient, no score (a warned prefix)
            with torch.enable_grad():
                loss = _loss(_call(self.model, batch.inputs), batch.targets)
                found = torch.autograd.grad(loss, params, allow_unused=True)
            for param, grad in zip(params, found):
                if grad is not None:
                    total[id(param)] = total.get(id(param), 0) + grad.detach() / len(self.batches)
        return total

    def _one_batch(self, batch: Batch, sums: dict[int, torch.Tensor], needs_grad: bool) -> None:
        outputs: dict[int, list[torch.Tensor]] = {}
        hooks = [module.register_forward_hook(_recorder(outputs)) for module in self._modules()]
        try:
            with torch.set_grad_enabled(needs_grad):
                result = _call(self.model, batch.inputs)
        finally:
            for hook in hooks:
                hook.remove()
        grads: dict[int, list[torch.Tensor | None]] = {}
        if needs_grad:
            flat = [t for ts in outputs.values() for t in ts if t.requires_grad]
            found = torch.autograd.grad(_loss(result, batch.targets), flat, allow_unused=True) if flat else []
            by_tensor = {id(t): g for t, g in zip(flat, found)}
            grads = {k: [by_tensor.get(id(t)) for t in ts] for k, ts in outputs.items()}
        for unit in self._output_units():
            for channel, dim in _hooked_channels(unit):
                for i, a in enumerate(outputs.get(id(channel.module), [])):
                    grad = grads.get(id(channel.module), [None] * (i + 1))[i] if needs_grad else None
                    sums[id(unit)] += _channel_stat(unit, channel, dim(a), a, grad)

    def _modules(self) -> list[nn.Module]:
        modules = {id(c.module): c.module for u in self._output_units() for c, _ in _hooked_channels(u)}
        return list(modules.values())

    def _output_units(self) -> list[Any]:
        """The units scored at the outputs of their writing layers (Taylor, activation); group
        Taylor reads parameters, the token criteria the inputs of the consuming layers."""
        return [u for u in self.units if u.criterion not in INPUT_CRITERIA and u.criterion != "group_taylor"]


def _hooked_channels(unit: Any) -> Iterator[tuple[Any, Any]]:
    """The unit's output-side layers whose output tensor holds its channels, with a function
    giving that dim for an output."""
    for channel in unit.output_related:
        kind = _kind(channel.module)
        if kind is not None and channel.param_dim is None:
            module = channel.module
            yield channel, (lambda out, kind=kind, module=module: kind.output_channel_dim(module, out))


def _channel_stat(unit: Any, channel: Any, dim: int | None, a: torch.Tensor, grad: torch.Tensor | None
                  ) -> torch.Tensor:
    if dim is None:
        return torch.zeros(unit.base_channels, dtype=torch.float64)
    a = a.detach().movedim(dim, 0)[channel.start:channel.end]
    if unit.criterion == "activation":
        per_position = a.abs().reshape(a.shape[0], -1).mean(1)
    elif grad is None:
        per_position = torch.zeros(a.shape[0])
    else:
        g = grad.detach().movedim(dim, 0)[channel.start:channel.end]
        per_position = (a * g).reshape(a.shape[0], -1).sum(1).abs()
    return fold(unit, channel, per_position)


def _recorder(outputs: dict[int, list[torch.Tensor]]) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.setdefault(id(module), []).append(output)
    return hook


def _call(model: nn.Module, inputs: Any) -> Any:
    device = next((p.device for p in model.parameters()), None)

    def move(t: Any) -> Any:
        return t.to(device) if isinstance(t, torch.Tensor) and device is not None else t

    if isinstance(inputs, dict):
        return model(**{k: move(v) for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        return model(*[move(v) for v in inputs])
    return model(move(inputs))


def _logits(result: Any) -> torch.Tensor:
    if isinstance(result, torch.Tensor):
        return result
    if isinstance(result, dict) or hasattr(result, "logits"):
        value = result.get("logits") if isinstance(result, dict) else result.logits
        if value is None and isinstance(result, dict):
            value = next(iter(result.values()))
        return _logits(value)
    if isinstance(result, (tuple, list)) and result:
        return _logits(result[0])
    raise TypeError(f"the model returned {type(result).__name__}; the Taylor criterion needs a tensor output")


def _loss(result: Any, targets: Any) -> torch.Tensor:
    """Cross-entropy to the targets (class indices), MSE to float targets of the output's
    shape, or, without targets, cross-entropy to the classes the unpruned model predicts."""
    logits = _logits(result)
    if targets is None:
        if logits.dim() < 2 or logits.shape[1] < 2:
            raise ValueError(f"the Taylor criterion without targets needs class scores (N, classes, ...); the model "
                             f"returned shape {tuple(logits.shape)}: give (input, target) calibration batches")
        return F.cross_entropy(logits, logits.detach().argmax(1))
    targets = targets.to(logits.device) if isinstance(targets, torch.Tensor) else torch.as_tensor(targets)
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        return F.cross_entropy(logits, targets.long())
    if targets.shape == logits.shape:
        return F.mse_loss(logits, targets.to(logits.dtype))
    raise ValueError(f"calibration targets of shape {tuple(targets.shape)} and dtype {targets.dtype} fit neither "
                     f"class indices nor the output's shape {tuple(logits.shape)}")


@contextlib.contextmanager
def _full_choices(units: list[Any]) -> Iterator[None]:
    """Every channel of every unit kept, put back after."""
    saved = [(u.mutable_channel, u.mutable_channel.snapshot()) for u in units]
    try:
        for unit in units:
            unit.set_valid_choice(unit.validate_choice(unit.max_choice))
        yield
    finally:
        for mutable, state in saved:
            mutable.restore(state)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
