"""save_pruned / load_pruned: a pruned model saved as data (config or import path, plan,
safetensors) loads in a fresh process and computes what the export computes; a uniform plan
gives a plain save_pretrained directory; nearest_uniform_plan proposes one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from razor_widgets import ChannelMutator, nearest_uniform_plan  # noqa: E402
from razor_widgets.models.tiny_hf import build_language_model, tiny_config  # noqa: E402
from razor_widgets.mutators.pruned_directory import (  # noqa: E402
    INDEX_FILE,
    PrunedDirectoryError,
    load_pruned,
    save_pruned,
)

ROOT = Path(__file__).resolve().parents[1]
TOKENS = torch.tensor([[5, 17, 42, 99, 3, 64, 23, 8]])


def prepared(model_type: str) -> tuple[ChannelMutator, object]:
    inputs = {"input_ids": TOKENS, "decoder_input_ids": TOKENS} if model_type == "t5" else TOKENS
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(build_language_model(tiny_config(model_type)), example_inputs=inputs)
    return mutator, inputs


def non_uniform(mutator: ChannelMutator) -> None:
    """Units of one kind keep different fractions in different layers."""
    mutator.set_choices({u.name: (0.5, 0.75, 1.0)[i % 3] for i, u in enumerate(mutator.mutable_units)})


def call(model, inputs):
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def saved_case(model_type: str, directory: Path) -> torch.Tensor:
    """Save a non-uniformly pruned model to ``directory``; the export's output."""
    if model_type == "resnet":
        import torchvision

        inputs = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        mutator = ChannelMutator()
        mutator.prepare_from_supernet(torchvision.models.resnet18(num_classes=10).eval(), example_inputs=inputs)
        non_uniform(mutator)
        save_pruned(mutator, directory, build="torchvision.models:resnet18", build_kwargs={"num_classes": 10})
    else:
        mutator, inputs = prepared(model_type)
        non_uniform(mutator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_pruned(mutator, directory)
    torch.save(inputs, directory / "inputs.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(mutator.to_static(check=False), inputs)


FRESH_LOAD = """
import sys, torch
from razor_widgets.mutators.pruned_directory import load_pruned
for d in sys.argv[1:]:
    model = load_pruned(d)
    inputs = torch.load(d + "/inputs.pt")
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    torch.save(out.logits if hasattr(out, "logits") else out, d + "/loaded.pt")
    print(type(model).__name__)
"""


@pytest.mark.slow
def test_non_uniform_round_trips_in_a_fresh_process(tmp_path):
    cases = ["llama", "gpt2", "bert", "t5", "resnet"]
    expected = {case: saved_case(case, tmp_path / case) for case in cases}
    for case in cases:  # the plans were not uniform: not a plain HF directory
        assert not (tmp_path / case / "config.json").exists()
        assert json.loads((tmp_path / case / INDEX_FILE).read_text())["weights"] == "razor_widgets.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", FRESH_LOAD, *(str(tmp_path / c) for c in cases)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for case in cases:
        assert torch.equal(torch.load(tmp_path / case / "loaded.pt"), expected[case]), case


def test_non_uniform_llama_loads_with_ties_and_buffers(tmp_path):
    expected = saved_case("llama", tmp_path)
    model = load_pruned(tmp_path)
    assert torch.equal(call(model, TOKENS), expected)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


@pytest.mark.slow  # GPT-2 also round-trips in the fresh-process test
def test_tied_embeddings_stay_tied(tmp_path):
    expected = saved_case("gpt2", tmp_path)
    model = load_pruned(tmp_path)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(call(model, TOKENS), expected)


def test_uniform_plan_is_a_plain_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM

    mutator, inputs = prepared("llama")
    non_uniform(mutator)
    plan = nearest_uniform_plan(mutator)
    assert plan != {str(k): v for k, v in mutator.current_choices.items()}
    mutator.set_choices(plan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_pruned(mutator, tmp_path)
        expected = call(mutator.to_static(check=False), inputs)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(call(reloaded, inputs), expected)
    assert torch.equal(call(load_pruned(tmp_path), inputs), expected)
    assert reloaded.config.intermediate_size < 128


def test_nearest_uniform_plan_gives_alike_layers_one_choice():
    mutator, _ = prepared("llama")
    mlp = [u for u in mutator.mutable_units if "mlp" in str(u.name)]
    mutator.set_choices({mlp[0].name: 0.25, mlp[1].name: 0.75})
    before = dict(mutator.current_choices)
    plan = nearest_uniform_plan(mutator)
    assert mutator.current_choices == before  # proposed, not applied
    assert plan[str(mlp[0].name)] == plan[str(mlp[1].name)] == pytest.approx(0.5)


def test_bad_input_says_what_is_wrong(tmp_path):
    with pytest.raises(PrunedDirectoryError, match="ChannelMutator"):
        save_pruned(torch.nn.Linear(2, 2), tmp_path)
    import torchvision

    mutator = ChannelMutator()
    mutator.prepare_from_supernet(torchvision.models.resnet18(num_classes=10).eval(),
                                  example_inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(PrunedDirectoryError, match="build="):
        save_pruned(mutator, tmp_path / "a")
    with pytest.raises(PrunedDirectoryError, match="cannot import"):
        save_pruned(mutator, tmp_path / "b", build="torchvision.models:no_such_model")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(PrunedDirectoryError, match="no readable"):
        load_pruned(tmp_path / "missing")


def test_a_directory_cannot_call_arbitrary_functions(tmp_path):
    import torchvision

    mutator = ChannelMutator()
    mutator.prepare_from_supernet(torchvision.models.resnet18(num_classes=10).eval(),
                                  example_inputs=torch.randn(1, 3, 32, 32))
    save_pruned(mutator, tmp_path, build="torchvision.models:resnet18", build_kwargs={"num_classes": 10})
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    index["source"] = {"kind": "import", "build": "subprocess:run", "kwargs": {"args": ["touch", "pwned"]}}
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(PrunedDirectoryError, match="not a torch module class"):
        load_pruned(tmp_path)
    assert not Path("pwned").exists()
