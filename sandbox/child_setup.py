"""The pre-exec steps, run in the forked child before it becomes the component.

Order (bubblewrap's, see docs/sandbox.md): die with the parent and start a new session;
namespaces (user with its id maps, then mounts: private propagation, private /tmp, the
`filesystem.hide` covers; hostname, and in a pid namespace one more
fork so that PID 1 is a small init that reaps and forwards signals); rlimits; close every
descriptor not on the allowlist; scrub the environment; exec (or, for `run` and `probe`,
apply the post-exec steps right here first).

Nothing in here returns on failure: the error is sent to the parent on the control socket and
the process exits with status 126 before any component code runs.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass

from . import capabilities, control, descriptors, namespaces, rlimits
from .control import EXIT_SETUP_FAILED, SANDBOX_FD_ENV
from .enforce import apply_restrictions
from .errors import EnforcementError
from .plan import Plan

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class ChildSpec:
    """What the forked child should become."""

    plan: Plan | None                 # None: no sandbox at all (the -sandbox=0 baseline)
    argv: tuple[str, ...]             # program to exec (empty for `target`)
    env: dict[str, str] | None        # environment without a plan; with one the plan's
    keep_fds: frozenset[int]          # IPC descriptors to pass on
    control_fd: int
    parent_pid: int
    apply_before_exec: bool           # `run`: the whole policy before exec
    target: Callable[[int], int] | None = None   # `probe`: run this (given the control fd)


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when `parent` dies; exit now if it already has."""
    libc = namespaces.libc()
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise EnforcementError("die-with-parent", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:   # the parent died between fork and prctl
        os._exit(EXIT_SETUP_FAILED)


def _fail(control_fd: int, exc: BaseException) -> None:
    err = exc if isinstance(exc, EnforcementError) else EnforcementError("setup", repr(exc))
    try:
        control.send(control_fd, {"error": err.as_dict()})
    finally:
        os._exit(EXIT_SETUP_FAILED)


def _exit_like(status: int) -> None:
    """End this process the way the component ended: same signal or same exit status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # This process is a fork of the launcher: dying by SIGSYS or SIGSEGV must not write a
        # core file of the launcher's memory.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        namespaces.libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):     # these two take no disposition
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else EXIT_SETUP_FAILED)


def _wait_forwarding(child: int, status_out: int | None = None, status_in: int | None = None) -> None:
    """Wait for `child` while passing termination signals on, then end as it ended.

    PID 1 of a pid namespace cannot kill itself with a signal (the kernel ignores signals to
    an init from inside its namespace), so it sends the component's exact wait status up a
    pipe (`status_out`) to the waiter outside, which reads it (`status_in`) and re-raises.
    """
    status = namespaces.run_init(child)
    if status_out is not None:
        os.write(status_out, status.to_bytes(4, "little"))
        os._exit(0)
    if status_in is not None:
        data = os.read(status_in, 4)
        if len(data) == 4:
            status = int.from_bytes(data, "little")
    _exit_like(status)


def run_child(spec: ChildSpec) -> None:
    """Entry point of the forked child; never returns."""
    try:
        _run(spec)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent
        _fail(spec.control_fd, exc)
    os._exit(EXIT_SETUP_FAILED)


def _run(spec: ChildSpec) -> None:
    # A component starts with default signal dispositions whatever its launcher ignores or
    # handles (an ignored signal would survive exec; the zygote ignores SIGINT). SIGPIPE stays
    # as it is: Python ignores it and reports EPIPE, which a Python target relies on.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    plan = spec.plan
    if plan is None or plan.die_with_parent:
        die_with_parent(spec.parent_pid)
    if plan is None:
        _become(spec, spec.env or {})
        return
    if plan.new_session:
        os.setsid()
    ns = _enter_namespaces(plan, spec.control_fd)
    if "user" in ns:
        namespaces.write_id_maps(plan.uid, plan.gid)
    if "mount" in ns:
        namespaces.make_mounts_private()
        if plan.private_tmp_keep is not None:
            namespaces.private_tmp(plan.private_tmp_keep)
        # After the private /tmp, so that a hidden path beneath a granted /tmp directory is
        # covered inside the bind that brought that directory back.
        namespaces.hide(plan.hide)
    elif plan.hide:
        # Below level hard the mount namespace may be missing; covering paths in the host's
        # namespace is out of the question, and running with them visible is not hiding.
        raise EnforcementError("hide", "no mount namespace was entered, so the hidden paths "
                                       f"{', '.join(plan.hide)} cannot be covered")
    if "uts" in ns:
        namespaces.set_hostname(plan.hostname)
    if "pid" in ns:
        # unshare(CLONE_NEWPID) moves our children, not us: fork PID 1 of the namespace,
        # and stay outside as the process the launcher waits for.
        status_in, status_out = os.pipe()
        init = os.fork()
        if init:
            os.close(status_out)
            _close_all_but_stdio({status_in})
            _retire()
            _wait_forwarding(init, status_in=status_in)
        os.close(status_in)
        _die_with_parent_quietly()
        if plan.mount_proc:
            namespaces.mount_proc()
        component = os.fork()
        if component:
            _close_all_but_stdio({status_out})
            _retire()
            _wait_forwarding(component, status_out=status_out)
        os.close(status_out)
        _die_with_parent_quietly()
    _become(spec, dict(plan.environment))


def _enter_namespaces(plan: Plan, control_fd: int) -> set[str]:
    """Unshare the plan's namespaces; below level hard, as many as the kernel allows.

    What was actually entered travels to the parent, which corrects the report with it.
    """
    wanted = [n for n in namespaces.FLAGS if n in plan.namespaces]
    entered, first_error = namespaces.enter(wanted, plan.namespace_level)
    if first_error is None:
        return set(entered)
    control.send(control_fd, {"namespaces": entered, "reason": first_error})
    return set(entered)


def _retire() -> None:
    """For the waiter and the pid namespace's init, once their set-up is done: from here on
    they only wait, forward signals and re-raise a status, so they give up what they no
    longer need: every capability (they hold all of them in the component's user
    namespace), the right to gain privileges, and dumpability."""
    libc = namespaces.libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise EnforcementError("waiter", f"prctl: {os.strerror(ctypes.get_errno())}")
    capabilities.drop(())


def _die_with_parent_quietly() -> None:
    namespaces.libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _close_all_but_stdio(also: set[int]) -> None:
    # The waiting processes must not hold the control or IPC sockets open: the parent learns
    # that the component is gone from the end of file on them.
    descriptors.keep_only({0, 1, 2} | also)


def _become(spec: ChildSpec, env: dict[str, str]) -> None:
    plan = spec.plan
    if plan is not None:
        rlimits.apply(plan.rlimits)
        keep = set(plan.fds) | set(spec.keep_fds) | {spec.control_fd}
    else:
        keep = {0, 1, 2} | set(spec.keep_fds) | {spec.control_fd}
    descriptors.keep_only(keep)
    if plan is not None:
        env[SANDBOX_FD_ENV] = str(spec.control_fd)
    if plan is not None and (spec.apply_before_exec or spec.target is not None):
        report = apply_restrictions(plan)
        control.send(spec.control_fd, {"report": report.to_dict()})
        # `run`: the end of file that exec causes tells the parent the program started.
        os.set_inheritable(spec.control_fd, False)
        del env[SANDBOX_FD_ENV]
    if spec.target is not None:
        # No exec to hand the scrubbed environment over: it replaces this process's own.
        os.environ.clear()
        os.environ.update({k: v for k, v in env.items() if k != SANDBOX_FD_ENV})
        code = 1
        try:
            code = spec.target(spec.control_fd)
        finally:
            os._exit(code)
    try:
        os.execve(spec.argv[0], list(spec.argv), env)
    except OSError as exc:
        raise EnforcementError("exec", f"{spec.argv[0]}: {exc.strerror}") from None
