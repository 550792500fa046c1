"""Which model outputs keep their shape: next to the logits, hidden states, encoder states and
attentions follow the pruned model; a model whose output is its hidden states keeps them unless
the user says otherwise (``parse_cfg["fixed_outputs"]``). Tiny HF models built from config."""
from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import pytest
import torch

from razor_widgets import MODELS, ChannelMutator, ExportError, count_resources
from razor_widgets.analysis.unit_labels import unit_role
from razor_widgets.channels.model_outputs import narrowed_outputs, pinned_outputs
from razor_widgets.export.export_check import verify_export
from razor_widgets.export.hf_export import HFConfigWarning

transformers = pytest.importorskip("transformers")
VOCAB = 128


def _t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, vocab_size=VOCAB, decoder_start_token_id=0,
        pad_token_id=0))


def _bart():
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2))


def _llama_all_outputs():
    """Llama (eager attention) returning every layer's hidden states and attention weights."""
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                      output_hidden_states=True, output_attentions=True)
    config._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(config)


def _bert_model():
    """BertModel: no head, its output is its hidden states (and the pooler's)."""
    return transformers.BertModel(transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=64))


def _inputs(seq2seq: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if seq2seq:
        inputs["decoder_input_ids"] = ids
    return inputs


def _prepare(model, inputs, parse_cfg=None) -> ChannelMutator:
    mutator = ChannelMutator(parse_cfg=parse_cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, inputs)
    return mutator


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def _kinds(mutator) -> set[str]:
    return {unit_role(u).kind for u in mutator.mutable_units}


@pytest.mark.parametrize("build", [_t5, _bart, _llama_all_outputs], ids=["t5", "bart", "llama_all_outputs"])
def test_activations_next_to_logits_follow_the_pruned_model(build, one_thread):
    """Unwrapped T5 and BART (encoder states), Llama with hidden states and attentions: the hidden
    size is mutable, full choices are bit-identical, the export equals the masked model on the
    logits and on the kept channels of the free outputs (to_static checks it), counts are exact."""
    torch.manual_seed(0)
    model = build().eval()
    inputs = _inputs(seq2seq=build is not _llama_all_outputs)
    before = _run(model, inputs)
    mutator = _prepare(model, inputs)
    assert "hidden" in _kinds(mutator)
    assert all(path[0] != "logits" for path in mutator.analysis.free_outputs)
    after = _run(model, inputs)
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value)
    hidden = next(u for u in mutator.mutable_units if unit_role(u).kind == "hidden")
    for seed in range(3):
        torch.manual_seed(seed)
        mutator.set_choices({**mutator.sample_choices(), hidden.name: 0.5})
        masked = _run(model, inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HFConfigWarning)
            static = mutator.to_static()  # checks the export, free outputs on their kept channels
        exported = _run(static, inputs)
        assert exported.logits.shape == masked.logits.shape
        assert torch.allclose(exported.logits, masked.logits, atol=1e-5, rtol=1e-4)
        states = exported.encoder_last_hidden_state if "encoder_last_hidden_state" in exported \
            else exported.hidden_states[-1]
        assert states.shape[-1] == 32  # the export returns the pruned hidden size
        cut = narrowed_outputs(masked, mutator.kept_output_channels())
        for path in mutator.analysis.free_outputs:  # a cache's keys and values too (".name": an attribute)
            a, b = cut, exported
            for key in path:
                attr = isinstance(key, str) and key.startswith(".")
                a, b = (getattr(a, key[1:]), getattr(b, key[1:])) if attr else (a[key], b[key])
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        predicted, counted = mutator.resources(), count_resources(static, inputs)
        assert (predicted.params, predicted.macs) == (counted.params, counted.macs)


def test_a_model_whose_output_is_its_hidden_states_keeps_them(one_thread):
    """BertModel (no head): its output is its hidden states, so the hidden size stays fixed."""
    torch.manual_seed(0)
    mutator = _prepare(_bert_model().eval(), _inputs(False))
    assert "hidden" not in _kinds(mutator) and not mutator.analysis.free_outputs
    assert any("model output 'last_hidden_state'" in r for u in mutator.units for r in u.fixed_reasons)


