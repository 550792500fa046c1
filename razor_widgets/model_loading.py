"""MODEL, as every command and the dashboard read it: one syntax, checked before anything is traced.

A MODEL is a named model, a torchvision name, ``timm:NAME``, ``hf:MODEL_TYPE``, ``hf:PATH`` or
``package.module:callable``; ``resolve_model`` says how to build it and what example input it
takes. torch, torchvision and timm are imported only inside functions, so ``--help`` works
without them. The syntax in full: docs/model-names.md.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .trace.example_inputs import ExampleInput, TensorInput, TokenInput

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL = "resnet18"
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)
VIDEO_FRAMES = 16  # frames of the example clip for torchvision's video models
TORCHVISION_FAMILIES = ("", "detection", "segmentation", "video")  # sub-packages of torchvision.models searched
HF_PREFIX = "hf:"
DEFAULT_TOKENS = (1, 16)  # batch x sequence length of an hf: model's example input
HF_INSTALL = 'pip install "razor_widgets[hf]"'


@dataclass(frozen=True)
class NamedModel:
    """A model this package names: ``target`` is ``package.module:callable``; ``input_shape``
    the example input it is traced on; ``score``, where the model has one, is the
    ``package.module:callable`` of its eval_fn (model -> float, higher is better)."""

    target: str
    input_shape: tuple[int, ...]
    description: str
    score: str | None = None
    score_name: str = "score"  # what the score measures, in words (the dashboard says it)


# Named models, looked up before anything else. A name whose callable is not (yet) in the
# package is reported as unavailable, never guessed at.
NAMED_MODELS: dict[str, NamedModel] = {
    "digits": NamedModel("razor_widgets.models.digits:trained_digits_cnn", (1, 1, 8, 8),
                         "a small CNN trained on scikit-learn's 8x8 digits",
                         score="razor_widgets.models.digits:digits_accuracy",
                         score_name="test accuracy (the fraction of the 450 held-out test images classified "
                                    "correctly)"),
}


def register_model(name: str, target: str, input_shape: tuple[int, ...], description: str = "",
                   score: str | None = None, score_name: str = "score") -> None:
    """Give ``package.module:callable`` a short name that every command accepts as MODEL
    (``score``: the ``package.module:callable`` of its eval_fn, shown live by the dashboard;
    ``score_name``: what it measures, in words)."""
    if ":" in name or not name:
        raise ValueError(f"a model name has no ':' and is not empty, got {name!r}")
    NAMED_MODELS[name] = NamedModel(target, tuple(int(d) for d in input_shape), description, score, score_name)


class ModelLoadError(ValueError):
    """MODEL names nothing that can be built, or building it failed; the message is one line."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved MODEL: what it is (``kind``), how to build it, and the example input it takes
    unless told otherwise (``example``: a ``TensorInput`` or a ``TokenInput``)."""

    spec: str
    kind: str  # "named", "torchvision", "timm", "hf" or "callable"
    build: Callable[[], nn.Module]
    example: ExampleInput
    eval_fn: Callable[[nn.Module], float] | None = None  # the model's score, where it has one

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The example input's shape (batch x tokens for a token model)."""
        return self.example.shape

    def with_input_size(self, size: int) -> tuple[int, ...]:
        """The example input shape with its last two dims (height and width) set to ``size``;
        ``ValueError`` for a token model."""
        return self.example.with_size(size).shape

    def load(self) -> nn.Module:
        """Build the model, in eval mode; failures are one-line ``ModelLoadError``s."""
        from torch import nn

        try:
            model = self.build()
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(f"building {self.spec} failed: {one_line(error)}") from None
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"{self.spec} returned a {type(model).__name__}, not a torch.nn.Module")
        return model.eval()


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def resolve_model(spec: str) -> ModelSource:
    """Check what ``spec`` names and return how to build it (nothing is built yet).
    Raises ``ModelLoadError`` with a one-line message when it names nothing."""
    if spec in NAMED_MODELS:
        named = NAMED_MODELS[spec]
        try:
            target = _resolve_callable(named.target)
            eval_fn = _resolve_callable(named.score) if named.score else None
        except ModelLoadError as error:
            raise ModelLoadError(f"the named model {spec!r} ({named.target}) is not available: {error}") from None
        return ModelSource(spec, "named", target, TensorInput(named.input_shape), eval_fn)
    if spec.startswith("timm:"):
        return _resolve_timm(spec)
    if spec.startswith(HF_PREFIX):
        return _resolve_hf(spec)
    if ":" in spec:
        return ModelSource(spec, "callable", _resolve_callable(spec), TensorInput(DEFAULT_INPUT_SHAPE))
    return _resolve_torchvision(spec)


