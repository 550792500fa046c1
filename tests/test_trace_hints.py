"""When the model's own forward fails on the example input for a reason the user can fix, the
TraceError says what to try (and following it works); an error it knows nothing of gets none."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, TraceError

pytestmark = pytest.mark.usefixtures("one_thread")


class GroupedExperts(nn.Module):
    """Experts run by ``torch._grouped_mm``, whose kernel takes bfloat16 (not float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.experts = nn.Parameter(torch.randn(2, 8, 16))

    def forward(self, x):
        offsets = torch.tensor([2, 4], dtype=torch.int32, device=x.device)
        return torch._grouped_mm(self.proj(x), self.experts, offsets).sum()


class ReadsValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y * int(y.sum().item() > 0)


class Fails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        raise ValueError("something only the model knows")


def trace_error(model: nn.Module, x) -> str:
    with pytest.raises(TraceError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ChannelMutator().prepare_from_supernet(model, example_inputs=x)
    return str(info.value)


def test_a_kernel_for_bfloat16_only_says_to_build_in_bfloat16():
    with torch.device("meta"):
        model = GroupedExperts()
    text = trace_error(model, torch.randn(4, 8, device="meta"))
    assert "Expected mat_a to be BFloat16" in text
    assert "Try: an op of the forward has a kernel for bfloat16 only and the model runs in float32" in text
    mutator = ChannelMutator()  # what the hint says works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model.to(torch.bfloat16), example_inputs=torch.randn(4, 8, device="meta",
                                                                                            dtype=torch.bfloat16))
    assert mutator.units


@pytest.mark.parametrize("x,says", [
    (torch.randn(2, 4, dtype=torch.float64), "the example input's dtype differs from the model's (float32)"),
    (torch.randn(2, 5), "the example input's shape does not fit the model's layers"),
    (torch.randn(2, 4, device="meta"), "the example input is not on the model's device (cpu)"),
])
def test_an_input_the_model_cannot_take_says_what_to_change(x, says):
    assert f"Try: {says}" in trace_error(nn.Sequential(nn.Linear(4, 4)), x)


def test_reading_values_on_the_meta_device_says_to_use_real_weights():
    with torch.device("meta"):
        model = ReadsValues()
    assert "Try: the forward needs tensor values" in trace_error(model, torch.randn(2, 4, device="meta"))


def test_an_error_of_the_model_itself_gets_no_hint():
    text = trace_error(Fails(), torch.randn(2, 4))
    assert "something only the model knows" in text and "Try:" not in text
