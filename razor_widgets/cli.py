"""The razor-widgets command line: every argument is parsed and checked before torch is imported
or a model is traced; a bad one is a one-line error and exit status 2."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .model_loading import DEFAULT_MODEL, ModelLoadError, ModelSource, one_line, resolve_model
from .trace.example_inputs import ExampleInput, run_model

if TYPE_CHECKING:
    import torch

DESCRIPTION = ("Structured (channel) pruning of PyTorch models: list a model's channel units, prune and "
               "export it, or explore it in the browser.")
MODEL_HELP = ("a torchvision model name (classification, detection, segmentation or video; random weights), "
              "timm:NAME (with timm installed), hf:MODEL_TYPE (a tiny Hugging Face language model of that type, "
              "e.g. hf:llama) or hf:PATH (a local config.json or its directory; random weights, with transformers "
              "installed), a named model of this package, or package.module:callable "
              f"that returns the model, e.g. torchvision.models:resnet34 (default {DEFAULT_MODEL})")
DEFAULT_CULL_IDLE = 300  # seconds a dashboard kernel with no page open may stay idle before it is shut down


class CommandLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: message``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Exit with status 2 after printing ``prog: error: message`` on one line."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def ratio(text: str) -> float:
    """A fraction of channels kept: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def _integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of 1 or more (``--input-size``, ``--input-shape``)."""
    return _integer(text, 1, None, "a positive integer")


def seconds(text: str) -> int:
    """An argparse type: a whole number of seconds, 0 or more (``--cull-idle``)."""
    return _integer(text, 0, None, "a number of seconds, 0 or more")


def port_number(text: str) -> int:
    """An argparse type: a port number from 1 to 65535 (``--port``)."""
    return _integer(text, 1, 65535, "a port number from 1 to 65535")


def _model_arguments() -> argparse.ArgumentParser:
    """MODEL and the example input: the same in every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", metavar="MODEL", nargs="?", default=None, help=MODEL_HELP)
    shape = common.add_mutually_exclusive_group()
    shape.add_argument("--input-size", type=positive_int, metavar="N",
                       help="height and width of the random example input traced (default: the model's, "
                            "224 for most; 1x3xNxN for an image model; not for hf: models, which take tokens)")
    shape.add_argument("--input-shape", type=positive_int, nargs="+", metavar="N",
                       help="the whole shape of the example input, e.g. 1 3 224 224; for a model that takes "
                            "tokens (hf:), batch and sequence length, e.g. 1 16 (the default)")
    return common


