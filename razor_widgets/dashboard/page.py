"""What the dashboard's page shows: at once, what the kernel is doing; then the explorer, or why
there is none.

The notebook's cell returns at once with a status line, so Voilà sends the page within about
a second of the kernel starting; the model is built and traced in a background thread (torch
is imported there too), and the explorer replaces the status line when it is ready. An error
(a model that cannot be traced, say) replaces it with the error's text instead of Voilà's
generic error page.
"""
from __future__ import annotations

import html
import os
import threading
from collections.abc import Sequence

import ipywidgets as widgets

from ..model_loading import DEFAULT_INPUT_SHAPE, DEFAULT_MODEL
from . import INPUT_SHAPE_ENV, MODEL_ENV, WORKDIR_ENV, format_shape, parse_shape

STATUS_CLASS = "razor-dashboard-status"
ERROR_CLASS = "razor-dashboard-error"
ABOUT_CLASS = "razor-dashboard-about"


def dashboard_page(spec: str | None = None, input_shape: Sequence[int] | None = None) -> widgets.VBox:
    """The page's one widget, for ``spec`` and ``input_shape`` (from the environment the command
    set when not given, else the model's own example input). It shows a status line now and
    builds the explorer in the background."""
    spec = spec or os.environ.get(MODEL_ENV, DEFAULT_MODEL)
    shape = tuple(input_shape) if input_shape else _shape_of(spec)
    os.chdir(os.environ.get(WORKDIR_ENV, os.getcwd()))  # plans are saved where the command was started
    status = widgets.HTML(_status_html(f"Building {spec} and tracing its channels on a random example, "
                                       f"{_input_words(spec, shape)}…"))
    status.add_class(STATUS_CLASS)
    page = widgets.VBox([status])
    page.explorer = None  # the PruningExplorer, once built
    threading.Thread(target=_build, args=(page, status, spec, shape), name="razor-dashboard-build",
                     daemon=True).start()
    return page


def _shape_of(spec: str) -> tuple[int, ...]:
    """The input shape the command set, else the one ``spec``'s model takes (the default where
    ``spec`` names nothing: the background build then reports why)."""
    if INPUT_SHAPE_ENV in os.environ:
        return parse_shape(os.environ[INPUT_SHAPE_ENV])
    from ..model_loading import ModelLoadError, resolve_model

    try:
        return resolve_model(spec).input_shape
    except ModelLoadError:
        return DEFAULT_INPUT_SHAPE


def _input_words(spec: str, shape: tuple[int, ...]) -> str:
    """What the page traces on, in words: 'token ids of shape (1, 8) (batch, tokens)' or
    'an input of shape (1, 3, 224, 224)'."""
    from ..model_loading import ModelLoadError, resolve_model

    try:
        return resolve_model(spec).example.with_shape(shape).describe()
    except (ModelLoadError, ValueError):
        return f"an input of shape {format_shape(shape)}"


def about_model(spec: str) -> str:
    """What the page explores, in words: a named model's description (weights it was trained to)
    and what its score measures; built models (torchvision, timm, hf:) have random weights."""
    from ..model_loading import NAMED_MODELS, ModelLoadError, resolve_model

    if spec in NAMED_MODELS:
        named = NAMED_MODELS[spec]
        text = f"{spec}: {named.description or named.target}."
        return text + (f" The score is {named.score_name}." if named.score else "")
    try:
        kind = resolve_model(spec).kind
    except ModelLoadError:
        return spec
    if kind in ("torchvision", "timm", "hf"):
        return f"{spec}: built with random weights (nothing is downloaded), so there is no score to watch."
    return f"{spec}: the model {spec.split(':')[-1]} returns, with the weights it has."


def _status_html(text: str) -> str:
    return f"<p style='font-size:1.1em'>{html.escape(text)}</p>"


def error_html(spec: str, shape: Sequence[int], error: BaseException) -> str:
    """The page's report of a model that could not be explored: the error's type and full text."""
    text = str(error).strip() or type(error).__name__
    return (f"<div style='border-left:4px solid #c62828;padding:0.5em 1em;background:#fdecea'>"
            f"<p><b>Cannot explore {html.escape(spec)}</b> (input {format_shape(shape)}): "
            f"{html.escape(type(error).__name__)}</p>"
            f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"
            f"<p>Stop the server (Ctrl-C) and start it again with another MODEL or --input-size / "
            f"--input-shape.</p></div>")


def _build(page: widgets.VBox, status: widgets.HTML, spec: str, shape: tuple[int, ...]) -> None:
    """Build the model and the explorer (in a background thread), then show it in ``page``."""
    try:
        from .. import PruningExplorer
        from ..model_loading import resolve_model

        source = resolve_model(spec)
        inputs = source.example.with_shape(shape).make()  # a random tensor, or token ids (batch x tokens)
        model = source.load()
        explorer = PruningExplorer(model, inputs, eval_fn=source.eval_fn)
        if explorer.quality is not None:  # a model with a score shows it live, and its baseline now
            explorer.quality.live.value = True
            explorer.evaluate()
    except Exception as error:  # every failure shows on the page, with its text
        status.value = error_html(spec, shape, error)
        status.remove_class(STATUS_CLASS)
        status.add_class(ERROR_CLASS)
        return
    about = widgets.HTML(f"<p>{html.escape(about_model(spec))}</p>")
    about.add_class(ABOUT_CLASS)
    page.explorer = explorer
    page.children = [about, explorer.widget]
