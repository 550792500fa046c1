"""Params, MACs and FLOPs: the reference counter and the live counter of a prepared mutator.

What a user checks against the numbers shown next to the sliders (``docs/counting.md``):

* ``count_resources`` / ``reference_flops`` (one forward under ``FlopCounterMode``) give the
  documented figures, and count attention even where the raw counter silently gives 0
  (``nn.MultiheadAttention``'s fused fast path in eval mode under ``torch.no_grad()``, and
  CPU flash attention);
* ``mutator.resources()`` (no forward pass) equals what the exported model really has:
  ``sum(p.numel() for p in static.parameters())`` and ``count_resources(static, x).flops``,
  unpruned and at seeded random choices, with ``flops == 2 * macs``;
* ``by_layer=True`` adds up to the totals, ``original_*`` keep the unpruned figures, a
  what-if (``choices=...``) counts without changing the choices (also when it raises), and
  one slider move (an incremental update) is followed exactly.

The attention checks use hand-derived formulas, so they cannot pass with both sides counting
attention as 0.
"""
from __future__ import annotations

import functools
import math
import random
import warnings
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from razor_widgets import ChannelMutator, Resources, count_resources, reference_flops
from razor_widgets.counting.live_counter import resource_counter

from helpers import CASES, make_nontrivial

SEEDS = (0, 1, 2)
SMALL_IMAGE = (1, 3, 64, 64)  # resnet18 / mobilenet_v2: the geometry is the same, forwards cheaper
PATTERNS = [f"pattern:{name}" for name in CASES]
TORCHVISION = ["resnet18", "mobilenet_v2", "tiny_vit"]
MODELS = PATTERNS + TORCHVISION