@pytest.mark.parametrize("fixed", [["pooler_output"], "pooler_output"])
def test_the_user_names_the_outputs_that_keep_their_shape(fixed, one_thread):
    """``fixed_outputs=['pooler_output']``: the hidden states follow the pruned model (the hidden
    size is a unit) while the pooler's output keeps its 64 channels."""
    torch.manual_seed(0)
    model, inputs = _bert_model().eval(), _inputs(False)
    before = _run(model, inputs)
    mutator = _prepare(model, inputs, {"type": "ChannelAnalyzer", "fixed_outputs": fixed})
    assert "hidden" in _kinds(mutator)
    assert list(mutator.analysis.free_outputs) == [("last_hidden_state",)]
    assert torch.equal(_run(model, inputs).last_hidden_state, before.last_hidden_state)
    hidden = next(u for u in mutator.mutable_units if unit_role(u).kind == "hidden")
    mutator.set_choices({hidden.name: 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)  # BERT's config ties the head size to the hidden size
        static = mutator.to_static()
    out = _run(static, inputs)
    assert out.last_hidden_state.shape == (2, 8, 32) and out.pooler_output.shape == (2, 64)
    assert torch.allclose(out.pooler_output, _run(model, inputs).pooler_output, atol=1e-5)


def test_the_user_can_free_every_output_or_pin_an_activation(one_thread):
    torch.manual_seed(0)
    free = _prepare(_bert_model().eval(), _inputs(False), {"fixed_outputs": []})
    assert set(free.analysis.free_outputs) == {("last_hidden_state",), ("pooler_output",)}
    torch.manual_seed(0)
    t5 = _prepare(_t5().eval(), _inputs(True), {"fixed_outputs": ["logits", "encoder_last_hidden_state"]})
    assert "hidden" not in _kinds(t5)  # only the cache's keys and values (held, never pinned) follow
    assert t5.analysis.free_outputs and all(path[0] == "past_key_values" for path in t5.analysis.free_outputs)


def test_a_name_the_output_lacks_is_a_clear_error_and_changes_nothing(one_thread):
    torch.manual_seed(0)
    model = _bert_model().eval()
    layers = {name: type(m) for name, m in model.named_modules()}
    with pytest.raises(ValueError, match="fixed_outputs names 'logits'.*'last_hidden_state', 'pooler_output'"):
        ChannelMutator(parse_cfg={"fixed_outputs": ["logits"]}).prepare_from_supernet(model, _inputs(False))
    assert {name: type(m) for name, m in model.named_modules()} == layers
    with pytest.raises(TypeError, match="fixed_outputs takes output names"):
        pinned_outputs([("logits",)], [1.5])


@dataclasses.dataclass
class _Output:
    logits: torch.Tensor
    hidden_states: torch.Tensor


class _Tagger(torch.nn.Module):
    """A plain module returning a dataclass with logits and its hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mix, self.head = torch.nn.Embedding(32, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 5)

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.mix(torch.relu(h))
        return _Output(self.head(h), h)


def test_a_dataclass_output_follows_the_same_policy_and_a_wrong_free_output_is_caught(one_thread):
    torch.manual_seed(0)
    net, ids = _Tagger().eval(), torch.randint(0, 32, (2, 6))
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(net, ids)
    assert list(mutator.analysis.free_outputs) == [("hidden_states",)]
    (unit,) = [u for u in mutator.mutable_units if any(c.name == "embed.weight" for c in u.channels)]
    mutator.set_choices({unit.name: 0.5})
    static = mutator.to_static()
    assert static(ids).hidden_states.shape == (2, 6, 8)
    broken = copy.deepcopy(static)
    broken.register_forward_hook(lambda m, a, out: _Output(out.logits, out.hidden_states + 1))
    with pytest.raises(ExportError, match="hidden_states"):
        verify_export(mutator, broken)


def test_a_config_template_keeps_which_outputs_follow(one_thread):
    """A mutator rebuilt from ``config_template(with_channels=True)`` (JSON) knows the free
    outputs: its export of T5 with the hidden size at half passes the check."""
    torch.manual_seed(0)
    inputs = _inputs(True)
    traced = _prepare(_t5().eval(), inputs)
    cfg = json.loads(json.dumps(traced.config_template(with_channels=True)))
    paths = [entry["path"] for entry in cfg["parse_cfg"]["free_outputs"]]
    assert paths[0] == ["encoder_last_hidden_state"]  # then the cache's keys and values (8: 2 layers, 2 caches)
    assert len(paths) == 9 and all(path[0] == "past_key_values" for path in paths[1:])
    torch.manual_seed(0)
    model = _t5().eval()
    mutator = MODELS.build(cfg)
    mutator.prepare_from_supernet(model, inputs)
    hidden = next(u for u in mutator.mutable_units if unit_role(u).kind == "hidden")
    mutator.set_choices({hidden.name: 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = mutator.to_static()
    assert _run(static, inputs).encoder_last_hidden_state.shape == (2, 8, 32)
    cfg["parse_cfg"]["free_outputs"][0]["dims"][0][1][0][0] = "no such unit"
    with pytest.raises(ValueError, match="names unit 'no such unit'"):
        MODELS.build(cfg).prepare_from_supernet(_t5().eval(), inputs)


class _OuterStates(torch.nn.Module):
    """Returns logits and 'hidden_states' whose channels vary along two dims (split in blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)

    def forward(self, x):
        a = self.a(x)
        return {"logits": self.head(torch.relu(a)), "hidden_states": a.view(-1, 2, 3)}


def test_a_free_output_with_channels_along_several_dims_stays_pinned(one_thread):
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(_OuterStates(), torch.randn(2, 4))
    assert not mutator.analysis.free_outputs
    reasons = {r for u in mutator.units for r in u.fixed_reasons}
    assert "model output 'hidden_states' (its channels vary along several dims)" in reasons
