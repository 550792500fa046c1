"""IteAlgorithm: choices move from full to the target in steps while a training loop runs."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from razor_widgets import MODELS, IteAlgorithm, PruneStep, count_resources

UNITS = ["conv0_(0, 16)_16", "conv1_(0, 32)_32"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.conv1(torch.relu(self.bn0(self.conv0(x))))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def make(x, **kwargs) -> IteAlgorithm:
    torch.manual_seed(0)
    cfg = dict(type="ChannelMutator", channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    return IteAlgorithm(Net(), mutator_cfg=cfg, example_inputs=x, **kwargs)


def test_linear_schedule_reaches_the_target(x, caplog) -> None:
    algorithm = make(x, target_pruning_ratio=0.25, prune_times=3, step_freq=2)
    assert algorithm.start_choices == {UNITS[0]: 1.0, UNITS[1]: 1.0}
    assert [round(c[UNITS[0]], 4) for c in algorithm.schedule] == [0.75, 0.5, 0.25]
    records = []
    with caplog.at_level(logging.INFO, logger="razor_widgets.algorithms.ite"):
        for _ in range(9):
            records.append(algorithm.step())
    assert [r is not None for r in records] == [True, False, True, False, True, False, False, False, False]
    first, second, last = (r for r in records if r is not None)
    assert isinstance(first, PruneStep) and (first.index, first.iteration, first.prune_times) == (1, 0, 3)
    assert first.pruned == {UNITS[0]: (16, 12), UNITS[1]: (32, 24)}
    assert last.pruned == {UNITS[0]: (8, 4), UNITS[1]: (16, 8)}
    assert algorithm.mutator.current_choices == {UNITS[0]: 0.25, UNITS[1]: 0.25}
    assert first.resources.params > second.resources.params > last.resources.params
    assert str(last).startswith("prune step 3/3 at iteration 4: 2 units, 24 -> 12 channels kept; ")
    assert f"  {UNITS[1]}: 16 -> 8 channels (choice 0.25)" in last.details()
    assert [rec.getMessage() for rec in caplog.records] == [r.summary() for r in algorithm.history]
    assert algorithm.done and algorithm.iteration == 9 and len(algorithm.history) == 3


def test_target_per_unit_and_step_schedule(x) -> None:
    algorithm = make(x, target_pruning_ratio={UNITS[1]: 0.5}, prune_times=2, linear_schedule=False)
    record = algorithm.step()
    assert record.pruned == {UNITS[1]: (32, 16)}  # the unit not named keeps its choice
    assert algorithm.mutator.current_choices == {UNITS[0]: 1.0, UNITS[1]: 0.5}
    assert algorithm.step().pruned == {}  # the target again: nothing more to prune
    assert algorithm.step() is None


def test_no_target_prunes_nothing(x) -> None:
    algorithm = make(x)
    record = algorithm.step()
    assert record.pruned == {} and algorithm.done
    assert algorithm.mutator.current_choices == {UNITS[0]: 1.0, UNITS[1]: 1.0}


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(target_pruning_ratio=0.0), ValueError, r"a number in \(0, 1\], got 0.0"),
    (dict(target_pruning_ratio={UNITS[0]: 1.5}), ValueError, "got 1.5"),
    (dict(target_pruning_ratio={"nope": 0.5}), KeyError, "names units the model does not have"),
    (dict(target_pruning_ratio="half"), TypeError, "target_pruning_ratio must be"),
    (dict(prune_times=0), ValueError, "prune_times must be a positive int"),
    (dict(step_freq=1.5), ValueError, "step_freq must be a positive int"),
    (dict(mutator_cfg=dict(type="OneShotModuleMutator")), TypeError, "must build a ChannelMutator"),
])
def test_bad_arguments(x, kwargs, error, message) -> None:
    net = Net()
    with pytest.raises(error, match=message):
        IteAlgorithm(net, example_inputs=x, **kwargs)
    if "nope" not in str(kwargs):  # checked before preparing: the model is left as it was
        assert type(net.conv0) is nn.Conv2d
        assert IteAlgorithm(net, example_inputs=x).architecture is net


def test_number_mode_units_are_refused(x) -> None:
    cfg = dict(type="ChannelMutator", channel_unit_cfg=dict(type="SequentialMutableChannelUnit",
                                                            default_args=dict(choice_mode="number")))
    with pytest.raises(ValueError, match="IteAlgorithm needs ratio units"):
        IteAlgorithm(Net(), mutator_cfg=cfg, example_inputs=x)


def test_in_a_training_loop(x, one_thread) -> None:
    algorithm = MODELS.build(dict(type="ItePruneAlgorithm", architecture=Net(),
                                  mutator_cfg=dict(type="ChannelMutator", channl_unit_cfg="L1ChannelUnit"),
                                  target_pruning_ratio=0.5, prune_times=2, step_freq=3, example_inputs=x))
    target = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.05)
    algorithm.train()
    for _ in range(6):
        algorithm.step()
        loss = nn.functional.cross_entropy(algorithm(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert [r.iteration for r in algorithm.history] == [0, 3]
    algorithm.eval()
    small = algorithm.to_static().eval()
    assert (small.conv0.out_channels, small.conv1.out_channels) == (8, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(x), algorithm(x))
    live = algorithm.mutator.resources()
    assert (live.params, live.macs) == (count_resources(small, x).params, count_resources(small, x).macs)
