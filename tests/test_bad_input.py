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


class Branchy(nn.Module):
    """Takes another path when the input's values change sign."""

    def __init__(self, check_only: bool = False):
        super().__init__()
        self.check_only = check_only
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = self.a(x)
        if self.check_only:
            if not bool(torch.isfinite(x).all()):  # reads values, but the path never changes
                raise ValueError("non-finite input")
        elif x.sum() > 0:
            h = self.b(h)
        return self.c(h)


def test_a_path_that_depends_on_the_input_values():
    model = Branchy()
    before_state = copy.deepcopy(model.state_dict())
    mutator = ChannelMutator()
    with pytest.raises(TraceError, match=r"depends on the input's values \(__bool__\(\) in 'the model'\): "
                                         r"op 3 is 'b' .* and 'c'"):
        mutator.prepare_from_supernet(model, example_inputs=torch.randn(1, 3, 16, 16).abs())
    assert mutator.model is None and not any(isinstance(m, DynamicChannelMixin) for m in model.modules())
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())


def test_reading_values_on_a_path_that_never_changes_is_fine():
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(Branchy(check_only=True), example_inputs=torch.randn(1, 3, 16, 16))
    assert mutator.graph_trace.value_reads == ["__bool__() in 'the model'"]
    assert [u.name for u in mutator.mutable_units] == ["a_(0, 8)_8"]
