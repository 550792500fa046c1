"""Depth as a choice on library models (issue 28): the block units found, full choices
bit-identical, random mixes of block and channel choices exported as masked with exact counts,
and Hugging Face exports with fewer layers that reload with ``from_pretrained``."""
from __future__ import annotations

import random
import warnings

import pytest
import torch

from razor_widgets import ChannelMutator, HFConfigWarning, count_resources
from razor_widgets.analysis.unit_labels import unit_role

torchvision = pytest.importorskip("torchvision")

VISION = {  # builder, input size, removable blocks, blocks that must stay
    "resnet50": (torchvision.models.resnet50, 64, 12, 4),
    "vit_b_16": (torchvision.models.vit_b_16, 224, 12, 0),
    "swin_t": (torchvision.models.swin_t, 64, 12, 0),
    "convnext_tiny": (torchvision.models.convnext_tiny, 64, 18, 0),
}
LANGUAGE = {"llama": 4, "gpt2": 4, "bert": 4}  # model type: layers built


def _prepare(model, inputs) -> ChannelMutator:
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, inputs)
    return mutator


def _run(model, inputs):
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def _random_mixes(mutator, model, inputs, trials: int = 2) -> None:
    rng = random.Random(0)
    for trial in range(trials):
        torch.manual_seed(trial)
        choices = mutator.sample_choices()
        choices.update({b.name: rng.choice(["keep", "drop"]) for b in mutator.removable_blocks})
        mutator.set_choices(choices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HFConfigWarning)  # random widths differ per layer
            static = mutator.to_static()  # checks export == masked itself
        torch.testing.assert_close(_run(static, inputs), _run(model, inputs), rtol=1e-4, atol=1e-5)
        counted, reference = mutator.resources(), count_resources(static, inputs)
        assert (counted.params, counted.macs) == (reference.params, reference.macs), trial


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VISION))
def test_vision_models_blocks(name, one_thread):
    build, size, removable, stay = VISION[name]
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(1, 3, size, size)
    want = _run(model, x)
    mutator = _prepare(model, x)
    assert (len(mutator.removable_blocks), len(mutator.block_units) - len(mutator.removable_blocks)) == \
        (removable, stay), [str(b) for b in mutator.block_units]
    assert torch.equal(_run(model, x), want)
    _random_mixes(mutator, model, x)
    mutator.set_choices(mutator.max_choices)
    assert torch.equal(_run(model, x), want)


def _language_model(model_type: str, layers: int):
    from razor_widgets.models.tiny_hf import build_language_model, tiny_config

    config = tiny_config(model_type)
    config.num_hidden_layers = layers
    return build_language_model(config)


def _tokens() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(LANGUAGE))
def test_language_models_blocks(model_type, one_thread):
    pytest.importorskip("transformers")
    model, inputs = _language_model(model_type, LANGUAGE[model_type]), _tokens()
    want = _run(model, inputs)
    mutator = _prepare(model, inputs)
    assert len(mutator.removable_blocks) == LANGUAGE[model_type], [str(b) for b in mutator.block_units]
    assert torch.equal(_run(model, inputs), want)
    _random_mixes(mutator, model, inputs)
    mutator.set_choices(mutator.max_choices)
    assert torch.equal(_run(model, inputs), want)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(LANGUAGE))
def test_a_shorter_hf_model_reloads(model_type, tmp_path, one_thread):
    """Two of four layers dropped and the MLP width halved (alike in every layer): the config
    says 2 layers, no warning, and save_pretrained -> from_pretrained computes the same."""
    transformers = pytest.importorskip("transformers")
    model, inputs = _language_model(model_type, 4), _tokens()
    mutator = _prepare(model, inputs)
    blocks = mutator.removable_blocks
    choices = {blocks[1].name: "drop", blocks[3].name: "drop"}
    mlp = [u for u in mutator.mutable_units if unit_role(u).kind == "mlp"]
    assert mlp
    choices.update({u.name: 0.5 for u in mlp})
    mutator.set_choices(choices)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        static = mutator.to_static()
    assert static.config.num_hidden_layers == 2
    static.save_pretrained(tmp_path)
    auto = transformers.AutoModelForMaskedLM if model_type == "bert" else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_run(reloaded, inputs), _run(model, inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_per_layer_lists_follow_the_kept_layers(tmp_path, one_thread):
    """Gemma-2 alternates sliding and full attention (``config.layer_types``): dropping layers 0
    and 3 keeps the types of layers 1 and 2, and the reload computes the same."""
    transformers = pytest.importorskip("transformers")
    from razor_widgets.models.tiny_hf import build_language_model, tiny_sizes

    config = transformers.AutoConfig.for_model("gemma2", **{**tiny_sizes("gemma2"), "num_hidden_layers": 4,
                                                          "sliding_window": 4,
                                                          "layer_types": ["sliding_attention", "full_attention"] * 2})
    model, inputs = build_language_model(config), _tokens()
    mutator = _prepare(model, inputs)
    mutator.set_choices({"block:model.layers.0": "drop", "block:model.layers.3": "drop"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        static = mutator.to_static()
    assert static.config.num_hidden_layers == 2
    assert static.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.layer_idx for layer in static.model.layers] == [0, 1]
    static.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_run(reloaded, inputs), _run(model, inputs), rtol=1e-4, atol=1e-5)
