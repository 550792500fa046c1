"""ChannelMutator: finds a model's channel units and reads and writes all their choices."""
from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from ..analysis.analyzer import ChannelAnalyzer
from ..analysis.rules import RULES
from ..analysis.unit_labels import assign_roles
from ..channels.analysis_result import ChannelAnalysis, UnitSpec
from ..counting.latency_counter import mutator_latency
from ..counting.latency_table import Latency
from ..counting.live_counter import ResourceCounter, mutator_resources
from ..counting.resources import Resources
from ..export.block_removal import remove_dropped
from ..export.export_check import verify_export
from ..export.hf_export import check_reload as check_reload_of
from ..export.hf_export import update_hf_models
from ..export.static_copy import static_copy
from ..layers import dynamic_op_for, guard_fused_paths
from ..layers.dynamic_ops import DynamicChannelMixin, set_submodule
from ..mutables.units import Channel, MutableChannelUnit
from ..registry import MODELS
from ..trace.graph import TracedGraph
from ..trace.meta_device import require_real_weights
from ..trace.tracer import Tracer, check_path_is_static, make_example_inputs
from .base import BaseMutator
from .block_choices import BlockChoices
from .channel_config import (
    attribute_positions,
    attributes_from_cfg,
    channel_from_cfg,
    kept_output_positions,
    normalized_unit_cfg,
    output_positions,
    output_positions_cfg,
    outputs_from_cfg,
    plain,
    side_sizes,
)
from .param_owners import convert_param_owners
from .prepared_mark import PREPARED_MARK, PreparedMark, is_prepared

TRACER_TYPES = ("ChannelAnalyzer", "BackwardTracer", "FxTracer", "PruneTracer")
DEFAULT_PARSE_CFG = {"type": "ChannelAnalyzer", "demo_input": (1, 3, 224, 224)}


