"""Hugging Face transformers, built tiny from config with random weights (never downloaded).

For each model: preparing works, full choices are bit-identical, the export computes what the
masked model computes at random choices, the counts equal a reference count of the export, and
whole heads (or KV groups) are units.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from razor_widgets import ChannelMutator, count_resources
from razor_widgets.analysis.unit_labels import describe_unit, unit_label, unit_role
from razor_widgets.counting.resources import REFERENCE_FLOP_FORMULAS
from razor_widgets.export.hf_export import HFConfigWarning

transformers = pytest.importorskip("transformers")
VOCAB = 128


def _llama(attn: str = "sdpa"):
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB)
    config._attn_implementation = attn
    return transformers.LlamaForCausalLM(config)


def _bert():
    """BERT with its masked-LM head, whose decoder is tied to the word embeddings."""
    return transformers.BertForMaskedLM(transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=64))


def _t5():
    """T5 as it is: its encoder's hidden states, returned next to the logits, follow the pruned model."""
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, vocab_size=VOCAB, decoder_start_token_id=0))


def _gpt2():
    """GPT-2: Conv1D layers (addmm with a transposed weight), fused q/k/v split by an
    attribute, a tied LM head."""
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=128, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
        eos_token_id=0))


def _mixtral():
    """Mixtral: grouped KV heads and 4 experts stored as fused 3-D parameters."""
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, num_local_experts=4, num_experts_per_tok=2))


BUILDERS = {"llama": _llama, "llama_eager": lambda: _llama("eager"), "bert": _bert, "t5": _t5,
            "gpt2": _gpt2, "mixtral": _mixtral}
HEADS = {"llama": 2, "llama_eager": 2, "bert": 4, "t5": 4, "gpt2": 4, "mixtral": 2}  # per unit


