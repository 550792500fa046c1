"""Params and MACs of a supernet at chosen candidates.

``ChosenPathCounter`` counts a traced supernet at the chosen candidates from the channel
mutator's per-layer counts; ``CandidateCounter`` measures every candidate of every module
mutable in one forward pass (a model's MACs are the base plus each mutable's chosen candidate),
after which any choice is counted without a forward. How: docs/candidate-counting.md.
"""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .resources import REFERENCE_FLOP_FORMULAS, Resources, reference_flops

__all__ = ["CandidateCounter", "ChosenPathCounter"]


def _candidates(mutable: nn.Module) -> nn.ModuleDict:
    ops = getattr(mutable, "candidates", None)
    ops = mutable._modules.get("_candidates") if ops is None else ops
    if not isinstance(ops, nn.ModuleDict):
        raise TypeError(f"{type(mutable).__name__} has no candidate ops to count")
    return ops


def _chosen_name(mutable: nn.Module) -> Any:
    ops = _candidates(mutable)
    if len(ops) == 1:
        return next(iter(ops))
    return mutable.current_choice


class CandidateCounter:
    """Counts a supernet whose module mutables (``{module name: mutable}``) choose candidates."""

    def __init__(self, model: nn.Module, mutables: dict[str, nn.Module]) -> None:
        self.model = model
        self.mutables = dict(mutables)
        self.candidate_macs: dict[str, dict[Any, int]] | None = None
        self.base_macs: int | None = None

    # -- measuring ------------------------------------------------------------------------
    def _check_not_nested(self) -> None:
        names = sorted(self.mutables)
        for outer in names:
            inner = [n for n in names if n.startswith(outer + ".")]
            if inner:
                raise ValueError(f"mutable {outer!r} holds other mutables ({', '.join(inner)}); "
                                 "nested mutables cannot be counted candidate by candidate")

    def measure(self, example_inputs: Any) -> None:
        """One forward of ``example_inputs``: every candidate runs and is counted on its own."""
        self._check_not_nested()
        macs: dict[str, dict[Any, int]] = {name: {} for name in self.mutables}

        def counting_forward(name: str, mutable: nn.Module):
            def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
                outputs = {}
                for choice, op in _candidates(mutable).items():
                    with FlopCounterMode(display=False, custom_mapping=REFERENCE_FLOP_FORMULAS) as counter:
                        outputs[choice] = op(x)
                    macs[name][choice] = int(counter.get_total_flops()) // 2
                chosen = _chosen_name(mutable)
                # only shapes matter downstream: the chosen output, or all summed as forward_all
                return outputs[chosen] if chosen in outputs else sum(outputs.values())
            return forward

        for name, mutable in self.mutables.items():
            mutable.__dict__["forward"] = counting_forward(name, mutable)
        try:
            total = reference_flops(self.model, example_inputs) // 2
        finally:
            for mutable in self.mutables.values():
                mutable.__dict__.pop("forward", None)
        self.candidate_macs = macs
        self.base_macs = total - sum(sum(per.values()) for per in macs.values())

    def _require_measured(self) -> dict[str, dict[Any, int]]:
        if self.candidate_macs is None:
            raise RuntimeError("MACs need one forward pass: give example_inputs to prepare_from_supernet, "
                               "or call measure(example_inputs)")
        return self.candidate_macs

    # -- counting -------------------------------------------------------------------------
    def _kept_ops(self, name: str, choice: Any) -> list[nn.Module]:
        ops = _candidates(self.mutables[name])
        if choice is None:
            return list(ops.values())
        if len(ops) == 1:
            return list(ops.values())
        return [ops[choice]]

    def _macs_of(self, name: str, choice: Any) -> int:
        per = self._require_measured()[name]
        if choice is None:
            return sum(per[c] for c in _candidates(self.mutables[name]))
        if choice not in per:
            raise KeyError(f"{name}: no MACs measured for {choice!r}; measure again after changing the model")
        return per[choice]

    def _params(self) -> tuple[dict[int, int], dict[str, dict[Any, dict[int, int]]], int]:
        """Numel by parameter id outside every candidate, of each candidate, and in all;
        cached until a mutable's candidates change (``fix_chosen`` drops the others)."""
        key = tuple((name, tuple(_candidates(m))) for name, m in self.mutables.items())
        cached = self.__dict__.get("_param_cache")
        if cached is None or cached[0] != key:
            per = {name: {choice: {id(p): p.numel() for p in op.parameters()}
                          for choice, op in _candidates(m).items()} for name, m in self.mutables.items()}
            inside = {pid for ops in per.values() for params in ops.values() for pid in params}
            all_params = {id(p): p.numel() for p in self.model.parameters()}
            base = {pid: n for pid, n in all_params.items() if pid not in inside}
            cached = self.__dict__["_param_cache"] = (key, base, per, sum(all_params.values()))
        return cached[1], cached[2], cached[3]

    def resources(self, choices: dict[str, Any]) -> Resources:
        """Params and MACs with each mutable (by module name) at its choice; None counts every
        candidate. The originals are those of the whole supernet."""
        self._require_measured()
        base, per, all_params = self._params()
        kept = dict(base)
        for name, mutable in self.mutables.items():
            choice = choices.get(name, mutable.current_choice)
            for op_choice, params in per[name].items():
                if choice is None or len(per[name]) == 1 or op_choice == choice:
                    kept.update(params)
        macs = self.base_macs + sum(self._macs_of(name, choices.get(name, m.current_choice))
                                    for name, m in self.mutables.items())
        all_macs = self.base_macs + sum(self._macs_of(name, None) for name in self.mutables)
        return Resources(sum(kept.values()), macs, all_params, all_macs)

    def candidate(self, name: str, choice: Any) -> Resources:
        """Params and MACs of one candidate op of one mutable."""
        params = sum(p.numel() for op in self._kept_ops(name, choice) for p in op.parameters())
        return Resources(params, self._macs_of(name, choice))


