"""The model graph (mutator.graph): nodes, edges, units, layout and kept fractions."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from razor_widgets import ChannelMutator
from razor_widgets.analysis.model_graph import KeptFractions, layered_layout

from helpers import prepare


class TokenNet(nn.Module):
    """A conv whose tokens are joined by a learned class token (a unit with a parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 4, 4)
        self.token = nn.Parameter(torch.randn(1, 1, 16))
        self.lin = nn.Linear(16, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.conv(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], 1)
        return self.head(torch.relu(self.lin(x))[:, 0])


class Twice(nn.Module):
    """One block called twice, and two branches joined by a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        x = self.block(torch.relu(self.block(self.stem(x))))
        y = torch.cat([self.left(x), self.right(x)], 1)
        return self.head(y.mean((2, 3)))


@pytest.fixture(scope="module")
def resnet18_mutator(one_thread):
    mutator, _ = prepare(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    return mutator


def test_resnet_nodes_are_layers_and_joins(resnet18_mutator):
    graph = resnet18_mutator.graph
    assert isinstance(graph, nx.DiGraph) and nx.is_directed_acyclic_graph(graph)
    modules = {name for name, m in resnet18_mutator.model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))}
    assert {n for n, d in graph.nodes(data=True) if d["kind"] == "module"} == modules
    functions = [(n, d) for n, d in graph.nodes(data=True) if d["kind"] == "function"]
    assert len(functions) == 8 and all(d["op"] == "add_" and graph.in_degree(n) == 2 for n, d in functions)
    assert not any(d["op"] in ("relu", "max_pool2d", "flatten") for _, d in graph.nodes(data=True))
    assert list(graph.successors("input")) == ["conv1"] and list(graph.predecessors("output")) == ["fc"]
    assert set(graph.predecessors("layer2.0.add_")) == {"layer2.0.bn2", "layer2.0.downsample.1"}


def test_node_attributes(resnet18_mutator):
    data = resnet18_mutator.graph.nodes["layer1.0.conv1"]
    assert data["layer"] == "layer1.0.conv1" and data["op"] == "Conv2d" and data["kind"] == "module"
    assert set(data["units"]) == {"layer1.0.conv1_(0, 64)_64", "conv1_(0, 64)_64"}
    assert (data["in_channels"], data["out_channels"]) == (64, 64)
    assert data["unit_channels"]["out"] == {"layer1.0.conv1_(0, 64)_64": 64}
    fc = resnet18_mutator.graph.nodes["fc"]
    assert (fc["in_channels"], fc["out_channels"]) == (512, 1000)
    add = resnet18_mutator.graph.nodes["layer1.0.add_"]
    assert add["layer"] == "layer1.0" and add["units"] == ("conv1_(0, 64)_64",)


def test_every_unit_layer_is_a_node(resnet18_mutator):
    graph = resnet18_mutator.graph
    for unit in resnet18_mutator.units:
        for channel in unit.channels:
            nodes = [n for n, d in graph.nodes(data=True) if d["layer"] == channel.name]
            assert nodes and all(unit.name in graph.nodes[n]["units"] for n in nodes)


def test_graph_is_cached_and_read_only(resnet18_mutator):
    graph = resnet18_mutator.graph
    assert resnet18_mutator.graph is graph
    with pytest.raises(nx.NetworkXError):
        graph.add_node("x")
    with pytest.raises(RuntimeError, match="prepare_from_supernet"):
        _ = ChannelMutator().graph


def test_parameter_and_concat_nodes():
    mutator, _ = prepare(TokenNet(), torch.randn(1, 3, 16, 16))
    graph = mutator.graph
    assert graph.nodes["token"]["kind"] == "parameter" and list(graph.successors("token")) == ["cat"]
    assert set(graph.predecessors("cat")) == {"conv", "token"}
    assert graph.nodes["token"]["units"] == ("conv_(0, 16)_16",)
    pos = layered_layout(graph)
    assert pos["token"][1] == pos["cat"][1] + 1  # one row above its reader


def test_module_called_twice_gives_two_nodes():
    mutator, _ = prepare(Twice(), torch.randn(1, 3, 8, 8))
    graph = mutator.graph
    assert list(graph.successors("block")) == ["block (call 2)"]
    assert graph.nodes["block (call 2)"]["layer"] == "block"
    assert nx.is_directed_acyclic_graph(graph)
    cat = graph.nodes["cat"]
    assert set(graph.predecessors("cat")) == {"left", "right"} and cat["units"] == ("left_(0, 4)_4", "right_(0, 6)_6")


def test_layout_goes_top_to_bottom(resnet18_mutator):
    graph = resnet18_mutator.graph
    pos = layered_layout(graph)
    assert set(pos) == set(graph)
    assert all(pos[u][1] > pos[v][1] for u, v in graph.edges)
    rows = {}
    for x, y in pos.values():
        rows.setdefault(y, []).append(x)
    assert all(len(set(xs)) == len(xs) for xs in rows.values())  # no two nodes on one spot


def test_kept_fractions(resnet18_mutator):
    mutator = resnet18_mutator
    graph = mutator.graph
    fractions = KeptFractions(mutator, graph)
    assert np.allclose(fractions(), 1.0)
    mutator.set_choices({"layer1.0.conv1_(0, 64)_64": 0.25, "conv1_(0, 64)_64": 0.5})
    try:
        got = dict(zip(fractions.nodes, fractions()))
        assert got["layer1.0.conv1"] == 0.25 and got["layer1.0.bn1"] == 0.25
        assert got["conv1"] == 0.5 and got["layer1.0.add_"] == 0.5
        assert got["layer1.1.conv1"] == 1.0 and got["fc"] == 1.0
        prunable = dict(zip(fractions.nodes, fractions.prunable))
        assert not prunable["fc"] and not prunable["input"] and prunable["conv1"]
    finally:
        mutator.set_max_choices()


def test_channels_per_node(resnet18_mutator):
    """The channels each node's kept fraction is of: out channels of a layer, flowing ones of a join."""
    graph = resnet18_mutator.graph
    fractions = KeptFractions(resnet18_mutator, graph)
    channels = dict(zip(fractions.nodes, fractions.channels))
    assert channels["conv1"] == 64 and channels["layer2.0.conv1"] == 128 and channels["fc"] == 1000
    assert channels["layer1.0.add_"] == 64 and channels["input"] == 0
