"""One check for a whole model, shared by the vision tests: prepare, prune, export, count.

``check_model`` prepares a model with L1 units and asserts: full choices bit-identical to the
unprepared copy; counts exact at full choices; for random choice sets, the export computes what
the masked model computes, the masked model what the zeroing oracle computes (where it applies)
and the counts equal a FlopCounterMode count of the export; back at full choices, bit-identical.
"""
from __future__ import annotations

import copy
import random
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from razor_widgets import ChannelMutator, count_resources

from oracle import zeroed_model


@dataclass
class Checked:
    """What the check found: the mutator, the unprepared copy and the warnings it gave."""

    mutator: ChannelMutator
    original: nn.Module
    warnings: list[str] = field(default_factory=list)


def _run(model: nn.Module, x: torch.Tensor | tuple) -> torch.Tensor:
    """The model's outputs as one flat tensor (several outputs concatenated)."""
    out = model(*x) if isinstance(x, tuple) else model(x)
    return torch.cat([t.reshape(-1) for t in out]) if isinstance(out, (tuple, list)) else out


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max()) or 1.0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


def oracle_applies(mutator: ChannelMutator, original: nn.Module) -> bool:
    """The zeroing oracle does not apply where a LayerNorm or GroupNorm normalises over pruned
    channels (zeroing them changes its statistics; the engine normalises over the kept ones)."""
    modules = dict(original.named_modules())
    return not any(isinstance(modules.get(c.name), (nn.LayerNorm, nn.GroupNorm))
                   for unit in mutator.mutable_units for c in unit.channels)


def check_model(model: nn.Module, x: torch.Tensor | tuple, choice_sets: int = 2, oracle: bool | None = None,
                min_mutable: int = 1) -> Checked:
    """``oracle=None``: compare with the zeroing oracle where it applies."""
    model.eval()
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    assert len(mutator.mutable_units) >= min_mutable, [u.fixed_reasons for u in mutator.units]
    with torch.no_grad():
        want = _run(original, x)
        assert torch.equal(_run(model, x), want)
    oracle = oracle_applies(mutator, original) if oracle is None else oracle
    full, reference = mutator.resources(), count_resources(original, x)
    assert (full.params, full.flops) == (reference.params, reference.flops)
    for k in range(choice_sets):
        random.seed(k)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        with torch.no_grad():
            masked = _run(model, x)
            _close(_run(static, x), masked, f"set {k}: export vs masked")
            if oracle:
                _close(masked, _run(zeroed_model(original, mutator), x), f"set {k}: masked vs zeroing oracle")
        counted, exported = mutator.resources(), count_resources(static, x)
        kept = sum(p.numel() for p in static.parameters())
        assert counted.params == exported.params == kept and counted.flops == exported.flops, k
    mutator.set_choices(mutator.max_choices)
    with torch.no_grad():
        assert torch.equal(_run(model, x), want)
    return Checked(mutator, original, [str(w.message) for w in caught])
