"""Depth as a choice (issue 28): block units found from the trace, keep/drop choices, masks,
exact counts and the export, on a model written for it with blocks of every kind and blocks
that must stay."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from razor_widgets import MODELS, ChannelMutator, count_resources
from razor_widgets.export.plans import apply_plan, plan_of


class Residual(nn.Module):
    """``y = x + f(x)``."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


class ScaledResidual(nn.Module):
    """``y = x + gamma * f(x)`` (a layer scale), written in place on the branch."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x):
        branch = self.gamma * self.fc2(F.gelu(self.fc1(x)))
        branch += x
        return branch


class PreNormLayer(nn.Module):
    """A pre-norm transformer layer: attention and MLP branches on the stream."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.down(F.relu(self.up(self.ln2(x))))


class PostNormLayer(nn.Module):
    """A post-norm layer: ``y = norm(x + f(x))``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.fc2(torch.tanh(self.fc1(x))))


class Bottleneck(nn.Module):
    """A ResNet bottleneck; its shortcut is a projection when ``project``."""

    def __init__(self, c: int, out: int | None = None, project: bool = False) -> None:
        super().__init__()
        out = out or c
        self.conv1, self.bn1 = nn.Conv2d(c, c // 2, 1, bias=False), nn.BatchNorm2d(c // 2)
        self.conv2, self.bn2 = nn.Conv2d(c // 2, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential(nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out)) if project else None

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        y += identity
        return F.relu(y)


class Leaky(nn.Module):
    """A residual block whose branch output also feeds something else (returned beside ``y``)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        branch = self.fc(x)
        return x + branch, branch


class BlockNet(nn.Module):
    """Blocks of every kind, and blocks that must stay (a projection shortcut, a leaking branch,
    a block called twice)."""

    def __init__(self, c: int = 8, d: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.Sequential(Bottleneck(c), Bottleneck(c, 2 * c, project=True), Bottleneck(2 * c))
        self.embed = nn.Linear(2 * c, d)
        self.layers = nn.ModuleList([Residual(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))),
                                     ScaledResidual(d), PreNormLayer(d), PostNormLayer(d), PreNormLayer(d)])
        self.leaky = Leaky(d)
        self.twice = Residual(nn.Linear(d, d))
        self.alone = Residual(nn.Linear(d, d))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        x = self.convs(F.relu(self.stem(x)))
        x = self.embed(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        x, aux = self.leaky(x)
        x = self.alone(self.twice(self.twice(x)))
        return self.head(x.mean(1) + aux.mean(1))


REMOVABLE = ["convs.0", "convs.2", "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "alone"]
MUST_STAY = {"convs.1": "shortcut is not the identity", "leaky": "also feeds", "twice": "called 2 times"}


def _model(seed: int = 0) -> BlockNet:
    torch.manual_seed(seed)
    model = BlockNet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def prepared():
    model, x = _model(), torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    original = copy.deepcopy(model)
    mutator = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, x)
    return mutator, model, original, x


def test_blocks_of_every_kind_are_found_and_the_ones_that_must_stay_say_why(prepared):
    mutator = prepared[0]
    assert [b.path for b in mutator.removable_blocks] == REMOVABLE
    stay = {b.path: b.fixed_reasons for b in mutator.block_units if not b.is_mutable}
    assert set(stay) == set(MUST_STAY)
    for path, words in MUST_STAY.items():
        assert any(words in reason for reason in stay[path]), (path, stay[path])
    assert "'convs.1.shortcut.0' (Conv2d)" in stay["convs.1"][0]
    assert "LayerNorm on the stream" in mutator.block("layers.3").form
    with pytest.raises(ValueError, match="cannot be dropped: .*shortcut"):
        mutator.set_choices({"block:convs.1": "drop"})


def test_full_choices_are_bit_identical_and_choices_are_listed(prepared):
    mutator, model, original, x = prepared
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    choices = mutator.current_choices
    assert all(choices[f"block:{p}"] == "keep" for p in REMOVABLE)
    assert not any(f"block:{p}" in choices for p in MUST_STAY)
    cfg = mutator.config_template()
    assert cfg["channel_unit_cfg"]["blocks"]["block:layers.2"]["choice"] == "keep"
    assert "fixed_reasons" in cfg["channel_unit_cfg"]["blocks"]["block:leaky"]


def _without(model: nn.Module, paths: list[str]) -> nn.Module:
    """The oracle: the original model with the blocks' modules bypassed (their stream input returned)."""
    model = copy.deepcopy(model)
    for path in paths:
        model.get_submodule(path).forward = lambda x, *args, **kwargs: x
    return model


def test_dropping_masks_the_block_and_bad_choices_change_nothing(prepared):
    mutator, model, original, x = prepared
    with pytest.raises(ValueError, match="'keep' or 'drop'"):
        mutator.set_choices({"block:layers.1": "drop", "block:layers.2": "half"})
    assert mutator.block("layers.1").current_choice == "keep"
    with pytest.raises(KeyError):
        mutator.set_choices({"block:nowhere": "drop"})
    mutator.set_choices({"block:layers.1": "drop", "block:convs.2": False, "block:alone": "drop"})
    with torch.no_grad():
        assert torch.equal(model(x), _without(original, ["layers.1", "convs.2", "alone"])(x))
    mutator.set_choices({"block:layers.1": "keep", "block:convs.2": True, "block:alone": "keep"})
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_random_mixes_of_depth_and_width_export_what_the_masked_model_computes(prepared):
    mutator, model, _, x = prepared
    rng = random.Random(0)
    for trial in range(4):
        torch.manual_seed(trial)
        choices = mutator.sample_choices()
        choices.update({b.name: rng.choice(["keep", "drop"]) for b in mutator.removable_blocks})
        mutator.set_choices(choices)
        static = mutator.to_static()  # checks export == masked itself
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-6)
        reference = count_resources(static, x)
        counted = mutator.resources()
        assert (counted.params, counted.macs) == (reference.params, reference.macs)
        dropped = [b.path for b in mutator.removable_blocks if b.dropped]
        assert len(static.layers) == 5 - sum(p.startswith("layers.") for p in dropped)
        assert len(static.convs) == 3 - sum(p.startswith("convs.") for p in dropped)
        assert all(not m._forward_hooks for m in static.modules())  # plain torch: the masks' hooks are gone
        if "alone" in dropped:
            assert isinstance(static.alone, nn.Identity)


def test_what_if_counts_plans_and_configs_carry_block_choices(prepared, tmp_path):
    mutator = prepared[0]
    full = mutator.resources()
    dropped = mutator.resources({"block:layers.2": "drop"})
    assert dropped.params < full.params and dropped.macs < full.macs
    assert mutator.block("layers.2").current_choice == "keep" and mutator.resources() == full
    by_layer = mutator.resources({"block:layers.2": "drop"}, by_layer=True)
    assert all(r.params == 0 for name, r in by_layer.items() if name.startswith("layers.2."))
    mutator.set_choices({"block:layers.2": "drop", "block:convs.0": "drop"})
    plan = plan_of(mutator)
    assert plan["block:layers.2"] == "drop"
    model2, x = _model(), torch.randn(1, 3, 6, 6)
    other = ChannelMutator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other.prepare_from_supernet(model2, x)
    apply_plan(other, plan, "test")
    assert other.current_choices == mutator.current_choices
    built = MODELS.build(mutator.config_template())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built.prepare_from_supernet(_model(), x)
    assert built.dropped_paths() == ["convs.0", "layers.2"]
