"""The torch.nn audit: every ``nn.Module`` subclass that ``torch.nn`` exports is listed here, with
a probe model that shows what the engine does with it. A module with a layer kind or traced
through to ops that have channel rules keeps the channels around it prunable, without a warning;
a module listed as fixed freezes them and warns, naming the op and the layers. A module torch
adds in a new release is in neither list: the test fails. The table: docs/torch-nn-audit.md
(checked against this list)."""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import ChannelMutator, UnprunableChannelsWarning, count_resources
from razor_widgets.layers import kind_of

pytestmark = pytest.mark.usefixtures("one_thread")
C = 8  # channels of the probe's first layer


@dataclass(frozen=True)
class Entry:
    """How the engine handles one torch.nn class: ``status`` is ``kind`` (a layer kind),
    ``rule`` (traced through to ops with channel rules), ``container`` or ``fixed`` (with
    ``why``); ``form`` the probe's input, ``make`` builds the module for ``C`` channels,
    ``call`` runs it on the first layer's output (default: ``module(y)``)."""

    status: str
    form: str
    make: Callable[[], nn.Module]
    call: Callable[[nn.Module, torch.Tensor], Any] | None = None
    why: str = ""
    frozen: str = "first"  # the layer whose output channels a fixed module freezes


def rule(form: str, make: Callable[[], nn.Module], call: Any = None, note: str = "") -> Entry:
    """A module traced through to ops that have channel rules (``note``: how, where it is not plain)."""
    return Entry("rule", form, make, call, note)


def kind(form: str, make: Callable[[], nn.Module], call: Any = None) -> Entry:
    """A module with a layer kind (razor_widgets/layers/)."""
    return Entry("kind", form, make, call)


def fixed(why: str, form: str, make: Callable[[], nn.Module], call: Any = None) -> Entry:
    """A module whose channels stay fixed, and why."""
    return Entry("fixed", form, make, call, why)


def container(make: Callable[[], nn.Module], call: Any = None) -> Entry:
    """A container: what it holds is analysed (here, a ReLU)."""
    return Entry("container", "2d", make, call)


