"""The digits data and CNN: a fixed split, >= 95 % test accuracy, weights cached and reloaded."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

from razor_widgets import ChannelMutator  # noqa: E402
from razor_widgets.models import digits  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory, one_thread) -> Path:
    """A cache directory holding weights trained once for this module."""
    path = tmp_path_factory.mktemp("cache")
    digits.trained_digits_cnn(cache_dir=path)
    return path


def test_the_split_is_fixed_and_stratified() -> None:
    data = digits.digits_data()
    assert data.train_images.shape == (1347, 1, 8, 8) and data.test_images.shape == (450, 1, 8, 8)
    assert float(data.train_images.min()) == 0.0 and float(data.train_images.max()) == 1.0
    assert torch.bincount(data.test_labels).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
    assert torch.equal(digits.digits_example_inputs(), data.test_images[:2])
    assert sum(len(y) for _, y in digits.digits_test_batches(100)) == 450
    assert sum(len(y) for _, y in digits.digits_loader()) == 1347


def test_the_trained_cnn_reaches_95_percent_and_reloads_the_same_weights(cache, capsys) -> None:
    model = digits.trained_digits_cnn(cache_dir=cache)
    assert "training" not in capsys.readouterr().err  # loaded, not trained again
    assert not model.training
    assert digits.digits_accuracy(model) >= 0.95
    again = digits.trained_digits_cnn(cache_dir=cache)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert [p.name for p in cache.iterdir()] == [f"digits_cnn_v{digits.WEIGHTS_VERSION}.pt"]


def test_training_is_reproducible_and_leaves_the_random_state(one_thread) -> None:
    state = torch.random.get_rng_state()
    torch.set_num_threads(2)
    try:
        a, b = digits.train_digits_cnn(epochs=1), digits.train_digits_cnn(epochs=1)
        assert torch.get_num_threads() == 2  # trained on one thread, the caller's count restored
    finally:
        torch.set_num_threads(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_first_call_trains_with_a_message_and_a_bad_cache_file_is_replaced(tmp_path, monkeypatch,
                                                                               capsys) -> None:
    monkeypatch.setattr(digits, "train_digits_cnn", functools.partial(digits.train_digits_cnn, epochs=0))
    monkeypatch.setenv(digits.CACHE_ENV, str(tmp_path / "mine"))
    assert digits.digits_cache_dir() == tmp_path / "mine"
    digits.trained_digits_cnn()
    err = capsys.readouterr().err
    assert "training the digits CNN once" in err and str(tmp_path / "mine") in err
    path = tmp_path / "mine" / f"digits_cnn_v{digits.WEIGHTS_VERSION}.pt"
    path.write_bytes(b"not a checkpoint")
    model = digits.trained_digits_cnn()
    assert "cannot read" in capsys.readouterr().err
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())


def test_the_platform_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(digits.CACHE_ENV, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert digits.digits_cache_dir() == tmp_path / "razor_widgets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert digits.digits_cache_dir() == Path.home() / ".cache" / "razor_widgets"


def test_accuracy_is_an_eval_fn_that_keeps_modes_and_the_cnn_prunes(cache) -> None:
    model = digits.trained_digits_cnn(cache_dir=cache).train()
    score = digits.digits_accuracy(model)
    assert model.training and 0.0 <= score <= 1.0
    mutator = ChannelMutator()
    mutator.prepare_from_supernet(model, example_inputs=digits.digits_example_inputs())
    assert [u.num_channels for u in mutator.mutable_units] == [16, 32, 64]
    mutator.set_choices({name: 0.5 for name in mutator.current_choices})
    small = mutator.to_static()
    assert digits.digits_accuracy(small) == digits.digits_accuracy(model)  # the export computes the masked model


def test_without_scikit_learn_the_error_says_what_to_install(monkeypatch) -> None:
    digits.digits_data.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match=r"razor_widgets\[data\]"):
            digits.digits_data()
    finally:
        digits.digits_data.cache_clear()


def test_the_command_line_builds_it_by_name_from_the_cache(cache) -> None:
    """The name ``digits`` loads the cached CNN on its own 1x1x8x8 input, in every command."""
    env = {**os.environ, digits.CACHE_ENV: str(cache)}
    command = [sys.executable, "-m", "razor_widgets", "units", "digits", "--choice"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"conv1_(0, 16)_16": 1.0, "conv2_(0, 32)_32": 1.0, "conv3_(0, 64)_64": 1.0}
    assert "training" not in result.stderr


def test_the_explorer_scores_the_digits_cnn_by_its_test_accuracy(cache) -> None:
    """The pieces ``razor-widgets dashboard digits`` needs: the cached CNN, its example input and
    its test accuracy as the explorer's eval_fn."""
    from razor_widgets import PruningExplorer

    model = digits.trained_digits_cnn(cache_dir=cache)
    full = digits.digits_accuracy(model)
    explorer = PruningExplorer(model, digits.digits_example_inputs(), eval_fn=digits.digits_accuracy)
    assert explorer.evaluate() == full >= 0.95
    explorer.apply_budget(50, "MACs", "uniform")
    assert explorer.evaluate() == digits.digits_accuracy(explorer.export())


def test_the_dashboard_page_of_digits_shows_its_test_accuracy_live(cache, monkeypatch) -> None:
    """``razor-widgets dashboard digits``: the explorer scores choices by the CNN's test accuracy,
    live, and the page shows the baseline score as soon as it opens."""
    import time

    from razor_widgets.dashboard.page import dashboard_page

    monkeypatch.setenv(digits.CACHE_ENV, str(cache))
    page = dashboard_page("digits")
    deadline = time.monotonic() + 120
    while page.explorer is None and time.monotonic() < deadline:
        assert "Cannot explore" not in page.children[0].value
        time.sleep(0.2)
    explorer = page.explorer
    full = digits.digits_accuracy(digits.trained_digits_cnn(cache_dir=cache))
    assert explorer.quality.live.value
    assert f"{full:.4g}" in explorer.quality.score.value
    explorer.apply_budget(50, "MACs", "uniform")
    assert explorer.evaluate() == digits.digits_accuracy(explorer.export())
