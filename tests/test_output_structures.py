"""The export check compares any structure a model returns: dataclasses and classes registered
as pytree nodes without key functions, named tuples, nested lists and dicts, non-tensor leaves;
what it cannot walk is reported by type, never blamed on the export."""
from __future__ import annotations

import copy
import dataclasses
import random
import warnings
from typing import NamedTuple

import pytest
import torch
from torch import nn
from torch.utils._pytree import register_pytree_node

from razor_widgets import ChannelMutator, ExportError, UncheckedExportWarning, count_resources
from razor_widgets.export.output_comparison import compare_outputs

from helpers import make_nontrivial

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass
class Prediction:
    """A dataclass output registered as a pytree node WITHOUT a flatten_with_keys_fn."""

    logits: torch.Tensor
    features: torch.Tensor
    note: str = "ok"


register_pytree_node(Prediction, lambda p: ([p.logits, p.features], p.note),
                     lambda xs, note: Prediction(*xs, note))


class Boxes:
    """A plain class (no dataclass, no value equality) registered as a pytree node without keys."""

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor) -> None:
        self.boxes, self.scores = boxes, scores


register_pytree_node(Boxes, lambda b: ([b.boxes, b.scores], None), lambda xs, _: Boxes(*xs))


class Pair(NamedTuple):
    """A named tuple output."""

    first: torch.Tensor
    rest: list


class Opaque:
    """A value the check cannot walk: no value equality, no registration."""


class Net(nn.Module):
    """A small CNN whose output structure is chosen by ``form``."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        pooled = self.conv2(torch.relu(self.conv1(x))).mean((2, 3))
        logits = self.head(pooled)
        if self.form == "dataclass":
            return Prediction(logits, logits.sigmoid())
        if self.form == "node":
            return Boxes(logits, logits.softmax(-1))
        if self.form == "nested":
            return Pair(logits, [{"p": logits.exp(), "n": 3, "s": "x"}, (logits * 2, None)])
        return {"logits": logits, "opaque": Opaque()}


def pruned(form: str):
    torch.manual_seed(0)
    model = make_nontrivial(Net(form)).eval()
    original, x = copy.deepcopy(model), torch.randn(2, 3, 8, 8)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    mutator.prepare_from_supernet(model, example_inputs=x)
    return model, original, mutator, x


def leaves(out) -> list:
    if isinstance(out, (Prediction, Boxes)):
        return leaves(list(vars(out).values()))
    if isinstance(out, dict):
        return leaves(list(out.values()))
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in leaves(item)]
    return [out] if isinstance(out, torch.Tensor) else []


@pytest.mark.parametrize("form", ["dataclass", "node", "nested"])
def test_any_output_structure_exports_and_checks(form):
    model, original, mutator, x = pruned(form)
    assert len(mutator.mutable_units) == 2
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(leaves(model(x)), leaves(original(x))))
    random.seed(0)
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        static = mutator.to_static()
    with torch.no_grad():
        got, want = leaves(static(x)), leaves(model(x))
    assert len(got) == len(want) >= 2 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
    assert mutator.resources().params == count_resources(static, x).params < count_resources(original, x).params


def test_a_broken_export_of_a_registered_dataclass_is_named():
    model, _, mutator, x = pruned("dataclass")
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    static = mutator.to_static()
    with torch.no_grad():
        static.head.bias += 1
    from razor_widgets.export.export_check import verify_export

    with pytest.raises(ExportError, match=r"'head'"):
        verify_export(mutator, static, x)


def test_a_value_it_cannot_walk_is_reported_by_type():
    model, _, mutator, x = pruned("opaque")
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    with pytest.warns(UncheckedExportWarning, match=r"\['opaque'\] \(Opaque"):
        mutator.to_static()


def test_comparisons_walk_every_container():
    a = Pair(torch.ones(2), [{"p": torch.zeros(1), "n": 3}, Boxes(torch.ones(1), torch.ones(2))])
    assert compare_outputs(a, copy.deepcopy(a)) is None
    b = copy.deepcopy(a)
    b.rest[0]["n"] = 4
    assert compare_outputs(a, b) == "output .rest[0]['n'] is 4 where the masked model gives 3"
    c = copy.deepcopy(a)
    c.rest[1].scores = torch.ones(3)
    assert "child 1> has shape (3,)" in compare_outputs(a, c)
    assert "Prediction" in compare_outputs(Prediction(torch.ones(1), torch.ones(1)), {"logits": torch.ones(1)})
    assert "items" in compare_outputs([torch.ones(1)], [torch.ones(1), torch.ones(1)])
    assert "'z'" in compare_outputs({"a": torch.ones(1)}, {"z": torch.ones(1)})
    assert compare_outputs(Prediction(torch.ones(1), torch.ones(1), "a"),
                           Prediction(torch.ones(1), torch.ones(1), "b")) is not None  # contexts compared
    unchecked = []
    assert compare_outputs([Opaque()], [Opaque()], unchecked=unchecked) is None
    assert unchecked and "Opaque" in unchecked[0]
