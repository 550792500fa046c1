"""The explorer's Latency counter and its "Profile latency" button with a progress bar.

The counter is a lookup in the mutator's latency table (``mutator.latency()``), so it follows every
slider event like the other counters. Profiling measures layers for a while: it runs in a thread on a
copy of the mutator (the sliders stay free and their moves never meet the profile's own choices),
shows its progress, can be stopped (the button turns into "Stop") and resumes from the disk cache.
"""
from __future__ import annotations

import copy
import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import torch

from ..counting.latency_profile import LatencyProfileStopped, ProfileProgress, profile_latency
from .latency_steps_view import UnitStepPlot

NOT_MEASURED = "not measured yet: Profile latency times this model's layers on this machine"


class LatencyPanel:
    """The latency counter (``text`` holds what it shows), batch and threads, and the profile button."""

    def __init__(self, mutator: Any, profile_kwargs: dict | None = None,
                 on_table: Callable[[], None] | None = None) -> None:
        self.mutator = mutator
        self.on_table = on_table  # called once a table exists (the budget control offers Latency)
        self.profile_kwargs = dict(profile_kwargs or {})
        self.label = widgets.HTML()
        self.batch = widgets.BoundedIntText(value=1, min=1, max=4096, description="batch",
                                            layout=widgets.Layout(width="130px"))
        self.threads = widgets.BoundedIntText(value=torch.get_num_threads(), min=1, max=1024, description="threads",
                                              layout=widgets.Layout(width="140px"))
        self.button = widgets.Button(description="Profile latency", icon="stopwatch",
                                     tooltip="time this model's layers at several channel counts (cached on disk)")
        self.button.on_click(lambda _: self.toggle())
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(display="none"))
        self.progress_text = widgets.HTML()
        self.row = widgets.HBox([self.label, self.batch, self.threads, self.button, self.progress,
                                 self.progress_text], layout=widgets.Layout(align_items="center"))
        self.steps = UnitStepPlot(mutator, measure_kwargs=self.profile_kwargs)  # the selected unit's step curve
        self.widget = widgets.VBox([self.row, self.steps.widget])
        self.text = ""
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._shown_at = 0.0
        self.update()

    # -- the counter (every slider event: a lookup) ---------------------------------------------
    def update(self) -> None:
        """Show the predicted latency at the current choices (or that there is no table yet)."""
        if getattr(self.mutator, "latency_table", None) is None:
            self.text = f"Latency {NOT_MEASURED}"
        else:
            lat = self.mutator.latency()
            self.text = (f"Latency {lat.ms:.2f} ms of {lat.original_ms:.2f} ms ({lat.percent:.1f} %) · batch "
                         f"{lat.batch_size}, {lat.threads} thread{'s' if lat.threads != 1 else ''}, {lat.device}, "
                         f"noise ±{100 * lat.noise:.1f} %")
        head, _, rest = self.text.partition(" ")
        self.label.value = f"<b>{head}</b> {html.escape(rest)}"
        self.steps.refresh()

    # -- profiling (a thread on a copy of the mutator) ------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a profile is running."""
        return self._thread is not None and self._thread.is_alive()

    def toggle(self) -> None:
        """Start a profile, or ask the running one to stop (what the button does)."""
        if self.running:
            self._stop = True
            self.button.description = "Stopping…"
            return
        self.start()

    def start(self, wait: bool = False) -> None:
        """Profile at the batch and threads shown; ``wait=True`` returns when it has finished."""
        if self.running:
            raise RuntimeError("a latency profile is running already")
        self._stop, self.error = False, None
        self.progress.value, self.progress.layout.display = 0.0, ""
        self.progress_text.value = "starting…"
        self.button.description, self.button.icon = "Stop", "stop"
        kwargs = {"batch_size": int(self.batch.value), "threads": int(self.threads.value), **self.profile_kwargs}
        self._thread = threading.Thread(target=self._run, args=(copy.deepcopy(self.mutator), kwargs), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()

    def _run(self, mutator: Any, kwargs: dict) -> None:
        try:
            table = profile_latency(mutator, progress=self._show_progress, should_stop=lambda: self._stop, **kwargs)
        except LatencyProfileStopped as stopped:
            self.progress_text.value = html.escape(f"{stopped}".split(";")[0] + ": Profile latency resumes it")
        except Exception as exc:  # noqa: BLE001 (shown in the panel, never raised into the event loop)
            self.error = f"{type(exc).__name__}: {exc}"
            self.progress_text.value = f"<span style='color:#b00020'>{html.escape(self.error)}</span>"
        else:
            self.mutator.latency_table = table
            self.progress_text.value = html.escape(
                f"{table.measured} timings in {table.seconds:.1f} s ({table.cached} from the cache)")
            self.update()
            if self.on_table is not None:
                self.on_table()
        finally:
            self.progress.layout.display = "none"
            self.button.description, self.button.icon = "Profile latency", "stopwatch"

    def _show_progress(self, progress: ProfileProgress) -> None:
        now = time.monotonic()
        if progress.done < progress.total and now - self._shown_at < 0.1:
            return  # at most ten updates a second reach the page
        self._shown_at = now
        self.progress.value = progress.fraction
        self.progress_text.value = html.escape(f"{progress.done} / {progress.total} timings · "
                                               f"{progress.seconds:.0f} s · {progress.layer}")
