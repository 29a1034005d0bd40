"""A pytest plugin: assert in your own test suite what your policy allows and refuses.

Installed with CleanCoin (entry point `pytest11`), so any pytest run in the same environment
has it:

    pytest --cleancoin-policy=my.toml --cleancoin-datadir=/tmp/data --cleancoin-var port=8333

    def test_no_network(cleancoin_sandbox):
        cleancoin_sandbox.assert_denied(lambda: socket.create_connection(("1.1.1.1", 53)))
        cleancoin_sandbox.assert_allowed(lambda: open(DATA + "/x", "w").write("ok"))
        assert cleancoin_sandbox.syscall("ptrace", 0, 0, 0, 0) == "SIGSYS"

Each call runs in a fresh child that the launcher forks and puts under the whole policy
(every sandbox step, as `CleanCoin-sandbox run` does), then calls the function there; what it
returned, the errno it failed with, or the signal that killed it comes back. A test can use
another policy with `cleancoin_sandbox.use("other.toml", datadir=...)`.
"""

from __future__ import annotations

import ctypes
import errno as errno_module
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from . import launcher, syscalls
from .plan import Plan


@dataclass(frozen=True)
class Outcome:
    """What one call did in the sandbox."""

    value: Any = None            # what the function returned (repr of it when not JSON)
    errno: str | None = None     # "EACCES" when it raised OSError
    error: str | None = None     # another exception: "ValueError: ..."
    signal: str | None = None    # "SIGSYS" when the process was killed

    @property
    def allowed(self) -> bool:
        return self.errno is None and self.error is None and self.signal is None

    def __str__(self) -> str:
        if self.signal:
            return f"killed by {self.signal}"
        if self.errno:
            return f"failed with {self.errno}"
        if self.error:
            return f"raised {self.error}"
        return f"returned {self.value!r}"


def _child(func: Callable[[], Any], out: int) -> int:
    try:
        value = func()
        try:
            result: dict[str, Any] = {"value": json.loads(json.dumps(value))}
        except (TypeError, ValueError):
            result = {"value": repr(value)}
    except OSError as exc:
        result = {"errno": errno_module.errorcode.get(exc.errno or 0, str(exc.errno))}
    except BaseException as exc:  # noqa: BLE001 - reported to the test, as the test's failure
        result = {"error": f"{type(exc).__name__}: {exc}"}
    data = json.dumps(result).encode()
    while data:
        data = data[os.write(out, data):]
    return 0


class Sandbox:
    """The fixture's object: run callables under the policy, and assert on the outcome."""

    def __init__(self, policy: str, variables: dict[str, str]) -> None:
        self._plan: Plan | None = None
        self.use(policy, **variables)

    def use(self, policy: str, **variables: str) -> "Sandbox":
        """Switch to another policy (a path or a shipped name) and variables."""
        from .policy_loader import load_policy, shipped_policy
        # A shipped name is the shipped policy, whatever the working directory holds (12-07).
        named = not (os.path.isabs(policy) or policy.endswith(".toml") or policy.startswith(("./", "../")))
        path = shipped_policy(policy) if named and os.path.isfile(shipped_policy(policy)) else policy
        self.policy = path
        self._plan = launcher.prepare(load_policy(path), variables)
        return self

    def run(self, func: Callable[[], Any], timeout: float = 30.0) -> Outcome:
        """Call `func()` in a fresh sandboxed child; what happened."""
        import select
        assert self._plan is not None
        read, write = os.pipe()
        try:
            child = launcher.spawn(self._plan, target=lambda _control: _child(func, write), pass_fds=[write],
                                   relay=True)
        finally:
            os.close(write)
        try:
            data = b""
            while True:
                ready, _, _ = select.select([read], [], [], timeout)
                if not ready:
                    child.kill()
                    break
                chunk = os.read(read, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read)
        code = child.wait()
        if child.output is not None:
            child.output.join()
        if code < 0:
            return Outcome(signal=signal.Signals(-code).name)
        if not data:
            return Outcome(error=f"no result (exit status {code})")
        return Outcome(**json.loads(data))

    def assert_denied(self, func: Callable[[], Any], *, errno: str | None = None) -> Outcome:
        """The call must fail (an errno, or a kill); with `errno`, that errno."""
        outcome = self.run(func)
        assert not outcome.allowed, f"expected the sandbox to refuse it, but it {outcome}"
        if errno is not None:
            assert outcome.errno == errno, f"expected {errno}, but it {outcome}"
        return outcome

    def assert_allowed(self, func: Callable[[], Any]) -> Outcome:
        """The call must work under the policy."""
        outcome = self.run(func)
        assert outcome.allowed, f"expected the policy to allow it, but it {outcome}"
        return outcome

    def syscall(self, name: str, *args: int) -> str:
        """Make one raw syscall in the sandbox: "ok", the errno's name, or "SIGSYS"."""
        from . import seccomp
        number = seccomp.syscall_number(name)
        if number is None or number < 0:
            raise ValueError(f"unknown syscall {name!r}")

        def call() -> str:
            result = syscalls.libc().syscall(ctypes.c_long(number), *[ctypes.c_ulong(a) for a in args])
            if result < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return "ok"

        outcome = self.run(call)
        return outcome.signal or outcome.errno or outcome.error or "ok"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cleancoin", "CleanCoin sandbox policies")
    group.addoption("--cleancoin-policy", default=None, metavar="POLICY",
                    help="policy file or shipped name for the cleancoin_sandbox fixture")
    group.addoption("--cleancoin-datadir", default=None, metavar="DIR", help="value of ${datadir}")
    group.addoption("--cleancoin-var", action="append", default=[], metavar="NAME=VALUE",
                    help="value of another ${variable}; repeatable")


@pytest.fixture
def cleancoin_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Runs callables under --cleancoin-policy (skips the test when none is given)."""
    config = request.config
    policy = config.getoption("--cleancoin-policy")
    if policy is None:
        pytest.skip("no --cleancoin-policy given")
    values: dict[str, str] = {}
    if config.getoption("--cleancoin-datadir"):
        values["datadir"] = os.path.abspath(config.getoption("--cleancoin-datadir"))
    for item in config.getoption("--cleancoin-var"):
        name, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--cleancoin-var {item!r}: expected NAME=VALUE")
        values[name] = value
    return Sandbox(policy, values)
