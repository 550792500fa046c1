"""The masked model and the export in half precision, and on CUDA when one is present."""
from __future__ import annotations

import copy
import random

import pytest
import torch
import torchvision

from razor_widgets import ChannelMutator, count_resources

BUILDERS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 64),
    "vit": (lambda: torchvision.models.VisionTransformer(32, 8, 2, 4, 32, 48, num_classes=10), 32),
}
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 2e-3}

pytestmark = pytest.mark.usefixtures("one_thread")


def explore(name: str, dtype: torch.dtype, cast_first: bool, device: str = "cpu"):
    build, size = BUILDERS[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    if cast_first:  # prepared in the low precision itself
        model = model.to(device, dtype)
    original = copy.deepcopy(model).to(device, dtype)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x.to(device, dtype) if cast_first else x)
    model.to(device, dtype)
    return model, original, mutator, x.to(device, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cast_first", [True, False], ids=["prepared-in-dtype", "cast-after-prepare"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_half_precision(name, dtype, cast_first):
    model, original, mutator, x = explore(name, dtype, cast_first)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))  # full choices: bit-identical in the dtype too
        random.seed(0)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        assert {p.dtype for p in static.parameters()} == {dtype}
        masked, exported = model(x), static(x)
    assert exported.dtype == dtype
    torch.testing.assert_close(exported.float(), masked.float(), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    counted = count_resources(static.float(), x.float())
    assert (mutator.resources().params, mutator.resources().flops) == (counted.params, counted.flops)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", list(BUILDERS))
def test_cuda(name):
    model, original, mutator, x = explore(name, torch.float32, cast_first=True, device="cuda")
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
        random.seed(0)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static().eval()
        assert {p.device.type for p in static.parameters()} == {"cuda"}
        torch.testing.assert_close(static(x), model(x), rtol=1e-3, atol=1e-3)
