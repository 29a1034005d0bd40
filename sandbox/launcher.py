"""The parent side of a launch: load and fit the policy, fork, and wait for the verdict.

`spawn` returns once the child reported its enforcement (or raises `SpawnError` naming the
step that failed), so a caller never talks to a component whose sandbox is not in place.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from . import control
from .child_setup import ChildSpec, run_child
from .mechanisms import Status
from .plan import Plan
from .report import Report

if TYPE_CHECKING:   # the zygote spawns from finished plans and never loads a policy
    from .model import Policy


class SpawnError(Exception):
    """A child that did not start: the step that failed and why, or how it died."""

    def __init__(self, step: str, reason: str, returncode: int | None = None) -> None:
        self.step, self.reason, self.returncode = step, reason, returncode
        super().__init__(f"sandbox step '{step}' failed: {reason}")


def describe_status(status: int) -> str:
    """A wait status in words: 'exited with status 3' or 'killed by SIGSYS'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = " (a syscall the seccomp filter forbids)" if sig == signal.SIGSYS else ""
        return f"killed by {name}{extra}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def returncode(status: int) -> int:
    """A wait status as subprocess does it: negative signal number, or the exit status."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@dataclass
class SandboxedProcess:
    """A launched child: its pid, its control socket and, once ready, its report."""

    pid: int
    control: socket.socket
    report: Report | None = None
    status: int | None = field(default=None)

    def poll(self) -> int | None:
        """The return code if the child has ended, else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return None if self.status is None else returncode(self.status)

    def wait(self) -> int:
        """Wait for the child to end; returns its return code (negative: killed by a signal)."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        self.control.close()
        return returncode(self.status)

    def component_pid(self) -> int:
        """The pid (in our namespace) of the component itself, below the waiting processes
        a pid namespace adds; `pid` when there are none."""
        pid = self.pid
        while True:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as handle:
                    children = handle.read().split()
            except OSError:
                return pid
            if len(children) != 1:
                return pid
            pid = int(children[0])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the component itself; the waiting processes above it then end as it did.

        (Killing only the outermost waiter would leave the component running until the
        kernel tears its pid namespace down, a window in which it still answers.)
        """
        if self.status is None:
            for pid in dict.fromkeys((self.component_pid(), self.pid)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                if sig != signal.SIGKILL:
                    break   # the waiters forward other signals themselves


def _resolve_program(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            raise SpawnError("exec", f"{program}: not found on PATH")
        program = found
    return [program, *argv[1:]]


def prepare(policy: "Policy", variables: Mapping[str, str]) -> Plan:
    """Fit a policy to this kernel and these variables (before fork; may raise)."""
    from . import kernel
    from .plan_compiler import compile_plan
    return compile_plan(policy, variables, kernel.detect())


def spawn(plan: Plan | None, argv: Sequence[str] = (), *, pass_fds: Sequence[int] = (),
          apply_before_exec: bool = False, target: Callable[[int], int] | None = None,
          env: Mapping[str, str] | None = None) -> SandboxedProcess:
    """Fork a child under `plan` (None: no sandbox) and wait until it reports.

    `argv` is exec'd; the component applies the post-exec steps itself (`component.enter`).
    With `apply_before_exec` the whole policy is in force before exec (`CleanCoin-sandbox
    run`); with `target` the function runs in the sandboxed child instead of an exec (probe):
    it gets the control descriptor, may send more messages on it (read them from
    `child.control`), and its return value is the exit status.
    """
    if apply_before_exec and plan is not None and not plan.exec_allowed:
        # Refused here: a child killed inside execve looks like one that exec'd and ended.
        raise SpawnError("exec", f"policy '{plan.policy}' does not allow execve, and run execs the "
                                 "program under the policy: allow execve (with a reason)")
    parent_env = dict(os.environ if env is None else env)
    run_env = dict(plan.environment) if plan is not None else parent_env
    full_argv = _resolve_program(argv, {**parent_env, **run_env}) if target is None else []
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    spec = ChildSpec(plan, tuple(full_argv), parent_env, frozenset(pass_fds), theirs.fileno(),
                     os.getpid(), apply_before_exec, target)
    pid = os.fork()
    if pid == 0:
        ours.close()
        run_child(spec)
    theirs.close()
    child = SandboxedProcess(pid, ours)
    if plan is not None and not apply_before_exec and target is None:
        control.send(ours.fileno(), {"plan": plan.to_json()})
    _await_ready(child, plan, expect_exec=apply_before_exec)
    return child


def _correct_namespaces(report: Report, plan: Plan, entered: dict[str, object]) -> None:
    names = [str(n) for n in entered["namespaces"]]  # type: ignore[union-attr]
    mech = report.mechanisms["namespaces"]
    missing = [n for n in plan.namespaces if n not in names]
    mech.status = (Status.NONE if not names else Status.PARTIAL).value
    mech.details = [f"entered: {', '.join(names) or 'none'}"]
    mech.missing = [f"{n} namespace ({entered.get('reason')})" for n in missing]
    report.namespaces = names


def _await_ready(child: SandboxedProcess, plan: Plan | None, expect_exec: bool) -> None:
    if plan is None:
        return
    fd = child.control.fileno()
    entered: dict[str, object] | None = None
    while True:
        try:
            message = control.recv(fd)
        except (ValueError, OSError) as exc:
            message = {"error": {"step": "control", "reason": f"bad message from child: {exc}"}}
        if message is None:
            if child.report is not None:
                return   # `run`: end of file after the report means exec succeeded
            status = child.wait()
            raise SpawnError("startup", f"the child ended before reporting: "
                                        f"{describe_status(child.status or 0)}", status)
        if isinstance(message, dict) and "error" in message:
            err = message["error"]
            status = child.wait()
            raise SpawnError(str(err.get("step")), str(err.get("reason")), status)
        if isinstance(message, dict) and "namespaces" in message:
            entered = message   # fewer namespaces than asked for (level soft or best_effort)
            continue
        if isinstance(message, dict) and "report" in message:
            child.report = Report.from_dict(message["report"])
            if entered is not None:
                _correct_namespaces(child.report, plan, entered)
            if not expect_exec:
                return
            continue
        raise SpawnError("control", f"unexpected message from child: {str(message)[:200]}")
