"""Shared helpers for tests that launch real sandboxed children.

Test modules get everything through fixtures: `from conftest import ...` would pick up
whichever conftest module Python imported first (tests/bench has one too).

Nothing here fakes a kernel mechanism: every helper forks a child through
`cleancoin.sandbox.launcher` under a real policy, and the tests judge what the kernel did.

- `write_policy(body)` writes a policy file into the test's tmp_path; by default it extends the
  shipped `base/python` policy by absolute path.
- `run_in_sandbox(policy_path, variables, fn)` runs `fn()` in the fully sandboxed child
  (launcher `target` mode) and returns `(result, returncode, report)`; `fn`'s result must be
  JSON-able. `sandboxed(...)` does the same but keeps the child alive while the test looks at
  it from outside (`/proc/<pid>/...`).
- `proc.leaf(pid)` / `proc.status(pid)` find the component below its waiting processes and
  read its /proc status from the parent; `proc.monitors(...)` finds live denial monitors.
- `base_sandbox` skips (or, in CI, fails) when the kernel cannot run the shipped base policy;
  `sandbox_vars` gives the launch variables; `outside_dir` is a directory no policy grants.
- `require(feature_available, what)` skips a test on a kernel without a feature, but fails it
  when CLEANCOIN_REQUIRE_SANDBOX=1 (CI sets it: there, a missing feature is a broken runner,
  not a reason to pass).

Hypothesis profiles (the fuzz tests, tests/test_fuzz_*.py and tests/functional/test_fuzz_*.py):
`ci` (the default: 100 examples per test; no example database, so nothing is written into the
repository) and `fuzz` (`make fuzz`: CLEANCOIN_FUZZ_EXAMPLES per test, 5000 by default, with a
database under ~/.cache/cleancoin-hypothesis so that a failure found at night is replayed
first the next time). CLEANCOIN_HYPOTHESIS_PROFILE picks one.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import select
import shutil
import signal
import tempfile
import textwrap
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

from cleancoin.sandbox import control, kernel, launcher
from cleancoin.sandbox.plan import Plan
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from cleancoin.sandbox.report import Report

# Hypothesis keeps caches (its Unicode tables) and the example database in its home
# directory, `.hypothesis/` in the working directory by default: keep them out of the
# repository.
HYPOTHESIS_HOME = os.path.expanduser("~/.cache/cleancoin-hypothesis")
set_hypothesis_home_dir(HYPOTHESIS_HOME)
settings.register_profile(
    "ci", max_examples=100, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("CLEANCOIN_FUZZ_EXAMPLES", "5000")), deadline=None,
    print_blob=True,
    database=DirectoryBasedExampleDatabase(os.path.join(HYPOTHESIS_HOME, "examples")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("CLEANCOIN_HYPOTHESIS_PROFILE", "ci"))

BASE_POLICY = shipped_policy("base/python")
#: What write_policy extends: the shipped base plus the syscalls of general Python code.
GENERAL_POLICY = os.path.join(os.path.dirname(__file__), "policies", "general.toml")
REQUIRE_ENV = "CLEANCOIN_REQUIRE_SANDBOX"
CHILD_TIMEOUT = 20.0     # seconds a sandboxed child may take to answer


def require(feature_available: bool, what: str) -> None:
    """Skip when `what` is missing from this kernel; fail instead under CLEANCOIN_REQUIRE_SANDBOX=1."""
    if feature_available:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{what} is not available, and {REQUIRE_ENV}=1 demands it", pytrace=False)
    pytest.skip(f"{what} is not available on this kernel")


@pytest.fixture
def deadline() -> Iterator[None]:
    """No test may hang on a child that never answers: SIGALRM after 30 s."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("test took longer than 30 s (a sandboxed child hung?)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(name="require")
def require_fixture() -> Callable[[bool, str], None]:
    return require


def _can_unshare_user_namespace() -> bool:
    """The sysctls may allow user namespaces while a container's seccomp forbids them: try."""
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0   # CLONE_NEWUSER
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@dataclass(frozen=True)
class SandboxSupport:
    features: kernel.KernelFeatures
    user_namespaces: bool

    @property
    def landlock_abi(self) -> int:
        return self.features.landlock_abi


@pytest.fixture(scope="session")
def sandbox_support() -> SandboxSupport:
    features = kernel.detect()
    return SandboxSupport(features, features.user_namespaces and _can_unshare_user_namespace())


