"""A plan as recipes other tools read: Torch-Pruning's ``MetaPruner`` given our
``pruning_ratio_dict`` builds the same layers (and parameter count) as our export; the MMRazor
channel config, through JSON, rebuilds a mutator with the plan's choices and the same export;
plans Torch-Pruning cannot express raise RecipeError naming the layer."""
from __future__ import annotations

import json
import random
import warnings

import pytest
import torch
import torchvision
from torch import nn

from razor_widgets import MODELS, ChannelMutator, RecipeError, mmrazor_channel_config, recipes, torch_pruning_ratios

from helpers import Chunk, prepare

X = torch.randn(1, 3, 64, 64)


@pytest.fixture(scope="module")
def planned(one_thread):
    """A ResNet-18 mutator at random choices (seeded) and its export."""
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(torchvision.models.resnet18().eval(), example_inputs=X)
    random.seed(0)
    mutator.set_choices(mutator.sample_choices())
    return mutator, mutator.to_static().eval()


def widths(model: nn.Module) -> dict:
    return {n: (m.weight.shape[0], m.weight.shape[1]) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_torch_pruning_builds_the_same_layers_from_our_ratios(planned) -> None:
    tp = pytest.importorskip("torch_pruning")
    mutator, ours = planned
    ratios = json.loads(json.dumps(torch_pruning_ratios(mutator)))  # the recipe as a file holds it
    assert ratios and all(0.0 <= r < 1.0 for r in ratios.values())
    fresh = torchvision.models.resnet18().eval()
    pruner = tp.pruner.MetaPruner(fresh, X, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.0,
                                  pruning_ratio_dict={fresh.get_submodule(n): r for n, r in ratios.items()},
                                  ignored_layers=[fresh.fc])
    pruner.step()
    assert widths(fresh) == widths(ours)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in ours.parameters())


def test_the_mmrazor_config_loads_back_with_the_plan(planned) -> None:
    mutator, ours = planned
    config = json.loads(json.dumps(mmrazor_channel_config(mutator)))
    assert config["type"] == "ChannelMutator" and "units" in config["channel_unit_cfg"]
    rebuilt = MODELS.build(config)
    rebuilt.prepare_from_supernet(torchvision.models.resnet18().eval())  # built from the config: no trace
    assert rebuilt.current_choices == mutator.current_choices
    assert widths(rebuilt.to_static(example_inputs=X)) == widths(ours)  # checked against the masked model


def test_recipes_gives_all_three_and_says_what_torch_pruning_cannot(one_thread) -> None:
    mutator = prepare(Chunk().eval(), torch.randn(1, 3, 8, 8))[0]
    out = recipes(mutator)
    assert out["plan"] == {str(k): v for k, v in mutator.current_choices.items()}
    assert "torch_pruning" not in out and "repeat the 4 channels" in out["torch_pruning_error"]
    assert out["mmrazor"]["channel_unit_cfg"]["units"]
    with pytest.raises(RecipeError, match="layer 'stem'"):
        torch_pruning_ratios(mutator)
