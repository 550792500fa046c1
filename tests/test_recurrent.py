"""Recurrent layers: the hidden size is a unit (gates, layers, directions, projections), the
input size follows the layer before; LSTM/GRU/RNN sequence classifiers and a GRU-cell loop prune,
export and count exactly, and the masked model equals a zeroing oracle written here."""
from __future__ import annotations

import copy
import random
import re
import warnings

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, count_resources

pytestmark = pytest.mark.usefixtures("one_thread")

GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}


class SequenceClassifier(nn.Module):
    """A linear embedding, a recurrent layer, the last step's output into a linear head."""

    def __init__(self, cls: type, **kwargs) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.rnn = cls(8, 12, batch_first=True, **kwargs)
        width = (2 if kwargs.get("bidirectional") else 1) * (kwargs.get("proj_size") or 12)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        out, _ = self.rnn(torch.tanh(self.embed(x)))
        return self.head(out[:, -1])


class CellLoop(nn.Module):
    """A GRU cell stepped over the sequence, its state fed back, then an LSTM cell on top."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.cell = nn.GRUCell(8, 10)
        self.top = nn.LSTMCell(10, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = state = None  # zero states (a state written as x.new_zeros(n, 10) keeps its 10 channels)
        for t in range(x.shape[1]):
            h = self.cell(self.embed(x[:, t]), h)
            state = self.top(h, state)
        return self.head(state[0])


def zeroing_oracle(original: nn.Module, mutator: ChannelMutator) -> nn.Module:
    """The pruned hidden units' gate rows zeroed (their state then stays exactly 0: every gate
    is 0.5 of a zero candidate) and the pruned input columns zeroed, in a copy of the model."""
    model = copy.deepcopy(original)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for unit in mutator.mutable_units:
            for channel in unit.channels:
                pruned = ~unit.channel_mask(channel)
                index = torch.arange(channel.start, channel.end)[pruned]
                if channel.param_dim is not None:  # the cell size of an LSTM with projections
                    _zero_cells(modules[channel.owner_name], index)
                    continue
                module = modules[channel.name]
                if isinstance(module, nn.Linear):
                    (module.weight[index] if channel.is_output_channel else module.weight[:, index]).zero_()
                    if channel.is_output_channel:
                        module.bias[index] = 0
                    continue
                for name, p in module.named_parameters():
                    g = p.shape[0] // module.hidden_size
                    if not channel.is_output_channel and re.fullmatch(r"weight_ih(_l0(_reverse)?)?", name):
                        p[:, index] = 0  # the first layer's inputs
                    elif channel.is_output_channel and getattr(module, "proj_size", 0):
                        if name.startswith("weight_hr"):  # the projection's pruned rows: h is 0 there
                            p[index] = 0
                    elif channel.is_output_channel:
                        p[torch.cat([index + k * module.hidden_size for k in range(g)])] = 0
    return model


def _zero_cells(module: nn.LSTM, index: torch.Tensor) -> None:
    """Pruned cell positions: their gate rows zeroed in every layer and direction (the cell state
    stays 0, so the projection reads 0 there)."""
    for name, p in module.named_parameters():
        if not name.startswith("weight_hr"):
            p[torch.cat([index + k * module.hidden_size for k in range(4)])] = 0


def check(model: nn.Module, x: torch.Tensor, units: int) -> ChannelMutator:
    """Full choices bit-identical, counts exact; at random choices the export equals the masked
    model (``to_static`` checks), which equals the zeroing oracle; counts exact."""
    model.eval()
    original = copy.deepcopy(model)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=x)
    assert [str(w.message) for w in caught if "channel" in str(w.message)] == []
    assert len(mutator.mutable_units) == units
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    assert mutator.resources().params == count_resources(original, x).params
    assert mutator.resources().macs == count_resources(original, x).macs
    for seed in range(3):
        random.seed(seed)
        mutator.set_choices(mutator.sample_choices())
        static = mutator.to_static()
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(model(x), zeroing_oracle(original, mutator)(x), rtol=1e-5, atol=1e-6)
        counted, exported = mutator.resources(), count_resources(static, x)
        assert (counted.params, counted.macs) == (exported.params, exported.macs)
        assert counted.params == sum(p.numel() for p in static.parameters())
    mutator.set_choices(mutator.max_choices)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    return mutator


@pytest.mark.parametrize("cls,kwargs", [(nn.LSTM, {}), (nn.GRU, {"num_layers": 2}), (nn.RNN, {"nonlinearity": "relu"}),
                                        (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
                                        (nn.GRU, {"bidirectional": True})])
def test_a_sequence_classifier_prunes_its_hidden_size(cls, kwargs):
    torch.manual_seed(0)
    mutator = check(SequenceClassifier(cls, **kwargs), torch.randn(2, 6, 5), units=2)
    hidden = mutator.unit("rnn_(0, 12)_12")
    assert {c.name for c in hidden.output_related} == {"rnn"}
    assert {c.name for c in hidden.input_related} == {"head"}
    mutator.set_choices({hidden.name: 0.5})
    static = mutator.to_static()
    assert static.rnn.hidden_size == 6 and type(static.rnn) is cls
    assert static.rnn.weight_hh_l0.shape == (6 * GATES[cls], 6)


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_an_lstm_with_projections_prunes_the_projection_and_the_cell_size(kwargs):
    torch.manual_seed(0)
    mutator = check(SequenceClassifier(nn.LSTM, proj_size=6, **kwargs), torch.randn(2, 6, 5), units=3)
    cell = next(u for u in mutator.mutable_units if u.num_channels == 12)
    assert [(c.name, c.param_dim) for c in cell.channels] == [("rnn.weight_hr_l0", 1)]
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    static = mutator.to_static()
    assert (static.rnn.hidden_size, static.rnn.proj_size, static.rnn.input_size) == (6, 3, 4)
    for name, p in static.rnn.named_parameters():  # every layer and direction keeps 6 cells
        assert p.shape[1 if name.startswith("weight_hr") else 0] == (6 if name.startswith("weight_hr") else 24), name


def test_rnn_cells_in_a_loop():
    torch.manual_seed(0)
    mutator = check(CellLoop(), torch.randn(2, 4, 5), units=3)
    assert sorted(u.name.split("_")[0] for u in mutator.mutable_units) == ["cell", "embed", "top"]
