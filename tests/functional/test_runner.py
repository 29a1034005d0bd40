#!/usr/bin/env python3
"""Run the functional tests in parallel, in the style of Bitcoin Core's test_runner.py.

    tests/functional/test_runner.py                          # all of them against CleanCoind
    CleanCoinD=CleanCoin-node tests/functional/test_runner.py
    tests/functional/test_runner.py -j 4 test_node_wallet test_node_p2p.py
    tests/functional/test_runner.py --failfast --quiet

Each tests/functional/test_*.py file (not this one) runs as its own
`python -m pytest -q -p no:cacheprovider --tb=short FILE` subprocess, N at a time (-j,
default: the number of CPUs; the longest known ones first), with this environment, except
that CleanCoinD is set to the absolute path of the executable under test (see framework.py),
so every file tests the same one whatever its working directory. A line is printed as each file finishes, then a summary table (passed,
skipped, failed, each by name), and for a failure the tail of its output. Each file gets its
own pytest --basetemp under one scratch directory, which is removed when everything passed
and kept (with the full logs and the nodes' datadirs) otherwise.

Every process the tests start ends with the runner: it is the subreaper of everything below
it (a node whose test died is adopted by the runner, not by init), and on SIGINT, SIGTERM or
SIGHUP (a cancelled CI job), on --failfast and on a file's --timeout it signals the whole tree
below it or below that file's pytest (nodes in sessions of their own included): SIGTERM, then
SIGKILL 3 s later. A process a test file leaves running after it passed is ended at the end of
the run and named ("left running by the tests"). Only a SIGKILL of the runner itself escapes
this: nothing then ends the tree.

Exit status: 0 when no test failed (a file whose tests all skipped counts as SKIPPED, not
as a failure), 1 when one did, 2 for a usage error, 128 + the signal's number when stopped by
SIGINT, SIGTERM or SIGHUP.

Started by a Python that cannot import cleancoin and pytest (`/usr/bin/python3` from the
shebang), it re-executes itself with the repository's .venv/bin/python when that exists.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))        # tests/ports.py
sys.path.insert(0, str(HERE))               # process_tree.py, framework.py
from ports import PORTS_ENV, slice_of  # noqa: E402
from process_tree import describe, descendants, end_tree, reap_children, running  # noqa: E402
REEXEC_GUARD = "CLEANCOIN_TEST_RUNNER_REEXEC"
TAIL_LINES = 100
PASSED, SKIPPED, FAILED = "PASSED", "SKIPPED", "FAILED"
#: Seconds each file took in a pass, (CleanCoind, CleanCoin-node): measured 12-07 at -j 2 on a
#: machine at a load of 14 to 24 (so three to four times CI's); only their order matters. Files
#: start longest first (Graham's LPT order, as Bitcoin Core orders its list): the long ones
#: overlap the short ones and none of them starts last. A file not named here (a new one)
#: counts as UNKNOWN_SECONDS, among the long ones, until it is measured and added.
EXPECTED_SECONDS: dict[str, tuple[float, float]] = {
    "test_bitcoind_compat.py": (34, 133),
    "test_clients_and_wrapper.py": (20, 87),
    "test_connect_rule.py": (51, 117),
    "test_crash_campaign.py": (25, 52),
    "test_disk_full.py": (24, 50),
    "test_files_and_logs.py": (44, 88),
    "test_fuzz_ipc.py": (10, 40),
    "test_fuzz_p2p.py": (21, 38),
    "test_fuzz_rpc.py": (18, 46),
    "test_ipc_prelogin.py": (9, 54),
    "test_ipc_trust.py": (11, 79),
    "test_multiprocess.py": (6, 257),
    "test_node_blockchain.py": (26, 67),
    "test_node_crash.py": (13, 22),
    "test_node_options.py": (31, 55),
    "test_node_p2p.py": (32, 65),
    "test_node_wallet.py": (83, 238),
    "test_other_users.py": (112, 216),
    "test_p2p_cpu_budget_groups.py": (87, 131),
    "test_p2p_cpu_fairness.py": (45, 55),
    "test_p2p_header_presync.py": (57, 6),
    "test_p2p_min_chain_work_download.py": (48, 58),
    "test_p2p_min_chain_work_stall.py": (223, 51),
    "test_p2p_resources.py": (44, 40),
    "test_p2p_serve_corrupt.py": (17, 12),
    "test_p2p_serve_cost.py": (28, 21),
    "test_p2p_side_branches.py": (94, 4),
    "test_p2p_sync_races.py": (147, 22),
    "test_p2p_timeouts.py": (34, 33),
    "test_p2p_tx_orphans.py": (28, 22),
    "test_p2p_tx_rejects.py": (55, 44),
    "test_p2p_tx_relay.py": (17, 10),
    "test_process_memory.py": (21, 8),
    "test_report_squat.py": (12, 8),
    "test_rest_cost.py": (97, 70),
    "test_rpc_limits.py": (49, 45),
    "test_rpc_parse_cost.py": (52, 50),
    "test_rpc_reply_cost.py": (40, 46),
    "test_rpc_wallet_names.py": (12, 11),
    "test_rpc_whitelist.py": (12, 19),
    "test_sandbox_attacks.py": (8, 294),
    "test_sandbox_tools.py": (9, 25),
    "test_secrets_in_errors.py": (19, 15),
    "test_unprivileged_operator.py": (34, 171),
    "test_wallet_encrypt_kill.py": (42, 36),
    "test_wallet_fake_chain.py": (12, 39),
    "test_wallet_fee_cap.py": (20, 32),
    "test_wallet_memory.py": (23, 30),
    "test_wallet_mempool.py": (22, 16),
    "test_wallet_min_chain_work.py": (24, 49),
    "test_wallet_reorg_cost.py": (7, 25),
    "test_wallet_rpc_whitelist.py": (5, 14),
    "test_wallet_stderr.py": (8, 10),
    "test_wallet_upgrade.py": (14, 15),
}
UNKNOWN_SECONDS = 60.0
#: pytest plugins the functional files do without: pytest-qt imports Qt in every pytest
#: process (0.9 s of CPU for an empty file's pytest, 0.6 s without it; 108 of them in
#: `make test`), and no functional test drives a window with it.
NO_PLUGINS = ("-p", "no:pytest-qt")


def reexec_with_venv_if_needed() -> None:
    """Use .venv/bin/python when this interpreter lacks cleancoin or pytest."""
    if all(importlib.util.find_spec(m) is not None for m in ("cleancoin", "pytest")):
        return
    venv_python = REPO / ".venv" / "bin" / "python"
    if os.environ.get(REEXEC_GUARD) != "1" and os.access(venv_python, os.X_OK):
        os.environ[REEXEC_GUARD] = "1"
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"test_runner: {sys.executable} cannot import cleancoin and pytest, and there is no "
             f"{venv_python}: run `make setup` first")


def discover(directory: Path = HERE, multiprocess: bool = False) -> list[Path]:
    """The directory's test files, longest expected first (EXPECTED_SECONDS), then by name."""
    found = [p for p in directory.glob("test_*.py") if p.name != Path(__file__).name]

    def expected(path: Path) -> float:
        return EXPECTED_SECONDS.get(path.name, (UNKNOWN_SECONDS, UNKNOWN_SECONDS))[multiprocess]
    return sorted(found, key=lambda p: (-expected(p), p.name))


