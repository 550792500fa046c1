"""finetune(): recovery training of exported and masked models, with and without a teacher."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from razor_widgets import ChannelMutator, IteAlgorithm, LossHistory, finetune, full_choice_copy
from razor_widgets.quality.finetune import kd_loss

from helpers import prepare


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def quadrant_batches(n_batches: int = 8, size: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """8x8 images; the label is the brightest quadrant: learnable in a few dozen steps."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        x = torch.rand(size, 1, 8, 8, generator=gen)
        label = torch.randint(0, 4, (size,), generator=gen)
        for i, q in enumerate(label.tolist()):
            r, c = divmod(q, 2)
            x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.7
        batches.append((x, label))
    return batches


@pytest.fixture
def pruned(one_thread) -> tuple[ChannelMutator, nn.Module, nn.Module]:
    """A prepared (masked) CNN at half its channels by L1, and the unpruned original."""
    model = small_cnn()
    mutator, original = prepare(model, torch.randn(2, 1, 8, 8), unit="L1MutableChannelUnit")
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    return mutator, model, original


def mean_kl(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    student.eval(), teacher.eval()
    with torch.no_grad():
        return float(kd_loss(student(x), teacher(x), 1.0))


def test_the_loss_decreases_on_a_small_task(one_thread) -> None:
    model = small_cnn()
    history = finetune(model, quadrant_batches(), steps=80, lr=1e-2, progress=False)
    assert isinstance(history, LossHistory) and len(history) == 80 and not history.distilled
    assert history.mean(last=10) < 0.5 * history.mean()  # mean of the last 10 below half the average
    assert history.mean(last=10) < 0.6 * history.first
    assert "80 steps" in history.summary()


def test_a_masked_model_stays_pruned_and_its_export_equals_it(pruned) -> None:
    mutator, model, original = pruned
    choices = mutator.current_choices
    masks = {u.name: u.current_mask.clone() for u in mutator.mutable_units}
    shapes_before = {k: v.shape for k, v in mutator.to_static().state_dict().items()}
    raw = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert model.training
    history = finetune(mutator, quadrant_batches(), steps=40, lr=1e-2, teacher=mutator, progress=False)
    assert history.distilled and model.training
    assert mutator.current_choices == choices
    assert all(torch.equal(u.current_mask, masks[u.name]) for u in mutator.mutable_units)
    # weights of pruned channels got no gradient: unchanged; kept ones trained
    params = dict(model.named_parameters())  # the raw tensors (a dynamic op's .weight is masked)
    checked = 0
    for unit in mutator.mutable_units:
        for channel in unit.channels:  # every layer side the unit prunes: writers, norms and readers
            for kind in ("weight", "bias") if channel.is_output_channel else ("weight",):
                name = f"{channel.name}.{kind}"
                if name not in params:
                    continue
                dim = 0 if channel.is_output_channel or params[name].dim() == 1 else 1
                pruned = torch.zeros(params[name].shape[dim], dtype=torch.bool)
                pruned[channel.start:channel.end] = ~unit.channel_mask(channel)
                assert torch.equal(params[name].index_select(dim, pruned.nonzero().squeeze(1)),
                                   raw[name].index_select(dim, pruned.nonzero().squeeze(1))), name
                checked += 1
    assert checked >= 9  # conv and bn weights and biases of three units, the readers' weights
    assert not all(torch.equal(p, raw[name]) for name, p in params.items())  # the kept weights trained
    small = mutator.to_static().eval()
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes_before
    model.eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)


def test_a_prepared_teacher_is_the_full_model_and_the_choices_stay(pruned) -> None:
    mutator, model, original = pruned
    choices, masks = mutator.current_choices, [u.current_mask for u in mutator.mutable_units]
    full = full_choice_copy(mutator).eval()
    original.eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(full(x), original(x))
    assert mutator.current_choices == choices
    assert all(u.current_mask is m for u, m in zip(mutator.mutable_units, masks))
    assert full[0].weight.data_ptr() != dict(model.named_parameters())["0.weight"].data_ptr()


def test_an_iterative_algorithm_teaches_at_full_choices(one_thread) -> None:
    model = small_cnn()
    algorithm = IteAlgorithm(copy.deepcopy(model), target_pruning_ratio=0.5, example_inputs=torch.rand(2, 1, 8, 8))
    algorithm.step()
    choices = algorithm.mutator.current_choices
    history = finetune(algorithm.architecture, quadrant_batches(n_batches=2), steps=3, teacher=algorithm,
                       progress=False)
    assert history.distilled and algorithm.mutator.current_choices == choices


