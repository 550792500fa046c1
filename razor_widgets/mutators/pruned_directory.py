"""A pruned model saved as data that always loads: ``save_pruned`` / ``load_pruned``.

The directory holds ``razor_widgets.json`` (how to build the original architecture: a Hugging
Face config, or an import path with JSON keyword arguments; the mutator's config; the example
input's shapes; the plan) and the pruned tensors in safetensors. Loading builds the original
on the meta device, prepares it, applies the plan, exports the skeleton and assigns the saved
tensors: no pickled code. When the export's HF config describes it (every layer pruned alike),
the directory is also a plain ``save_pretrained`` directory that ``from_pretrained`` loads.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..export.hf_export import check_reload, is_hf_model, update_hf_models
from ..export.plans import PlanError, apply_plan, plan_of
from ..export.static_copy import static_copy
from ..trace.meta_device import require_real_weights
from .channel_mutator import ChannelMutator

__all__ = ["PrunedDirectoryError", "load_pruned", "save_pruned", "INDEX_FILE", "WEIGHTS_FILE"]

INDEX_FILE = "razor_widgets.json"
WEIGHTS_FILE = "razor_widgets.safetensors"
FORMAT = 1
TRUSTED_BUILDERS = ("torchvision.models", "timm", "razor_widgets.models")  # builder functions a directory may name
MAX_KEPT_VALUES = 1 << 16  # integer example inputs up to this size keep their values


class PrunedDirectoryError(ValueError):
    """A pruned model that cannot be saved as data, or a directory that does not load."""


def save_pruned(model_or_mutator: Any, directory: str | os.PathLike, build: str | None = None,
                build_kwargs: dict[str, Any] | None = None, check: bool = True) -> Path:
    """Save the pruned model of a prepared ``ChannelMutator`` (or a ``PruningSession``) to
    ``directory``; :func:`load_pruned` rebuilds it in a fresh process. A Hugging Face model is
    rebuilt from its config; any other model from ``build``, an import path
    ``"package.module:callable"`` called with ``build_kwargs`` (JSON data). ``check``: the export
    is checked against the masked model (``to_static(check=True)``). Returns the directory."""
    mutator = _mutator_of(model_or_mutator)
    require_real_weights(mutator.model, "save_pruned()")
    source = _source(mutator.model, build, build_kwargs)
    index = {"format": FORMAT, "source": source, "mutator": _json_data(_mutator_cfg(mutator), "the mutator's config"),
             "example_inputs": input_spec(mutator.example_inputs), "plan": plan_of(mutator),
             "training": mutator.model.training}
    static = mutator.to_static(check=check)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if source["kind"] == "transformers" and not check and _config_describes(static):
        check_reload(static, mutator.example_inputs)  # a plain HF directory must reload to the same model
    if source["kind"] == "transformers" and _config_describes(static):
        static.save_pretrained(directory)  # also a plain Hugging Face directory
        index["weights"] = "save_pretrained"
    else:
        _save_tensors(static, directory / WEIGHTS_FILE, index)
        index["weights"] = WEIGHTS_FILE
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return directory


def load_pruned(directory: str | os.PathLike, trust: tuple[str, ...] = ()) -> nn.Module:
    """The pruned model saved by :func:`save_pruned` in ``directory``: built on the meta device
    from its config, pruned by its plan and given its saved tensors (no pickled code). ``trust``:
    packages whose builder functions a directory may name besides ``TRUSTED_BUILDERS``. Raises
    :class:`PrunedDirectoryError` saying what is wrong."""
    directory = Path(directory)
    try:
        index = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrunedDirectoryError(f"{str(directory)!r} holds no readable {INDEX_FILE}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise PrunedDirectoryError(f"{str(directory / INDEX_FILE)!r} is not a razor_widgets pruned-model index "
                                   f"(format {FORMAT})")
    if index.get("weights") == "save_pretrained":
        model_class = _transformers_class(index["source"]["class"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = model_class.from_pretrained(directory)
        return model.train(bool(index.get("training", False)))
    with torch.device("meta"):
        original = build_original(index["source"], tuple(trust))
    original.train(bool(index.get("training", False)))  # traced in the mode it was saved in
    mutator = ChannelMutator(**index["mutator"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same warnings were given when it was pruned
        mutator.prepare_from_supernet(original, example_inputs=inputs_from_spec(index["example_inputs"]))
    try:
        apply_plan(mutator, index["plan"], str(directory / INDEX_FILE))
    except PlanError as exc:
        raise PrunedDirectoryError(f"the saved plan does not fit the rebuilt model: {exc}") from exc
    skeleton = static_copy(mutator.model, mutator._param_masks(), mutator._size_attributes)
    update_hf_models(skeleton, mutator)
    _load_tensors(skeleton, directory / index["weights"], index["tensors"])
    return skeleton.train(bool(index.get("training", False)))


# -- what builds the original -------------------------------------------------------------------
def _mutator_of(obj: Any) -> ChannelMutator:
    mutator = getattr(obj, "mutator", obj)  # a PruningSession holds its mutator
    if not isinstance(mutator, ChannelMutator) or mutator.model is None:
        raise PrunedDirectoryError(
            "save_pruned needs the prepared ChannelMutator (or PruningSession) that pruned the model: "
            f"its plan is what the directory records, got {type(obj).__name__}")
    return mutator


def _source(model: nn.Module, build: str | None, build_kwargs: dict | None) -> dict[str, Any]:
    if build is None and is_hf_model(model) and type(model).__module__.startswith("transformers."):
        import transformers

        if getattr(transformers, type(model).__name__, None) is not type(model):
            raise PrunedDirectoryError(f"{type(model).__name__} is not a class transformers exports: pass build=")
        config = model.config.to_dict()
        return {"kind": "transformers", "class": type(model).__name__,
                "config": _json_data(config, "the model's config"),
                "attn_implementation": getattr(model.config, "_attn_implementation", None)}
    if build is None:
        raise PrunedDirectoryError(
            f"save_pruned cannot say how to build a {type(model).__name__}: pass build='package.module:callable' "
            "(e.g. 'torchvision.models:resnet18') and build_kwargs (JSON data) that build the unpruned model")
    _resolve(build)  # it must resolve now, not only when loading
    return {"kind": "import", "build": build, "kwargs": _json_data(dict(build_kwargs or {}), "build_kwargs")}


def build_original(source: dict[str, Any], trust: tuple[str, ...] = ()) -> nn.Module:
    """The unpruned model a pruned directory's ``source`` entry describes (under the caller's
    device context); an import path must pass :func:`_trusted`."""
    if source.get("kind") == "transformers":
        model_class = _transformers_class(source["class"])
        config = model_class.config_class.from_dict(source["config"])
        if source.get("attn_implementation"):
            config._attn_implementation = source["attn_implementation"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model_class(config).eval()
    if source.get("kind") == "import":
        model = _trusted(source["build"], trust)(**source.get("kwargs", {}))
        if not isinstance(model, nn.Module):
            raise PrunedDirectoryError(f"{source['build']} built a {type(model).__name__}, not a torch module")
        return model
    raise PrunedDirectoryError(f"unknown model source {source.get('kind')!r}")


def _trusted(path: str, trust: tuple[str, ...]) -> Any:
    """The callable of a directory's import path, if it may be called with the file's arguments:
    a torch module class, or a builder of a trusted package (``TRUSTED_BUILDERS`` or ``trust``);
    anything else (``subprocess:run``) raises: a directory is data and must not run code."""
    target = _resolve(path)
    module = str(path).partition(":")[0]
    if isinstance(target, type) and issubclass(target, nn.Module):
        return target
    if any(module == p or module.startswith(p + ".") for p in (*TRUSTED_BUILDERS, *trust)):
        return target
    raise PrunedDirectoryError(
        f"{path!r} is not a torch module class and not in a trusted package ({', '.join(TRUSTED_BUILDERS)}): "
        "a saved directory is data and does not call arbitrary functions; pass load_pruned(directory, "
        f"trust=({module!r},)) if you trust it")


def _transformers_class(name: str) -> type[nn.Module]:
    import transformers

    model_class = getattr(transformers, str(name), None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        raise PrunedDirectoryError(f"transformers has no model class {name!r}")
    return model_class


def _resolve(path: str) -> Any:
    """The callable an import path ``"package.module:name"`` names (an installed module only)."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise PrunedDirectoryError(f"build must be 'package.module:callable', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise PrunedDirectoryError(f"cannot import {path!r}: {exc}") from exc
    if not callable(target):
        raise PrunedDirectoryError(f"{path!r} is not callable")
    return target


