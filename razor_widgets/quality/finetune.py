"""Recovery training: a short fine-tune of a pruned model, optionally distilled from the unpruned one.

``finetune`` trains an exported (plain torch) model or a masked (prepared) one in place. A masked
model keeps its masks: pruned channels are zero in every forward, so their weights get no
gradient and its export still equals the masked model afterwards. With ``teacher=`` it distils
(Hinton et al. 2015): ``alpha * task loss + (1 - alpha) * T^2 * KL(teacher || student)`` at
temperature ``T``; batches without targets use the KL term alone.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..mutators.channel_mutator import ChannelMutator
from ..mutators.prepared_mark import is_prepared

__all__ = ["LossHistory", "finetune", "full_choice_copy", "kd_loss"]

_NO_TARGET = object()


@dataclass(frozen=True)
class LossHistory:
    """What :func:`finetune` did: the loss of every step (the value it minimised, before that
    step's update), the wall time, and whether a teacher took part."""

    losses: list[float]
    seconds: float
    distilled: bool

    @property
    def first(self) -> float:
        """The loss of the first step."""
        return self.losses[0]

    @property
    def last(self) -> float:
        """The loss of the last step."""
        return self.losses[-1]

    def mean(self, last: int | None = None) -> float:
        """Mean loss over all steps, or over the ``last`` ones."""
        values = self.losses if last is None else self.losses[-last:]
        return sum(values) / len(values)

    def summary(self) -> str:
        """One line: steps, seconds, and the first loss against the mean of the last tenth of the steps."""
        window = max(1, len(self.losses) // 10)
        kind = "distillation" if self.distilled else "fine-tune"
        return (f"{kind}: {len(self.losses)} steps in {self.seconds:.1f} s, loss {self.first:.4g} -> "
                f"{self.mean(window):.4g} (mean of the last {window})")

    def __len__(self) -> int:
        return len(self.losses)


def full_choice_copy(mutator: ChannelMutator) -> nn.Module:
    """The prepared model at full choices as a new plain-torch model (its own tensors), while the
    mutator's masks stay exactly as they are (restored from a snapshot, never re-chosen: an L1 unit
    re-chosen after training could pick other channels)."""
    saved = [(unit.mutable_channel, unit.mutable_channel.snapshot()) for unit in mutator.mutable_units]
    try:
        mutator.set_max_choices()
        return mutator.to_static()
    finally:
        for mutable, state in saved:
            mutable.restore(state)


def finetune(model: nn.Module | ChannelMutator, data: Iterable[Any], steps: int, lr: float = 1e-3,
             teacher: nn.Module | ChannelMutator | None = None,
             loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
             device: str | torch.device | None = None, *, alpha: float = 0.5, temperature: float = 4.0,
             optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
             progress: bool = True) -> LossHistory:
    """Train ``model`` in place for ``steps`` batches of ``data`` and return the :class:`LossHistory`.

    - ``model``: an exported model, or a masked one (a prepared model, or its ``ChannelMutator``).
      Its choices and masks do not change; only trainable weights (and norm statistics) do.
    - ``data``: any iterable of ``(input, target)`` batches (a DataLoader, a list), cycled until
      ``steps``; a batch may be a bare input or ``(input, None)`` when a teacher gives the loss.
      A one-shot iterator is replayed from the batches it gave.
    - ``loss_fn(output, target)``: the task loss, cross-entropy by default.
    - ``teacher``: the unpruned model to distil from, frozen. A ``ChannelMutator`` (or an
      ``IteAlgorithm``), the masked student's own included, is taken at full choices, as a copy
      made at the start; any other module is used as it is (in eval mode, never trained). A
      prepared model passed without its mutator is refused (it computes its current choices).
      Its outputs must have the student's shape; classes lie along dim 1.
    - ``device``: where to train (e.g. ``"cuda"``); model and teacher go back where they were.
    - ``optimizer``: a factory ``params -> Optimizer``; Adam at ``lr`` without weight decay by
      default (weight decay would shrink the pruned weights that no gradient reaches).

    Bad input (no batches, non-positive steps or lr, a teacher whose outputs differ in shape)
    raises ``ValueError`` before anything changes. Train/eval modes are restored afterwards.
    """
    if isinstance(model, ChannelMutator) and model.model is None:
        raise ValueError("finetune: the ChannelMutator is not prepared (call prepare_from_supernet first)")
    student = model.model if isinstance(model, ChannelMutator) else model
    _check_arguments(student, steps, lr, alpha, temperature)
    frozen = _frozen_teacher(teacher, student)
    iterator = iter(data)
    first = next(iterator, None)
    if first is None:
        raise ValueError("finetune: data gave no batches (an empty dataset or DataLoader?)")
    modes = {module: module.training for module in student.modules()}
    if frozen is teacher and teacher is not None:  # the caller's own module: its modes come back too
        modes.update({module: module.training for module in teacher.modules()})
    home = _device_of(student)
    teacher_home = _device_of(frozen) if frozen is not None else None
    target_device = torch.device(device) if device is not None else home
    try:
        student.to(target_device)
        if frozen is not None:
            frozen.to(target_device).eval()
        _check_outputs(student, frozen, first, target_device, loss_fn)
        params = [p for p in student.parameters() if p.requires_grad]
        opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)
        student.train()
        losses = _train(student, frozen, _cycle(data, iterator, first), steps, opt, loss_fn, alpha, temperature,
                        target_device, progress)
    finally:
        student.to(home)
        for module, training in modes.items():
            module.training = training
        if frozen is not None and frozen is teacher:
            frozen.to(teacher_home)
    return losses


def _check_arguments(student: Any, steps: Any, lr: Any, alpha: Any, temperature: Any) -> None:
    if not isinstance(student, nn.Module):
        raise TypeError(f"finetune: model must be a nn.Module or a prepared ChannelMutator, got "
                        f"{type(student).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"finetune: steps must be a positive int, got {steps!r}")
    for name, value in (("lr", lr), ("temperature", temperature)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"finetune: {name} must be a positive number, got {value!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"finetune: alpha (the weight of the task loss) must be in [0, 1], got {alpha!r}")
    if not any(p.requires_grad for p in student.parameters()):
        raise ValueError("finetune: the model has no trainable parameters")


def _frozen_teacher(teacher: Any, student: nn.Module) -> nn.Module | None:
    """The teacher as a module that never trains: a full-choice copy of a prepared model."""
    if teacher is None:
        return None
    if isinstance(teacher, ChannelMutator):
        return full_choice_copy(teacher).eval().requires_grad_(False)
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"finetune: teacher must be a nn.Module or a ChannelMutator, got {type(teacher).__name__}")
    mutator = getattr(teacher, "mutator", None)  # an IteAlgorithm
    if isinstance(mutator, ChannelMutator):
        return full_choice_copy(mutator).eval().requires_grad_(False)
    if is_prepared(teacher):
        raise ValueError("finetune: the teacher is a prepared (masked) model, which computes its current "
                         "choices; pass its ChannelMutator to distil from it at full choices")
    if teacher is student:
        raise ValueError("finetune: the teacher is the student itself; pass the unpruned original "
                         "(or the ChannelMutator of a masked student) as teacher")
    return teacher


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _split(batch: Any) -> tuple[Any, Any]:
    """``(input, target)`` of a batch; a bare input (or a 1-tuple) has no target."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], (_NO_TARGET if batch[1] is None else batch[1])
        if len(batch) == 1:
            return batch[0], _NO_TARGET
        raise ValueError(f"finetune: a batch must be (input, target) or an input, got a sequence of {len(batch)}")
    return batch, _NO_TARGET


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _check_outputs(student: nn.Module, teacher: nn.Module | None, batch: Any, device: torch.device,
                   loss_fn: Any) -> None:
    """One eval-mode forward of the first batch (no statistics change): outputs must be logits of
    the teacher's shape, and a batch without targets needs a teacher."""
    inputs, target = _split(batch)
    if target is _NO_TARGET and teacher is None:
        raise ValueError("finetune: the batches have no targets; give (input, target) batches or a teacher")
    if teacher is None:
        return
    modes = {module: module.training for module in student.modules()}
    try:
        student.eval()
        with torch.no_grad():
            inputs = _to(inputs, device)
            mine, theirs = student(inputs), teacher(inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    if not isinstance(mine, torch.Tensor) or not isinstance(theirs, torch.Tensor):
        raise ValueError(f"finetune: distillation needs tensor outputs (logits), got {type(mine).__name__} "
                         f"from the model and {type(theirs).__name__} from the teacher")
    if mine.shape != theirs.shape:
        raise ValueError(f"finetune: the model's outputs have shape {tuple(mine.shape)} and the teacher's "
                         f"{tuple(theirs.shape)}; they must be the same")
    if mine.dim() < 2:
        raise ValueError(f"finetune: distillation needs logits with classes along dim 1, got shape {tuple(mine.shape)}")


def _cycle(data: Iterable[Any], iterator: Iterator[Any], first: Any) -> Iterator[Any]:
    """The batches of ``data`` again and again; a one-shot iterator is replayed from a record."""
    one_shot = iterator is data
    record = [first] if one_shot else None
    yield first
    for batch in iterator:
        if record is not None:
            record.append(batch)
        yield batch
    while True:
        empty = True
        for batch in (record if record is not None else data):
            empty = False
            yield batch
        if empty:
            raise ValueError("finetune: data gave no batches on its second pass; pass a re-iterable dataset")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, classes along dim 1, averaged
    over every other position (samples, pixels, tokens)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    positions = student.numel() // student.shape[1]
    return F.kl_div(log_s, log_t, reduction="sum", log_target=True) * (temperature ** 2) / positions


def _train(student: nn.Module, teacher: nn.Module | None, batches: Iterator[Any], steps: int,
           opt: torch.optim.Optimizer, loss_fn: Any, alpha: float, temperature: float, device: torch.device,
           progress: bool) -> LossHistory:
    from tqdm.auto import tqdm

    task = loss_fn if loss_fn is not None else F.cross_entropy
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="distil" if teacher is not None else "finetune", disable=not progress,
               leave=False)
    try:
        for step in range(steps):
            inputs, target = _split(next(batches))
            inputs = _to(inputs, device)
            output = student(inputs)
            loss = None if target is _NO_TARGET else task(output, _to(target, device))
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(inputs)
                kd = kd_loss(output, soft, temperature)
                loss = kd if loss is None else alpha * loss + (1.0 - alpha) * kd
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"finetune: the loss is {value} at step {step} (lr {opt.defaults.get('lr')} "
                                         "too high?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(value)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{value:.4g}")
    finally:
        bar.close()
    return LossHistory(losses, time.perf_counter() - start, teacher is not None)
