"""The ``razor-widgets`` command line."""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

import torch

from .mutators import ChannelMutator
from .resources import count_resources


def _build_torchvision(name: str) -> torch.nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise SystemExit(f"razor-widgets: {name!r} is not a torchvision classification model")
    return torchvision.models.get_model(name, weights=None)


def demo(model_name: str, ratio: float, input_size: int) -> int:
    """Find the units of a torchvision model, prune every unit to ``ratio`` and export it."""
    model = _build_torchvision(model_name).eval()
    x = torch.randn(1, 3, input_size, input_size)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    print(f"{model_name}: {len(mutator.units)} channel units, {len(mutator.mutable_units)} prunable")
    width = max(len(str(u.name)) for u in mutator.units)
    for unit in mutator.units:
        state = "prunable" if unit.is_mutable else "fixed: " + "; ".join(unit.fixed_reasons)
        layers = len({c.name for c in unit.channels})
        print(f"  {str(unit.name):<{width}}  {unit.num_channels:>5} ch  {layers:>3} layers  {state}")
    for warning in caught:
        print(f"warning: {warning.message}")
    with torch.no_grad():
        before = model(x)
        mutator.set_choices({name: ratio for name in mutator.current_choices})
        masked = model(x)
        small = mutator.to_static().eval()
        after = small(x)
    live = mutator.resources()
    reference = count_resources(small, x)
    print(f"every unit at {ratio:g} (L1 importance): {live.summary()}")
    print(f"  live count = FlopCounterMode count of the exported model: "
          f"{(live.params, live.flops) == (reference.params, reference.flops)} "
          f"({reference.params:,} params, {reference.macs:,} MACs, {reference.flops:,} FLOPs)")
    print(f"  exported model matches the masked one: {torch.allclose(after, masked, rtol=1e-4, atol=1e-4)}; "
          f"output changed by {(masked - before).abs().max().item():.3g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="razor-widgets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="units of a built-in model, pruned and exported")
    run.add_argument("--model", default="resnet18", help="torchvision model name (default resnet18)")
    run.add_argument("--ratio", type=float, default=0.5, help="ratio of channels kept per unit")
    run.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.model, args.ratio, args.input_size)
    return 2


if __name__ == "__main__":
    sys.exit(main())