@pytest.fixture
def base_sandbox(sandbox_support: SandboxSupport) -> SandboxSupport:
    """What the shipped base policy needs: Landlock at its minimum ABI, seccomp, user namespaces."""
    min_abi = load_policy(BASE_POLICY).compatibility.landlock_min_abi
    require(sandbox_support.landlock_abi >= min_abi,
            f"Landlock ABI {min_abi} (the shipped base policy's minimum)")
    require(sandbox_support.features.seccomp_filter, "seccomp filter mode")
    require(sandbox_support.user_namespaces, "unprivileged user namespaces")
    return sandbox_support


@pytest.fixture
def write_policy(tmp_path) -> Callable[..., str]:
    """write_policy(body, extends=True, name=None, view=True) -> path of a new policy file.

    It extends tests/policies/general.toml (the shipped base with the syscalls of general
    Python code: test functions use sockets, ports and terminals the components never do).
    `view=False` extends a copy of it without a mount namespace (so without the filesystem
    view and its tmpfs): for tests that prove what Landlock alone denies.
    """
    counter = itertools.count()

    def write(body: str, *, extends: bool = True, name: str | None = None, view: bool = True) -> str:
        path = tmp_path / (name or f"policy{next(counter)}.toml")
        base = GENERAL_POLICY if view else _base_without_view(tmp_path)
        header = f'extends = ["{base}"]\n' if extends else ""
        path.write_text(header + textwrap.dedent(body))
        return str(path)

    return write


def _base_without_view(directory) -> str:
    """tests/policies/general.toml over a copy of the shipped base with `mount = false` and
    without its tmpfs."""
    path = directory / "general-without-view.toml"
    if not path.exists():
        text = open(BASE_POLICY).read()
        lines = [line for line in text.splitlines() if not line.startswith("tmpfs = ")]
        text = "\n".join(lines).replace("\nmount = true\n", "\nmount = false\n") + "\n"
        assert "\nmount = false\n" in text and "\ntmpfs = " not in text, \
            "the shipped base changed shape: update _base_without_view"
        (directory / "base-without-view.toml").write_text(text)
        general = open(GENERAL_POLICY).read()
        general = general.replace('extends = ["../../policies/base/python.toml"]',
                                  'extends = ["base-without-view.toml"]')
        assert 'extends = ["base-without-view.toml"]' in general
        path.write_text(general)
    return str(path)


@pytest.fixture
def sandbox_vars(tmp_path) -> dict[str, str]:
    """Launch variables for the shipped policies: a datadir and a tmpdir under tmp_path."""
    values = {}
    for name in ("datadir", "tmpdir"):
        path = tmp_path / name
        path.mkdir()
        values[name] = str(path)
    return values


