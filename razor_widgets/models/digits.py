"""Real data that ships offline: scikit-learn's handwritten digits and a small CNN trained on them.

``load_digits()`` reads 1,797 images of 8x8 pixels (values 0-16, ten classes) from inside the
scikit-learn wheel: no download. The split is fixed (stratified, 25 % test, seed 0), so every
accuracy printed from it is comparable. ``trained_digits_cnn()`` trains the CNN once (a few
seconds on one CPU thread) and caches its weights in the user's cache directory.
scikit-learn is the optional ``[data]`` extra: it is imported only when the data is read.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CACHE_ENV", "DigitsCNN", "DigitsData", "digits_accuracy", "digits_cache_dir", "digits_data",
           "digits_example_inputs", "digits_loader", "digits_test_batches", "train_digits_cnn",
           "trained_digits_cnn"]

CACHE_ENV = "RAZOR_WIDGETS_CACHE"  # overrides where the trained weights are kept
WEIGHTS_VERSION = 1  # bump when the model or its training changes: old caches are then ignored
TRAIN_EPOCHS = 8
SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class DigitsData:
    """The fixed split: images as float tensors N x 1 x 8 x 8 scaled to [0, 1], labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@functools.lru_cache(maxsize=1)
def digits_data() -> DigitsData:
    """scikit-learn's digits, split once: 1,347 training and 450 test images (stratified)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError("the digits data needs scikit-learn: pip install 'razor_widgets[data]'") from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(list(range(len(labels))), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=digits.target)
    train, test = torch.tensor(train), torch.tensor(test)
    return DigitsData(images[train], labels[train], images[test], labels[test])


class DigitsCNN(nn.Module):
    """Three conv + batch-norm + ReLU blocks (16, 32, 64 channels; 8x8 -> 4x4 -> 2x2) and a
    linear classifier: 26 k params, 1.2 M MACs. Three prunable channel units."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1, self.bn1 = nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2)
        self.conv3, self.bn3 = nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3)
        self.fc = nn.Linear(c3 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of 1x8x8 digit images."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        return self.fc(torch.flatten(x, 1))


def digits_loader(batch_size: int = 64, seed: int = 0, split: str = "train") -> torch.utils.data.DataLoader:
    """A DataLoader of ``(images, labels)``; the training split is shuffled by a seeded generator."""
    data = digits_data()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = ((data.train_images, data.train_labels) if split == "train"
                      else (data.test_images, data.test_labels))
    dataset = torch.utils.data.TensorDataset(images, labels)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=split == "train",
                                       generator=generator)


def digits_test_batches(batch_size: int = 450) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split as a list of ``(images, labels)`` batches (one batch by default)."""
    data = digits_data()
    return [(data.test_images[i:i + batch_size], data.test_labels[i:i + batch_size])
            for i in range(0, len(data.test_labels), batch_size)]


def digits_example_inputs() -> torch.Tensor:
    """Two test images (2 x 1 x 8 x 8): example inputs for tracing the CNN."""
    return digits_data().test_images[:2].clone()


def digits_accuracy(model: nn.Module) -> float:
    """Top-1 accuracy on the 450 test images, in [0, 1] (higher is better: usable as an
    ``eval_fn``). Runs in eval mode without gradients; the model's modes come back as they were."""
    data = digits_data()
    modes = {module: module.training for module in model.modules()}
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        model.eval()
        with torch.no_grad():
            predicted = model(data.test_images.to(device)).argmax(dim=1).cpu()
    finally:
        for module, training in modes.items():
            module.training = training
    return float((predicted == data.test_labels).float().mean())


def train_digits_cnn(epochs: int = TRAIN_EPOCHS, seed: int = 0, lr: float = 3e-3,
                     model: nn.Module | None = None) -> nn.Module:
    """Train a :class:`DigitsCNN` (or ``model``) with Adam from a fixed seed; returns it in eval mode.
    Eight epochs reach about 99 % test accuracy in a few seconds. Training runs on one CPU thread
    (layers this small only lose time to more threads, many times over on a busy machine); the
    caller's thread count and random state are left as they were (the seed is used in a fork)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(epochs, seed, lr, model)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, seed: int, lr: float, model: nn.Module | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN() if model is None else model
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loader = digits_loader(seed=seed)  # one generator: a new shuffle every epoch
        model.train()
        for _ in range(epochs):
            for images, labels in loader:
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


def digits_cache_dir() -> Path:
    """Where trained weights are kept: ``$RAZOR_WIDGETS_CACHE`` if set, else the platform's cache
    directory (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) + ``/razor_widgets``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "razor_widgets"


def trained_digits_cnn(cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> nn.Module:
    """The trained digits CNN, in eval mode. The first call trains it (printing a message) and
    saves its weights in ``cache_dir`` (default :func:`digits_cache_dir`); later calls load them.
    An unreadable cache file is replaced. Takes no required arguments, so the command line can
    build it by name (``razor_widgets.models.digits:trained_digits_cnn``)."""
    path = Path(cache_dir) if cache_dir is not None else digits_cache_dir()
    path = path / f"digits_cnn_v{WEIGHTS_VERSION}.pt"
    if path.is_file() and not retrain:
        try:
            model = DigitsCNN()
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as error:  # a truncated or foreign file: train again
            print(f"razor_widgets: cannot read {path} ({type(error).__name__}); training again", file=sys.stderr)
    print(f"razor_widgets: training the digits CNN once ({TRAIN_EPOCHS} epochs, a few seconds); "
          f"caching its weights in {path}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    model = train_digits_cnn()
    _save_atomically(model.state_dict(), path)
    print(f"razor_widgets: trained in {time.perf_counter() - start:.1f} s, test accuracy "
          f"{digits_accuracy(model):.1%}", file=sys.stderr, flush=True)
    return model.eval()


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
