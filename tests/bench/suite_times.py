"""A pytest plugin for the functional-suite benchmark (bench_multiprocess.py, section 2): each
test's outcome and time, so that the two executables are compared on the tests both ran.

The benchmark loads it into every pytest process the functional runner starts
(`PYTEST_ADDOPTS=-p tests.bench.suite_times`, imported from the checkout, their working
directory: nothing on PYTHONPATH, which the nodes would inherit) with SUITE_TIMES_DIR set; each
process writes `<SUITE_TIMES_DIR>/<pid>.json` at its end: {node id: [outcome, seconds]}, the
seconds being its setup, call and teardown together (a module fixture's node start counts in
the setup of the first test that uses it) and the outcome "passed", "failed" or "skipped".

Why a test's and not a file's: a file that both executables run can hold tests that skip under
one of them (CleanCoin-node-only tests next to common ones, e.g. test_unprivileged_operator's
escape battery as a non-root user), and since 12-07 the node's P2P-logic tests
(`node_logic_only()`, tests/functional/framework.py) skip under CleanCoin-node inside files
both run. A file then takes a different time under each for work the other never does, and a
file-level "same files" ratio counts it as overhead (or saving): the benchmark's target line is
the same tests' (`same_tests`), its file-level figures are for information.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ENV = "SUITE_TIMES_DIR"


class _Recorder:
    """One pytest process's tests: node id -> [outcome, seconds], written at its end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.times: dict[str, list[object]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add each phase's time to its test; the outcome is the worst phase's (a skip in
        setup makes the test skipped, a failure in any phase failed)."""
        entry = self.times.setdefault(report.nodeid, ["passed", 0.0])
        entry[1] = float(entry[1]) + report.duration      # type: ignore[arg-type]
        if report.failed:
            entry[0] = "failed"
        elif report.skipped and entry[0] != "failed":
            entry[0] = "skipped"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.times:
            Path(self.directory, f"{os.getpid()}.json").write_text(json.dumps(self.times))


def pytest_configure(config: pytest.Config) -> None:
    """Record only where the benchmark asked for it (SUITE_TIMES_DIR set)."""
    directory = os.environ.get(ENV)
    if directory:
        config.pluginmanager.register(_Recorder(directory), "suite_times_recorder")


def load(directory: str | os.PathLike[str]) -> dict[str, tuple[str, float]]:
    """Every test the processes wrote into `directory`: node id -> (outcome, seconds)."""
    found: dict[str, tuple[str, float]] = {}
    for path in sorted(Path(directory).glob("*.json")):
        for nodeid, (outcome, seconds) in json.loads(path.read_text()).items():
            found[nodeid] = (str(outcome), float(seconds))
    return found


def same_tests(a: dict[str, tuple[str, float]], b: dict[str, tuple[str, float]]) -> list[str]:
    """The tests that passed in both runs (skipped or failed in either: left out)."""
    return sorted(n for n in a if a[n][0] == "passed" and b.get(n, ("",))[0] == "passed")