# -- the exported model of a supernet traced with every candidate running ------------------------
def _candidate_prefixes(name: str, mutable: nn.Module) -> dict[Any, str]:
    """``{candidate name: module path of that candidate op}`` for the mutable at ``name``."""
    ops = getattr(mutable, "candidates", None)
    if not isinstance(ops, nn.ModuleDict):
        raise TypeError(f"{name}: {type(mutable).__name__} has no candidate ops (a `candidates` ModuleDict)")
    paths = {id(m): rel for rel, m in mutable.named_modules(remove_duplicate=False)}
    return {choice: f"{name}.{paths[id(op)]}" for choice, op in ops.items()}


def _inside(layer: str, prefix: str) -> bool:
    return layer == prefix or layer.startswith(prefix + ".")


class ChosenPathCounter:
    """Params and MACs of the exported model (chosen candidates, channels pruned).

    ``channel_mutator`` must be traced with every candidate running; ``resources(choices)``
    takes channel choices as ``ChannelMutator.resources`` does (a what-if; ``fit_budget``
    uses it through ``mutable_units`` and ``resources``). The originals are those of the chosen
    candidates at full width (the whole supernet while a group has no choice).
    """

    def __init__(self, channel_mutator: Any, module_mutator: Any) -> None:
        self.channel_mutator = channel_mutator
        self.module_mutator = module_mutator
        layers = list(channel_mutator.resources(by_layer=True))
        # {group: {candidate: [counted layers inside it, over the group's mutables]}}
        self.layers: dict[int, dict[Any, list[str]]] = {}
        for gid, names in module_mutator.group_names.items():
            per: dict[Any, list[str]] = {}
            for name in names:
                for choice, prefix in _candidate_prefixes(name, module_mutator.name2mutable[name]).items():
                    per.setdefault(choice, []).extend(n for n in layers if _inside(n, prefix))
            self.layers[gid] = per

    @property
    def mutable_units(self) -> list:
        """The channel mutator's mutable units (whose choices the counts follow)."""
        return self.channel_mutator.mutable_units

    def dropped_layers(self, module_choices: dict[int, Any] | None = None) -> set[str]:
        """The counted layers that the export leaves out: those of the unchosen candidates."""
        current = self.module_mutator.current_choices
        current.update(module_choices or {})
        dropped: set[str] = set()
        for gid, per in self.layers.items():
            choice = current[gid]
            if choice is not None and len(per) > 1:
                for other, names in per.items():
                    if other != choice:
                        dropped.update(names)
        return dropped

    def resources(self, choices: dict[Any, Any] | None = None,
                  module_choices: dict[int, Any] | None = None) -> Resources:
        """Exact params and MACs of ``export()`` at the current (or the given) choices."""
        dropped = self.dropped_layers(module_choices)
        if not dropped:  # the supernet (or one candidate per op): the channel mutator's own count
            return self.channel_mutator.resources(choices=choices)
        layers = self.channel_mutator.resources(choices=choices, by_layer=True)
        kept = [r for name, r in layers.items() if name not in dropped]
        return Resources(sum(r.params for r in kept), sum(r.macs for r in kept),
                         sum(r.original_params for r in kept), sum(r.original_macs for r in kept))

    def candidate_resources(self, group: int) -> dict[Any, Resources]:
        """Params and MACs of each candidate of ``group`` at full width, over its mutables."""
        layers = self.channel_mutator.resources(by_layer=True)
        return {choice: Resources(sum(layers[n].original_params for n in names),
                                  sum(layers[n].original_macs for n in names))
                for choice, names in self.layers[group].items()}