def select(all_tests: list[Path], names: list[str]) -> list[Path]:
    """Tests named on the command line: `test_x`, `test_x.py`, a path to one, or a glob."""
    if not names:
        return all_tests
    chosen: list[Path] = []
    for name in names:
        base = Path(name).name
        if not base.endswith(".py"):
            base += ".py"
        matches = [t for t in all_tests if fnmatch.fnmatchcase(t.name, base)]
        if not matches:
            sys.stderr.write(f"test_runner: no functional test matches {name!r}; there are: "
                             f"{', '.join(t.name for t in all_tests)}\n")
            sys.exit(2)
        chosen.extend(m for m in matches if m not in chosen)
    return [t for t in all_tests if t in chosen]      # the usual order: longest first


@dataclass
class Job:
    path: Path
    log_path: Path
    basetemp: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    duration: float = 0.0
    status: str = ""
    detail: str = ""      # pytest's counts, e.g. "11 passed, 1 skipped", or why it failed
    slot: int = -1        # which of the -j slots it runs in (its test ports: tests/ports.py)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Outcome:
    done: list[Job] = field(default_factory=list)
    not_run: list[Job] = field(default_factory=list)


_SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in [\d.]+s\b")


def pytest_counts(output: str) -> dict[str, int]:
    """{'passed': 11, 'skipped': 1, ...} from pytest's final summary line."""
    for line in reversed(output.splitlines()):
        m = _SUMMARY.match(line.strip())
        if m:
            return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", m["counts"])}
    return {}


