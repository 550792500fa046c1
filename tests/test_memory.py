"""Memory figures of Resources: weight bytes, KV cache bytes and MoE active params, exact
against the export (its parameters, a real cache of that length and batch, its experts)."""
from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from razor_widgets import ChannelMutator  # noqa: E402
from razor_widgets.models.tiny_hf import build_language_model, tiny_config  # noqa: E402

PLANS = [(1.0, 1.0, 1.0), (0.5, 0.75, 1.0), (0.25, 1.0, 0.5)]


def pruned(model_type: str, plan: tuple, dtype: torch.dtype = torch.float32, **config):
    cfg = tiny_config(model_type)
    for key, value in config.items():
        setattr(cfg, key, value)
    model = build_language_model(cfg).to(dtype)
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=torch.randint(3, 100, (1, 8)))
        mutator.set_choices({u.name: plan[i % 3] for i, u in enumerate(mutator.mutable_units)})
        static = mutator.to_static(check=False)
    return mutator.resources(), static


def real_cache_bytes(static, seq_len: int, batch: int) -> int:
    tokens = torch.randint(3, 100, (batch, seq_len), generator=torch.Generator().manual_seed(seq_len))
    with torch.no_grad():
        cache = static(tokens, use_cache=True).past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def param_bytes(static) -> int:
    return sum(p.numel() * p.element_size() for p in static.parameters())


SLOW = pytest.mark.slow  # the same checks on more plans: the fast tier keeps one per family


@pytest.mark.parametrize("model_type,config,plan", [
    pytest.param("llama", {}, PLANS[0], marks=SLOW), ("llama", {}, PLANS[1]),
    pytest.param("llama", {"num_key_value_heads": 4}, PLANS[2], marks=SLOW),
    ("mixtral", {}, PLANS[1]), ("gpt2", {}, PLANS[1]), pytest.param("gpt2", {}, PLANS[2], marks=SLOW)])
def test_weights_and_kv_cache_are_exact(model_type, config, plan):
    res, static = pruned(model_type, plan, **config)
    assert res.weight_bytes() == param_bytes(static)
    for seq_len, batch in ((1, 1), (7, 3), (33, 2)):
        assert res.kv_cache_bytes(seq_len, batch) == real_cache_bytes(static, seq_len, batch)
        assert res.memory(seq_len, batch) == param_bytes(static) + real_cache_bytes(static, seq_len, batch)
    if plan != PLANS[0]:
        assert res.kv_cache_bytes(16, 2) <= res.kv_cache_bytes(16, 2, original=True)
        assert res.weight_bytes() < res.weight_bytes(original=True)


def test_bfloat16_model_and_a_given_dtype():
    res, static = pruned("llama", PLANS[1], torch.bfloat16)
    assert res.dtype == torch.bfloat16
    assert res.weight_bytes() == param_bytes(static) == 2 * res.params
    assert res.kv_cache_bytes(9, 2) == real_cache_bytes(static, 9, 2)
    assert res.weight_bytes(torch.float32) == 4 * res.params
    assert res.memory(9, 2, torch.int8) == res.params + res.kv_per_token * 18


def test_tied_embeddings_count_once():
    res, static = pruned("llama", PLANS[1], tie_word_embeddings=True)
    assert static.lm_head.weight is static.model.embed_tokens.weight
    assert res.weight_bytes() == param_bytes(static)
    assert res.kv_cache_bytes(5, 4) == real_cache_bytes(static, 5, 4)


@pytest.mark.parametrize("model_type,plan", [("mixtral", PLANS[1]), ("qwen2_moe", PLANS[2]),
                                             pytest.param("mixtral", PLANS[0], marks=SLOW)])