def _mutator_cfg(mutator: ChannelMutator) -> dict[str, Any]:
    unit_cfg = {k: v for k, v in mutator.channel_unit_cfg.items() if k != "units"}
    return {"channel_unit_cfg": unit_cfg, "parse_cfg": dict(mutator.parse_cfg)}


def _json_data(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise PrunedDirectoryError(f"{what} is not JSON data, so it cannot be saved as data: {exc}") from exc


# -- example inputs as shapes -------------------------------------------------------------------
def input_spec(value: Any) -> Any:
    """Example inputs as JSON data: every tensor as its shape and dtype, and the values of small
    integer tensors (token ids, which a forward may read: GPT-2 looks for padding)."""
    if isinstance(value, torch.Tensor):
        spec = {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if not value.is_floating_point() and not value.is_complex() and value.numel() <= MAX_KEPT_VALUES:
            spec["values"] = value.detach().cpu().flatten().tolist()  # token ids: the forward may read them
        return spec
    if isinstance(value, (tuple, list)):
        return {"sequence": [input_spec(v) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        return {"mapping": {str(k): input_spec(v) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise PrunedDirectoryError(f"an example input of type {type(value).__name__} cannot be saved as data")


def inputs_from_spec(spec: Any) -> Any:
    """The tensors :func:`input_spec` recorded (small integer ones with their values, the others
    on the meta device) and plain values, in its structure."""
    if "tensor" in spec:
        dtype = getattr(torch, spec["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise PrunedDirectoryError(f"unknown dtype {spec['dtype']!r} in the example inputs")
        if "values" in spec:
            return torch.tensor(spec["values"], dtype=dtype).reshape(spec["tensor"])
        return torch.zeros(spec["tensor"], dtype=dtype, device="meta")
    if "sequence" in spec:
        items = [inputs_from_spec(v) for v in spec["sequence"]]
        return tuple(items) if spec.get("tuple") else items
    if "mapping" in spec:
        return {k: inputs_from_spec(v) for k, v in spec["mapping"].items()}
    return spec.get("value")


# -- tensors ------------------------------------------------------------------------------------
def _config_describes(static: nn.Module) -> bool:
    config = static.config
    return not any(hasattr(config, key) for key in ("razor_widgets_unrepresentable", "razor_widgets_reload_differs",
                                                    "razor_widgets_per_layer"))


def _named_tensors(model: nn.Module) -> dict[int, dict[str, Any]]:
    """Every parameter and buffer once (by identity), with every name it has."""
    entries: dict[int, dict[str, Any]] = {}
    for kind, items in (("parameter", model.named_parameters(remove_duplicate=False)),
                        ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, tensor in items:
            entry = entries.setdefault(id(tensor), {"tensor": tensor, "kind": kind, "names": []})
            entry["names"].append(name)
    return entries


def _save_tensors(static: nn.Module, path: Path, index: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors, records = {}, []
    for entry in _named_tensors(static).values():
        tensor = entry["tensor"]
        key = entry["names"][0]
        tensors[key] = tensor.detach().cpu().contiguous().clone()
        records.append({"key": key, "kind": entry["kind"], "names": entry["names"],
                        "requires_grad": bool(tensor.requires_grad)})
    save_file(tensors, str(path))
    index["tensors"] = records


def _load_tensors(skeleton: nn.Module, path: Path, records: list[dict[str, Any]]) -> None:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, RuntimeError, ValueError) as exc:
        raise PrunedDirectoryError(f"cannot read the weights {str(path)!r}: {exc}") from exc
    expected = {name: entry["tensor"] for entry in _named_tensors(skeleton).values() for name in entry["names"]}
    for record in records:
        tensor = tensors.get(record["key"])
        if tensor is None:
            raise PrunedDirectoryError(f"{str(path)!r} lacks the tensor {record['key']!r}")
        if record["kind"] == "parameter":
            tensor = nn.Parameter(tensor, requires_grad=record["requires_grad"])
        for name in record["names"]:
            if name not in expected or tuple(expected[name].shape) != tuple(tensor.shape):
                shape = tuple(expected[name].shape) if name in expected else "no such tensor"
                raise PrunedDirectoryError(f"the saved {name!r} {tuple(tensor.shape)} does not fit the rebuilt "
                                           f"model ({shape})")
            owner_name, _, attr = name.rpartition(".")
            owner = skeleton.get_submodule(owner_name)
            store = owner._parameters if record["kind"] == "parameter" else owner._buffers
            store[attr] = tensor
    left = [name for name, t in (*skeleton.named_parameters(), *skeleton.named_buffers()) if t.is_meta]
    if left:
        raise PrunedDirectoryError(f"the directory gives no values for {', '.join(left[:5])}")