def _target(y: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(y)


def _classes(y: torch.Tensor) -> torch.Tensor:
    return torch.zeros(y.shape[0], dtype=torch.long)


def _pooled(y: torch.Tensor) -> torch.Tensor:
    return y.mean((2, 3))


SOFTMAX = "normalises over the channels: every output depends on every channel, pruned ones included"
RANDOM = ("draws random sampling offsets per channel: with fewer channels every channel gets "
          "other offsets, so the export cannot compute what the masked model computes")
DISTANCE = "reduces over the channels (a similarity or a distance between two tensors); no channel rule"
LOSS = "a loss: it reduces the channels against targets of the original shape; no channel rule"
_pair_loss = {name: fixed(LOSS, "2d", getattr(nn, name), lambda m, y: m(y, _target(y)))
              for name in ("L1Loss", "MSELoss", "SmoothL1Loss", "HuberLoss", "BCEWithLogitsLoss",
                           "SoftMarginLoss", "HingeEmbeddingLoss", "PoissonNLLLoss")}
_pair_loss["BCELoss"] = fixed(LOSS, "2d", nn.BCELoss, lambda m, y: m(y.sigmoid(), _target(y)))
_pair_loss["KLDivLoss"] = fixed(LOSS, "2d", lambda: nn.KLDivLoss(reduction="batchmean"),
                                lambda m, y: m(y.log_softmax(1), _target(y)))

AUDIT: dict[str, Entry] = {
    # -- layers with a kind ----------------------------------------------------------------------
    **{f"Conv{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"Conv{d}d")(C, C, 1)) for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"ConvTranspose{d}d")(C, C, 2, 2))
       for d in (1, 2, 3)},
    **{f"LazyConv{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"LazyConv{d}d")(C, 1)) for d in (1, 2, 3)},
    **{f"LazyConvTranspose{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"LazyConvTranspose{d}d")(C, 2, 2))
       for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"BatchNorm{d}d")(C)) for d in (1, 2, 3)},
    **{f"LazyBatchNorm{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"LazyBatchNorm{d}d")()) for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"InstanceNorm{d}d")(C, affine=True))
       for d in (1, 2, 3)},
    **{f"LazyInstanceNorm{d}d": kind(f"{d}d", lambda d=d: getattr(nn, f"LazyInstanceNorm{d}d")(affine=True))
       for d in (1, 2, 3)},
    "SyncBatchNorm": kind("2d", lambda: nn.SyncBatchNorm(C)),
    "GroupNorm": kind("2d", lambda: nn.GroupNorm(2, C)),
    "LayerNorm": kind("seq", lambda: nn.LayerNorm(C)),
    "RMSNorm": kind("seq", lambda: nn.RMSNorm(C)),
    "Linear": kind("seq", lambda: nn.Linear(C, C)),
    "LazyLinear": kind("seq", lambda: nn.LazyLinear(C)),
    "MultiheadAttention": kind("seq", lambda: nn.MultiheadAttention(C, 2, batch_first=True),
                               lambda m, y: m(y, y, y, need_weights=False)[0]),
    "Embedding": kind("ids", lambda: nn.Embedding(10, C)),
    "PReLU": kind("2d", lambda: nn.PReLU(C)),
    # -- traced through to ops with rules ----------------------------------------------------------
    **{name: rule("2d", getattr(nn, name)) for name in (
        "CELU", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "LeakyReLU", "LogSigmoid",
        "Mish", "ReLU", "ReLU6", "SELU", "SiLU", "Sigmoid", "Softplus", "Softsign", "Tanh", "Identity",
        "Dropout", "Dropout2d", "AlphaDropout", "FeatureAlphaDropout")},
    "Upsample": rule("2d", lambda: nn.Upsample(scale_factor=2)),
    "UpsamplingBilinear2d": rule("2d", lambda: nn.UpsamplingBilinear2d(scale_factor=2)),
    "UpsamplingNearest2d": rule("2d", lambda: nn.UpsamplingNearest2d(scale_factor=2)),
    "Softmax2d": fixed(SOFTMAX, "2d", nn.Softmax2d),
    "Hardshrink": rule("2d", nn.Hardshrink),
    "Softshrink": rule("2d", nn.Softshrink),
    "Tanhshrink": rule("2d", nn.Tanhshrink),
    "Threshold": rule("2d", lambda: nn.Threshold(0.1, 0.0)),
    "RReLU": rule("2d", nn.RReLU),
    "Softmax": fixed(SOFTMAX + " (over other dims: a rule)", "2d", lambda: nn.Softmax(dim=1)),
    "Softmin": fixed(SOFTMAX, "2d", lambda: nn.Softmin(dim=1)),
    "LogSoftmax": fixed(SOFTMAX + " (over other dims: a rule)", "2d", lambda: nn.LogSoftmax(dim=1)),
    "Dropout1d": rule("1d", nn.Dropout1d),
    "Dropout3d": rule("3d", nn.Dropout3d),
    "Flatten": rule("2d", nn.Flatten),
    "Unflatten": fixed("splits a dim into sizes stored as numbers (``unflattened_size``): the channels it splits "
                       "keep their count (on other dims: a rule)", "seq", lambda: nn.Unflatten(2, (2, C // 2)),
                       lambda m, y: m(y).flatten(2)),
    **{f"{p}Pool{d}d": rule(f"{d}d", lambda p=p, d=d: getattr(nn, f"{p}Pool{d}d")(2))
       for p in ("Max", "Avg") for d in (1, 2, 3)},
    **{f"Adaptive{p}Pool{d}d": rule(f"{d}d", lambda p=p, d=d: getattr(nn, f"Adaptive{p}Pool{d}d")(1))
       for p in ("Max", "Avg") for d in (1, 2, 3)},
    **{f"LPPool{d}d": rule(f"{d}d", lambda d=d: getattr(nn, f"LPPool{d}d")(2, 2)) for d in (1, 2, 3)},
    **{f"{p}Pad{d}d": rule(f"{d}d", lambda p=p, d=d: getattr(nn, f"{p}Pad{d}d")(1))
       for p in ("Reflection", "Replication", "Zero", "Circular") for d in (1, 2, 3)},
    **{f"ConstantPad{d}d": rule(f"{d}d", lambda d=d: getattr(nn, f"ConstantPad{d}d")(1, 0.5)) for d in (1, 2, 3)},
    "FractionalMaxPool2d": fixed(RANDOM, "2d", lambda: nn.FractionalMaxPool2d(2, output_size=2)),
    "FractionalMaxPool3d": fixed(RANDOM, "3d", lambda: nn.FractionalMaxPool3d(2, output_size=2)),
    **{f"MaxUnpool{d}d": rule(f"{d}d", lambda d=d: getattr(nn, f"MaxUnpool{d}d")(2),
                              lambda m, y, d=d: m(*getattr(F, f"max_pool{d}d")(y, 2, return_indices=True)))
       for d in (1, 2, 3)},
    "ChannelShuffle": rule("2d", lambda: nn.ChannelShuffle(2),
        note="the same position in every group is pruned together"),
    "PixelShuffle": rule("2d", lambda: nn.PixelShuffle(2), note="each output channel is a block of input channels"),
    "PixelUnshuffle": rule("2d", lambda: nn.PixelUnshuffle(2),
        note="each input channel becomes a block of output channels"),
    "GLU": rule("2d", lambda: nn.GLU(1), note="channels `i` and `i + C/2` are pruned together"),
    "LocalResponseNorm": kind("2d", lambda: nn.LocalResponseNorm(3)),
    "CrossMapLRN2d": kind("2d", lambda: nn.CrossMapLRN2d(3)),
    "Fold": rule("cols", lambda: nn.Fold((3, 3), 2), lambda m, y: m(y.transpose(1, 2)),
        note="each block of kernel positions is one channel"),
    "Unfold": rule("2d-last", lambda: nn.Unfold(2), lambda m, y: m(y).transpose(1, 2),
        note="each channel becomes its kernel positions (channel-major)"),
    "CosineSimilarity": fixed(DISTANCE, "2d", lambda: nn.CosineSimilarity(1), lambda m, y: m(y, y.flip(0))),
    "PairwiseDistance": fixed(DISTANCE, "seq", nn.PairwiseDistance, lambda m, y: m(y, y.flip(0))),
    "Bilinear": kind("seq", lambda: nn.Bilinear(C, C, C), lambda m, y: m(y, y.flip(0))),
    "EmbeddingBag": kind("ids", lambda: nn.EmbeddingBag(10, C), lambda m, y: m(y)),
    "RNN": kind("seq", lambda: nn.RNN(C, C, batch_first=True), lambda m, y: m(y)[0]),
    "LSTM": kind("seq", lambda: nn.LSTM(C, C, batch_first=True), lambda m, y: m(y)[0]),
    "GRU": kind("seq", lambda: nn.GRU(C, C, batch_first=True), lambda m, y: m(y)[0]),
    "RNNBase": Entry("base", "seq", nn.Module, why="the base of RNN, LSTM and GRU: no forward of its own"),
    "RNNCell": kind("vec", lambda: nn.RNNCell(C, C)),
    "LSTMCell": kind("vec", lambda: nn.LSTMCell(C, C), lambda m, y: m(y)[0]),
    "GRUCell": kind("vec", lambda: nn.GRUCell(C, C)),
    "RNNCellBase": Entry("base", "vec", nn.Module, why="the base of the RNN cells: no forward of its own"),
    "TransformerEncoderLayer": rule("seq", lambda: nn.TransformerEncoderLayer(C, 2, 16, batch_first=True)),
    "TransformerDecoderLayer": rule("seq", lambda: nn.TransformerDecoderLayer(C, 2, 16, batch_first=True),
                                    lambda m, y: m(y, y)),
    "TransformerEncoder": rule("seq", lambda: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(C, 2, 16, batch_first=True), 2, enable_nested_tensor=False)),
    "TransformerDecoder": rule("seq", lambda: nn.TransformerDecoder(
        nn.TransformerDecoderLayer(C, 2, 16, batch_first=True), 2), lambda m, y: m(y, y)),
    "Transformer": rule("seq", lambda: nn.Transformer(C, 2, 1, 1, 16, batch_first=True), lambda m, y: m(y, y)),
    # -- containers ----------------------------------------------------------------------------------
    "Module": Entry("base", "2d", nn.Module, why="the base of every module: what a subclass calls is analysed"),
    "Sequential": container(lambda: nn.Sequential(nn.ReLU())),
    "ModuleList": container(lambda: nn.ModuleList([nn.ReLU()]), lambda m, y: m[0](y)),
    "ModuleDict": container(lambda: nn.ModuleDict({"act": nn.ReLU()}), lambda m, y: m["act"](y)),
    "ParameterList": container(lambda: nn.ParameterList([nn.Parameter(torch.ones(1))]), lambda m, y: y * m[0]),
    "ParameterDict": container(lambda: nn.ParameterDict({"s": nn.Parameter(torch.ones(1))}), lambda m, y: y * m["s"]),
    "Container": container(lambda: _container(nn.ReLU()), lambda m, y: m.act(y)),
    "DataParallel": container(lambda: nn.DataParallel(nn.ReLU())),
    # -- losses ---------------------------------------------------------------------------------------
    **_pair_loss,
    "MultiLabelSoftMarginLoss": fixed(LOSS, "2d", nn.MultiLabelSoftMarginLoss,
                                      lambda m, y: m(_pooled(y), _pooled(_target(y)))),
    "GaussianNLLLoss": fixed(LOSS, "2d", nn.GaussianNLLLoss, lambda m, y: m(y, _target(y), torch.ones_like(y))),
    "CrossEntropyLoss": fixed(LOSS, "2d", nn.CrossEntropyLoss, lambda m, y: m(_pooled(y), _classes(y))),
    "NLLLoss": fixed(LOSS, "2d", nn.NLLLoss, lambda m, y: m(_pooled(y).log_softmax(1), _classes(y))),
    "NLLLoss2d": fixed(LOSS, "2d", nn.NLLLoss2d, lambda m, y: m(_pooled(y).log_softmax(1), _classes(y))),
    "MultiMarginLoss": fixed(LOSS, "2d", nn.MultiMarginLoss, lambda m, y: m(_pooled(y), _classes(y))),
    "MultiLabelMarginLoss": fixed(LOSS, "2d", nn.MultiLabelMarginLoss,
                                  lambda m, y: m(_pooled(y), torch.zeros_like(_pooled(y), dtype=torch.long))),
    "CosineEmbeddingLoss": fixed(LOSS, "2d", nn.CosineEmbeddingLoss,
                                 lambda m, y: m(_pooled(y), _pooled(y).flip(0), torch.ones(y.shape[0]))),
    "MarginRankingLoss": fixed(LOSS, "2d", nn.MarginRankingLoss,
                               lambda m, y: m(_pooled(y), _pooled(y).flip(0), torch.ones_like(_pooled(y)))),
    "TripletMarginLoss": fixed(LOSS, "2d", nn.TripletMarginLoss,
                               lambda m, y: m(_pooled(y), _pooled(y).flip(0), _pooled(y) * 2)),
    "TripletMarginWithDistanceLoss": fixed(LOSS, "2d", nn.TripletMarginWithDistanceLoss,
                                           lambda m, y: m(_pooled(y), _pooled(y).flip(0), _pooled(y) * 2)),
    "CTCLoss": fixed(LOSS, "seq", nn.CTCLoss, lambda m, y: m(
        y.transpose(0, 1).log_softmax(2), torch.ones(2, 2, dtype=torch.long), torch.full((2,), y.shape[1]),
        torch.full((2,), 2))),
    "AdaptiveLogSoftmaxWithLoss": Entry("fixed", "vec", lambda: nn.AdaptiveLogSoftmaxWithLoss(C, 6, [3]),
                                        lambda m, y: m(y, _classes(y)).loss,
                                        LOSS + " (its input layers are Linear kinds)", frozen="layer.head"),
    "LinearCrossEntropyLoss": fixed(LOSS, "vec", lambda: nn.LinearCrossEntropyLoss(C, 6),
                                    lambda m, y: m(y, _classes(y))),
}


def _container(act: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return nn.Container(act=act)


def torch_nn_modules() -> list[str]:
    """Every nn.Module subclass torch.nn exports (nn.Module itself included)."""
    return sorted(n for n in dir(nn) if isinstance(getattr(nn, n), type) and issubclass(getattr(nn, n), nn.Module))


# -- the probe: first layer -> the module -> a last layer ---------------------------------------------
FIRST = {"1d": (lambda: nn.Conv1d(3, C, 1), (2, 3, 6)), "2d": (lambda: nn.Conv2d(3, C, 1), (2, 3, 6, 6)),
         "3d": (lambda: nn.Conv3d(3, C, 1), (2, 3, 4, 4, 4)), "seq": (lambda: nn.Linear(3, C), (2, 5, 3)),
         "vec": (lambda: nn.Linear(3, C), (2, 3)), "ids": (None, (2, 5)),
         "cols": (lambda: nn.Linear(3, C), (2, 4, 3)),  # (N, L, C * K) for Fold: L = 4 blocks, K = 4
         "2d-last": (lambda: nn.Conv2d(3, C, 1), (2, 3, 4, 4))}  # an output with its channels last


class Probe(nn.Module):
    """``last(module(first(x)))``: ``last`` reads the module's output channels (dim 1 of an
    image-like output, the last dim otherwise); a scalar output (a loss) is returned as it is."""

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        first, shape = FIRST[entry.form]
        self.first = first() if first is not None else nn.Identity()
        self.layer = entry.make()
        self.entry = entry
        self.x = torch.randint(0, 10, shape) if entry.form == "ids" else torch.randn(*shape)
        with torch.no_grad():
            out = self.middle(self.x)  # also materialises lazy modules
        if out.dim() == 0:
            self.last = nn.Identity()
        elif entry.form in ("seq", "vec", "ids", "2d-last") or out.dim() == 2:
            self.last = nn.Linear(out.shape[-1], 2)
        else:
            self.last = getattr(nn, f"Conv{out.dim() - 2}d")(out.shape[1], 2, 1)

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer and the module."""
        y = self.first(x)
        return self.entry.call(self.layer, y) if self.entry.call else self.layer(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.middle(x))


def probe(name: str) -> tuple[ChannelMutator, list[str], Probe]:
    """Prepare the probe of ``name``: its mutator and the UnprunableChannelsWarnings it gave."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # NLLLoss2d
        model = Probe(AUDIT[name]).eval()
    mutator = ChannelMutator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mutator.prepare_from_supernet(model, example_inputs=model.x)
    return mutator, [str(w.message) for w in caught if issubclass(w.category, UnprunableChannelsWarning)], model


def pruned_layers(mutator: ChannelMutator) -> set[str]:
    """The layers (and parameters) whose output channels some mutable unit prunes."""
    return {c.name for u in mutator.mutable_units for c in u.output_related}


def by_status(*statuses: str) -> list[str]:
    """The audited names of the given statuses."""
    return [name for name, entry in AUDIT.items() if entry.status in statuses]


# -- the tests ----------------------------------------------------------------------------------------
def test_every_torch_nn_module_is_audited():
    """A module a new torch release adds is in neither list: add it, with a probe."""
    exported = torch_nn_modules()
    assert [n for n in exported if n not in AUDIT] == []
    assert [n for n in AUDIT if n not in exported] == []
    assert all(entry.why for entry in AUDIT.values() if entry.status in ("fixed", "base"))


def test_the_kinds_are_the_registered_ones():
    """An entry says ``kind`` exactly when a layer kind covers the class."""
    with_kind = {n for n in AUDIT if kind_of(getattr(nn, n).__new__(getattr(nn, n))) is not None}
    assert with_kind == set(by_status("kind"))


@pytest.mark.parametrize("name", by_status("kind", "rule", "container"))
def test_a_module_with_a_kind_or_a_rule_keeps_channels_prunable(name):
    """No warning; the channels the module reads are pruned; the export (checked against the
    masked model by ``to_static``) counts what ``count_resources`` counts."""
    mutator, warned, model = probe(name)
    assert warned == []
    first = "layer" if model.entry.form == "ids" else "first"
    assert any(layer.startswith(first) for layer in pruned_layers(mutator)), [u.fixed_reasons for u in mutator.units]
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    static = mutator.to_static()
    counted, exported = mutator.resources(), count_resources(static, model.x)
    assert (counted.params, counted.macs) == (exported.params, exported.macs)
    assert counted.params < mutator.resources().original_params


@pytest.mark.parametrize("name", by_status("fixed"))
def test_a_module_without_a_rule_freezes_its_channels_and_warns(name):
    """The frozen channels are not pruned, and why is said: an UnprunableChannelsWarning naming the op
    and the layer, or (where the channels are fixed for several reasons, so no op alone loses them,
    and no warning is given) the unit's reasons naming the ops in the module."""
    mutator, warned, _ = probe(name)
    frozen = AUDIT[name].frozen
    assert frozen not in pruned_layers(mutator)
    op = re.compile(r"in '(layer(\.\w+)*|the model)'")
    if warned:
        assert any(op.search(w) and frozen in w for w in warned), warned
    else:
        reasons = [r for u in mutator.units if any(c.name == frozen for c in u.output_related) for r in u.fixed_reasons]
        assert any(op.search(r) for r in reasons), reasons


def test_base_classes_have_no_forward_of_their_own():
    for name in by_status("base"):
        assert getattr(nn, name).forward is nn.Module.forward, name


# -- the table in docs/ ---------------------------------------------------------------------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "torch-nn-audit.md"
HOW = {"kind": "layer kind", "rule": "traced through: ops with channel rules", "container": "container",
       "fixed": "fixed", "base": "base class"}


def table_rows() -> list[str]:
    """The rows of the table in docs/torch-nn-audit.md, from ``AUDIT``."""
    rows = []
    for name in sorted(AUDIT):
        entry = AUDIT[name]
        note = entry.why
        if entry.status == "kind":
            found = kind_of(getattr(nn, name).__new__(getattr(nn, name)))
            note = f"`{found.name}` (`layers/`)"
        rows.append(f"| `nn.{name}` | {HOW[entry.status]} | {note} |")
    return rows


def test_the_docs_table_is_the_audit():
    text = DOC.read_text()
    assert [line for line in text.splitlines() if line.startswith("| `nn.")] == table_rows()


if __name__ == "__main__":  # print the table for docs/torch-nn-audit.md
    print("\n".join(table_rows()))
