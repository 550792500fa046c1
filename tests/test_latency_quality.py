"""The Quality section's score-vs-latency plot beside score-vs-MACs, once a latency table exists."""
from __future__ import annotations

import pytest
import torch

from razor_widgets import PruningExplorer

from helpers import Accuracy, trained_digits_net


def test_score_vs_latency_appears_once_profiled(one_thread, tmp_path):
    ex = PruningExplorer(trained_digits_net(), torch.zeros(1, 1, 8, 8), eval_fn=Accuracy(), redraw_delay=0)
    try:
        ex.evaluate()
        assert ex.quality.points[-1].latency_ms is None and ex.quality.latency_plot.layout.display == "none"
        ex.latency.profile_kwargs.update(warmup=1, repeats=3, align=8, cache_dir=str(tmp_path))
        ex.latency.threads.value = 1
        ex.latency.start(wait=True)
        names = list(ex.sliders)
        ex.sliders[names[0]].value = ex.sliders[names[0]].min
        ex.evaluate()
        point = ex.quality.points[-1]
        assert point.latency_ms == pytest.approx(ex.mutator.latency().ms)
        assert ex.quality.latency_plot.layout.display == "" and ex.quality.latency_plot.value[:4] == b"\x89PNG"
        assert ex.quality.latency_plot.value != ex.quality.pareto.value
    finally:
        ex.quality.close()