def judge(job: Job, returncode: int, timed_out: bool) -> None:
    counts = pytest_counts(job.log_path.read_text(errors="replace"))
    job.detail = ", ".join(f"{n} {word}" for word, n in counts.items())
    if timed_out:
        job.status, job.detail = FAILED, f"timed out, killed; {job.detail}".rstrip("; ")
    elif returncode == 0:
        ran = counts.get("passed", 0) + counts.get("xfailed", 0) + counts.get("xpassed", 0)
        job.status = SKIPPED if ran == 0 and counts.get("skipped", 0) else PASSED
    else:
        job.status = FAILED
        if returncode == 5:
            job.detail = "no tests collected"
        elif not job.detail:
            job.detail = f"pytest exit status {returncode}"


#: Seconds between the SIGTERM to a tree of test processes and the SIGKILL of what is left.
#: Short: a cancelled CI job is killed outright some seconds after its SIGTERM.
GRACE = 3.0


class Stopped(Exception):
    """SIGTERM or SIGHUP reached the runner (SIGINT is KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signal(signum: int, frame: object) -> None:
    raise Stopped(signum)


def become_subreaper() -> None:
    """Adopt every orphan below this process (PR_SET_CHILD_SUBREAPER): a node whose test
    process died stays in this process's tree, where end_tree finds it, instead of going to
    init. python-prctl is one of the project's dependencies."""
    import prctl
    prctl.set_child_subreaper(True)


def end_job(job: Job, running: list[Job], grace: float = GRACE) -> None:
    """End a test file's pytest and every process below it (its nodes, in whatever session),
    leaving the other jobs' pytest processes for their own Popen to reap."""
    assert job.process is not None
    end_tree(job.process.pid, grace, keep={j.process.pid for j in running if j.process is not None})
    job.process.wait()


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines()
    if len(text) <= lines:
        return "\n".join(text)
    return f"[... {len(text) - lines} lines before; full log: {path}]\n" + "\n".join(text[-lines:])


def run(tests: list[Path], jobs: int, scratch: Path, env: dict[str, str], failfast: bool,
        quiet: bool, timeout: float) -> Outcome:
    queue = [Job(t, scratch / f"{t.stem}.log", scratch / t.stem) for t in tests]
    total = len(queue)
    running: list[Job] = []
    outcome = Outcome()
    stopping = False
    try:
        while running or (queue and not stopping):
            while queue and len(running) < jobs and not stopping:
                job = queue.pop(0)
                # Each running file has a slice of the test ports of its own (tests/ports.py).
                job.slot = min(set(range(jobs)) - {j.slot for j in running})
                with open(job.log_path, "wb") as log:
                    job.process = subprocess.Popen(
                        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NO_PLUGINS,
                         "--tb=short", f"--basetemp={job.basetemp}", str(job.path)],
                        cwd=REPO, env={**env, PORTS_ENV: slice_of(job.slot, jobs)},
                        stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True)
                job.started = time.monotonic()
                running.append(job)
            time.sleep(0.05)
            # Orphans adopted as the subreaper (a test's node whose parent ended) are reaped
            # here as they exit; each job's pytest is reaped by its own Popen.
            reap_children({j.process.pid for j in running if j.process is not None})
            for job in list(running):
                assert job.process is not None
                timed_out = timeout > 0 and time.monotonic() - job.started > timeout
                if timed_out:
                    end_job(job, running)
                elif job.process.poll() is None:
                    continue
                running.remove(job)
                job.duration = time.monotonic() - job.started
                judge(job, job.process.returncode, timed_out)
                outcome.done.append(job)
                if job.status == FAILED or not quiet:
                    detail = f" ({job.detail})" if job.detail else ""
                    print(f"{len(outcome.done)}/{total} - {job.name} {job.status} in "
                          f"{job.duration:.1f} s{detail}", flush=True)
                if job.status == FAILED:
                    print(f"\n---- output of {job.name} (tail) ----\n{tail(job.log_path)}\n"
                          f"---- end of {job.name} ----\n", flush=True)
                    if failfast and not stopping:
                        stopping = True
                        print("--failfast: stopping the other tests", flush=True)
                        for other in running:
                            end_job(other, running)
                        outcome.not_run.extend(running)
                        running.clear()
                        break
        outcome.not_run.extend(queue)
    except (KeyboardInterrupt, Stopped) as stop:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)      # a second signal must not cut the clean-up short
        why = "interrupted" if isinstance(stop, KeyboardInterrupt) else f"stopped by {stop}"
        print(f"\n{why}: ending the running tests and every process they started", flush=True)
        ended = end_tree(os.getpid(), GRACE, include_root=False)
        print(f"{len(ended)} processes ended", flush=True)
        raise
    return outcome


