"""The functional runner (tests/functional/test_runner.py) ends every process its tests start.

Before 12-07 a SIGTERM to the runner (a cancelled CI job) killed the runner alone: each test
file's pytest ran on in a session of its own and went on starting nodes (seen: pytest and a
node it started after the SIGTERM, both alive 15 s later), and a --timeout or --failfast
reached only pytest's process group, not a node in a session of its own
(TestNode(new_session=True)). Now the runner is the subreaper of its tree and ends all of it.

Each test runs the runner on a test file of its own (--dir) in a temporary directory: real
processes, a real node for the signal test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "functional" / "test_runner.py"
sys.path.insert(0, str(REPO / "tests" / "functional"))
from process_tree import descendants, running  # noqa: E402

#: The head of each test file: the functional framework, from wherever the file lies.
HEAD = f"""
import os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, {str(REPO / "tests" / "functional")!r})
from framework import TestNode
"""


def _runner(directory: Path, *args: str) -> subprocess.Popen[str]:
    # The test files here use no pytest plugin: each pytest starts in a third of the time.
    return subprocess.Popen([sys.executable, str(RUNNER), "--dir", str(directory), *args],
                            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _remove_kept_scratch(output: str) -> None:
    """The runner keeps its scratch directory when a test failed (these tests' runs do)."""
    kept = re.search(r"^Logs and datadirs kept in (\S+)$", output, re.M)
    if kept:
        shutil.rmtree(kept[1], ignore_errors=True)


def _wait_for(path: Path, runner: subprocess.Popen[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline, f"{path} not written in {timeout} s"
        time.sleep(0.05)
    return path.read_text()


def _all_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The pids of `pids` still running after `timeout` seconds (empty: all ended)."""
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if running(p)]


def test_a_sigterm_to_the_runner_ends_every_process_its_tests_started(tmp_path: Path) -> None:
    """A node in a session of its own and a detached process, started by a test that is
    still running when the runner gets SIGTERM: all of them end, the runner with 128 + 15."""
    ready = tmp_path / "ready"
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_hangs.py").write_text(HEAD + textwrap.dedent(f"""
        def test_hangs(tmp_path):
            node = TestNode(0, tmp_path, new_session=True)
            node.start()
            sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
            Path({str(ready)!r}).write_text(f"{{node.process.pid}} {{sleeper.pid}}")
            time.sleep(600)
        """))
    runner = _runner(tmp_path / "tests", "-j", "1")
    try:
        node, sleeper = map(int, _wait_for(ready, runner).split())
        tree = descendants(runner.pid)
        pytest = tree[0]
        assert node in tree and sleeper in tree
        # Out of pytest's process group: a signal to that group, the old way, missed them.
        assert os.getpgid(node) != os.getpgid(pytest) and os.getpgid(sleeper) != os.getpgid(pytest)
        runner.send_signal(signal.SIGTERM)
        output = runner.communicate(timeout=60)[0]
        _remove_kept_scratch(output)
        assert runner.returncode == 128 + signal.SIGTERM, output
        assert "stopped by SIGTERM" in output
        assert _all_gone(tree) == [], output
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_failfast_ends_the_other_files_processes_and_leftovers_are_ended_and_named(tmp_path: Path) -> None:
    """-j 2 --failfast: a file fails while another runs with a process it started in a
    session of its own: that file's pytest and its process end (a --timeout ends a file the
    same way, runner.end_job). A file that passed but left a detached process running (a node
    it never stopped): the runner ends that process after the run and names it."""
    leaked_pid, hanging_pid = tmp_path / "leaked", tmp_path / "hanging"
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a_leaks.py").write_text(textwrap.dedent(f"""
        import subprocess
        from pathlib import Path
        def test_leaks():
            sleeper = subprocess.Popen(["sleep", "601"], start_new_session=True)
            Path({str(leaked_pid)!r}).write_text(str(sleeper.pid))
        """))
    (tmp_path / "tests" / "test_b_fails.py").write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        def test_fails_once_the_other_file_hangs():
            while not Path({str(hanging_pid)!r}).exists():
                time.sleep(0.05)
            assert False, "the failure that stops the run"
        """))
    (tmp_path / "tests" / "test_c_hangs.py").write_text(textwrap.dedent(f"""
        import subprocess, time
        from pathlib import Path
        def test_hangs():
            sleeper = subprocess.Popen(["sleep", "602"], start_new_session=True)
            Path({str(hanging_pid)!r}).write_text(str(sleeper.pid))
            time.sleep(600)
        """))
    runner = _runner(tmp_path / "tests", "-j", "2", "--failfast")
    try:
        output = runner.communicate(timeout=300)[0]
        _remove_kept_scratch(output)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 1, output
    assert "test_a_leaks.py PASSED" in output and "test_b_fails.py FAILED" in output
    assert re.search(r"test_c_hangs.py +\| NOT RUN", output), output
    leaked, hanging = int(leaked_pid.read_text()), int(hanging_pid.read_text())
    assert "1 processes left running by the tests, ended now" in output
    assert f"{leaked} sleep 601" in output
    assert _all_gone([leaked, hanging]) == [], output


def test_files_start_longest_first_for_the_executable_under_test(tmp_path: Path) -> None:
    """The order of a pass (LPT): by the file's expected seconds on that executable, a file
    not in the table among the long ones, ties by name."""
    import test_runner
    names = ["test_p2p_sync_races.py", "test_sandbox_attacks.py", "test_wallet_upgrade.py", "test_zz_new.py"]
    for name in names:
        (tmp_path / name).write_text("")
    expected = test_runner.EXPECTED_SECONDS
    assert expected["test_p2p_sync_races.py"][0] > test_runner.UNKNOWN_SECONDS > expected["test_sandbox_attacks.py"][0]
    assert expected["test_sandbox_attacks.py"][1] > test_runner.UNKNOWN_SECONDS > expected["test_p2p_sync_races.py"][1]
    order = {mp: [p.name for p in test_runner.discover(tmp_path, mp)] for mp in (False, True)}
    assert order[False] == ["test_p2p_sync_races.py", "test_zz_new.py", "test_wallet_upgrade.py", "test_sandbox_attacks.py"]
    assert order[True] == ["test_sandbox_attacks.py", "test_zz_new.py", "test_p2p_sync_races.py", "test_wallet_upgrade.py"]
