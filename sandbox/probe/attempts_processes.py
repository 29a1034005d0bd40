"""Attempts on programs and other processes: execve, ptrace, /proc of the parent, its memory,
signals and pidfds."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

from .. import landlock
from .judge import _Judge, _Why
from .kernel_abi import _EXECUTE, _PTRACE_ATTACH, _PTRACE_DETACH, _READ_FILE, _errname, _syscall
from .runner import Outcome, Runner, _Ctx, _ok, _Out
from .targets import _Targets


def _run_execve(ctx: _Ctx, out: _Out) -> Outcome:
    out.if_silent("allowed", f"succeeded: execve({ctx.targets.true_path}) ran the program")
    try:
        os.execv(ctx.targets.true_path, [ctx.targets.true_path])
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: no execute right", ENOENT="not visible")
    return "error", "execv returned"  # not reached


_PID_HINTS = {"ESRCH": "pid namespace: the parent is not visible",
              "EPERM": "landlock or capabilities: no ptrace access to a process outside"}


def _run_ptrace(ctx: _Ctx, out: _Out) -> Outcome:
    pid = ctx.targets.parent_pid
    ret, err = _syscall("ptrace", _PTRACE_ATTACH, pid, 0, 0)
    if ret != 0:
        return ctx.denied(err, **_PID_HINTS)
    # Let the parent go at once: wait for its attach stop, detach without a signal.
    try:
        os.waitpid(pid, 0x40000000)   # __WALL
    except OSError:
        pass
    _syscall("ptrace", _PTRACE_DETACH, pid, 0, 0)
    return _ok(f"PTRACE_ATTACH to the parent (pid {pid}), then detached")


def _make_proc_runner(entry: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        path = f"/proc/{ctx.targets.parent_pid}/{entry}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            return ctx.denied(exc, ENOENT="pid namespace: a /proc without the parent",
                              EACCES="landlock: /proc not granted, or no ptrace access",
                              EPERM="no ptrace access to the parent")
        try:
            if entry == "mem":
                data = os.pread(fd, len(ctx.targets.secret), ctx.targets.secret_addr)
                if data == ctx.targets.secret:
                    return _ok(f"opened {path} and read the parent's canary from its memory")
                return _ok(f"opened {path}")
            data = os.read(fd, 4096)
            return _ok(f"opened {path} and read {len(data)} bytes")
        except OSError as exc:
            return "allowed", f"opened {path}; reading it: {_errname(exc.errno or 0)}"
        finally:
            os.close(fd)
    return run


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _run_process_vm_readv(ctx: _Ctx, out: _Out) -> Outcome:
    size = len(ctx.targets.secret)
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _IoVec(ctx.targets.secret_addr, size)
    ret, err = _syscall("process_vm_readv", ctx.targets.parent_pid, ctypes.byref(local), 1,
                        ctypes.byref(remote), 1, 0)
    if ret < 0:
        return ctx.denied(err, **_PID_HINTS)
    same = buf.raw == ctx.targets.secret
    return _ok(f"read {ret} bytes of the parent's memory" + (" (the canary)" if same else ""))


def _run_kill_parent(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.kill(ctx.targets.parent_pid, 0)
    except OSError as exc:
        return ctx.denied(exc, ESRCH="pid namespace: the parent is not visible",
                          EPERM="landlock: signal scope")
    return _ok(f"kill({ctx.targets.parent_pid}, 0) reached the parent")


def _run_kill_init(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.kill(1, 0)
    except OSError as exc:
        return ctx.denied(exc, EPERM="landlock signal scope: PID 1 is outside the domain",
                          ESRCH="no PID 1")
    return _ok("kill(1, 0) reached PID 1")


def _run_signal_group(ctx: _Ctx, out: _Out) -> Outcome:
    # kill(0) reaches every process of the caller's process group, whatever its pid namespace.
    # Inside one, the component's parent is PID 1, and a group whose leader is outside shows
    # as pgid 0. Until 12-07 that was the waiter's group: a signal the component ignored killed
    # the waiter, and the launcher reported it as the component's end.
    if os.getppid() != 1:
        return "denied", "not tried: no pid namespace (its process group's pids are the host's)"
    group = os.getpgrp()
    if group != 0:
        return "denied", f"its process group is its pid namespace's own (pgid {group} there): kill(0) reaches no process outside"
    try:
        os.kill(1, 0)          # PID 1 is outside its Landlock domain, as the group's leader
    except OSError as exc:
        return ctx.denied(exc, EPERM="landlock: signal scope (the group's leader is outside its pid namespace)")
    try:
        os.kill(0, signal.SIGCONT)      # nothing it reaches stops or ends
    except OSError as exc:
        return ctx.denied(exc)
    return _ok("kill(0, SIGCONT) reached its process group, whose leader is outside its pid namespace (the waiter, or the launcher where it keeps its session)")


def _run_pidfd_signal(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("pidfd")
    if fd is None:
        return "error", "no pidfd of the parent was handed in"
    ret, err = _syscall("pidfd_send_signal", fd, 0, 0, 0)
    if ret != 0:
        return ctx.denied(err, EPERM="landlock: signal scope",
                          EINVAL="pid namespace: the parent is in an ancestor namespace")
    return _ok("pidfd_send_signal(parent, 0) reached the parent")


def _run_pidfd_getfd(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("pidfd")
    if fd is None:
        return "error", "no pidfd of the parent was handed in"
    ret, err = _syscall("pidfd_getfd", fd, 2, 0)
    if ret < 0:
        return ctx.denied(err, EPERM="landlock or capabilities: no ptrace access",
                          EBADF="the parent has no fd 2")
    os.close(ret)
    return _ok("took a copy of the parent's fd 2")


# expectations ------------------------------------------------------------------------------

def _exp_execve(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "execve")
    return j.ll(w, os.path.realpath(t.true_path), _EXECUTE, "execute")


def _exp_ptrace(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "ptrace")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return j.ptrace_access(w, attach=True)


def _exp_proc(entry: str) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "openat")
        w.need(not j.mount_proc, "pid namespace: its own /proc does not show the parent")
        j.ll(w, f"/proc/{t.parent_pid}/{entry}", _READ_FILE, "read_file")
        return j.ptrace_access(w, attach=entry == "mem")
    return expect


def _exp_process_vm_readv(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "process_vm_readv")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return j.ptrace_access(w, attach=True)


def _exp_kill_parent(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "kill")
    w.need("pid" not in j.ns, "pid namespace: the parent is not visible")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_kill_init(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "kill")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_signal_group(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    w.need("pid" in j.ns, "not tried without a pid namespace")
    w.need(not j.plan.new_session, "pid namespace: a process group of its own there (since 12-07)")
    j.sc(w, "kill")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_kill_monitor(j: _Judge, t: _Targets) -> _Why:
    """The component signals its denial monitor: only where the policy allows kill and the
    monitor is in reach (no signal scope: the monitor confines itself in a Landlock domain of
    its own, outside the component's), and there is a monitor in its pid namespace."""
    from .. import denial_log
    w = _Why()
    w.need("pid" in j.ns, "not tried without a pid namespace")
    w.need(denial_log.notifies(j.policy) and not j.plan.learn, "no denial log for this policy: no monitor")
    j.sc(w, "kill")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope (the monitor's domain is "
                                                        "not the component's)")


def _exp_pidfd_signal(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "pidfd_send_signal")
    w.need("pid" not in j.ns, "pid namespace: the parent is in an ancestor namespace")
    return w.need(not j.scoped(landlock.SCOPE_SIGNAL), "landlock: signal scope")


def _exp_pidfd_getfd(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "pidfd_getfd")
    return j.ptrace_access(w, attach=True)
