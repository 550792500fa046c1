"""What a model built from MODEL is traced on: a random tensor (images, clips) or random tokens.

Every command (``demo``, ``units``, ``dashboard``) and the dashboard's page build their example
input from one of these records (:class:`TensorInput`, :class:`TokenInput`), so
``--input-shape`` and ``--input-size`` mean the same thing everywhere. torch is imported only
when an input is made. What each option means: docs/tracing.md.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TensorInput:
    """A random float tensor of ``shape`` (an image model's batch x channels x height x width)."""

    shape: tuple[int, ...]

    kind = "tensor"

    def with_shape(self, shape: Sequence[int]) -> TensorInput:
        """The same kind of input with another shape (``--input-shape``)."""
        return TensorInput(tuple(int(d) for d in shape))

    def with_size(self, size: int) -> TensorInput:
        """The input with its last two dims (height and width) set to ``size`` (``--input-size``)."""
        return TensorInput((*self.shape[:-2], size, size))

    def make(self, seed: int | None = None) -> Any:
        """The random tensor (seeded when ``seed`` is given)."""
        import torch

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return torch.randn(*self.shape, generator=generator)

    def describe(self) -> str:
        """The input in words, for messages (``an input of shape (1, 3, 224, 224)``)."""
        return f"an input of shape {self.shape}"


@dataclass(frozen=True)
class TokenInput:
    """Random token ids of ``shape`` = (batch, sequence length) below ``vocab_size``, with an
    all-ones attention mask; ``decoder`` adds ``decoder_input_ids`` (an encoder-decoder model)."""

    shape: tuple[int, int]
    vocab_size: int
    decoder: bool = False

    kind = "tokens"

    def with_shape(self, shape: Sequence[int]) -> TokenInput:
        """The same tokens with another batch x sequence length; ``ValueError`` unless two numbers."""
        if len(shape) != 2:
            raise ValueError(f"a token input's shape is BATCH TOKENS (two numbers, e.g. 1 16), "
                             f"got {' '.join(str(d) for d in shape)}")
        return TokenInput((int(shape[0]), int(shape[1])), self.vocab_size, self.decoder)

    def with_size(self, size: int) -> TokenInput:
        """Refused with ``ValueError``: ``--input-size`` is an image's height and width, not a token count."""
        raise ValueError("--input-size is the height and width of an image; this model takes tokens: "
                         "give --input-shape BATCH TOKENS instead (e.g. --input-shape 1 16)")

    def make(self, seed: int | None = None) -> Any:
        """``{"input_ids", "attention_mask"}`` (and ``decoder_input_ids``), seeded when ``seed`` is given."""
        import torch

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        ids = torch.randint(0, self.vocab_size, self.shape, generator=generator)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.decoder:
            inputs["decoder_input_ids"] = ids.clone()
        return inputs

    def describe(self) -> str:
        """The input in words, for messages (``token ids of shape (1, 16) (batch, tokens)``)."""
        return f"token ids of shape {self.shape} (batch, tokens)"


ExampleInput = TensorInput | TokenInput


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on an example input: a dict as keyword arguments, anything else as one argument."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)