def _inputs(name: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if name == "t5":
        inputs["decoder_input_ids"] = ids
    return inputs


def _output(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


class Prepared:
    """A tiny model, its output before preparing, and its prepared mutator."""

    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.name = name
        self.model = BUILDERS[name]().eval()
        self.inputs = _inputs(name)
        self.original = copy.deepcopy(self.model)
        self.before = _output(self.model, self.inputs)
        self.mutator = ChannelMutator()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.mutator.prepare_from_supernet(self.model, self.inputs)


@pytest.fixture(scope="module", params=[pytest.param(name, marks=pytest.mark.sweep) for name in sorted(BUILDERS)])
def prepared(request, one_thread) -> Prepared:
    return Prepared(request.param)


def test_full_choices_are_bit_identical(prepared):
    prepared.mutator.set_max_choices()
    assert torch.equal(_output(prepared.model, prepared.inputs), prepared.before)


def test_export_matches_masked_and_counts_are_exact(prepared):
    mutator = prepared.mutator
    for seed in range(3):
        torch.manual_seed(seed)
        mutator.set_choices(mutator.sample_choices())
        masked = _output(prepared.model, prepared.inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HFConfigWarning)  # random choices differ per layer
            static = mutator.to_static()
        assert torch.allclose(_output(static, prepared.inputs), masked, atol=1e-5, rtol=1e-4)
        predicted, counted = mutator.resources(), count_resources(static, prepared.inputs)
        assert (predicted.params, predicted.macs) == (counted.params, counted.macs)
    mutator.set_max_choices()


def test_attention_flops_are_exact_on_the_cpu_flash_path(prepared):
    """Under no_grad the CPU flash SDPA kernel runs; its FLOPs are counted (trap 1)."""
    prepared.mutator.set_min_choices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = prepared.mutator.to_static()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=REFERENCE_FLOP_FORMULAS) as counter:
        static(**prepared.inputs)
    assert counter.get_total_flops() == prepared.mutator.resources().flops
    prepared.mutator.set_max_choices()


def _head_units(mutator) -> list:
    return [u for u in mutator.mutable_units if any(
        c.expand_ratio > 1 and not c.is_output_channel for c in u.channels)]


def test_whole_heads_are_units(prepared):
    """Heads split by ``view(*shape, -1, self.head_dim)`` give units whose channels are heads
    (KV groups with grouped KV heads) of 16 channels each."""
    units = [u for u in _head_units(prepared.mutator) if u.num_channels == HEADS[prepared.name]]
    assert len(units) >= 2
    for unit in units:
        assert unit_role(unit).kind in ("heads", "kv_groups") and unit_role(unit).head_dim == 16


def test_the_hidden_size_is_one_unit(prepared):
    """The residual stream (embeddings, norms, every block's input and output, an MoE router)
    is one unit."""
    hidden = [u for u in prepared.mutator.mutable_units if unit_role(u).kind == "hidden"]
    assert len(hidden) == 1
    assert describe_unit(hidden[0]) == "hidden size: 64"
    layers = {c.name for c in hidden[0].channels}
    assert any(name.endswith(("embed_tokens.weight", "word_embeddings.weight", "shared.weight", "wte.weight"))
               for name in layers)


def test_moe_experts_prune_their_intermediate_size(prepared):
    """Mixtral's experts are 3-D parameters run by a grouped matmul: one unit per MoE layer, the
    same positions in every expert; the router reads the hidden size. Whole experts stay."""
    if prepared.name != "mixtral":
        pytest.skip("an MoE model")
    experts = [u for u in prepared.mutator.mutable_units if unit_role(u).kind == "experts"]
    assert len(experts) == 2 and all(u.num_channels // u.repeats == 128 for u in experts)
    assert {c.param_dim for c in experts[0].channels} == {1, 2}
    hidden = next(u for u in prepared.mutator.mutable_units if unit_role(u).kind == "hidden")
    assert "model.layers.0.mlp.gate" in {c.name for c in hidden.channels}
    router = next(u for u in prepared.mutator.units if u.name.startswith("model.layers.0.mlp.gate_"))
    assert not router.is_mutable  # its outputs are the experts, read by softmax and top-k


LAYERS = ["hidden size", "{attn} of layer 0", "{mlp} of layer 0", "{attn} of layer 1", "{mlp} of layer 1"]
LABELS = {
    "llama": [x.format(attn="KV groups", mlp="MLP") for x in LAYERS],
    "bert": [x.format(attn="heads", mlp="MLP") for x in LAYERS],
    "gpt2": [x.format(attn="heads", mlp="MLP") for x in LAYERS],
    "mixtral": [x.format(attn="KV groups", mlp="expert MLPs") for x in LAYERS],
    "t5": ["hidden size", "heads of encoder layers 0–1", "MLP of encoder layer 0", "MLP of encoder layer 1",
           "heads of decoder layers 0–1 (layer.0.SelfAttention)",
           "heads of decoder layers 0–1 (layer.1.EncDecAttention)", "MLP of decoder layer 0", "MLP of decoder layer 1"],
}
LABELS["llama_eager"] = LABELS["llama"]


def test_units_say_what_they_are(prepared):
    """Every mutable unit's label, in model order: the hidden size, then per layer its heads
    (KV groups with grouped KV heads) and its MLP (the experts' MLP in an MoE layer). T5 shares
    each stack's relative position bias over its layers: its heads are one unit per stack."""
    assert [unit_label(u) for u in prepared.mutator.mutable_units] == LABELS[prepared.name]
    descriptions = {describe_unit(u) for u in prepared.mutator.mutable_units}
    expected = {
        "llama": "KV groups of layer 1: 2 × 2 query heads of 16 (model.layers.1.self_attn)",
        "llama_eager": "MLP of layer 0: 128 (model.layers.0.mlp)",
        "bert": "heads of layer 0: 4 of 16 (bert.encoder.layer.0.attention)",
        "t5": "MLP of decoder layer 1: 128 (decoder.block.1.layer.2.DenseReluDense)",
        "gpt2": "heads of layer 1: 4 of 16 (transformer.h.1.attn)",
        "mixtral": "expert MLPs of layer 1: 128 in every expert (model.layers.1.mlp.experts)",
    }[prepared.name]
    assert expected in descriptions


def test_an_export_round_trips_through_save_pretrained(tmp_path):
    """Every layer pruned alike: the config says the new sizes and from_pretrained rebuilds the
    same model. Different head counts per layer: a warning says HF cannot represent it."""
    p = Prepared("llama")
    p.mutator.set_choices({u.name: 0.5 for u in p.mutator.mutable_units})
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        static = p.mutator.to_static()
    config = static.config
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.head_dim) == (32, 2, 1, 64, 16)
    static.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(_output(reloaded, p.inputs), _output(static, p.inputs))
    first = next(u for u in p.mutator.mutable_units if unit_role(u).kind == "kv_groups")
    p.mutator.set_choices({first.name: 1.0})
    with pytest.warns(HFConfigWarning, match="num_attention_heads differs per layer"):
        uneven = p.mutator.to_static()
    assert torch.allclose(_output(uneven, p.inputs), _output(p.model, p.inputs), atol=1e-5)
    assert uneven.config.razor_widgets_unrepresentable


def test_grouped_kv_prunes_a_kv_head_with_its_group():
    """Llama with 4 query heads over 2 KV heads: one unit of 2 KV groups per layer; pruning
    one removes 2 query heads and 1 KV head, and the export still runs both SDPA paths."""
    p = Prepared("llama")
    unit = next(u for u in p.mutator.mutable_units if u.name.startswith("model.layers.0.self_attn.q_proj"))
    assert unit.num_channels == 2
    ratios = {c.name.rpartition(".")[2]: c.expand_ratio for c in unit.channels}
    assert ratios["q_proj"] == ratios["o_proj"] == 32 and ratios["k_proj"] == ratios["v_proj"] == 16
    p.mutator.set_choices({unit.name: 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)
        static = p.mutator.to_static()
    attn = static.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)
    assert attn.num_key_value_groups == 2 and attn.head_dim == 16
    assert torch.allclose(_output(static, p.inputs), _output(p.model, p.inputs), atol=1e-5)


def test_two_tensor_min_is_elementwise():
    """``torch.min(a, b)`` (T5's relative positions) is elementwise, not a reduction."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(4, 8), torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.c(torch.min(self.a(x), self.b(x)) + torch.max(self.a(x), self.b(x)))

    mutator = ChannelMutator()
    mutator.prepare_from_supernet(Net(), torch.randn(2, 4))
    (unit,) = mutator.mutable_units
    assert {c.name for c in unit.output_related} == {"a", "b"}


def test_explicit_scale_does_not_fix_the_head_dim():
    """With ``scale=`` given, SDPA's scale does not follow the head size: in head_dims mode
    the same positions of every head of q and k are pruned together."""

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_dim, self.scaling = 8, 8 ** -0.5
            self.q, self.k, self.v, self.o = (torch.nn.Linear(32, 32) for _ in range(4))

        def forward(self, x):
            shape = (*x.shape[:-1], -1, self.head_dim)
            q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
            return self.o(out.transpose(1, 2).reshape(*x.shape[:-1], -1))

    x = torch.randn(2, 5, 32)
    for mode, expected in (("heads", 4), ("head_dims", 8)):
        net = Attention()
        mutator = ChannelMutator(parse_cfg=dict(type="ChannelAnalyzer", attention=mode))
        mutator.prepare_from_supernet(net, x)
        qk = [u for u in mutator.mutable_units if any(c.name == "q" for c in u.output_related)]
        assert len(qk) == 1 and qk[0].num_channels // qk[0].repeats == expected
        assert {"q", "k"} <= {c.name for c in qk[0].output_related}
        mutator.set_choices({qk[0].name: 0.5})
        with torch.no_grad():
            assert torch.allclose(mutator.to_static()(x), net(x), atol=1e-6)


def test_a_rule_that_meets_an_unexpected_form_freezes_with_a_warning(monkeypatch):
    """A rule that raises does not escape: the op's channels are fixed, with a warning naming
    the model, the op and the module."""
    from razor_widgets.analysis import rules

    original = rules.passthrough

    def broken(ctx, node):
        if node.name == "relu":
            raise IndexError("an unexpected form")
        return original(ctx, node)

    monkeypatch.setattr(rules, "passthrough", broken)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    net[1] = _FunctionalRelu()
    mutator = ChannelMutator()
    expected = r"Sequential: no channel rule for op 'relu' in '1' \(its rule does not handle this form: IndexError"
    with pytest.warns(UserWarning, match=expected):
        mutator.prepare_from_supernet(net, torch.randn(2, 4))
    assert not mutator.mutable_units


class _FunctionalRelu(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x)


class _RMSBlock(torch.nn.Module):
    """torch's own nn.RMSNorm in a residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.norm = torch.nn.RMSNorm(16)
        self.up, self.down = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)
        self.final = torch.nn.RMSNorm(16)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.down(torch.relu(self.up(self.norm(x))))
        return self.head(self.final(x))