def end_leftovers() -> list[str]:
    """End the processes still below the runner once every test file is done (nodes a test
    left running, adopted as their subreaper); what they were, one line each."""
    reap_children(set())
    left = [describe(pid) for pid in descendants(os.getpid()) if running(pid)]
    if left:
        end_tree(os.getpid(), GRACE, include_root=False)
    return left


def sort_key(job: Job) -> tuple[int, str]:
    """Bitcoin Core's order: passed, then skipped, then failed; by name within each."""
    return {PASSED: 0, SKIPPED: 1, FAILED: 2}[job.status], job.name.lower()


def print_summary(outcome: Outcome, runtime: float) -> None:
    done = sorted(outcome.done, key=sort_key)
    width = max([len("TEST"), len("ALL")] + [len(j.name) for j in done + outcome.not_run])
    print(f"\n{'TEST':<{width}} | {'STATUS':<7} | DURATION\n")
    for job in done:
        detail = f"  ({job.detail})" if job.detail else ""
        print(f"{job.name:<{width}} | {job.status:<7} | {job.duration:6.1f} s{detail}")
    for job in outcome.not_run:
        print(f"{job.name:<{width}} | {'NOT RUN':<7} |")
    all_ok = not outcome.not_run and all(j.status != FAILED for j in done)
    accumulated = sum(j.duration for j in done)
    print(f"\n{'ALL':<{width}} | {PASSED if all_ok else FAILED:<7} | {accumulated:6.1f} s "
          f"(accumulated)")
    print(f"Runtime: {runtime:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the functional tests in parallel (tests/functional/test_*.py), each "
                    "file as its own pytest process. The node executable comes from CleanCoinD "
                    "(or CLEANCOIND), default CleanCoind.")
    parser.add_argument("tests", nargs="*", metavar="TEST",
                        help="tests to run: test_node_wallet, test_node_wallet.py, a path, or a "
                             "glob such as 'test_node_*' (default: all)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                        help="how many test files run at once (default: the number of CPUs, "
                             "%(default)s here)")
    parser.add_argument("--failfast", action="store_true",
                        help="stop at the first failure (the running tests are killed)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only failures and the summary")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds one test file may take before it is killed and failed "
                             "(default %(default)s; 0: no limit)")
    parser.add_argument("--dir", type=Path, default=HERE,
                        help="run the test files of this directory instead (the runner's own "
                             "tests do: tests/test_functional_runner.py)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory (logs, datadirs) even when all pass")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("-j must be at least 1")

    try:
        # Needs cleancoin (reexec_with_venv_if_needed saw to it); resolves the executable.
        import framework
    except RuntimeError as exc:
        print(f"test_runner: {exc}", file=sys.stderr)
        return 1
    setting = framework.node_executable_setting()
    executable = framework.NODE_EXECUTABLE
    multiprocess = os.path.basename(executable) == framework.MULTIPROCESS_NODE
    tests = select(discover(args.dir.resolve(), multiprocess), args.tests)
    jobs = min(args.jobs, len(tests))
    kind = "multiprocess" if multiprocess else "single process"
    source = next((f"{var}={setting}" for var in framework.NODE_ENV_VARS
                   if os.environ.get(var, "").strip()), "the default")
    print(f"Testing {executable} ({kind}; from {source})")
    plural = "s" if len(tests) != 1 else ""
    print(f"Running {len(tests)} test{plural}, {jobs} at a time", flush=True)

    env = dict(os.environ)
    env.pop(REEXEC_GUARD, None)
    env.pop("CLEANCOIND", None)
    env[framework.NODE_ENV_VARS[0]] = executable      # every file tests the same executable
    scratch = Path(tempfile.mkdtemp(prefix="ccft_"))
    become_subreaper()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    start = time.monotonic()
    try:
        outcome = run(tests, jobs, scratch, env, args.failfast, args.quiet, args.timeout)
    except KeyboardInterrupt:
        print(f"Logs and datadirs kept in {scratch}")
        return 128 + signal.SIGINT
    except Stopped as stop:
        print(f"Logs and datadirs kept in {scratch}")
        return 128 + stop.signum
    left = end_leftovers()
    if left:
        print(f"\n{len(left)} processes left running by the tests, ended now:\n  " + "\n  ".join(left))
    print_summary(outcome, time.monotonic() - start)
    ok = not outcome.not_run and all(j.status != FAILED for j in outcome.done)
    if ok and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"Logs and datadirs kept in {scratch}")
    return 0 if ok else 1


if __name__ == "__main__":
    reexec_with_venv_if_needed()
    sys.exit(main())