def build_parser() -> CommandLineParser:
    """The parser of every command (nothing heavy is imported)."""
    parser = CommandLineParser(prog="razor-widgets", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_model_arguments()]
    demo = commands.add_parser(
        "demo", parents=common, help="list a model's channel units, prune every unit and export it",
        description="List every channel unit of MODEL (prunable or fixed, and why), prune each unit to RATIO "
                    "of its channels by L1 importance, export the smaller model and check it.")
    demo.add_argument("--ratio", type=ratio, default=0.5, help="fraction of channels kept per unit (default 0.5)")
    demo.add_argument("--model", dest="model_option", metavar="MODEL", help=argparse.SUPPRESS)  # deprecated
    units = commands.add_parser(
        "units", parents=common, help="the channel unit config template of a model, as JSON",
        description="Get channel units of a model: print its ChannelMutator config template as JSON.")
    units.add_argument("-c", "--with-channel", action="store_true", help="output with channel config")
    units.add_argument("-i", "--with-init-args", action="store_true", help="output with init args")
    units.add_argument("--choice", action="store_true",
                       help="output the choice template {unit name: choice} (an explorer plan); "
                            "-c and -i are then ignored")
    units.add_argument("-o", "--output-path", help="the file path to store channel unit info")
    units.add_argument("--mutator-type", default="ChannelMutator",
                       help="registered channel mutator type (default ChannelMutator)")
    units.add_argument("--unit-type", help="registered channel unit type (default: the mutator's)")
    board = commands.add_parser(
        "dashboard", parents=common, help="the explorer on a model, in the browser (Voila); runs until Ctrl-C",
        description="Serve the pruning explorer on MODEL as a web page (Voila) and print its URL.")
    board.add_argument("--port", type=port_number, default=8866, help="port to listen on (default 8866)")
    board.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    board.add_argument("--open", action="store_true", help="open a browser on the page")
    board.add_argument("--cull-idle", type=seconds, default=DEFAULT_CULL_IDLE, metavar="SECONDS",
                       help="shut down the kernel of a page that was closed without saying so, once it has been "
                            f"idle this long (default {DEFAULT_CULL_IDLE}; 0 keeps kernels until the server stops)")
    for command in (demo, units, board):
        command.set_defaults(command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``razor-widgets`` command line (``demo``, ``units``, ``dashboard``); returns the exit status."""
    args = build_parser().parse_args(argv)
    command: CommandLineParser = args.command_parser
    if getattr(args, "model_option", None) is not None:
        if args.model is not None:
            command.error("give MODEL once: as the first argument (--model is the old spelling)")
        print("razor-widgets demo: --model is deprecated: give MODEL as the first argument", file=sys.stderr)
        args.model = args.model_option
    spec = args.model or DEFAULT_MODEL
    try:
        source = resolve_model(spec)
    except ModelLoadError as error:
        command.error(str(error))
    try:
        example = example_input(source, args.input_shape, args.input_size)
    except ValueError as error:
        command.error(f"{source.spec}: {error}")
    if args.command == "demo":
        return demo(source, args.ratio, example)
    if args.command == "units":
        _check_types(command, args.mutator_type, args.unit_type)
        return units(source, args.with_channel, args.with_init_args, args.choice, args.output_path, example,
                     args.mutator_type, args.unit_type)
    from .dashboard.server import serve

    return serve(source, example, port=args.port, ip=args.ip, open_browser=args.open, cull_idle=args.cull_idle)


def example_input(source: ModelSource, input_shape: Sequence[int] | None, input_size: int | None) -> ExampleInput:
    """The example input a command traces: the model's own, reshaped by --input-shape or resized by
    --input-size; ``ValueError`` when the flag does not fit the model's kind of input (tokens)."""
    if input_shape:
        return source.example.with_shape(input_shape)
    if input_size:
        return source.example.with_size(input_size)
    return source.example


def _check_types(command: CommandLineParser, mutator_type: str, unit_type: str | None) -> None:
    from . import MODELS, ChannelMutator, MutableChannelUnit

    if mutator_type not in MODELS or not issubclass(MODELS.get(mutator_type), ChannelMutator):
        command.error(f"{mutator_type!r} is not a registered channel mutator type")
    if unit_type is not None and (unit_type not in MODELS
                                  or not issubclass(MODELS.get(unit_type), MutableChannelUnit)):
        command.error(f"{unit_type!r} is not a registered channel unit type")


def _load(source: ModelSource, command: str) -> torch.nn.Module:
    try:
        return source.load()
    except ModelLoadError as error:
        raise SystemExit(f"razor-widgets {command}: error: {error}") from None


def _traced(prepare: Any, source: ModelSource, example: ExampleInput, command: str) -> list[str]:
    """Run ``prepare()`` (a trace); return what it warned, one line each. A failure is one line, exit 1."""
    import warnings

    from . import TraceError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prepare()
        except Exception as error:
            cause = error.__cause__ if isinstance(error, TraceError) and error.__cause__ else error
            raise SystemExit(f"razor-widgets {command}: error: cannot trace {source.spec} with "
                             f"{example.describe()}: {one_line(cause)}") from None
    return [" ".join(str(warning.message).split()) for warning in caught]


def _tensors(output: Any) -> list[torch.Tensor]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(output) if isinstance(leaf, torch.Tensor)]


