"""A pytest plugin for the functional-suite benchmark (bench_multiprocess.py, section 2): each
test's outcome and time, so that the two executables are compared on the tests both ran.

The benchmark loads it into every pytest process the functional runner starts
(`PYTEST_ADDOPTS=-p tests.bench.suite_times`, imported from the checkout, their working
directory: nothing on PYTHONPATH, which the nodes would inherit) with SUITE_TIMES_DIR set; each
process writes `<SUITE_TIMES_DIR>/<pid>.json` at its end: {node id: [outcome, seconds, cpu]},
the seconds being its setup, call and teardown together (a module fixture's node start counts
in the setup of the first test that uses it), the outcome "passed", "failed" or "skipped", and
cpu the CPU seconds the pytest process and the processes it reaped meanwhile used (since
12-07: the nodes a test stops are reaped by its pytest, and each node reaps what it started, so
their CPU is counted; a process the runner reaps as a subreaper is not). Wall time on a shared
2-core machine follows the load (one pair of files' same tests measured 1.45x and 0.99x in two
runs minutes apart); CPU moves less.

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
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "SUITE_TIMES_DIR"


#: node id -> (outcome, seconds, CPU seconds)
Times = dict[str, tuple[str, float, float]]


def _cpu_now() -> float:
    """CPU seconds of this process and of the children it has reaped (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Recorder:
    """One pytest process's tests: node id -> [outcome, seconds, cpu], written at its end."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.times: dict[str, list[object]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        """A test's CPU: from before its setup to after its teardown (a module fixture's
        teardown runs in its module's last test's)."""
        before = _cpu_now()
        yield
        entry = self.times.setdefault(item.nodeid, ["passed", 0.0])
        entry.append(_cpu_now() - before)

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


def load(directory: str | os.PathLike[str]) -> Times:
    """Every test the processes wrote into `directory`: node id -> (outcome, seconds, cpu)."""
    found: Times = {}
    for path in sorted(Path(directory).glob("*.json")):
        for nodeid, (outcome, seconds, *cpu) in json.loads(path.read_text()).items():
            found[nodeid] = (str(outcome), float(seconds), float(cpu[0]) if cpu else 0.0)
    return found


def same_tests(a: Times, b: Times) -> list[str]:
    """The tests that passed in both runs (skipped or failed in either: left out)."""
    return sorted(n for n in a if a[n][0] == "passed" and b.get(n, ("",))[0] == "passed")
