"""The functional-suite benchmark's per-test times (tests/bench/suite_times.py): a real pytest
run loads the plugin as the benchmark loads it into the runner's processes, and only the tests
that passed in both runs are compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import suite_times  # noqa: E402


#: A child that uses 0.2 s of its own CPU (measured by its own clock, whatever the load).
BURN = "import time\nwhile time.process_time() < 0.2:\n    pass\n"


def _run(tmp_path: Path, times: Path, other: bool) -> int:
    """One pytest run of a three-test file in which one test skips unless `other`."""
    test = tmp_path / "test_sample.py"
    test.write_text("import os, subprocess, sys, time, pytest\n"
                    f"BURN = {BURN!r}\n"
                    "def test_both():\n    time.sleep(0.05)\n"
                    "    subprocess.run([sys.executable, '-c', BURN], check=True)\n"
                    "@pytest.mark.skipif(os.environ.get('OTHER') != '1', reason='other only')\n"
                    "def test_other_only():\n    time.sleep(0.2)\n"
                    "def test_fails_in_other():\n    assert os.environ.get('OTHER') != '1'\n")
    env = dict(os.environ, PYTEST_ADDOPTS="-p tests.bench.suite_times", OTHER="1" if other else "0",
               **{suite_times.ENV: str(times)})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, timeout=120).returncode


def test_only_tests_that_passed_in_both_runs_are_compared(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    assert _run(tmp_path, one, other=False) == 0
    assert _run(tmp_path, two, other=True) == 1
    a, b = suite_times.load(one), suite_times.load(two)
    names = {n.split("::")[1]: n for n in a}
    assert {o for o, *_ in a.values()} == {"passed", "skipped"}
    assert a[names["test_other_only"]][0] == "skipped" and b[names["test_other_only"]][0] == "passed"
    assert b[names["test_fails_in_other"]][0] == "failed"
    # The skipped test's 0.2 s and the failed one are left out: only test_both is the same work.
    assert suite_times.same_tests(a, b) == [names["test_both"]]
    assert 0.05 <= a[names["test_both"]][1] < 30 and b[names["test_other_only"]][1] >= 0.2
    # CPU counts the children the test reaped (the nodes, in the suite): test_both's child
    # burnt 0.2 s (a reaped child's CPU is counted in 10 ms ticks, truncated: 0.19 seen);
    # test_other_only only slept.
    assert a[names["test_both"]][2] >= 0.15 and b[names["test_both"]][2] >= 0.15
    assert b[names["test_other_only"]][2] < a[names["test_both"]][2]