def load_model(spec: str) -> nn.Module:
    """Build the model ``spec`` names (syntax: docs/model-names.md), in eval mode."""
    return resolve_model(spec).load()


def _resolve_callable(spec: str) -> Callable[[], Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"MODEL must be a torchvision model name, timm:NAME, hf:MODEL_TYPE, hf:PATH or "
                             f"package.module:callable "
                             f"(e.g. torchvision.models:resnet34), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any import failure is reported in one line
        raise ModelLoadError(f"cannot import {module_name!r}: {one_line(error)}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"{module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(f"{spec!r} is not callable")
    return target


def _resolve_timm(spec: str) -> ModelSource:
    name = spec.partition(":")[2]
    if importlib.util.find_spec("timm") is None:
        raise ModelLoadError(f"{spec!r} needs timm: pip install \"razor_widgets[timm]\"")
    import timm

    if not timm.is_model(name):
        raise ModelLoadError(f"{name!r} is not a timm model (timm.list_models() lists them)")
    config = timm.get_pretrained_cfg(name)
    size = tuple(config.input_size) if config is not None and config.input_size else DEFAULT_INPUT_SHAPE[1:]
    return ModelSource(spec, "timm", lambda: timm.create_model(name, pretrained=False), TensorInput((1, *size)))


def _torchvision_family(name: str) -> str | None:
    import torchvision.models as models

    for family in TORCHVISION_FAMILIES:
        module = getattr(models, family) if family else models
        if name in models.list_models(module=module):
            return family
    return None


def _resolve_torchvision(name: str) -> ModelSource:
    import inspect

    import torchvision.models as models

    family = _torchvision_family(name)
    if family is None:
        raise ModelLoadError(f"{name!r} is not a torchvision classification, detection, segmentation or video "
                             f"model (or give timm:NAME or package.module:callable)")
    kwargs: dict[str, Any] = {"weights": None}
    if "weights_backbone" in inspect.signature(models.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None  # the default would download the backbone's weights
    crop = getattr(models.get_model_weights(name).DEFAULT.transforms(), "crop_size", None)
    side = int(crop[0]) if crop else DEFAULT_INPUT_SHAPE[-1]
    shape = (1, 3, VIDEO_FRAMES, side, side) if family == "video" else (1, 3, side, side)
    return ModelSource(name, "torchvision", lambda: models.get_model(name, **kwargs), TensorInput(shape))


def _is_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(".json") or text.startswith("~")


def _resolve_hf(spec: str) -> ModelSource:
    """``hf:MODEL_TYPE`` (a tiny config) or ``hf:PATH`` (a local config.json): random weights."""
    target = spec[len(HF_PREFIX):]
    if not target:
        raise ModelLoadError(f"{spec!r} names no model: give hf:MODEL_TYPE (e.g. hf:llama) or hf:PATH to a "
                             f"config.json or its directory")
    if importlib.util.find_spec("transformers") is None:
        raise ModelLoadError(f"{spec!r} needs transformers: {HF_INSTALL}")
    from .models import tiny_hf

    try:
        if _is_path(target):
            config = tiny_hf.config_from_file(target)
        else:
            config = tiny_hf.tiny_config(target)
        tiny_hf.language_model_class(config)  # a type with no language model fails now, before building
    except KeyError:
        raise ModelLoadError(f"{target!r} is not a transformers model type (e.g. llama, gpt2, bert, t5; "
                             f"give hf:./DIR or hf:FILE.json for a local config)") from None
    except ValueError as error:
        raise ModelLoadError(f"{spec}: {error}") from None
    except Exception as error:  # a config transformers refuses
        raise ModelLoadError(f"{spec}: cannot make its config: {one_line(error)}") from None
    vocab_size = getattr(config, "vocab_size", None)
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ModelLoadError(f"{spec}: its config has no vocab_size: only models that take tokens are supported")
    example = TokenInput(DEFAULT_TOKENS, vocab_size, decoder=bool(config.is_encoder_decoder))
    return ModelSource(spec, "hf", lambda: tiny_hf.build_language_model(config), example)