def demo(source: ModelSource, ratio: float, example: ExampleInput) -> int:
    """Find the units of a model, prune every unit to ``ratio`` and export it."""
    import torch

    from . import ChannelMutator, ExportError, count_resources, unit_label

    model = _load(source, "demo")
    x = example.make()
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    caught = _traced(lambda: mutator.prepare_from_supernet(model, example_inputs=x), source, example, "demo")
    print(f"{source.spec}: {len(mutator.units)} channel units, {len(mutator.mutable_units)} prunable")
    width = max((len(str(u.name)) for u in mutator.units), default=0)
    label_width = max((len(unit_label(u)) for u in mutator.units), default=0)
    for unit in mutator.units:
        state = "prunable" if unit.is_mutable else "fixed: " + "; ".join(unit.fixed_reasons)
        layers = len({c.name for c in unit.channels})
        print(f"  {str(unit.name):<{width}}  {unit_label(unit):<{label_width}}  {unit.num_channels:>5} ch  "
              f"{layers:>3} layers  {state}")
    blocks = mutator.block_units  # depth choices (docs/blocks.md)
    print(f"{len(blocks)} blocks, {len(mutator.removable_blocks)} removable")
    for block in blocks:
        print(f"  {block.name}  {block.form}  " + ("removable" if block.is_mutable else
                                                    "must stay: " + "; ".join(block.fixed_reasons)))
    for message in caught:
        print(f"warning: {message}")
    with torch.no_grad():
        before = _tensors(run_model(model, x))
        mutator.set_choices({unit.name: ratio for unit in mutator.mutable_units})
        masked = _tensors(run_model(model, x))
        try:
            small = mutator.to_static().eval()  # checked: ExportError if it differs from the masked model
        except ExportError as error:
            print(f"the export failed its check: {error}")
            return 1
        after = _tensors(run_model(small, x))
    live = mutator.resources()
    reference = count_resources(small, x)
    same = len(after) == len(masked) and all(torch.allclose(a, m, rtol=1e-4, atol=1e-4) for a, m in zip(after, masked))
    change = max(((m - b).abs().max().item() for m, b in zip(masked, before)), default=0.0)
    print(f"every unit at {ratio:g} (L1 importance): {live.summary()}")
    print(f"  live count = FlopCounterMode count of the exported model: "
          f"{(live.params, live.flops) == (reference.params, reference.flops)} "
          f"({reference.params:,} params, {reference.macs:,} MACs, {reference.flops:,} FLOPs)")
    print(f"  exported model matches the masked one: {same}; output changed by {change:.3g}")
    return 0


def units(source: ModelSource, with_channels: bool, with_init_args: bool, choice: bool, output_path: str | None,
          example: ExampleInput, mutator_type: str, unit_type: str | None) -> int:
    """Print (or write) the channel unit config template of a model as JSON (reference 001)."""
    import json

    import torch

    from . import MODELS
    from .mutators.channel_mutator import DEFAULT_PARSE_CFG

    model = _load(source, "units")
    # a tensor input is the template's demo_input (a shape, as MMRazor's); token inputs are passed as they are
    tensor = example.kind == "tensor"
    parse_cfg = {key: value for key, value in DEFAULT_PARSE_CFG.items() if key != "demo_input"}
    if tensor:
        parse_cfg["demo_input"] = [int(d) for d in example.shape]
    mutator = MODELS.build({"type": mutator_type, "parse_cfg": parse_cfg,
                            "channel_unit_cfg": None if unit_type is None else {"type": unit_type}})

    def prepare() -> None:
        with torch.no_grad():
            mutator.prepare_from_supernet(model, None if tensor else example.make())

    for message in _traced(prepare, source, example, "units"):
        print(f"warning: {message}", file=sys.stderr)
    if choice:
        config: Any = mutator.choice_template
    else:
        config = mutator.config_template(with_unit_init_args=with_init_args, with_channels=with_channels)
    text = json.dumps(config, indent=4)
    if output_path:
        with open(output_path, "w") as file:
            file.write(text + "\n")
        print(f"wrote {len(mutator.units)} units of {source.spec} to {output_path}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
