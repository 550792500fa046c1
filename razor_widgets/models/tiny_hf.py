"""Hugging Face language models built from a config with random weights: nothing is downloaded.

``tiny_config(model_type)`` (tiny sizes under each family's own argument names) or
``config_from_file(path)`` (a local config.json, read as data) gives the config;
``build_language_model(config)`` builds its language model class in eval mode. transformers
(the ``[hf]`` extra) is imported only inside functions. Sizes and class choice: docs/hf-models.md.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn

TINY_VOCAB = 128
TINY_HIDDEN, TINY_HEADS = 64, 4
TINY_SIZES: dict[str, Any] = dict(vocab_size=TINY_VOCAB, hidden_size=TINY_HIDDEN, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=TINY_HEADS, max_position_embeddings=64,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
# set only where the config takes them (grouped KV heads, an explicit head dim)
TINY_WHERE_TAKEN: dict[str, Any] = dict(num_key_value_heads=2, head_dim=TINY_HIDDEN // TINY_HEADS)
_NO_COMMON = dict(hidden_size=None, intermediate_size=None, num_hidden_layers=None, num_attention_heads=None)
_NO_TOKENS = dict(vocab_size=None, max_position_embeddings=None, pad_token_id=None, bos_token_id=None,
                  eos_token_id=None)
# the families whose configs name the sizes differently or need more (None drops a common size)
FAMILY_SIZES: dict[str, dict[str, Any]] = {
    "gpt2": dict(intermediate_size=None, n_inner=128, max_position_embeddings=None, n_positions=64),
    "gemma": dict(num_key_value_heads=1),
    "phi": dict(partial_rotary_factor=0.5, num_key_value_heads=None),  # Phi-1 and Phi-2 do not group KV heads
    "gpt_neox": dict(rotary_pct=0.5),
    "falcon": dict(intermediate_size=None, ffn_hidden_size=128, new_decoder_architecture=True, num_kv_heads=2),
    "opt": dict(intermediate_size=None, ffn_dim=128, word_embed_proj_dim=64),
    "bloom": dict(intermediate_size=None, n_head=4),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]], window_size=4),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64),
    "roberta": dict(max_position_embeddings=72),
    "distilbert": dict(_NO_COMMON, dim=64, hidden_dim=128, n_layers=2, n_heads=4),
    "albert": dict(embedding_size=32),
    "electra": dict(embedding_size=32),
    "t5": dict(_NO_COMMON, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, decoder_start_token_id=0),
    "bart": dict(_NO_COMMON, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2,
                 decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4),
    "vit": dict(_NO_TOKENS, image_size=32, patch_size=8, num_labels=10),
}
# the auto classes tried in order, by the model-type tables of transformers' auto module
LANGUAGE_MODEL_TABLES = (("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "seq2seq language model"),
                         ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "masked language model"),
                         ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "causal language model"))


def model_types() -> list[str]:
    """Every model type transformers knows (``AutoConfig.for_model`` takes them)."""
    from transformers import CONFIG_MAPPING

    return sorted(CONFIG_MAPPING.keys())


def tiny_sizes(model_type: str) -> dict[str, Any]:
    """The config arguments that make ``model_type`` tiny (docs/hf-models.md)."""
    from transformers import CONFIG_MAPPING

    taken = inspect.signature(CONFIG_MAPPING[model_type]).parameters
    sizes = {**TINY_SIZES, **{k: v for k, v in TINY_WHERE_TAKEN.items() if k in taken},
             **FAMILY_SIZES.get(model_type, {})}
    return {k: v for k, v in sizes.items() if v is not None}


def tiny_config(model_type: str) -> Any:
    """A tiny config of ``model_type`` (a ``PretrainedConfig``); ``KeyError`` for an unknown type."""
    from transformers import CONFIG_MAPPING, AutoConfig

    if model_type not in CONFIG_MAPPING:
        raise KeyError(model_type)
    return AutoConfig.for_model(model_type, **tiny_sizes(model_type))


def read_config_file(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ``config.json`` at ``path`` (a file, or a directory holding one) and its contents, read
    as JSON data; ``ValueError`` saying what is wrong (no file, not JSON, no ``model_type``)."""
    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{str(path)!r} is neither a config.json file nor a directory holding one")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {str(file)!r} as JSON: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{str(file)!r} has no \"model_type\": it is not a Hugging Face model config")
    return file, data


def config_from_file(path: str | Path) -> Any:
    """The ``PretrainedConfig`` of a local config.json (see ``read_config_file``); ``ValueError``
    for a model type transformers does not know."""
    from transformers import CONFIG_MAPPING

    file, data = read_config_file(path)
    if data["model_type"] not in CONFIG_MAPPING:
        raise ValueError(f"{str(file)!r} has model_type {data['model_type']!r}, which transformers does not know "
                         f"(custom model code is never run)")
    return CONFIG_MAPPING[data["model_type"]].from_dict(data)


def language_model_class(config: Any) -> type[nn.Module]:
    """The transformers class to build ``config`` with (docs/hf-models.md); ``ValueError``
    when the model type has no language model."""
    import transformers
    from transformers.models.auto import modeling_auto

    for name in config.architectures or ():
        if isinstance(name, str) and isinstance(getattr(transformers, name, None), type):
            return getattr(transformers, name)
    for table, _ in LANGUAGE_MODEL_TABLES:
        if table.startswith("MODEL_FOR_SEQ_TO_SEQ") and not config.is_encoder_decoder:
            continue
        name = getattr(modeling_auto, table).get(config.model_type)
        if isinstance(name, str) and isinstance(getattr(transformers, name, None), type):
            return getattr(transformers, name)
    kinds = [kind for _, kind in LANGUAGE_MODEL_TABLES]
    raise ValueError(f"transformers has no {', '.join(kinds[:-1])} or {kinds[-1]} for model type {config.model_type!r} "
                     f"(only models that take tokens are supported)")


def build_language_model(config: Any, seed: int | None = 0) -> nn.Module:
    """``language_model_class(config)`` built from ``config``: random weights (seeded), in torch's default
    dtype, in eval mode."""
    import torch

    model_class = language_model_class(config)
    if seed is not None:
        torch.manual_seed(seed)
    return model_class(config).eval()
