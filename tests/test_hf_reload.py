"""A Hugging Face export rebuilt from its config must compute what the export computes: the
reload check of ``to_static`` (``hf_export.check_reload``). Tiny models built from config."""
from __future__ import annotations

import warnings

import pytest
import torch

from razor_widgets import ChannelMutator, HFConfigWarning
from razor_widgets.analysis.unit_labels import unit_role
from razor_widgets.export.hf_export import check_reload

transformers = pytest.importorskip("transformers")
VOCAB = 128


def _gemma():
    """Gemma scales its embeddings by sqrt(config.hidden_size)."""
    return transformers.GemmaForCausalLM(transformers.GemmaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, pad_token_id=0))


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64))


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _pruned_hidden(build):
    """The model with its hidden size at half (every layer alike, so the config says it)."""
    torch.manual_seed(0)
    model, inputs = build().eval(), _inputs()
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, inputs)
    hidden = next(u for u in mutator.mutable_units if unit_role(u).kind == "hidden")
    mutator.set_choices({hidden.name: 0.5})
    return mutator, inputs


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_a_reload_that_computes_something_else_warns(tmp_path, one_thread):
    """Gemma with its hidden size pruned: the export works and its config has the right shapes,
    but from_pretrained rebuilds the embedding scale from the new hidden size. The check warns,
    the config records it, and a real save_pretrained -> from_pretrained does differ."""
    mutator, inputs = _pruned_hidden(_gemma)
    with pytest.warns(HFConfigWarning, match="a model reloaded from this GemmaConfig computes something else"
                                             r".*keep the exported module \(torch.save\)"):
        static = mutator.to_static()
    before = {k: (v.clone(), v._version) for k, v in static.state_dict().items()}
    with pytest.warns(HFConfigWarning):
        check_reload(static, inputs)  # the rebuilt model shares the export's tensors: it leaves them as they are
    assert all(torch.equal(v, before[k][0]) and v._version == before[k][1] for k, v in static.state_dict().items())
    assert static.config.hidden_size == 32
    assert "logits" in static.config.razor_widgets_reload_differs
    static.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert not torch.allclose(_logits(reloaded, inputs), _logits(static, inputs), atol=1e-4)
    assert reloaded.config.razor_widgets_reload_differs == static.config.razor_widgets_reload_differs


def test_a_faithful_reload_does_not_warn(tmp_path, one_thread):
    mutator, inputs = _pruned_hidden(_llama)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        static = mutator.to_static()
    assert static.config.hidden_size == 32 and not hasattr(static.config, "razor_widgets_reload_differs")
    static.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(_logits(reloaded, inputs), _logits(static, inputs))
    assert check_reload(static, inputs) is None


def test_the_reload_check_can_be_skipped(one_thread):
    mutator, _ = _pruned_hidden(_gemma)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        static = mutator.to_static(check_reload=False)
    assert not hasattr(static.config, "razor_widgets_reload_differs")
    with pytest.warns(HFConfigWarning, match="computes something else"):
        assert check_reload(static, mutator.example_inputs) is not None
    assert check_reload(static, None) is None  # no input: nothing to run
