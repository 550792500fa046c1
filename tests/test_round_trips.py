"""Nothing is lost between exploring, saving, coming back and shipping: state dicts, exported
models (pickled, weights-only, TorchScript, torch.export), plans and configs all round-trip."""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import torchvision
from torchvision.models.swin_transformer import SwinTransformer

from razor_widgets import MODELS, ChannelMutator, load_choices, save_choices

from helpers import make_nontrivial

BUILDERS = {
    "resnet18": (lambda: torchvision.models.resnet18(), 64),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), 64),
    "vit": (lambda: torchvision.models.VisionTransformer(32, 8, 2, 4, 32, 48, num_classes=10), 32),
    "swin": (lambda: SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4], num_classes=10), 32),
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=list(BUILDERS))
def case(request):
    build, size = BUILDERS[request.param]
    torch.manual_seed(0)
    model = make_nontrivial(build()).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    return request.param, build, model, original, mutator, x


def forward(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_state_dicts_load_both_ways(case):
    name, build, model, original, mutator, x = case
    state = model.state_dict()
    assert list(state) == list(original.state_dict())  # masks are bookkeeping, not state
    fresh = build().eval()
    assert not fresh.load_state_dict(state).missing_keys
    twin = copy.deepcopy(fresh)
    twin_mutator = ChannelMutator()
    twin_mutator.prepare_from_supernet(twin, example_inputs=x)
    twin.load_state_dict(original.state_dict())
    assert torch.equal(forward(fresh, x), forward(original, x))
    assert torch.equal(forward(twin, x), forward(original, x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # Swin's own shape checks, traced as constants
def test_exported_model_survives_save_load_script_and_export(case, tmp_path):
    name, build, model, original, mutator, x = case
    random.seed(3)
    mutator.set_choices(mutator.sample_choices())
    static = mutator.to_static().eval()
    want = forward(static, x)
    torch.save(static, tmp_path / "model.pt")
    assert torch.equal(forward(torch.load(tmp_path / "model.pt", weights_only=False), x), want)
    torch.save(static.state_dict(), tmp_path / "weights.pt")
    second = mutator.to_static().eval()  # the same architecture, rebuilt
    second.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert torch.equal(forward(second, x), want)
    with torch.no_grad():
        scripted = torch.jit.trace(static, x)
        torch.testing.assert_close(scripted(x), want)
        exported = torch.export.export(static, (x,))
        torch.testing.assert_close(exported.module()(x), want)


def test_plans_and_configs_round_trip_exactly(case, tmp_path):
    name, build, model, original, mutator, x = case
    random.seed(5)
    mutator.set_choices(mutator.sample_choices())
    save_choices(mutator, tmp_path / "plan.json")
    config = mutator.config_template(with_channels=True)
    again = MODELS.build(json.loads(json.dumps(config)))
    again.prepare_from_supernet(copy.deepcopy(original))
    load_choices(again, tmp_path / "plan.json")
    assert again.current_choices == mutator.current_choices
    assert json.dumps(again.config_template(with_channels=True), sort_keys=True) == \
        json.dumps(config, sort_keys=True)


def test_full_choices_after_any_sequence_restore_the_model(case):
    name, build, model, original, mutator, x = case
    want = forward(original, x)
    random.seed(7)
    for _ in range(4):
        mutator.set_choices(mutator.sample_choices())
        forward(model, x)
        mutator.to_static()
    mutator.set_min_choices()
    forward(model, x)
    mutator.set_max_choices()
    assert torch.equal(forward(model, x), want)


def test_preparing_and_exporting_copy_no_weights(case):
    """Preparing keeps the very tensors (masks are bookkeeping); the export owns smaller copies
    and shares nothing with the prepared model."""
    name, build, model, original, mutator, x = case
    fresh = build()
    pointers = {k: t.data_ptr() for k, t in fresh.state_dict(keep_vars=True).items()}
    ChannelMutator().prepare_from_supernet(fresh, example_inputs=x)
    assert {k: t.data_ptr() for k, t in fresh.state_dict(keep_vars=True).items()} == pointers
    random.seed(1)
    mutator.set_choices(mutator.sample_choices())
    static = mutator.to_static()
    prepared = {t.data_ptr() for t in model.state_dict(keep_vars=True).values() if t.numel()}
    assert not prepared & {t.data_ptr() for t in static.state_dict(keep_vars=True).values() if t.numel()}