# the tiny ViT: 4x4 patches of 8x8 pixels plus the class token
VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
VIT_TOKENS = (VIT["image_size"] // VIT["patch_size"]) ** 2 + 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny layers: a second thread only adds overhead


# -- models ---------------------------------------------------------------------------------------
def tiny_vit() -> torchvision.models.VisionTransformer:
    return torchvision.models.VisionTransformer(**VIT)


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A model (eval mode, non-degenerate weights) and its example input."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    if name.startswith("pattern:"):
        cls, shape = CASES[name.partition(":")[2]][:2]
        model, x = cls(), torch.randn(*shape, generator=gen)
    elif name == "tiny_vit":
        model, x = tiny_vit(), torch.randn(1, 3, VIT["image_size"], VIT["image_size"], generator=gen)
    else:
        model, x = getattr(torchvision.models, name)(weights=None), torch.randn(*SMALL_IMAGE, generator=gen)
    return make_nontrivial(model).eval(), x


@dataclass
class Prepared:
    name: str
    mutator: ChannelMutator
    x: torch.Tensor
    original: Resources  # count_resources of the unprepared model


@functools.cache
def prepared_model(name: str) -> Prepared:
    """Prepared once per session with L1 units; tests set the choices they need."""
    model, x = build(name)
    original = count_resources(model, x)
    mutator = ChannelMutator(channel_unit_cfg=dict(type="L1MutableChannelUnit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mutator.prepare_from_supernet(model, example_inputs=x)
    assert mutator.mutable_units, name
    return Prepared(name, mutator, x, original)


@pytest.fixture(params=MODELS)
def prepared(request) -> Prepared:
    p = prepared_model(request.param)
    p.mutator.set_choices(p.mutator.max_choices)
    return p


def random_choice_sets(mutator: ChannelMutator):
    """Seeded random choices that prune something; yields a label after setting each."""
    for seed in SEEDS:
        random.seed(seed)
        choices = mutator.sample_choices()
        while all(math.isclose(v, 1.0) for v in choices.values()):
            choices = mutator.sample_choices()
        mutator.set_choices(choices)
        yield f"seed {seed}: {choices}"


def exported(p: Prepared) -> tuple[Resources, Resources]:
    """(live count, reference count of the exported model) at the current choices."""
    static = p.mutator.to_static().eval()
    return p.mutator.resources(), count_resources(static, p.x)


def assert_matches_export(p: Prepared, label: str) -> Resources:
    live, ref = exported(p)
    static_params = sum(q.numel() for q in p.mutator.to_static().parameters())
    where = f"{p.name} at {label}"
    assert live.params == static_params == ref.params, where
    assert live.flops == ref.flops, f"{where}: live {live.flops} FLOPs, FlopCounterMode {ref.flops}"
    assert live.flops == 2 * live.macs and live.macs == ref.macs, where
    return live


# -- the reference counter ------------------------------------------------------------------------
def test_reference_resnet18_matches_documented_figures():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    res = count_resources(model, x)
    assert res.params == 11_689_512 == sum(p.numel() for p in model.parameters())
    assert res.flops == 3_628_146_688 == reference_flops(model, x)
    assert res.macs * 2 == res.flops
    assert (res.original_params, res.original_flops) == (res.params, res.flops)
    assert res.params_percent == res.macs_percent == 100.0


class TinyMHA(nn.Module):
    def __init__(self, embed: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_reference_counts_fast_path_attention():
    """Eval mode under no_grad: MHA takes a fused kernel that FlopCounterMode counts as 0."""
    length, embed = 7, 8
    model = TinyMHA(embed, heads=2).eval()
    x = torch.randn(1, length, embed)
    with torch.no_grad(), FlopCounterMode(display=False) as raw:
        model(x)
    assert raw.get_total_flops() == 0  # the trap is real here: projections and attention vanish
    fastpath = torch.backends.mha.get_fastpath_enabled()

    with torch.no_grad():
        res = count_resources(model, x)
        flops = reference_flops(model, x)
    projections = 4 * length * embed * embed  # q, k, v and output projections (self-attention)
    attention = 2 * length * length * embed  # Q·Kᵀ and A·V
    assert res.macs == projections + attention > projections > 0
    assert flops == res.flops == 2 * res.macs
    assert res.params == 4 * embed * embed + 4 * embed
    assert torch.backends.mha.get_fastpath_enabled() == fastpath  # global switch restored


def test_reference_counts_vit_attention():
    """CPU flash attention has no formula in FlopCounterMode: the tiny ViT's matmuls count."""
    model, x = build("tiny_vit")
    n, e, layers = VIT_TOKENS, VIT["hidden_dim"], VIT["num_layers"]
    patches = (VIT["image_size"] // VIT["patch_size"]) ** 2
    conv = patches * e * 3 * VIT["patch_size"] ** 2
    per_layer_linear = n * e * 3 * e + n * e * e + 2 * n * e * VIT["mlp_dim"]  # qkv, out, mlp
    head = e * VIT["num_classes"]
    linear_and_conv = conv + layers * per_layer_linear + head
    attention = layers * 2 * n * n * e
    with torch.no_grad():
        flops = reference_flops(model, x)
    assert attention > 0
    assert flops == 2 * (linear_and_conv + attention) > 2 * linear_and_conv
    assert count_resources(model, x).flops == flops


# -- the live counter against the exported model --------------------------------------------------
def test_unpruned_counts_equal_the_model(prepared):
    p = prepared
    live = p.mutator.resources()
    assert (live.params, live.macs) == (p.original.params, p.original.macs), p.name
    assert (live.original_params, live.original_macs) == (live.params, live.macs)
    assert live.flops == 2 * live.macs == live.original_flops
    assert_matches_export(p, "max choices")


def test_random_choices_equal_the_exported_model(prepared):
    p = prepared
    for label in random_choice_sets(p.mutator):
        live = assert_matches_export(p, label)
        assert live.params <= p.original.params and live.macs <= p.original.macs
        # the original figures stay those of the unpruned model
        assert (live.original_params, live.original_macs) == (p.original.params, p.original.macs)
        # a full recount agrees with the incrementally maintained state
        full = resource_counter(p.mutator).resources(recount=True)
        assert (full.params, full.macs) == (live.params, live.macs), label


def test_vit_attention_is_counted_at_every_choice():
    """The attention layer's MACs follow the hand formula with the kept embedding size, so the
    equality with FlopCounterMode cannot come from both sides counting attention as 0."""
    p = prepared_model("tiny_vit")
    mutator, n = p.mutator, VIT_TOKENS
    mutator.set_choices(mutator.max_choices)
    for label in ["max", *random_choice_sets(mutator)]:
        static = mutator.to_static().eval()
        layers = mutator.resources(by_layer=True)
        for i, block in enumerate(static.encoder.layers):
            e = block.self_attention.embed_dim
            assert e % block.self_attention.num_heads == 0
            got = layers[f"encoder.layers.encoder_layer_{i}.self_attention"].macs
            assert got == 4 * n * e * e + 2 * n * n * e, f"layer {i} at {label}"
        assert_matches_export(p, label)


# -- by layer, originals, what-ifs, incremental updates -------------------------------------------
def layer_params(static: nn.Module, layer: str) -> int:
    """Params of a counted layer of the exported model: a module, or a bare parameter."""
    try:
        return sum(q.numel() for q in static.get_submodule(layer).parameters())
    except AttributeError:
        return static.get_parameter(layer).numel()


@pytest.mark.parametrize("name", ["pattern:attention", "pattern:concat", "resnet18", "tiny_vit"])
def test_by_layer_adds_up(name):
    p = prepared_model(name)
    mutator = p.mutator
    mutator.set_choices(mutator.max_choices)
    for label in ["max", *random_choice_sets(mutator)]:
        total = mutator.resources()
        layers = mutator.resources(by_layer=True)
        assert isinstance(layers, dict) and layers
        assert all(isinstance(r, Resources) for r in layers.values())
        summed = sum(layers.values())
        assert (summed.params, summed.macs) == (total.params, total.macs), label
        assert (summed.original_params, summed.original_macs) == (p.original.params, p.original.macs)
        static = mutator.to_static()
        for layer, res in layers.items():
            assert res.params == layer_params(static, layer), f"{layer} at {label}"


def test_what_if_counts_without_changing_choices():
    p = prepared_model("resnet18")
    mutator = p.mutator
    random.seed(10)
    mutator.set_choices(mutator.sample_choices())
    before = mutator.current_choices
    now = mutator.resources()

    random.seed(11)
    what_if = mutator.sample_choices()
    hypothetical = mutator.resources(choices=what_if)
    assert mutator.current_choices == before
    assert mutator.resources() == now  # the live state is the current choices again

    mutator.set_choices(what_if)  # setting them gives the same figures as the what-if
    assert mutator.resources() == hypothetical
    assert_matches_export(p, f"what-if {what_if}")
    # a partial what-if: the other units keep their current values
    mutator.set_choices(before)
    unit = next(iter(before))
    partial = mutator.resources(choices={unit: 0.5})
    mutator.set_choices({unit: 0.5})
    assert mutator.resources() == partial
    mutator.set_choices(before)
    assert mutator.resources() == now
    layers = mutator.resources(choices=what_if, by_layer=True)
    assert sum(layers.values()).macs == hypothetical.macs and mutator.current_choices == before


@pytest.mark.parametrize("bad", [
    {"no such unit": 0.5},
    "first good then unknown",
    "first good then invalid value",
], ids=["unknown-unit", "good-then-unknown", "good-then-bad-value"])
def test_failing_what_if_leaves_choices_unchanged(bad):
    p = prepared_model("mobilenet_v2")
    mutator = p.mutator
    random.seed(20)
    mutator.set_choices(mutator.sample_choices())
    before = mutator.current_choices
    now = mutator.resources()
    first = next(iter(before))
    if bad == "first good then unknown":
        bad = {first: 0.5, "no such unit": 0.5}
    elif bad == "first good then invalid value":
        bad = {first: 0.5, list(before)[1]: 7.0}
    with pytest.raises((KeyError, ValueError)):
        mutator.resources(choices=bad)
    assert mutator.current_choices == before
    assert mutator.resources() == now
    assert_matches_export(p, "after a failing what-if")


def test_one_slider_move_is_followed():
    """One unit at a time (the incremental path), checked against the exported model."""
    p = prepared_model("mobilenet_v2")
    mutator = p.mutator
    random.seed(30)
    mutator.set_choices(mutator.sample_choices())
    mutator.resources()
    units = [u.name for u in mutator.mutable_units]
    for step, unit in enumerate(random.Random(31).sample(units, 6)):
        old, kept_before = mutator.resources(), mutator.unit(unit).activated_channels
        ratio = 0.25 if kept_before > mutator.unit(unit).num_channels // 2 else 1.0
        mutator.set_choices({unit: ratio})
        label = f"step {step}: {unit} -> {ratio}"
        new = assert_matches_export(p, label)
        grew = mutator.unit(unit).activated_channels > kept_before
        assert (new.params > old.params and new.macs > old.macs) if grew else \
            (new.params < old.params and new.macs < old.macs), label
        full = resource_counter(mutator).resources(recount=True)
        assert (full.params, full.macs) == (new.params, new.macs), label
    # and back to the full model: the totals are the originals again
    mutator.set_choices(mutator.max_choices)
    back = mutator.resources()
    assert (back.params, back.macs) == (back.original_params, back.original_macs)
    assert (back.params, back.macs) == (p.original.params, p.original.macs)
    assert back.params_percent == back.macs_percent == 100.0


@pytest.mark.parametrize("name", ["resnet18", "tiny_vit", "pattern:grouped_conv", "pattern:chunk"])
def test_each_unit_alone_moves_the_counts(name):
    """From the full model, shrinking any one unit lowers params and MACs, by exactly what the
    exported model loses; restoring it gives the originals back."""
    p = prepared_model(name)
    mutator = p.mutator
    mutator.set_choices(mutator.max_choices)
    full = mutator.resources()
    units = [u.name for u in mutator.mutable_units]
    checked = units if len(units) <= 8 else units[:: max(1, len(units) // 6)]
    for unit in units:
        mutator.set_choices({unit: mutator.unit(unit).min_choice})
        small = mutator.resources()
        assert small.params < full.params and small.macs < full.macs, unit
        if unit in checked:
            assert_matches_export(p, f"{unit} at its minimum")
        mutator.set_choices({unit: 1.0})
        assert mutator.resources() == full, unit
