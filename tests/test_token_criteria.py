"""Minitron activation importance and structured Wanda as unit types, on token batches:
the scores equal a reference computed from hooks on the unprepared model."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from razor_widgets import ChannelMutator, calibrate, unit_role  # noqa: E402
from razor_widgets.models.tiny_hf import build_language_model, tiny_config  # noqa: E402

BATCHES = [torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(i)) for i in range(3)]


def prepared(criterion: str):
    model = build_language_model(tiny_config("llama"))
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type=f"{criterion}MutableChannelUnit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=torch.randint(3, 100, (1, 8)))
    calibrate(mutator, BATCHES)
    return mutator, original


@pytest.fixture(scope="module")
def calibrated():
    """A calibrated tiny Llama per criterion, and a copy of the model before preparing."""
    return {criterion: prepared(criterion) for criterion in ("Minitron", "Wanda")}


def down_proj_inputs(model, layer: int) -> list[torch.Tensor]:
    seen = []
    hook = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].double()))
    with torch.no_grad():
        for batch in BATCHES:
            model(batch)
    hook.remove()
    return seen


def mlp_unit(mutator, layer: int):
    return next(u for u in mutator.mutable_units if unit_role(u).kind == "mlp" and unit_role(u).layer == layer)


@pytest.mark.parametrize("layer", [0, 1])
def test_minitron_is_l2_over_tokens_mean_over_sequences(calibrated, layer):
    mutator, original = calibrated["Minitron"]
    xs = down_proj_inputs(original, layer)  # [batch, tokens, neurons]
    expected = torch.stack([x.pow(2).sum(1).sqrt().mean(0) for x in xs]).mean(0)
    assert torch.allclose(mlp_unit(mutator, layer).importance(), expected, rtol=1e-9)


def test_wanda_is_input_norm_times_weight_column_sum(calibrated):
    mutator, original = calibrated["Wanda"]
    xs = torch.cat([x.reshape(-1, x.shape[-1]) for x in down_proj_inputs(original, 1)])
    weight = original.model.layers[1].mlp.down_proj.weight.detach().double()
    expected = xs.pow(2).sum(0).sqrt() * weight.abs().sum(0)
    assert torch.allclose(mlp_unit(mutator, 1).importance(), expected, rtol=1e-9)


@pytest.mark.parametrize("criterion", ["Minitron", "Wanda"])
def test_units_keep_their_most_important_channels_and_export(calibrated, criterion):
    mutator, _ = calibrated[criterion]
    unit = mlp_unit(mutator, 0)
    scores = unit.importance()
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    kept = unit.current_mask.nonzero().squeeze(1)
    assert set(kept.tolist()) == set(scores.topk(len(kept)).indices.tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mutator.to_static(check=True) is not None  # checked against the masked model


def test_a_changed_reader_weight_scores_again():
    mutator, _ = prepared("Wanda")
    unit = mlp_unit(mutator, 0)
    before = unit.importance().clone()
    down = mutator.model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        down.weight[:, 0] *= 100
    assert unit.importance()[0] > before[0] * 50
