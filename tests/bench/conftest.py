"""Benchmarks live in `bench_*.py`, a name pytest's default `test_*.py` pattern never collects.

They are collected only when the run names this directory (or a file or node in it)
explicitly, as `make bench` does (`pytest tests/bench`). `make test` (`pytest tests`) loads this
conftest too, while walking the tree, but then no argument points inside tests/bench and
nothing here is collected.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent


def _bench_requested(config: pytest.Config) -> bool:
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0])
        path = (path if path.is_absolute() else base / path).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None   # named on the command line: pytest's own python plugin collects it
    if not _bench_requested(parent.config):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture
def datadir() -> Iterator[str]:
    """A scratch directory for a benchmark's sandboxed children. Not under /tmp: the policies
    mount a fresh tmpfs there."""
    path = tempfile.mkdtemp(prefix="cleancoin-bench-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
