"""Bad input gets an error that names the offending thing, and changes nothing."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, DynamicChannelMixin, TraceError


class Small(nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail
        self.width = 8  # an int attribute: traced as a size during the trace, plain again after
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if self.fail:
            raise ValueError("this forward always fails")
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def unchanged(model: nn.Module, before: nn.Module) -> bool:
    same_state = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))
    no_dynamic = not any(isinstance(m, DynamicChannelMixin) for m in model.modules())
    no_hooks = not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    return same_state and no_dynamic and no_hooks and model.fail == before.fail


@pytest.mark.parametrize(("x", "names"), [
    (torch.randn(1, 4, 16, 16), ["Small", "(1, 4, 16, 16) float32", "RuntimeError", "channels"]),
    (torch.randint(0, 5, (1, 3, 16, 16)), ["Small", "(1, 3, 16, 16) int64", "RuntimeError"]),
])
def test_an_example_input_the_model_cannot_take(x, names):
    model = Small()
    before = copy.deepcopy(model)
    mutator = ChannelMutator()
    with pytest.raises(TraceError) as error:
        mutator.prepare_from_supernet(model, example_inputs=x)
    assert all(name in str(error.value) for name in names)
    assert unchanged(model, before) and mutator.model is None
    mutator.prepare_from_supernet(model, example_inputs=torch.randn(1, 3, 16, 16))  # the mutator is still usable
    assert mutator.mutable_units and type(model.__dict__["width"]) is int


def test_a_forward_that_raises():
    model = Small(fail=True)
    before = copy.deepcopy(model)
    with pytest.raises(TraceError, match="forward of Small failed .* ValueError: this forward always fails"):
        ChannelMutator().prepare_from_supernet(model, example_inputs=torch.randn(1, 3, 16, 16))
    assert unchanged(model, before)
    assert type(model.__dict__["width"]) is int  # traced attributes are put back