def test_torch_rms_norm_averages_over_the_kept_channels():
    torch.manual_seed(0)
    net = _RMSBlock().eval()
    with torch.no_grad():
        net.norm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(0, 32, (2, 6))
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(net, ids)
    hidden = next(u for u in mutator.mutable_units if unit_role(u).kind == "hidden")
    assert {"norm", "final", "embed.weight"} <= {c.name for c in hidden.channels}
    mutator.set_choices({hidden.name: 0.5})
    static = mutator.to_static()
    assert static.norm.normalized_shape == (8,)
    with torch.no_grad():
        assert torch.allclose(static(ids), net(ids), atol=1e-6)
    assert (mutator.resources().params, mutator.resources().macs) == (
        count_resources(static, ids).params, count_resources(static, ids).macs)


class _ShapeOnlySlice(torch.nn.Module):
    """BART reads ``x[:, :, -1]`` only for its shape (the positions' count)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)
        self.pos = torch.nn.Embedding(16, 8)

    def forward(self, x):
        h = self.a(x)
        tokens = h[:, :, -1].shape[1]
        return self.b(h + self.pos(torch.arange(tokens)))


def test_a_slice_read_only_for_its_shape_keeps_the_channels_free():
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(_ShapeOnlySlice(), torch.randn(2, 5, 4))
    (unit,) = mutator.mutable_units
    assert {c.name for c in unit.channels} == {"a", "b", "pos.weight"}
