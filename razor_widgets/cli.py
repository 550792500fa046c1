"""The ``razor-widgets`` command line."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .export_check import ExportError
from .mutables import MutableChannelUnit
from .mutators import ChannelMutator
from .mutators.channel_mutator import DEFAULT_PARSE_CFG
from .registry import MODELS
from .resources import count_resources
from .tracing import TraceError


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
        try:
            small = mutator.to_static().eval()  # checked: ExportError if it differs from the masked model
        except ExportError as error:
            print(f"the export failed its check: {error}")
            return 1
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


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_model(spec: str) -> torch.nn.Module:
    """Build the model that ``package.module:callable`` names (called with no arguments)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"razor-widgets: MODEL must be package.module:callable (e.g. "
                         f"torchvision.models:resnet34), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any import failure is reported in one line
        raise SystemExit(f"razor-widgets: cannot import {module_name!r}: {_one_line(error)}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise SystemExit(f"razor-widgets: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise SystemExit(f"razor-widgets: {spec!r} is not callable")
    try:
        model = target()
    except Exception as error:
        raise SystemExit(f"razor-widgets: calling {spec} failed: {_one_line(error)}") from None
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"razor-widgets: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def units(spec: str, with_channels: bool, with_init_args: bool, choice: bool, output_path: str | None,
          input_shape: Sequence[int], mutator_type: str, unit_type: str | None) -> int:
    """Print (or write) the channel unit config template of a model as JSON (reference 001)."""
    if mutator_type not in MODELS or not issubclass(MODELS.get(mutator_type), ChannelMutator):
        raise SystemExit(f"razor-widgets: {mutator_type!r} is not a registered channel mutator type")
    if unit_type is not None and (unit_type not in MODELS
                                  or not issubclass(MODELS.get(unit_type), MutableChannelUnit)):
        raise SystemExit(f"razor-widgets: {unit_type!r} is not a registered channel unit type")
    model = load_model(spec).eval()
    parse_cfg = dict(DEFAULT_PARSE_CFG, demo_input=[int(d) for d in input_shape])
    mutator = MODELS.build({"type": mutator_type, "parse_cfg": parse_cfg,
                            "channel_unit_cfg": None if unit_type is None else {"type": unit_type}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                mutator.prepare_from_supernet(model)
        except Exception as error:
            cause = error.__cause__ if isinstance(error, TraceError) and error.__cause__ else error
            raise SystemExit(f"razor-widgets: cannot trace {spec} with an input of shape "
                             f"{tuple(input_shape)}: {_one_line(cause)}") from None
    for warning in caught:
        print(f"warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    if choice:
        config: Any = mutator.choice_template
    else:
        config = mutator.config_template(with_unit_init_args=with_init_args, with_channels=with_channels)
    text = json.dumps(config, indent=4)
    if output_path:
        with open(output_path, "w") as file:
            file.write(text + "\n")
        print(f"wrote {len(mutator.units)} units of {spec} to {output_path}", file=sys.stderr)
    else:
        print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="razor-widgets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="units of a built-in model, pruned and exported")
    run.add_argument("--model", default="resnet18", help="torchvision model name (default resnet18)")
    run.add_argument("--ratio", type=float, default=0.5, help="ratio of channels kept per unit")
    run.add_argument("--input-size", type=int, default=224)
    unit = commands.add_parser(
        "units", help="the channel unit config template of a model, as JSON",
        description="Get channel units of a model: print its ChannelMutator config template as JSON.")
    unit.add_argument("model", metavar="MODEL",
                      help="package.module:callable that returns the model, e.g. torchvision.models:resnet34")
    unit.add_argument("-c", "--with-channel", action="store_true", help="output with channel config")
    unit.add_argument("-i", "--with-init-args", action="store_true", help="output with init args")
    unit.add_argument("--choice", action="store_true",
                      help="output the choice template {unit name: choice} (an explorer plan); "
                           "-c and -i are then ignored")
    unit.add_argument("-o", "--output-path", help="the file path to store channel unit info")
    unit.add_argument("--input-shape", type=int, nargs="+", default=[1, 3, 224, 224], metavar="N",
                      help="shape of the random input traced (default 1 3 224 224)")
    unit.add_argument("--mutator-type", default="ChannelMutator",
                      help="registered channel mutator type (default ChannelMutator)")
    unit.add_argument("--unit-type", help="registered channel unit type (default: the mutator's)")
    board = commands.add_parser(
        "dashboard", help="the explorer on a model, in the browser (Voila); runs until Ctrl-C",
        description="Serve the pruning explorer on MODEL as a web page (Voila) and print its URL.")
    board.add_argument("model", metavar="MODEL", nargs="?", default="resnet18",
                       help="torchvision model name or package.module:callable (default resnet18)")
    board.add_argument("--input-size", type=int, default=224, help="side of the 1x3xNxN example input")
    board.add_argument("--port", type=int, default=8866)
    board.add_argument("--ip", default="127.0.0.1", help="address to listen on (default loopback only)")
    board.add_argument("--open", action="store_true", help="open a browser on the page")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.model, args.ratio, args.input_size)
    if args.command == "units":
        return units(args.model, args.with_channel, args.with_init_args, args.choice, args.output_path,
                     args.input_shape, args.mutator_type, args.unit_type)
    if args.command == "dashboard":
        from .dashboard import serve

        return serve(args.model, args.input_size, args.port, args.ip, args.open)
    return 2


if __name__ == "__main__":
    sys.exit(main())
