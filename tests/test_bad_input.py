"""Bad input gets an error that names the offending thing, and changes nothing."""
from __future__ import annotations

import copy
import json

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


# -- the catalogue: choices, plans and configs -------------------------------------------------
class TwoConvs(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv0 = nn.Conv2d(3, width, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.conv1(torch.relu(self.bn0(self.conv0(x)))).mean((2, 3)))


IMAGE = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def number_mutator():
    mutator = ChannelMutator(channel_unit_cfg=dict(type="SequentialMutableChannelUnit",
                                                   default_args=dict(choice_mode="number", divisor=4)))
    mutator.prepare_from_supernet(TwoConvs(), example_inputs=IMAGE)
    mutator.set_choices({"conv0_(0, 8)_8": 4})
    return mutator


@pytest.fixture
def ratio_mutator():
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(TwoConvs(), example_inputs=IMAGE)
    mutator.set_choices({"conv1_(0, 16)_16": 0.5})
    return mutator


@pytest.mark.parametrize(("choices", "error", "names"), [
    ({"conv9_(0, 8)_8": 0.5}, KeyError, ["conv9_(0, 8)_8"]),
    ({"conv0_(0, 3)_3": 0.5}, KeyError, ["conv0_(0, 3)_3", "not prunable", "model input"]),
    ({"conv1_(0, 16)_16": 0.0}, ValueError, ["conv1_(0, 16)_16", "0.0", "(0, 1]"]),
    ({"conv1_(0, 16)_16": 1.5}, ValueError, ["conv1_(0, 16)_16", "1.5"]),
    ({"conv1_(0, 16)_16": float("nan")}, ValueError, ["conv1_(0, 16)_16", "nan"]),
    ({"conv1_(0, 16)_16": "half"}, TypeError, ["conv1_(0, 16)_16", "str"]),
    ({"conv1_(0, 16)_16": None}, TypeError, ["conv1_(0, 16)_16", "NoneType"]),
    ({"conv1_(0, 16)_16": True}, TypeError, ["conv1_(0, 16)_16", "bool"]),
    ({"conv0_(0, 8)_8": 1.0, "conv1_(0, 16)_16": 2.0}, ValueError, ["conv1_(0, 16)_16"]),  # fails part-way
])
def test_a_bad_ratio_choice(ratio_mutator, choices, error, names):
    before = ratio_mutator.current_choices
    with pytest.raises(error) as raised:
        ratio_mutator.set_choices(choices)
    assert all(name in str(raised.value) for name in names)
    assert ratio_mutator.current_choices == before


@pytest.mark.parametrize(("choice", "names"), [
    (0, ["0 channels", "multiple of 4", "[1, 16]"]), (17, ["17 channels"]), (10, ["10 channels", "multiple of 4"]),
    (4.5, ["4.5", "whole number"]),
])
def test_a_bad_number_choice(number_mutator, choice, names):
    before = number_mutator.current_choices
    with pytest.raises(ValueError) as raised:
        number_mutator.set_choices({"conv1_(0, 16)_16": choice})
    assert "conv1_(0, 16)_16" in str(raised.value) and all(n in str(raised.value) for n in names)
    assert number_mutator.current_choices == before


def test_a_plan_for_another_model_and_malformed_json(ratio_mutator, tmp_path):
    from razor_widgets import PlanError, load_choices, save_choices

    other = ChannelMutator()
    other.prepare_from_supernet(TwoConvs(width=12), example_inputs=IMAGE)
    save_choices(other, tmp_path / "other.json")
    (tmp_path / "broken.json").write_text('{"conv1_(0, 16)_16": 0.5,')
    before = ratio_mutator.current_choices
    with pytest.raises(PlanError, match=r"does not fit this model: .*conv0_\(0, 12\)_12"):
        load_choices(ratio_mutator, tmp_path / "other.json")
    with pytest.raises(PlanError, match="broken.json' is not valid JSON"):
        load_choices(ratio_mutator, tmp_path / "broken.json")
    assert ratio_mutator.current_choices == before


def config_of(mutator: ChannelMutator) -> dict:
    return json.loads(json.dumps(mutator.config_template(with_channels=True)))


@pytest.mark.parametrize(("edit", "error", "names"), [
    (lambda c: c.update(type="os.system"), KeyError, ["'os.system' is not a registered type"]),
    (lambda c: c["channel_unit_cfg"].update(type="NoSuchUnit"), KeyError, ["'NoSuchUnit'"]),
    (lambda c: c["channel_unit_cfg"]["units"]["conv1_(0, 16)_16"]["channels"]["output_related"][0].update(
        name="conv7"), KeyError, ["conv1_(0, 16)_16", "no layer 'conv7'"]),
    (lambda c: c["channel_unit_cfg"]["units"]["conv1_(0, 16)_16"]["channels"]["input_related"][0].update(
        end=17), ValueError, ["conv1_(0, 16)_16", "(0, 17)", "16 input channels of 'head'"]),
    (lambda c: c["channel_unit_cfg"]["units"]["conv1_(0, 16)_16"]["channels"]["input_related"][0].update(
        start=3), ValueError, ["conv1_(0, 16)_16", "not whole copies"]),
])
def test_a_config_that_does_not_fit(ratio_mutator, edit, error, names):
    config = config_of(ratio_mutator)
    edit(config)
    model = TwoConvs()
    before = copy.deepcopy(model)
    with pytest.raises(error) as raised:
        from razor_widgets import MODELS

        MODELS.build(config).prepare_from_supernet(model)
    assert all(name in str(raised.value) for name in names)
    assert not any(isinstance(m, DynamicChannelMixin) for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))


def test_an_output_that_holds_no_tensor():
    class Words(TwoConvs):
        def forward(self, x):
            super().forward(x)
            return "done"

    with pytest.raises(TypeError, match=r"output holds no tensor \(str\)"):
        ChannelMutator().prepare_from_supernet(Words(), example_inputs=IMAGE)


def test_preparing_twice_and_using_a_mutator_before_preparing(ratio_mutator):
    model = ratio_mutator.model
    with pytest.raises(RuntimeError, match="already prepared by another ChannelMutator"):
        ChannelMutator().prepare_from_supernet(model, example_inputs=IMAGE)
    with pytest.raises(RuntimeError, match="this mutator is already prepared"):
        ratio_mutator.prepare_from_supernet(TwoConvs(), example_inputs=IMAGE)
    assert ratio_mutator.current_choices["conv1_(0, 16)_16"] == 0.5  # still works
    fresh = ChannelMutator()
    for use in (lambda: fresh.set_choices({"conv1_(0, 16)_16": 0.5}), fresh.to_static, fresh.resources,
                lambda: fresh.current_choices):
        with pytest.raises(RuntimeError, match=r"call prepare_from_supernet\(model\) before"):
            use()


def test_sizes_a_forward_stores_become_plain_ints():
    """A forward that keeps a count or a shape on the module gets plain ints back after tracing,
    never a traced size holding on to the tracer."""

    class Counting(TwoConvs):
        def __init__(self):
            super().__init__()
            self.calls = 2

        def forward(self, x):
            self.calls += 1
            self.last_channels = x.shape[1]
            return super().forward(x)

    model = Counting()
    ChannelMutator().prepare_from_supernet(model, example_inputs=IMAGE)
    assert (type(model.calls), type(model.last_channels)) == (int, int)
    assert (model.calls, model.last_channels) == (3, 3)