def test_active_params_are_the_experts_a_token_uses(model_type, plan):
    res, static = pruned(model_type, plan)
    top_k = static.config.num_experts_per_tok
    active = 0
    for name, module in static.named_modules():
        own = list(module.parameters(recurse=False))
        experts = name.endswith("mlp.experts")
        active += sum(p.numel() // p.shape[0] * top_k if experts else p.numel() for p in own)
    assert res.active_params == active < res.params
    assert res.original_active_params < res.original_params


def test_models_without_a_known_cache_say_so():
    res, _ = pruned("bert", PLANS[1])
    assert res.kv_per_token is None and res.active_params is None
    assert res.memory(128, 4) == res.weight_bytes()
    with pytest.raises(ValueError, match="no KV cache"):
        res.kv_cache_bytes(128, 4)
    res, _ = pruned("llama", PLANS[1])
    with pytest.raises(ValueError, match="seq_len"):
        res.kv_cache_bytes(-1, 1)


def prepared_only(model_type: str) -> ChannelMutator:
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(build_language_model(tiny_config(model_type)),
                                      example_inputs=torch.randint(3, 100, (1, 8)))
    return mutator


@pytest.mark.parametrize("mode", ["uniform", "l1"])
def test_fit_budget_on_memory_at_a_length_and_batch(mode):
    from razor_widgets import fit_budget

    mutator = prepared_only("llama")
    before = dict(mutator.current_choices)
    fit = fit_budget(mutator, 0.6, "memory", mode=mode, seq_len=512, batch=4)
    memory = fit.resources.memory(512, 4)
    assert fit.met and fit.seq_len == 512 and fit.batch == 4
    full = fit.resources.memory(512, 4, original=True)
    assert 0.45 * full < memory <= 0.6 * full
    assert mutator.current_choices == before
    assert mutator.resources(choices=fit.choices).memory(512, 4) == memory


def test_fit_budget_on_memory_with_sensitivity_keeps_the_fragile_units():
    from razor_widgets import Sensitivity, fit_budget, unit_role

    mutator = prepared_only("llama")
    kinds = {u.name: unit_role(u).kind for u in mutator.mutable_units}
    fragile = {"kv_groups": 0.5, "hidden": 0.3, "mlp": 0.01}
    table = {name: {r: 1.0 - fragile[kind] * (1 - r) for r in (0.25, 0.5, 0.75)} for name, kind in kinds.items()}
    fit = fit_budget(mutator, 0.8, "memory", mode="sensitivity", sensitivity=Sensitivity(1.0, table),
                     seq_len=64, batch=2)
    assert fit.met
    kept = {name: fit.choices[name] for name in kinds}
    assert all(kept[n] == 1.0 for n, k in kinds.items() if k == "kv_groups")
    assert any(kept[n] < 1.0 for n, k in kinds.items() if k == "mlp")


def test_fit_budget_on_active_params():
    from razor_widgets import fit_budget

    mutator = prepared_only("mixtral")
    fit = fit_budget(mutator, 0.7, "active_params", mode="l1")
    assert fit.met and fit.resources.active_params <= 0.7 * fit.resources.original_active_params
    with pytest.raises(ValueError, match="not known"):
        fit_budget(prepared_only("gpt2"), 0.7, "active_params")
    with pytest.raises(ValueError, match="seq_len"):
        fit_budget(mutator, 0.7, "memory")
    with pytest.raises(ValueError, match="memory"):
        fit_budget(mutator, 0.7, "macs", seq_len=4)


def test_a_latent_kv_cache_is_not_counted_as_heads():
    """DeepSeek's multi-head latent attention caches compressed keys and values, not
    kv_heads x head_dim: no figure rather than a wrong one."""
    import transformers

    config = transformers.DeepseekV3Config(
        hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=32,
        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, first_k_dense_replace=1, vocab_size=128,
        n_group=1, topk_group=1)
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(transformers.DeepseekV3ForCausalLM(config).eval(),
                                      example_inputs=torch.randint(3, 100, (1, 8)))
    res = mutator.resources()
    assert res.kv_per_token is None
    assert res.active_params < res.params