@pytest.fixture
def outside_dir() -> Iterator[str]:
    """A directory no test policy grants. Not under /tmp: policies may mount a private /tmp."""
    path = tempfile.mkdtemp(prefix="cleancoin-test-", dir="/var/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _probe_target(fn: Callable[[], Any], hold: bool) -> Callable[[int], int]:
    """Wrap `fn` for launcher.spawn(target=...): send its result, optionally wait to be released."""

    def target(fd: int) -> int:
        try:
            message: dict[str, Any] = {"result": fn()}
        except BaseException:  # noqa: BLE001 - the parent shows it
            message = {"exception": traceback.format_exc()}
        control.send(fd, message)
        if hold:
            os.read(fd, 1)   # the parent writes a byte (or closes) when it is done looking
        return 0

    return target


def receive(child: launcher.SandboxedProcess, timeout: float = CHILD_TIMEOUT) -> object | None:
    """One control message from a running child, or a test failure after `timeout`."""
    ready, _, _ = select.select([child.control], [], [], timeout)
    if not ready:
        child.kill()
        child.wait()
        pytest.fail(f"the sandboxed child sent nothing within {timeout} s")
    return control.recv(child.control.fileno())


def _result(child: launcher.SandboxedProcess) -> Any:
    message = receive(child)
    if message is None:
        status = child.wait()
        pytest.fail(f"the sandboxed child ended without a result: "
                    f"{launcher.describe_status(child.status or 0)} (return code {status})")
    assert isinstance(message, dict), message
    if "exception" in message:
        child.kill()
        child.wait()
        pytest.fail(f"the function raised inside the sandbox:\n{message['exception']}")
    if "error" in message:
        child.wait()
        pytest.fail(f"the sandboxed child failed: {message['error']}")
    return message["result"]


def prepare(policy_path: str, variables: Mapping[str, str]) -> Plan:
    """Load a policy file and fit it to this kernel (the parent's side of a launch)."""
    return launcher.prepare(load_policy(policy_path), variables)


@pytest.fixture
def run_in_sandbox() -> Callable[..., tuple[Any, int, Report]]:
    """run_in_sandbox(policy_path or Plan, variables, fn, pass_fds=()) -> (result, returncode, report)."""

    def run(policy: str | Plan, variables: Mapping[str, str], fn: Callable[[], Any], *,
            pass_fds: Sequence[int] = ()) -> tuple[Any, int, Report]:
        plan = policy if isinstance(policy, Plan) else prepare(policy, variables)
        child = launcher.spawn(plan, target=_probe_target(fn, hold=False), pass_fds=pass_fds)
        try:
            result = _result(child)
        except BaseException:
            child.kill()
            child.wait()
            raise
        returncode = child.wait()
        assert child.report is not None
        return result, returncode, child.report

    return run


@pytest.fixture
def sandboxed() -> Callable[..., contextlib.AbstractContextManager]:
    """with sandboxed(policy_path, variables, fn) as (child, result): ... the child waits meanwhile."""

    @contextlib.contextmanager
    def hold(policy_path: str, variables: Mapping[str, str], fn: Callable[[], Any], *,
             pass_fds: Sequence[int] = ()) -> Iterator[tuple[launcher.SandboxedProcess, Any]]:
        plan = prepare(policy_path, variables)
        child = launcher.spawn(plan, target=_probe_target(fn, hold=True), pass_fds=pass_fds)
        released = False
        try:
            result = _result(child)
            yield child, result
            os.write(child.control.fileno(), b"x")
            released = True
            assert child.wait() == 0
        finally:
            if not released:
                child.kill()
                child.wait()

    return hold


@dataclass(frozen=True)
class ProcHelpers:
    """Looking at a running sandboxed child from outside, through the parent's /proc."""

    leaf: Callable[[int], int]
    status: Callable[[int], dict[str, str]]
    monitors: Callable[..., list[int]]


@pytest.fixture
def proc() -> ProcHelpers:
    """proc.leaf(child.pid): the component under its waiting processes; proc.status(pid);
    proc.monitors(session_of=pid, writing=path): the live denial monitors."""
    return ProcHelpers(process_tree_leaf, proc_status, denial_monitors)


def denial_monitors(*, session_of: int | None = None, writing: str | None = None) -> list[int]:
    """The live denial monitors (host pids), optionally only those in the session of
    `session_of` (the launcher starts one per sandboxed child) or those holding the log
    `writing` open. Monitors of components stopped earlier may linger as zombies of an init
    that does not reap: those are left out."""
    sid = None if session_of is None else os.getsid(session_of)
    found = []
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "denial-monitor":
                    continue
            if proc_status(pid)["State"].startswith("Z") or (sid is not None and os.getsid(pid) != sid):
                continue
            if writing is not None and writing not in {os.readlink(f"/proc/{pid}/fd/{fd}")
                                                       for fd in os.listdir(f"/proc/{pid}/fd")}:
                continue
        except (OSError, KeyError):
            continue
        found.append(pid)
    return found


def process_tree_leaf(pid: int) -> int:
    """The deepest descendant of `pid` along last living children (the component under its
    waiters). Since 12-07 the pid namespace's pid 2 forks the component and ends: while it
    exits the component is already PID 1's child, listed after it, and pid 2 has no child;
    taken as the leaf it had no filter and every capability (test_launcher), or, a zombie, no
    /proc/PID/ns links (test_enforcement). Zombies and exiting processes are passed over, and
    the last child is the newest (a reparented one is appended)."""
    # Walked until two walks agree on a living leaf: the exiting pid 2 can lose its child to
    # PID 1 between the reads of PID 1's children and of its own.
    start, leaf = pid, -1
    for _ in range(100):
        pid = start
        while kids := [kid for kid in _children(pid) if _living(kid)]:
            pid = kids[-1]
        if pid == leaf and _living(pid):
            return pid
        leaf = pid
    return leaf


def _living(pid: int) -> bool:
    try:
        return proc_status(pid)["State"][:1] not in ("Z", "X")
    except (OSError, KeyError):
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:   # kernel without CONFIG_PROC_CHILDREN: scan /proc
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    kids.append(int(entry))
        return sorted(kids)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict of field -> value text."""
    with open(f"/proc/{pid}/status") as handle:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in handle)}


@pytest.fixture()
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package directory of the test's own (0755, ours) in place of the installed one, for
    the caches kept beside the code (filter, policy and method caches: filter_cache's rules)."""
    from cleancoin.sandbox import filter_cache
    root = tmp_path / "package"
    root.mkdir(mode=0o755)
    monkeypatch.setattr(filter_cache, "package_dir", lambda: str(root))
    return str(root)