@MODELS.register_module()
class ChannelMutator(BlockChoices, BaseMutator):
    """Manages every MutableChannelUnit of a model (reference 000).

    ``parse_cfg`` says how units are found: traced from one forward pass (``ChannelAnalyzer``,
    the default; ``BackwardTracer`` is accepted as a synonym), given in ``channel_unit_cfg``
    (``Config``), or read from dynamic ops already in the model (``Predefined``).
    """

    default_unit_type = "SequentialMutableChannelUnit"

    def __init__(self, channel_unit_cfg: dict | str | None = None, parse_cfg: dict | None = None,
                 custom_groups: list | None = None, init_cfg: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(init_cfg=init_cfg)
        channel_unit_cfg = kwargs.pop("channl_unit_cfg", channel_unit_cfg)  # reference 004's typo
        if kwargs:
            raise TypeError(f"ChannelMutator got unexpected arguments: {', '.join(kwargs)}")
        self.channel_unit_cfg = normalized_unit_cfg(channel_unit_cfg, self.default_unit_type)
        self.parse_cfg = dict(DEFAULT_PARSE_CFG if parse_cfg is None else parse_cfg)
        self.unit_class: type[MutableChannelUnit] = MODELS.get(self.channel_unit_cfg["type"])
        self.custom_groups = custom_groups or []
        self._units: list[MutableChannelUnit] = []
        self._mutable: list[MutableChannelUnit] = []
        self._mutable_by_name: dict[str, MutableChannelUnit] = {}
        self.graph_trace: TracedGraph | None = None
        self.analysis: ChannelAnalysis | None = None
        self._resource_counter: ResourceCounter | None = None
        # int attributes the forward reads as channel counts -> the (unit, position) of each
        # element they count: the export sets them to the kept count
        self._size_attributes: dict[tuple[str, str], list[tuple[MutableChannelUnit | None, int]]] = {}
        # outputs whose widths follow the pruned model -> dim -> (unit, position) of each channel
        self._output_positions: dict[tuple, dict[int, list[tuple[MutableChannelUnit | None, int]]]] = {}
        object.__setattr__(self, "_model", None)

    # -- preparing ------------------------------------------------------------------------
    def prepare_from_supernet(self, supernet: nn.Module, example_inputs: Any = None) -> None:
        """Find the units of ``supernet`` and turn the layers they touch into dynamic ops."""
        if self._model is not None:
            raise RuntimeError("this mutator is already prepared; make a new one for another model")
        if is_prepared(supernet):
            raise RuntimeError("this model is already prepared by another ChannelMutator")
        parse_type = self.parse_cfg.get("type", "ChannelAnalyzer")
        self.example_inputs = example_inputs  # a reference (no copy): what to_static() checks with
        if parse_type in TRACER_TYPES:
            units = self._units_from_trace(supernet, example_inputs)
        elif parse_type == "Config":
            units = self._units_from_config(supernet)
            self._blocks_from_config(supernet, self.channel_unit_cfg.get("blocks", {}))
        elif parse_type == "Predefined":
            units = self._units_from_predefined(supernet)
        else:
            raise ValueError(f"unknown parse_cfg type {parse_type!r}; use one of "
                             f"{', '.join(TRACER_TYPES)}, 'Config' or 'Predefined'")
        assign_roles(units, dict(supernet.named_modules()))  # what each unit is (unit_labels.py)
        if parse_type != "Predefined":
            self._convert_layers(supernet, [u for u in units if u.is_mutable], units)
            for unit in units:
                if unit.is_mutable:
                    unit.prepare_for_pruning(supernet)
            guard_fused_paths(supernet)
        self._units = units
        self._mutable = [u for u in units if u.is_mutable]
        self._mutable_by_name = {u.name: u for u in self._mutable}
        object.__setattr__(self, "_model", supernet)
        supernet.__dict__[PREPARED_MARK] = PreparedMark()
        configured = self.channel_unit_cfg.get("units", {})
        self.set_choices({u.name: configured[u.name]["choice"] for u in self.mutable_units
                          if isinstance(configured.get(u.name), dict) and "choice" in configured[u.name]}
                         | self.configured_block_choices(self.channel_unit_cfg.get("blocks", {})))
        if self.graph_trace is not None:
            self.resource_counter()  # record the geometry now: resources() never runs a forward

    def _units_from_trace(self, model: nn.Module, example_inputs: Any) -> list[MutableChannelUnit]:
        if example_inputs is None:
            example_inputs = make_example_inputs(self.parse_cfg.get("demo_input", (1, 3, 224, 224)))
            self.example_inputs = example_inputs
        graph = Tracer(RULES.is_leaf).trace(model, example_inputs)
        check_path_is_static(Tracer(RULES.is_leaf), model, example_inputs, graph)
        analysis = ChannelAnalyzer(RULES, self.parse_cfg.get("attention", "heads"),
                                   self.parse_cfg.get("fixed_outputs")).analyze(graph)
        specs = analysis.units
        self.graph_trace, self.analysis = graph, analysis
        self._find_block_units(model, graph)  # depth choices: block units (block_choices.py)
        configured = self.channel_unit_cfg.get("units", {})
        unknown = [name for name in configured if name not in {s.name for s in specs}]
        if unknown:
            raise KeyError(f"the config names units this model does not have: {', '.join(unknown)}")
        modules = dict(model.named_modules())
        units = [self._unit_from_spec(modules, spec, configured.get(spec.name)) for spec in specs]
        self._size_attributes = attribute_positions(analysis, units)
        self._output_positions = output_positions(analysis, units)
        return units

    def _new_unit(self, num_channels: int, unit_cfg: dict | None, divisor: int = 1,
                  min_kept: int = 1) -> MutableChannelUnit:
        args = dict(self.channel_unit_cfg.get("default_args", {}))
        if isinstance(unit_cfg, dict):
            args.update(unit_cfg.get("init_args", {}))
        if divisor > 1 and "divisor" in inspect.signature(self.unit_class).parameters:
            args["divisor"] = math.lcm(int(args.get("divisor", 1)), divisor)  # a kernel's alignment
            args["min_value"] = max(int(args.get("min_value", 1)), args["divisor"])
        if min_kept > 1 and "min_value" in inspect.signature(self.unit_class).parameters:
            args["min_value"] = max(int(args.get("min_value", 1)), min_kept)  # statistics over the kept ones
        declared = args.pop("num_channels", num_channels)
        if declared != num_channels:
            raise ValueError(f"the config gives {declared} channels for a unit of {num_channels}")
        return self.unit_class(num_channels, **args)

    def _unit_from_spec(self, modules: dict[str, nn.Module], spec: UnitSpec,
                        unit_cfg: dict | None) -> MutableChannelUnit:
        unit = self._new_unit(spec.num_channels, unit_cfg, spec.divisor, spec.min_kept)
        unit.name, unit.repeats, unit.traits = spec.name, spec.repeats, spec.traits  # traits: what it is
        unit.fixed_reasons = list(spec.fixed_reasons)
        for channel in spec.output_related + spec.input_related:
            channel.module = modules.get(channel.owner_name)
            (unit.add_output_related if channel.is_output_channel else unit.add_input_related)(channel)
        return unit

    def _units_from_config(self, model: nn.Module) -> list[MutableChannelUnit]:
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        units = []
        for name, cfg in self.channel_unit_cfg.get("units", {}).items():
            if not isinstance(cfg, dict) or "channels" not in cfg:
                raise ValueError(f"unit {name!r} has no 'channels'; a 'Config' parse needs them "
                                 "(make the config with config_template(with_channels=True))")
            num = cfg.get("init_args", {}).get("num_channels")
            items = []
            for key, is_output in (("output_related", True), ("input_related", False)):
                for ch in cfg["channels"].get(key, []):
                    items.append(channel_from_cfg(ch, is_output, modules, params, name))
            if num is None:  # the narrowest item holds the unit once (others may hold it several times)
                num = min((c.end - c.start) // c.expand_ratio for c in items)
            misfit = [c.name for c in items if (c.end - c.start) % (c.expand_ratio * num)]
            if misfit or num < 1:
                raise ValueError(f"unit {name!r} of {num} channels: the channels of {', '.join(misfit)} are not "
                                 "whole copies of it (end - start must be a multiple of expand_ratio * num_channels)")
            unit = self._new_unit(num, cfg)
            unit.name = name
            unit.repeats = int(cfg["channels"].get("repeats", 1))
            unit.fixed_reasons = list(cfg.get("fixed_reasons", []))
            for channel in items:
                (unit.add_output_related if channel.is_output_channel else unit.add_input_related)(channel)
            units.append(unit)
        self._size_attributes = attributes_from_cfg(self.parse_cfg.get("size_attributes", {}), modules, units)
        self._output_positions = outputs_from_cfg(self.parse_cfg.get("free_outputs", []), units)
        return units

    def _units_from_predefined(self, model: nn.Module) -> list[MutableChannelUnit]:
        MutableChannelUnit._register_channel_container(model)
        units: dict[int, MutableChannelUnit] = {}
        for module_name, module in model.named_modules():
            if not isinstance(module, DynamicChannelMixin):
                continue
            for attr, is_output in (("in_channels", False), ("out_channels", True)):
                container = module.get_mutable_attr(attr)
                for (start, end), mutable in container.mutable_channels.items():
                    source = getattr(mutable, "source_mutable", mutable)
                    if id(source) not in units:
                        unit = self.unit_class.init_from_mutable_channel(source)
                        unit.name = source.name or source.alias or len(units)
                        units[id(source)] = unit
                    channel = Channel(module_name, module, (start, end), is_output,
                                      getattr(mutable, "expand_ratio", 1))
                    unit = units[id(source)]
                    (unit.add_output_related if is_output else unit.add_input_related)(channel)
        return list(units.values())

    @staticmethod
    def _convert_layers(model: nn.Module, units: list[MutableChannelUnit],
                        all_units: list[MutableChannelUnit] | None = None) -> None:
        """Swap every layer the mutable ``units`` touch for its dynamic op (a layer that holds no
        channel count gets it from the channel ranges of ``all_units``, fixed ones included)."""
        modules = dict(model.named_modules())
        names = {c.name for u in units for c in u.channels if c.param_dim is None}
        converted: dict[str, nn.Module] = {}
        for name in sorted(names, key=lambda n: n.count(".")):
            module = modules[name]
            dynamic_cls = dynamic_op_for(module)
            if dynamic_cls is None:
                if isinstance(module, DynamicChannelMixin):
                    converted[name] = module
                    continue
                raise TypeError(f"layer {name!r} ({type(module).__name__}) has no dynamic op")
            sizes = side_sizes(all_units or units, name) if dynamic_cls.sides_from_units else None
            new = dynamic_cls.convert_from(module) if sizes is None else dynamic_cls.convert_from(module, sizes)
            set_submodule(model, name, new)
            converted[name] = new
            for child in new.dynamic_children:  # made dynamic with their parent (MHA's out_proj)
                converted[f"{name}.{child}"] = getattr(new, child)
        for unit in units:
            for channel in unit.channels:
                if channel.param_dim is None:
                    channel.module = converted[channel.name]
        convert_param_owners(model, units)

    # -- units and choices ----------------------------------------------------------------
    @property
    def units(self) -> list[MutableChannelUnit]:
        """Every unit found, prunable or not (a copy of the list)."""
        return list(self._units)

    @property
    def mutable_units(self) -> list[MutableChannelUnit]:
        """The units that can be pruned, in order: the ones choices are set on."""
        return list(self._mutable)

    @property
    def model(self) -> nn.Module | None:
        """The model given to ``prepare_from_supernet`` (None before)."""
        return self._model

    def _require_prepared(self) -> None:
        if self._model is None:
            raise RuntimeError("call prepare_from_supernet(model) before using the mutator")

    def unit(self, key: Any) -> MutableChannelUnit:
        """A mutable unit by name, or by its index in ``mutable_units``."""
        self._require_prepared()
        unit = self._mutable_by_name.get(key) if isinstance(key, (str, int)) else None
        if unit is not None:
            return unit
        units = self._mutable
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(units):
            return units[key]
        if any(u.name == key for u in self._units):
            raise KeyError(f"unit {key!r} is not prunable: {'; '.join(self._by_name(key).fixed_reasons)}")
        raise KeyError(f"no mutable unit named {key!r}")

    @property
    def graph(self) -> Any:
        """The traced model as a read-only ``networkx.DiGraph`` (see ``model_graph.py``):
        layers and joins with their op type, units and channel counts. Built on first use."""
        self._require_prepared()
        graph = self.__dict__.get("_model_graph")
        if graph is None:
            import networkx as nx  # imported only when a graph is asked for

            from ..analysis.model_graph import build_model_graph
            graph = self.__dict__["_model_graph"] = nx.freeze(build_model_graph(self))
        return graph

    def _by_name(self, name: Any) -> MutableChannelUnit:
        return next(u for u in self._units if u.name == name)

    @property
    def current_choices(self) -> dict[Any, Any]:
        """Every mutable unit's current choice, by unit name."""
        self._require_prepared()
        return {u.name: u.current_choice for u in self.mutable_units} | self.block_choices()

    def set_choices(self, choices: dict[Any, Any]) -> None:
        """Set several units at once; on any invalid entry nothing changes."""
        self._require_prepared()
        if not isinstance(choices, dict):
            raise TypeError(f"choices must be a dict of unit name to choice, got {type(choices).__name__}")
        choices, blocks = self.split_choices(choices)  # block choices validated, set once the channels are
        self._set_channel_choices(choices)
        for block, choice in blocks:
            block.current_choice = choice

    def _set_channel_choices(self, choices: dict[Any, Any]) -> None:
        if not choices:
            return
        if len(choices) == 1:  # one slider: validation comes before the only change, nothing to undo
            ((key, value),) = choices.items()
            unit = self.unit(key)
            unit.set_valid_choice(unit.validate_choice(value))
            return
        resolved = [(self.unit(key), value) for key, value in choices.items()]
        resolved = [(unit, unit.validate_choice(value)) for unit, value in resolved]
        before = [(unit.mutable_channel, unit.mutable_channel.snapshot()) for unit, _ in resolved]
        try:
            for unit, value in resolved:
                unit.set_valid_choice(value)
        except Exception:
            for mutable, state in before:
                mutable.restore(state)
            raise

    def sample_choices(self) -> dict[Any, Any]:
        """A random valid choice for every mutable unit, by name (nothing is set)."""
        self._require_prepared()
        return {u.name: u.sample_choice() for u in self.mutable_units}

    @property
    def max_choices(self) -> dict[Any, Any]:
        """The choices that keep every channel, by unit name."""
        return {u.name: u.max_choice for u in self.mutable_units} | {b.name: "keep" for b in self.removable_blocks}

    @property
    def min_choices(self) -> dict[Any, Any]:
        """Each unit's smallest valid choice, by unit name."""
        return {u.name: u.min_choice for u in self.mutable_units}

    def set_max_choices(self) -> None:
        """Keep every channel of every unit."""
        self.set_choices(self.max_choices)

    def set_min_choices(self) -> None:
        """Set every unit to its smallest valid choice."""
        self.set_choices(self.min_choices)

    @property
    def choice_template(self) -> dict[Any, Any]:
        """The choices by unit name (MMRazor's name for them): what ``set_choices`` takes back."""
        return self.current_choices

    @property
    def search_groups(self) -> dict[int, list[MutableChannelUnit]]:
        """One search group per mutable unit (channel units share no choice), numbered in order."""
        return {i: [u] for i, u in enumerate(self.mutable_units)}

    def config_template(self, only_mutable_units: bool = False, with_unit_init_args: bool = False,
                        with_channels: bool = False) -> dict[str, Any]:
        """The mutator as a config dict that ``MODELS.build`` turns back into a mutator."""
        self._require_prepared()
        units = {}
        for unit in (self.mutable_units if only_mutable_units else self._units):
            cfg = unit.config_template(with_unit_init_args, with_channels)
            if with_channels and not unit.is_mutable and unit.fixed_reasons:
                cfg["fixed_reasons"] = list(unit.fixed_reasons)
            units[unit.name] = cfg
        unit_cfg = {"type": self.channel_unit_cfg["type"],
                    "default_args": dict(self.channel_unit_cfg.get("default_args", {})),
                    "units": units}
        blocks = self.removable_blocks if only_mutable_units else self.block_units
        if blocks:
            unit_cfg["blocks"] = {b.name: b.config_template() for b in blocks}
        parse_cfg = {"type": "Config"} if with_channels else plain(self.parse_cfg)
        if with_channels and self._size_attributes:  # attributes the export sets: kept lossless
            parse_cfg["size_attributes"] = {
                f"{owner}.{attr}" if owner else attr: [[u.name if u is not None and u.name in units else None, pos]
                                                       for u, pos in positions]
                for (owner, attr), positions in self._size_attributes.items()}
        if with_channels and self._output_positions:  # outputs that follow the pruned model: the check cuts them
            parse_cfg["free_outputs"] = output_positions_cfg(self._output_positions, units)
        return {"type": type(self).__name__, "channel_unit_cfg": unit_cfg, "parse_cfg": parse_cfg}

    # -- counting -------------------------------------------------------------------------
    def resource_counter(self) -> ResourceCounter:
        """The live counter of this mutator's model, built from the trace on first use."""
        if self._model is None:
            raise RuntimeError("call prepare_from_supernet(model) before counting resources")
        if self._resource_counter is None:
            self._resource_counter = ResourceCounter(self._model, self.graph_trace, self.analysis,
                                                     self.mutable_units)
            self._resource_counter.set_blocks(self.removable_blocks)
        return self._resource_counter

    def resources(self, choices: dict[Any, Any] | None = None,
                  by_layer: bool = False) -> Resources | dict[str, Resources]:
        """Exact params, MACs and FLOPs of the model as ``to_static()`` would export it.

        At the current choices, or at ``choices`` (a what-if: every choice is as it was
        afterwards). ``by_layer=True`` gives ``{layer name: Resources}``. No forward pass: the
        geometry was recorded while tracing, and only the layers of changed units are recounted.
        """
        self._require_prepared()
        if choices is None and not by_layer:  # a slider's path: straight to the counter
            return self.resource_counter().resources()
        return mutator_resources(self, choices, by_layer)

    def latency(self, choices: dict[Any, Any] | None = None) -> Latency:
        """Predicted latency (ms) of the model as ``to_static()`` would export it, from the table
        that ``profile_latency(mutator, ...)`` measured; at ``choices`` a what-if. No forward pass."""
        self._require_prepared()
        return mutator_latency(self, choices)

    # -- export ---------------------------------------------------------------------------
    def to_static(self, check: bool = True, example_inputs: Any = None, check_reload: bool = True) -> nn.Module:
        """A new model of plain torch layers holding only the kept channels. ``check``: it must
        compute what the masked model does on the example input, else ``ExportError`` (two forwards).
        ``check_reload`` (with ``check``): a Hugging Face export rebuilt from its config must compute
        the same, else ``HFConfigWarning`` (``hf_export.check_reload``: one more forward)."""
        require_real_weights(self._model, "to_static()")
        self._require_prepared()
        static = static_copy(self._model, self._param_masks(), self._size_attributes)
        update_hf_models(static, self)  # a Hugging Face model's config says the kept sizes
        remove_dropped(static, self)  # dropped blocks leave the export, HF layer counts follow
        if not check:
            return static
        static = verify_export(self, static, example_inputs)
        if check_reload:
            check_reload_of(static, example_inputs if example_inputs is not None else self.example_inputs)
        return static

    def kept_output_channels(self) -> dict[tuple, dict[int, torch.Tensor]]:
        """The outputs whose widths follow the pruned model (``model_outputs.py``): output path ->
        dim -> the positions the export keeps there (at the current choices)."""
        return kept_output_positions(self._output_positions)

    def _param_masks(self) -> dict[tuple[str, int], torch.Tensor]:
        """``(parameter, dim) -> kept mask`` of the parameters pruned along dims (one or more)."""
        masks: dict[tuple[str, int], torch.Tensor] = {}
        params = dict(self._model.named_parameters())
        for unit in self.mutable_units:
            for channel in unit.channels:
                if channel.param_dim is None:
                    continue
                size = params[channel.name].shape[channel.param_dim]
                mask = masks.setdefault((channel.name, channel.param_dim), torch.ones(size, dtype=torch.bool))
                mask[channel.start:channel.end] = unit.channel_mask(channel)
        return masks


@MODELS.register_module()
class OneShotChannelMutator(ChannelMutator):
    """A channel mutator for one-shot search: max, min and random subnets."""

    default_unit_type = "OneShotMutableChannelUnit"

    def sample_subnet(self) -> dict[Any, Any]:
        """Set a random choice on every unit and return the choices."""
        choices = self.sample_choices()
        self.set_choices(choices)
        return choices


@MODELS.register_module()
class SlimmableChannelMutator(ChannelMutator):
    """Subnet ``i`` of a slimmable network takes each unit's ``i``-th candidate choice."""

    default_unit_type = "SlimmableChannelUnit"

    @property
    def subnets(self) -> list[dict[Any, Any]]:
        """The choices of each subnet: subnet ``i`` takes each unit's ``i``-th candidate."""
        units = self.mutable_units
        if not units:
            return []
        count = min(len(u.candidate_choices) for u in units)
        return [{u.name: u.candidate_choices[i] for u in units} for i in range(count)]

    def set_subnet(self, index: int) -> None:
        """Set the choices of subnet ``index``."""
        self.set_choices(self.subnets[index])
