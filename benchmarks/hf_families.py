"""Tiny Hugging Face models, one per transformers family, built from config with random weights.

Every family gets the same small sizes (hidden 64, MLP 128, 2 layers, 4 heads, 2 KV heads where
the family groups them, vocabulary 128), through the config's own argument names
(``razor_widgets.models.tiny_hf``, which ``razor-widgets ... hf:MODEL_TYPE`` builds too); nothing
is downloaded. ``build`` returns the HF model as it is: next to its logits, the hidden states it
returns (T5's and BART's encoder states) follow the pruned model (``razor_widgets.channels.model_outputs``).
``LogitsOnly`` wraps a model so that its output is the logits alone, for tools that need one
tensor (Torch-Pruning, side by side in ``coverage_hf.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from razor_widgets.models.tiny_hf import TINY_VOCAB, tiny_sizes

VOCAB = TINY_VOCAB
TOKENS = 8


@dataclass
class Family:
    """One family: its transformers model type (``name``), config and model class names; the
    tiny sizes are ``razor_widgets.models.tiny_hf.tiny_sizes(name)``."""

    name: str
    config: str
    model: str
    inputs: str = "tokens"  # "tokens", "seq2seq" or "pixels"


FAMILIES = [
    Family("gpt2", "GPT2Config", "GPT2LMHeadModel"),
    Family("llama", "LlamaConfig", "LlamaForCausalLM"),
    Family("mistral", "MistralConfig", "MistralForCausalLM"),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM"),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM"),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM"),
    Family("phi", "PhiConfig", "PhiForCausalLM"),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM"),
    Family("stablelm", "StableLmConfig", "StableLmForCausalLM"),
    Family("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM"),
    Family("falcon", "FalconConfig", "FalconForCausalLM"),
    Family("opt", "OPTConfig", "OPTForCausalLM"),
    Family("bloom", "BloomConfig", "BloomForCausalLM"),
    Family("gpt_neo", "GPTNeoConfig", "GPTNeoForCausalLM"),
    Family("mixtral", "MixtralConfig", "MixtralForCausalLM"),
    Family("qwen2_moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
    Family("bert", "BertConfig", "BertForMaskedLM"),
    Family("roberta", "RobertaConfig", "RobertaForMaskedLM"),
    Family("distilbert", "DistilBertConfig", "DistilBertForMaskedLM"),
    Family("albert", "AlbertConfig", "AlbertForMaskedLM"),
    Family("electra", "ElectraConfig", "ElectraForMaskedLM"),
    Family("t5", "T5Config", "T5ForConditionalGeneration", "seq2seq"),
    Family("bart", "BartConfig", "BartForConditionalGeneration", "seq2seq"),
    Family("vit", "ViTConfig", "ViTForImageClassification", "pixels"),
]


class LogitsOnly(nn.Module):
    """An HF model whose output is its logits alone (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs).logits


def build(family: Family, seed: int = 0, logits_only: bool = False) -> nn.Module:
    """The family's model, tiny, random (seeded), in eval mode (wrapped in ``LogitsOnly`` when asked)."""
    import transformers

    config = getattr(transformers, family.config)(**tiny_sizes(family.name))
    torch.manual_seed(seed)
    model = getattr(transformers, family.model)(config)
    return (LogitsOnly(model) if logits_only else model).eval()


def example_inputs(family: Family, batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if family.inputs == "pixels":
        return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=gen)}
    ids = torch.randint(3, VOCAB, (batch, TOKENS), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family.inputs == "seq2seq":
        inputs["decoder_input_ids"] = ids
    return inputs
