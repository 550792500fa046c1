"""Tiny Hugging Face models, one per transformers family, built from config with random weights.

Every family gets the same small sizes (hidden 64, MLP 128, 2 layers, 4 heads, 2 KV heads where
the family groups them, vocabulary 128), through the config's own argument names; nothing is
downloaded. ``build`` returns the HF model as it is: next to its logits, the hidden states it
returns (T5's and BART's encoder states) follow the pruned model (``razor_widgets.model_outputs``).
``LogitsOnly`` wraps a model so that its output is the logits alone, for tools that need one
tensor (Torch-Pruning, side by side in ``coverage_hf.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

VOCAB = 128
TOKENS = 8
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
              eos_token_id=2)


@dataclass
class Family:
    """How to build one family tiny: its config and model class names and the config's own
    size arguments (merged over ``COMMON``, ``None`` drops a common one)."""

    name: str
    config: str
    model: str
    sizes: dict[str, Any] = field(default_factory=dict)
    inputs: str = "tokens"  # "tokens", "seq2seq" or "pixels"


FAMILIES = [
    Family("gpt2", "GPT2Config", "GPT2LMHeadModel", dict(intermediate_size=None, n_inner=128,
                                                         max_position_embeddings=None, n_positions=64)),
    Family("llama", "LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    Family("mistral", "MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=2)),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2)),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=16)),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=1, head_dim=16)),
    Family("phi", "PhiConfig", "PhiForCausalLM", dict(partial_rotary_factor=0.5)),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", dict(num_key_value_heads=2)),
    Family("stablelm", "StableLmConfig", "StableLmForCausalLM", dict(num_key_value_heads=2)),
    Family("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", dict(rotary_pct=0.5)),
    Family("falcon", "FalconConfig", "FalconForCausalLM", dict(intermediate_size=None, ffn_hidden_size=128,
                                                               new_decoder_architecture=True, num_kv_heads=2)),
    Family("opt", "OPTConfig", "OPTForCausalLM", dict(intermediate_size=None, ffn_dim=128, word_embed_proj_dim=64)),
    Family("bloom", "BloomConfig", "BloomForCausalLM", dict(intermediate_size=None, n_head=4)),
    Family("gpt_neo", "GPTNeoConfig", "GPTNeoForCausalLM", dict(attention_types=[[["global", "local"], 1]],
                                                                window_size=4)),
    Family("mixtral", "MixtralConfig", "MixtralForCausalLM", dict(num_key_value_heads=2, num_local_experts=4,
                                                                  num_experts_per_tok=2)),
    Family("qwen2_moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", dict(
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=64)),
    Family("bert", "BertConfig", "BertForMaskedLM"),
    Family("roberta", "RobertaConfig", "RobertaForMaskedLM", dict(max_position_embeddings=72)),
    Family("distilbert", "DistilBertConfig", "DistilBertForMaskedLM", dict(
        hidden_size=None, intermediate_size=None, num_hidden_layers=None, num_attention_heads=None,
        dim=64, hidden_dim=128, n_layers=2, n_heads=4)),
    Family("albert", "AlbertConfig", "AlbertForMaskedLM", dict(embedding_size=32)),
    Family("electra", "ElectraConfig", "ElectraForMaskedLM", dict(embedding_size=32)),
    Family("t5", "T5Config", "T5ForConditionalGeneration", dict(
        hidden_size=None, intermediate_size=None, num_hidden_layers=None, num_attention_heads=None,
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, decoder_start_token_id=0), "seq2seq"),
    Family("bart", "BartConfig", "BartForConditionalGeneration", dict(
        hidden_size=None, intermediate_size=None, num_hidden_layers=None, num_attention_heads=None,
        d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4), "seq2seq"),
    Family("vit", "ViTConfig", "ViTForImageClassification", dict(
        vocab_size=None, max_position_embeddings=None, pad_token_id=None, bos_token_id=None, eos_token_id=None,
        image_size=32, patch_size=8, num_labels=10), "pixels"),
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

    sizes = {**COMMON, **family.sizes}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    config = getattr(transformers, family.config)(**sizes)
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
