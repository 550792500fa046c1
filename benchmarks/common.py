"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import platform
import warnings
from collections.abc import Iterator

import torch
import torchvision

import razor_widgets


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings, logging and stray prints of the engines being timed."""
    sink = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
        finally:
            logging.disable(previous)


def versions() -> str:
    """The software a benchmark ran on, for its report."""
    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, razor_widgets {razor_widgets.__version__}")


def model_names(parser: argparse.ArgumentParser, items: list[str]) -> list[str]:
    """``--models`` as given (space or comma separated) as a list of names; stops with the
    parser's usage error when a name is not a torchvision model builder."""
    models = [m for item in items for m in item.split(",") if m]
    unknown = [m for m in models if not callable(getattr(torchvision.models, m, None))]
    if unknown:
        parser.error(f"unknown torchvision model(s): {', '.join(unknown)}")
    return models
