"""IteAlgorithm: prunes a model step by step while it trains (reference 004)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..counting.resources import Resources
from ..mutators.channel_mutator import ChannelMutator
from ..registry import MODELS
from .base import BaseAlgorithm

logger = logging.getLogger(__name__)

DEFAULT_MUTATOR_CFG: dict[str, Any] = dict(type="ChannelMutator",
                                           channel_unit_cfg=dict(type="SequentialMutableChannelUnit"))


@dataclass(frozen=True)
class PruneStep:
    """What one prune step did: the choices it set and each changed unit's kept channels."""

    iteration: int
    index: int
    prune_times: int
    choices: dict[Any, float]
    pruned: dict[Any, tuple[int, int]] = field(default_factory=dict)
    resources: Resources | None = None

    @property
    def channels_before(self) -> int:
        """Channels the changed units kept before the step, summed."""
        return sum(before for before, _ in self.pruned.values())

    @property
    def channels_after(self) -> int:
        """Channels the changed units keep after the step, summed."""
        return sum(after for _, after in self.pruned.values())

    def summary(self) -> str:
        """One line, e.g. ``prune step 2/3 at iteration 4: 12 units, 640 -> 448 channels kept; ...``."""
        text = (f"prune step {self.index}/{self.prune_times} at iteration {self.iteration}: "
                f"{len(self.pruned)} units, {self.channels_before} -> {self.channels_after} channels kept")
        return text + (f"; {self.resources.summary()}" if self.resources is not None else "")

    def details(self) -> str:
        """The summary and one line per pruned unit."""
        lines = [self.summary()]
        lines += [f"  {name}: {before} -> {after} channels (choice {self.choices[name]:.4g})"
                  for name, (before, after) in self.pruned.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@MODELS.register_module()
class IteAlgorithm(BaseAlgorithm):
    """Moves every unit's choice from where it starts (full) to ``target_pruning_ratio`` in
    ``prune_times`` steps, one every ``step_freq`` calls of ``step()``.

    ``target_pruning_ratio`` is, as in MMRazor, the ratio of channels *kept*: one number for
    every mutable unit or ``{unit name: ratio}`` (units not named keep their choice); None
    prunes nothing. With ``linear_schedule`` step ``k`` of ``n`` goes ``k/n`` of the way,
    else every step sets the target. Call ``step()`` once per iteration (or epoch) of the
    training loop, before its forward; it returns a :class:`PruneStep` when it pruned (also
    logged, and kept in ``history``), else None. Units must choose ratios (``choice_mode='ratio'``).

    Example::

        algorithm = IteAlgorithm(model, target_pruning_ratio=0.5, prune_times=4, step_freq=100)
        for batch in loader:
            if (done := algorithm.step()) is not None:
                print(done)
            loss = criterion(algorithm(batch.x), batch.y) ...
        small = algorithm.to_static()
    """

    def __init__(self, architecture: nn.Module | dict[str, Any], mutator_cfg: dict[str, Any] | None = None,
                 data_preprocessor: dict | None = None,
                 target_pruning_ratio: float | dict[Any, float] | None = None, step_freq: int = 1,
                 prune_times: int = 1, linear_schedule: bool = True, example_inputs: Any = None,
                 init_cfg: dict | None = None) -> None:
        for name, value in (("step_freq", step_freq), ("prune_times", prune_times)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if target_pruning_ratio is not None and not isinstance(target_pruning_ratio, (int, float, dict)):
            raise TypeError("target_pruning_ratio must be a number, a dict of unit name to ratio, or None")
        ratios = target_pruning_ratio.values() if isinstance(target_pruning_ratio, dict) else [target_pruning_ratio]
        for ratio in ratios:  # checked before the model is prepared (unit names only can be checked after)
            if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                      or not 0.0 < ratio <= 1.0):
                raise ValueError(f"a target ratio of kept channels is a number in (0, 1], got {ratio!r}")
        mutator = MODELS.build(DEFAULT_MUTATOR_CFG if mutator_cfg is None else mutator_cfg)
        if not isinstance(mutator, ChannelMutator):
            raise TypeError(f"mutator_cfg must build a ChannelMutator, got {type(mutator).__name__}")
        super().__init__(architecture, data_preprocessor, init_cfg)
        mutator.prepare_from_supernet(self.architecture, example_inputs=example_inputs)
        self.mutator = mutator
        self.step_freq, self.prune_times, self.linear_schedule = step_freq, prune_times, linear_schedule
        for unit in mutator.mutable_units:
            if getattr(unit, "choice_mode", "ratio") != "ratio":
                raise ValueError(f"unit {unit.name!r} chooses {unit.choice_mode}s; IteAlgorithm needs ratio units")
        self.start_choices: dict[Any, float] = {u.name: u.current_choice for u in mutator.mutable_units}
        self.target_choices = self._targets(target_pruning_ratio)
        self._iter = 0
        self.history: list[PruneStep] = []

    def _targets(self, target: float | dict[Any, float] | None) -> dict[Any, float]:
        targets = dict(self.start_choices)
        if isinstance(target, dict):
            unknown = [name for name in target if name not in targets]
            if unknown:
                raise KeyError(f"target_pruning_ratio names units the model does not have or cannot prune: "
                               f"{', '.join(map(str, unknown))}")
            targets.update(target)
        elif target is not None:
            targets = {name: target for name in targets}
        return {name: self.mutator.unit(name).validate_choice(ratio) for name, ratio in targets.items()}

    @property
    def schedule(self) -> list[dict[Any, float]]:
        """The choices each prune step sets, in order."""
        steps = []
        for k in range(1, self.prune_times + 1):
            share = k / self.prune_times if self.linear_schedule else 1.0
            steps.append({name: start + (self.target_choices[name] - start) * share
                          for name, start in self.start_choices.items()})
        return steps

    @property
    def iteration(self) -> int:
        """How many times ``step()`` has been called."""
        return self._iter

    @property
    def done(self) -> bool:
        """Whether every prune step has been taken."""
        return self._iter > (self.prune_times - 1) * self.step_freq

    def step(self) -> PruneStep | None:
        """Advance one iteration (or epoch); prune when it is a prune step."""
        iteration = self._iter
        self._iter += 1
        if iteration % self.step_freq or iteration // self.step_freq >= self.prune_times:
            return None
        index = iteration // self.step_freq + 1
        units = self.mutator.mutable_units
        before = {unit.name: unit.activated_channels for unit in units}
        choices = self.schedule[index - 1]
        self.mutator.set_choices(choices)
        pruned = {unit.name: (before[unit.name], unit.activated_channels) for unit in units
                  if unit.activated_channels != before[unit.name]}
        resources = self.mutator.resources() if self.mutator.graph_trace is not None else None
        record = PruneStep(iteration, index, self.prune_times, choices, pruned, resources)
        self.history.append(record)
        logger.info(record.summary())
        return record

    def to_static(self, check: bool = True, example_inputs: Any = None) -> nn.Module:
        """The pruned model as plain torch layers (see ``ChannelMutator.to_static``, which checks it)."""
        return self.mutator.to_static(check, example_inputs)


MODELS.register_module("ItePruneAlgorithm", module=IteAlgorithm)
