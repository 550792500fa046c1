"""Keep an exported Hugging Face model a working HF model: its config says the pruned sizes.

:func:`update_hf_config` sets the config's sizes from the kept channels (transformers is never
imported: the HF model is duck-typed) and checks that the config builds the export's parameter
shapes; :func:`check_reload` rebuilds the model from the config and state dict and compares its
output. What HF cannot say is warned about (:class:`HFConfigWarning`) and recorded on the config.
The policy: docs/hf-export.md.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..analysis.unit_labels import unit_role
from ..layers.embedding import is_embedding
from ..trace.traced_size import COMPARED, attribute_sources
from .model_runs import call_model, on_model_device, untouched
from .output_comparison import RTOL, compare_outputs

MLP_KEYS = ("intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim")
EXPERT_KEYS = ("moe_intermediate_size", "intermediate_size")  # the width of every expert
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
KV_ATTRS = ("num_key_value_heads", "num_kv_heads")


class HFConfigWarning(UserWarning):
    """The export's sizes cannot be said by its Hugging Face config (it still runs)."""


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face model (duck-typed: a ``config`` with ``to_dict`` and ``save_pretrained``)."""
    config = getattr(model, "config", None)
    return hasattr(config, "to_dict") and hasattr(model, "save_pretrained")


def update_hf_models(static: nn.Module, mutator: Any) -> None:
    """:func:`update_hf_config` for the export itself or the outermost HF models inside it."""
    done: list[str] = []
    for name, module in static.named_modules():
        if is_hf_model(module) and not any(name.startswith(d + ".") or d == "" for d in done):
            update_hf_config(module, mutator, f"{name}." if name else "")
            done.append(name)


def update_hf_config(static: nn.Module, mutator: Any, prefix: str = "") -> list[str]:
    """Write the kept sizes into ``static.config`` and the attention modules' head counts;
    return the parameters a model built from that config would not match (empty: it loads).
    ``prefix``: where ``static`` sits in the prepared model (the units' names start with it)."""
    config = static.config
    original = {key: getattr(config, key, None) for key in ("hidden_size", "num_attention_heads", "head_dim")}
    heads, kv_heads, mlp, experts = _kept_per_role(mutator, static, prefix)
    if hasattr(config, "head_dim") and original["head_dim"] is None and original["num_attention_heads"]:
        config.head_dim = original["hidden_size"] // original["num_attention_heads"]
    embeddings = static.get_input_embeddings() if hasattr(static, "get_input_embeddings") else None
    if is_embedding(embeddings) and hasattr(config, "hidden_size"):
        config.hidden_size = embeddings.embedding_dim
    if not kv_heads and getattr(config, "num_key_value_heads", None) == original["num_attention_heads"]:
        kv_heads = heads  # no grouping: as many KV heads as query heads
    before = {key: value for key, value in config.to_dict().items() if isinstance(value, int)}
    notes = []
    for keys, values in ((("num_attention_heads",), heads), (KV_ATTRS, kv_heads), (MLP_KEYS, mlp),
                         (EXPERT_KEYS, experts)):
        key = next((k for k in keys if getattr(config, k, None) is not None), None)
        key = key or next((k for k in keys if hasattr(config, k)), None)
        if values and key is not None:
            if len(set(values.values())) == 1:
                setattr(config, key, next(iter(values.values())))
            else:  # the config keeps its value; the layers' own sizes are listed
                notes.append(f"{key} differs per layer ({_spread(values)})")
                per_layer = dict(getattr(config, "razor_widgets_per_layer", None) or {})
                per_layer[key] = dict(values)
                config.razor_widgets_per_layer = per_layer
    notes += _sizes_used_as_numbers(mutator, config, before, original)
    _own_configs(static, prefix, heads, kv_heads)
    mismatched = _mismatched_params(static)
    if mismatched or notes:
        config.razor_widgets_unrepresentable = mismatched
        warnings.warn(
            f"the pruned {type(static).__name__} cannot be described by its {type(config).__name__}"
            f"{': ' + '; '.join(notes) if notes else ''}; from_pretrained would not rebuild "
            f"{len(mismatched)} parameters ({', '.join(mismatched[:3])}{', ...' if len(mismatched) > 3 else ''}). "
            "The exported module works: save it with save_pruned(mutator, directory), which always reloads "
            "(load_pruned), or prune every layer alike (nearest_uniform_plan(mutator)).",
            HFConfigWarning, stacklevel=3)
    return mismatched


def _sizes_used_as_numbers(mutator: Any, config: Any, before: dict, original: dict) -> list[str]:
    """Attributes the forward used as numbers (T5's ``model_dim ** -0.5``) keep their value in
    the export; where one holds a config size that the export changed, ``from_pretrained``
    would compute it from the new size: the reload would compute something else."""
    changed = {before.get(key, value) for key, value in config.to_dict().items()
               if isinstance(value, int) and before.get(key, value) != value}
    changed |= {value for key, value in original.items() if value is not None and getattr(config, key, None) != value}
    trace = getattr(mutator, "graph_trace", None)
    # a comparison (``if n_rep == 1``) keeps its result while the attribute keeps its value
    used = {str(ref) for sources, reason, _ in (trace.size_uses if trace is not None else [])
            if COMPARED not in reason for ref in attribute_sources(sources) if ref.value in changed}
    return [f"{', '.join(sorted(used))} (a size used as a number) would follow the new config"] if used else []


def _kept_per_role(mutator: Any, static: nn.Module, prefix: str) -> tuple[dict, dict, dict, dict]:
    """Kept query heads, KV heads, MLP and expert widths by scope; sets the attention modules' counts."""
    heads, kv_heads, mlp, experts = {}, {}, {}, {}
    modules = {prefix + name: m for name, m in static.named_modules()}
    counted = {key for key in getattr(mutator, "_size_attributes", {})}  # set by the export already
    for unit in mutator.mutable_units:
        role = unit_role(unit)
        if not role.scope.startswith(prefix) or _in_dropped_block(mutator, role.scope):
            continue
        kept = int(unit.current_mask.sum()) // max(unit.repeats, 1)
        full = unit.num_channels // max(unit.repeats, 1)
        if role.kind in ("heads", "kv_groups"):
            heads[role.scope] = kept * role.heads_per_element
            if role.kind == "kv_groups":
                kv_heads[role.scope] = kept
            module = modules.get(role.scope)
            _counted_heads(module, {a for s, a in counted if s == role.scope}, role.scope, heads, kv_heads)
            _set_counts(module, full * role.heads_per_element, heads[role.scope],
                        full, kept if role.kind == "kv_groups" else None, role.head_dim,
                        {a for s, a in counted if s == role.scope})
        elif role.kind == "mlp":
            mlp[role.scope] = kept
        elif role.kind == "experts":
            experts[role.scope] = kept
    return heads, kv_heads, mlp, experts


def _in_dropped_block(mutator: Any, scope: str) -> bool:
    """Whether ``scope`` lies in a block the export drops (its sizes leave with it)."""
    dropped = mutator.dropped_paths() if hasattr(mutator, "dropped_paths") else []
    return any(scope == p or scope.startswith(p + ".") for p in dropped)


def _counted_heads(module: nn.Module | None, counted: set[str], scope: str, heads: dict, kv_heads: dict) -> None:
    """Head counts that the analysis tied to the kept channels (a reshape sized by the attribute,
    set by the export) are the module's true counts: they win over the unit's role (a fused
    projection's KV group writes its query heads, key and value as one element)."""
    for attrs, counts in ((HEAD_ATTRS, heads), (KV_ATTRS, kv_heads)):
        attr = next((a for a in attrs if a in counted), None)
        if module is not None and attr is not None:
            counts[scope] = int(getattr(module, attr))


def _set_counts(module: nn.Module | None, q_full: int, q_kept: int, kv_full: int, kv_kept: int | None,
                head_dim: int, counted: set[str] = frozenset()) -> None:
    """The attention module's head-count attributes, where they held the original counts (those
    the export already set from the analysis, ``counted``, stay)."""
    if module is None:
        return
    for attr in HEAD_ATTRS:
        if attr not in counted and getattr(module, attr, None) == q_full:
            setattr(module, attr, q_kept)
    for attr in ("all_head_size", "inner_dim"):
        if getattr(module, attr, None) == q_full * head_dim:
            setattr(module, attr, q_kept * head_dim)
    if kv_kept is not None:
        for attr in KV_ATTRS:
            if attr not in counted and getattr(module, attr, None) == kv_full:
                setattr(module, attr, kv_kept)


def _own_configs(static: nn.Module, prefix: str, heads: dict[str, int], kv_heads: dict[str, int]) -> None:
    """An attention module whose forward reads its head counts from the shared config (Phi-3's
    ``self.config.num_attention_heads * self.head_dim`` slices its fused projection) gets its
    own copy of the config where its counts differ from the config's: the export still runs."""
    config = static.config
    modules = {prefix + name: m for name, m in static.named_modules()}
    for scope, kept in heads.items():
        module = modules.get(scope)
        counts = {"num_attention_heads": kept}
        if scope in kv_heads:
            counts.update({key: kv_heads[scope] for key in KV_ATTRS if getattr(config, key, None) is not None})
        same = all(getattr(config, key, None) == value for key, value in counts.items())
        if getattr(module, "config", None) is not config or same:
            continue
        module.config = copy.copy(config)
        for key, value in counts.items():
            setattr(module.config, key, value)


def _mismatched_params(static: nn.Module) -> list[str]:
    """Parameters whose shape a model built from ``static.config`` would not have."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = type(static)(static.config)
    except Exception as exc:  # noqa: BLE001 (the config itself is not valid for the class)
        return [f"<the config does not build: {type(exc).__name__}: {exc}>"]
    expected = {name: tuple(p.shape) for name, p in rebuilt.named_parameters()}
    actual = {name: tuple(p.shape) for name, p in static.named_parameters()}
    return sorted(n for n in set(expected) | set(actual) if expected.get(n) != actual.get(n))


def _spread(values: dict[str, int]) -> str:
    return ", ".join(f"{scope or 'model'}: {n}" for scope, n in list(values.items())[:4]) + (
        ", ..." if len(values) > 4 else "")


def check_reload(static: nn.Module, example_inputs: Any) -> str | None:
    """Rebuild ``static`` from its config and state dict as ``from_pretrained`` would and run
    ``example_inputs``: None when the reloaded model computes what ``static`` computes, else
    what differs (also warned as :class:`HFConfigWarning` and kept in
    ``static.config.razor_widgets_reload_differs``). Not checked (None): no example input, not
    an HF model (or no ``from_pretrained`` / ``from_dict``), or a config that already warned
    that it cannot describe the export."""
    if example_inputs is None or not is_hf_model(static) or hasattr(static.config, "razor_widgets_unrepresentable"):
        return None  # the config already said it cannot describe the export
    if not hasattr(type(static), "from_pretrained") or not hasattr(type(static.config), "from_dict"):
        return None  # an HF-like model without HF's loader
    config = static.config
    with warnings.catch_warnings(), _no_progress_bar():
        warnings.simplefilter("ignore")
        try:
            reloaded_config = type(config).from_dict(config.to_dict())  # what config.json gives back
            reloaded = type(static).from_pretrained(None, config=reloaded_config, state_dict=static.state_dict(),
                                                    dtype=_float_dtype(static))
        except Exception as exc:  # noqa: BLE001 (the HF loader refuses it: say why)
            problem = f"from_pretrained fails: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        else:
            problem = _reload_differs(static, reloaded.to(_device(static)), example_inputs)
    if problem is None:
        return None
    config.razor_widgets_reload_differs = problem
    warnings.warn(
        f"the pruned {type(static).__name__} saves with save_pretrained, but a model reloaded from this "
        f"{type(config).__name__} computes something else: {problem}. The config rebuilds values the export "
        "keeps (e.g. Gemma's embedding scale follows hidden_size); keep the exported module (torch.save) instead "
        "of save_pretrained.", HFConfigWarning, stacklevel=3)
    return problem


def _reload_differs(static: nn.Module, reloaded: nn.Module, example_inputs: Any) -> str | None:
    inputs = on_model_device(example_inputs, static)
    rtol = max(RTOL.get(_float_dtype(static), RTOL[torch.float32]), RTOL[torch.float32])
    with untouched(static, reloaded) as rerun:
        expected = call_model(static, inputs)
        rerun()
        try:
            actual = call_model(reloaded, inputs)
        except Exception as exc:  # noqa: BLE001
            return f"the reloaded model raises {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return compare_outputs(expected, actual, rtol)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' "Loading weights" bar off while the check loads (it is already imported:
    the model is one of its models)."""
    hf_logging = sys.modules.get("transformers.utils.logging")
    shown = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
