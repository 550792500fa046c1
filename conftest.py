"""The test tiers (README, "Tests"): markers registered in pyproject.toml, applied where a test is
defined (``pytestmark`` for a whole file, a decorator for one test), and here for what has no
source to decorate.

- nbval's items of notebooks/ get ``notebook``; anything that takes the ``browser`` fixture gets
  ``browser``;
- browser, notebook and sweep tests are also ``slow``, so ``pytest -m "not slow"`` (the fast tier)
  leaves them out.

This file sits at the top, not in tests/: a conftest in tests/ is not loaded when pytest is given
only notebooks (``python3 -m pytest notebooks -m "not slow"``), and then the notebooks would be
unmarked. Fixtures and helpers are in tests/.
"""
from __future__ import annotations

import pytest

IMPLY_SLOW = ("browser", "notebook", "sweep")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if any(item.get_closest_marker(name) for name in IMPLY_SLOW) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
