"""MODEL = hf:MODEL_TYPE or hf:PATH: tiny Hugging Face language models built from config with
random weights (never downloaded), traced on token ids (batch x tokens) by every command and by
the dashboard's page (tests/test_browser_dashboard_hf.py opens that page in chromium)."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import time

import pytest
import torch

from razor_widgets.cli import main
from razor_widgets.dashboard import INPUT_SHAPE_ENV, MODEL_ENV
from razor_widgets.dashboard.page import ERROR_CLASS, dashboard_page
from razor_widgets.model_loading import ModelLoadError, resolve_model
from razor_widgets.trace.example_inputs import TensorInput, TokenInput

transformers = pytest.importorskip("transformers")
from razor_widgets.models.tiny_hf import TINY_VOCAB, tiny_config  # noqa: E402 (needs transformers)

LLAMA_UNITS = {"model.layers.0.self_attn.o_proj_(0, 64)_64",  # the hidden size
               "model.layers.0.self_attn.q_proj_(0, 64)_2", "model.layers.1.self_attn.q_proj_(0, 64)_2",  # KV groups
               "model.layers.0.mlp.gate_proj_(0, 128)_128", "model.layers.1.mlp.gate_proj_(0, 128)_128"}
LLAMA_BLOCKS = {"block:model.layers.0", "block:model.layers.1"}  # depth choices (issue 28)


def test_hf_llama_is_tiny_random_and_takes_tokens() -> None:
    source = resolve_model("hf:llama")
    assert source.kind == "hf" and source.example == TokenInput((1, 16), TINY_VOCAB)
    model = source.load()
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (4, 2, 128)
    assert torch.equal(source.load().lm_head.weight, model.lm_head.weight)  # seeded: the same model every time


@pytest.mark.parametrize("model_type, model_class, sizes", [
    ("gpt2", "GPT2LMHeadModel", dict(n_embd=64, n_inner=128, n_layer=2, n_head=4)),
    ("bert", "BertForMaskedLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)),
    ("t5", "T5ForConditionalGeneration", dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4)),
    ("qwen3", "Qwen3ForCausalLM", dict(hidden_size=64, head_dim=16, num_key_value_heads=2)),
])
def test_every_family_gets_tiny_sizes_by_its_own_names(model_type, model_class, sizes) -> None:
    source = resolve_model(f"hf:{model_type}")
    assert source.example.decoder == (model_type == "t5")  # an encoder-decoder gets decoder_input_ids too
    model = source.load()
    assert type(model).__name__ == model_class
    assert {name: getattr(model.config, name) for name in sizes} == sizes


def test_a_token_input_is_ids_and_a_mask() -> None:
    inputs = TokenInput((2, 8), 50, decoder=True).make(seed=0)
    assert sorted(inputs) == ["attention_mask", "decoder_input_ids", "input_ids"]
    assert inputs["input_ids"].shape == (2, 8) and inputs["input_ids"].dtype == torch.int64
    assert int(inputs["input_ids"].max()) < 50 and bool((inputs["attention_mask"] == 1).all())
    assert torch.equal(inputs["input_ids"], TokenInput((2, 8), 50).make(seed=0)["input_ids"])
    assert TokenInput((1, 16), 50).with_shape([4, 32]).shape == (4, 32)
    with pytest.raises(ValueError, match="BATCH TOKENS"):
        TokenInput((1, 16), 50).with_shape([1, 3, 32])
    with pytest.raises(ValueError, match="--input-size is the height and width of an image"):
        TokenInput((1, 16), 50).with_size(32)
    assert TensorInput((1, 3, 16, 112, 112)).with_size(64).shape == (1, 3, 16, 64, 64)


def _write_config(folder, **changes) -> None:
    data = tiny_config("llama").to_dict()
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


def test_hf_path_builds_a_local_config_with_random_weights(tmp_path) -> None:
    _write_config(tmp_path, architectures=["LlamaModel"], vocab_size=100)
    (tmp_path / "model.safetensors").write_bytes(b"not weights: never read")
    for spec in (f"hf:{tmp_path}", f"hf:{tmp_path / 'config.json'}"):
        source = resolve_model(spec)
        assert source.example == TokenInput((1, 16), 100)
        model = source.load()
        assert type(model).__name__ == "LlamaModel"  # the config's architectures name the class
    _write_config(tmp_path, architectures=None)
    assert type(resolve_model(f"hf:{tmp_path}").load()).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("spec, message", [
    ("hf:", "'hf:' names no model: give hf:MODEL_TYPE (e.g. hf:llama) or hf:PATH"),
    ("hf:nope", "'nope' is not a transformers model type"),
    ("hf:vit", "transformers has no seq2seq language model, masked language model or causal language model "
               "for model type 'vit'"),
    ("hf:./no/such/dir", "'no/such/dir' is neither a config.json file nor a directory holding one"),
    ("hf:{tmp}/bad.json", "cannot read"),
    ("hf:{tmp}/plain.json", "has no \"model_type\": it is not a Hugging Face model config"),
    ("hf:{tmp}/custom.json", "has model_type 'my_custom_llm', which transformers does not know (custom model code "
                             "is never run)"),
])
def test_bad_hf_models_are_one_line_errors(tmp_path, spec, message) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "plain.json").write_text('{"hidden_size": 64}')
    (tmp_path / "custom.json").write_text('{"model_type": "my_custom_llm", "auto_map": {"AutoModel": "x.Y"}}')
    with pytest.raises(ModelLoadError) as error:
        resolve_model(spec.format(tmp=tmp_path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_without_transformers_the_error_says_what_to_install(monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers"
                        else find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"^'hf:llama' needs transformers: pip install \"razor_widgets\[hf\]\"$"):
        resolve_model("hf:llama")


def test_units_lists_heads_mlp_and_hidden_size_of_hf_llama(capsys) -> None:
    assert main(["units", "hf:llama", "--choice", "--input-shape", "1", "8"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == LLAMA_UNITS | LLAMA_BLOCKS


def test_demo_prunes_and_exports_hf_llama(capsys) -> None:
    assert main(["demo", "hf:llama", "--input-shape", "2", "8"]) == 0
    out = capsys.readouterr().out
    assert "hf:llama: 6 channel units, 5 prunable" in out
    assert "live count = FlopCounterMode count of the exported model: True" in out
    assert "exported model matches the masked one: True" in out


@pytest.mark.parametrize("command", ["demo", "units", "dashboard"])
@pytest.mark.parametrize("flags, message", [
    (["--input-size", "32"], "hf:llama: --input-size is the height and width of an image; this model takes tokens: "
                             "give --input-shape BATCH TOKENS instead (e.g. --input-shape 1 16)"),
    (["--input-shape", "1", "3", "8"], "hf:llama: a token input's shape is BATCH TOKENS (two numbers, e.g. 1 16), "
                                       "got 1 3 8"),
])
def test_image_flags_are_refused_for_token_models(capsys, command, flags, message) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "hf:llama", *flags])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"razor-widgets {command}: error: {message}\n"


class ServerStarted(Exception):
    """Raised by the patched ``os.execve``: the command got as far as becoming the Voilà server."""


def test_dashboard_hands_the_token_shape_to_the_page(monkeypatch, capsys) -> None:
    def execve(path, argv, env) -> None:
        raise ServerStarted(env)

    monkeypatch.setattr(os, "execve", execve)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServerStarted) as started:
        main(["dashboard", "hf:llama", "--input-shape", "1", "8", "--port", str(port)])
    env = started.value.args[0]
    assert (env[MODEL_ENV], env[INPUT_SHAPE_ENV]) == ("hf:llama", "1x8")
    assert f"hf:llama (input 1x8 tokens) at http://127.0.0.1:{port}/" in capsys.readouterr().out


def test_the_page_explores_hf_llama_on_tokens(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    page = dashboard_page("hf:llama", (1, 8))
    status = page.children[0]
    deadline = time.monotonic() + 120
    while page.explorer is None and ERROR_CLASS not in status._dom_classes:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    assert page.explorer is not None, status.value
    explorer = page.explorer
    assert set(explorer.mutator.current_choices) == LLAMA_UNITS | LLAMA_BLOCKS
    before = explorer.mutator.resources().params
    explorer.mutator.set_choices({"model.layers.0.mlp.gate_proj_(0, 128)_128": 0.5})
    assert explorer.mutator.resources().params == before - 3 * 64 * 64  # gate, up and down lose 64 of 128 rows


def test_the_units_template_of_hf_llama_rebuilds_its_units(capsys, tmp_path) -> None:
    from razor_widgets import MODELS

    path = tmp_path / "llama.json"
    assert main(["units", "hf:llama", "-c", "-i", "-o", str(path), "--input-shape", "1", "8"]) == 0
    config = json.loads(path.read_text())
    assert config["parse_cfg"]["type"] == "Config"
    source = resolve_model("hf:llama")
    mutator = MODELS.build(config)
    mutator.prepare_from_supernet(source.load())
    assert {unit.name for unit in mutator.mutable_units} == LLAMA_UNITS
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    inputs = source.example.with_shape((1, 8)).make(seed=0)
    small = mutator.to_static(example_inputs=inputs)  # the export checked on the token inputs
    assert small(**inputs).logits.shape == (1, 8, TINY_VOCAB) and small.config.hidden_size == 32