def test_distillation_pulls_the_student_towards_the_teacher(pruned) -> None:
    mutator, _, original = pruned
    finetune(original, quadrant_batches(seed=1), steps=60, lr=1e-2, progress=False)  # a teacher that knows
    student = mutator.to_static()
    inputs = [x for x, _ in quadrant_batches(seed=2)]  # no labels: the KL term alone
    held_out = torch.cat([x for x, _ in quadrant_batches(n_batches=2, seed=3)])
    before = mean_kl(student, original, held_out)
    history = finetune(student, inputs, steps=150, lr=3e-3, teacher=original, progress=False)
    after = mean_kl(student, original, held_out)
    assert history.distilled and after < 0.5 * before, (before, after)


def test_an_exported_student_with_labels_and_teacher_mixes_both_losses(pruned) -> None:
    mutator, _, original = pruned
    student = mutator.to_static()
    history = finetune(student, quadrant_batches(), steps=5, teacher=original, alpha=1.0, progress=False)
    twin = mutator.to_static()
    plain = finetune(twin, quadrant_batches(), steps=5, progress=False)
    assert history.losses == pytest.approx(plain.losses)  # alpha=1: the KL term weighs nothing


def test_a_given_loss_fn_and_optimizer_are_used(one_thread) -> None:
    model = small_cnn()
    seen = []

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(target.shape)
        return torch.nn.functional.mse_loss(output, torch.nn.functional.one_hot(target, 4).float())

    history = finetune(model, quadrant_batches(n_batches=2), steps=3, loss_fn=loss_fn, progress=False,
                       optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    assert seen == [(32,)] * 3 and len(history) == 3


def test_a_one_shot_iterator_is_replayed(one_thread) -> None:
    model = small_cnn()
    history = finetune(model, iter(quadrant_batches(n_batches=2)), steps=7, progress=False)
    assert len(history) == 7


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=[]), "no batches"),
    (dict(steps=0), "steps must be a positive int"),
    (dict(steps=-3), "steps must be a positive int"),
    (dict(steps=2.5), "steps must be a positive int"),
    (dict(lr=0.0), "lr must be a positive"),
    (dict(alpha=1.5), "alpha"),
    (dict(temperature=0), "temperature"),
    (dict(teacher=nn.Sequential(nn.Flatten(), nn.Linear(64, 10))), r"shape \(32, 4\) and the teacher's \(32, 10\)"),
    (dict(data=[torch.rand(4, 1, 8, 8)]), "no targets"),
    ("itself", "the teacher is a prepared .masked. model"),
])
def test_bad_input_raises_and_changes_nothing(pruned, kwargs, message) -> None:
    mutator, model, _ = pruned
    model.train()
    kwargs = dict(teacher=model) if kwargs == "itself" else kwargs
    args = dict(data=quadrant_batches(n_batches=1), steps=3, progress=False) | kwargs
    choices, before = mutator.current_choices, state(model)
    with pytest.raises(ValueError, match=message):
        finetune(model, **args)
    assert mutator.current_choices == choices and model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_unprepared_mutator_or_a_wrong_type_is_refused(one_thread) -> None:
    with pytest.raises(ValueError, match="not prepared"):
        finetune(ChannelMutator(), quadrant_batches(n_batches=1), steps=1)
    with pytest.raises(TypeError, match="teacher must be a nn.Module"):
        finetune(small_cnn(), quadrant_batches(n_batches=1), steps=1, teacher="resnet")


def test_modes_come_back(pruned) -> None:
    _, model, original = pruned
    model.eval()
    model[1].train()  # a mixed state is restored as it was
    original.train()
    modes = [m.training for m in model.modules()]
    assert any(modes) and not all(modes)
    finetune(model, quadrant_batches(n_batches=1), steps=2, teacher=original, progress=False)
    assert [m.training for m in model.modules()] == modes
    assert original.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_a_masked_model_trains_and_comes_back(pruned) -> None:
    mutator, model, original = pruned
    choices = mutator.current_choices
    history = finetune(model, quadrant_batches(), steps=60, lr=1e-2, teacher=copy.deepcopy(original),
                       device="cuda", progress=False)
    assert history.mean(last=10) < history.first
    assert next(model.parameters()).device.type == "cpu"
    assert mutator.current_choices == choices
    small = mutator.to_static().eval()
    model.eval()
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)
