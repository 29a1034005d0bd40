"""pytest configuration for the functional tests.

test_runner.py matches test_*.py but is the parallel runner, not a test module: keep pytest
from collecting it (`pytest tests` and `pytest tests/functional` both pass through here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framework import TestNode

collect_ignore = ["test_runner.py"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Callable[..., TestNode]]:
    """node(*extra_args) -> a TestNode (not started) under this test's tmp_path; every node
    made is stopped and cleaned up after the test. A module may define its own `node`."""
    made: list[TestNode] = []

    def make(*extra: str) -> TestNode:
        n = TestNode(len(made), tmp_path, extra)
        made.append(n)
        return n

    yield make
    for n in made:
        n.cleanup()
