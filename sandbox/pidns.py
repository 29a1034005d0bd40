"""The pid namespace step's processes: a waiter outside, PID 1 inside, and the component.

Since 12-07 the waiter and PID 1 are a small compiled program (sandbox/pidns_waiter.c, built
at install time), not two forks of the launcher's interpreter, which kept about 3.4 MiB of
copy-on-write pages of the zygote's memory (issue #16). The order:

1. `start_waiter`, in the launched child before the namespaces: it forks. The parent side
   (the process the launcher waits for) execs the waiter from a memfd of mode 0111: its own
   uid cannot read that file, so the kernel starts it not dumpable, and since the exec comes
   before the sandbox's user namespace, its memory belongs to the launcher's user namespace
   (the kernel's mm->user_ns is fixed at exec). No process of the same uid can then attach to
   it or open its namespace files, though the uid owns the sandbox's user namespace, which
   the waiter joins later: setns does not move mm->user_ns. A program exec'd inside the
   sandbox's user namespace would belong to it and be reachable
   (tests/test_pidns_same_user.py shows both). The child side carries on with the steps.
2. `split`, in the child after the namespaces: it hands the waiter its user namespace; the
   waiter joins it, makes the pid namespace and forks PID 1 (a pid namespace's
   `pid_for_children` cannot be opened before it has an init) and hands the namespace back;
   the child joins it and forks pid 2, which forks the component (pid 3) and ends, so that the
   component is PID 1's child (as an orphan inside; a child of the launched child's would
   have its parent outside the namespace, and be left a zombie nobody reaps when the waiter is
   killed). PID 1 reaps everything inside, gets the component's exact status, gives what is
   left GRACE_SECONDS to end by itself and sends the status up a pipe to the waiter, which
   ends as the component ended (same status, same signal).

The component's process group is pid 2's (since 12-07), where the launched child made a
session of its own: a process group spans pid namespaces, and in the waiter's group kill(0)
from the component reached the waiter outside (where Landlock's signal scope is off: a
policy's `[scopes] signal = false`, a kernel before ABI 6): it died of a signal the component
ignored, and the launcher reported that signal as the component's end. With
`new_session = false` the component stays in the launcher's group, for its job control.

Both give up every capability, set no_new_privs and keep no descriptor but their pipe once
the component runs. There is no Python fallback: an installation without the program fails
the step, naming it (a launch in a pid namespace without its waiter is not a launch).
"""

from __future__ import annotations

import _socket
import os
import signal
import sys
import time
from dataclasses import dataclass

from . import descriptors, sealed_program, syscalls
from .errors import EnforcementError

TYPE_CHECKING = False      # not typing's: the connect broker imports this module, never typing

#: How long PID 1 lets what is left in the namespace end by itself once the component is gone:
#: the learn recorder hears that the component is gone only once it is reaped and writes its
#: last counts after that. A stray of the component's is killed after the grace.
GRACE_SECONDS = 0.25

#: The compiled waiter, installed beside this module (built by setup.py from pidns_waiter.c).
PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pidns-waiter")

_STEP = "pid namespace"
#: The component's pid in its namespace: PID 1 is the init, pid 2 the fork that made it.
COMPONENT = 3
#: How long the component waits for pid 2 to end and the kernel to make it PID 1's child.
_REPARENT_SECONDS = 5.0
_WAITER_STEP = "pid namespace waiter"


@dataclass
class Waiter:
    """The launched child's end of its waiter: the socket and the waiter's pid."""

    sock: _socket.socket
    pid: int


def start_waiter(title: str, launcher: int, report_fds: set[int] | frozenset[int] = frozenset()) -> Waiter:
    """Fork; the parent side becomes the compiled waiter (exec, never returns), the child
    side returns to carry on with the steps. `launcher`: the pid the waiter must die with (0:
    none). `report_fds`: descriptors the parent side keeps until its exec, closed by it, so
    that a failed exec can still be reported (the launcher's control socket). Call before
    the namespaces."""
    # _socket, not socket.py: this runs in the launched child, on the way to the program's
    # exec, where socket.py (with selectors, array and its enum conversions) was about 3 to 5
    # ms of every launch in a pid namespace (tests/test_sandbox_startup.py).
    program = _executable()
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    # The waiting processes learn of their children's ends by SIGCHLD at its default: the
    # program sets that itself (a launcher's SIG_IGN would have the kernel reap them); the
    # component keeps the launcher's disposition.
    waiter = os.getpid()
    child = os.fork()
    if child:
        ours.close()
        _become_waiter(program, theirs.detach(), child, title, launcher, report_fds)
    theirs.close()
    os.close(program)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != waiter:
        os._exit(126)                   # the waiter is gone (its own launcher died)
    return Waiter(ours, waiter)


def _executable() -> int:
    """The waiter program in a sealed memfd of mode 0111 (exec only, not readable by its uid)."""
    try:
        with open(PROGRAM, "rb") as handle:
            image = handle.read()
    except OSError as exc:
        raise EnforcementError(_WAITER_STEP, f"the compiled waiter {PROGRAM} cannot be read ({exc.strerror}): "
                                      "this installation was built without it; reinstall with a C "
                                      "compiler (gcc), see docs/sandbox.md") from None
    try:
        return sealed_program.sealed_fd("cleancoin-pidns-waiter", image)
    except OSError as exc:
        raise EnforcementError(_WAITER_STEP, f"preparing the compiled waiter in a memfd: {exc.strerror}") from None


def _become_waiter(program: int, sock: int, child: int, title: str, launcher: int,
                   report_fds: set[int] | frozenset[int]) -> None:
    """The launched child's parent side: exec the waiter. Never returns; should the exec fail,
    the child is killed and the step fails here, reported on `report_fds` (kept open until the
    exec, which closes them: the waiter holds none of them)."""
    waiter_title = f"{title} (waiter)" if title else "(waiter)"
    config = f"{sock} {launcher} {child} {int(GRACE_SECONDS * 1000)} {len(title.encode())}"
    try:
        descriptors.keep_only({0, 1, 2, sock, program} | set(report_fds))
        for fd in {program, *report_fds} - {0, 1, 2, sock}:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass        # one that was not open: keep_only had nothing to keep
        os.execve(program, [waiter_title], {"CLEANCOIN_PIDNS": config})
    except OSError as exc:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise EnforcementError(_WAITER_STEP, f"exec of the compiled waiter: {exc.strerror}") from None


def _send_fd(sock: _socket.socket, message: bytes, fd: int) -> None:
    """socket.send_fds for one descriptor, without socket.py."""
    sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(_INT, _ORDER))])


def _recv_fds(sock: _socket.socket, size: int, maxfds: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds without socket.py: the message and the descriptors that came with it
    (close-on-exec), every one of them, a truncated array's whole ones included."""
    message, ancdata, _flags, _addr = sock.recvmsg(size, _socket.CMSG_LEN(maxfds * _INT),
                                                   _socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(data) - len(data) % _INT
            fds += [int.from_bytes(data[i:i + _INT], _ORDER) for i in range(0, whole, _INT)]
    return message, fds


#: A C int as SCM_RIGHTS carries descriptors (socket.py uses array("i")).
_INT = 4
_ORDER = sys.byteorder


def split(waiter: Waiter, in_user_namespace: bool, own_group: bool) -> None:
    """In the launched child, its namespaces entered: have the waiter make the pid namespace,
    join it and fork the component. Returns only in the component (pid 3, PID 1's child).
    `own_group` (the launched child made a session of its own): the component's process group
    is one of the namespace (pid 2's), not the waiter's, so that kill(0) reaches no process
    outside the namespace (see the module's docstring)."""
    sock = waiter.sock
    if in_user_namespace:
        user = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _send_fd(sock, b"U", user)
        finally:
            os.close(user)
    else:
        sock.send(b"N")
    message, fds = _recv_fds(sock, 256, 1)
    if message[:1] != b"P" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        why = message[1:].decode(errors="replace") or "it ended before it made the pid namespace"
        raise EnforcementError(_STEP, f"the waiter: {why}")
    try:
        syscalls.setns(fds[0], syscalls.CLONE_NEWPID)
    except OSError as exc:
        raise EnforcementError(_STEP, f"joining the pid namespace: {exc.strerror}") from None
    finally:
        os.close(fds[0])
    # The component gets the launcher's disposition of SIGCHLD back; until then the default, or
    # a launcher's SIG_IGN would have the kernel reap pid 2 and waitpid fail.
    inherited = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    middle = os.fork()
    if middle:
        os.waitpid(middle, 0)
        sock.send(b"X")
        os._exit(0)          # the waiter reaps us
    # pid 2: fork the component and end, so that it is PID 1's orphan and child (a child of
    # ours outside would be the child of a process outside the namespace, and a zombie nobody
    # reaps once the waiter is killed). First a process group of its own, which the component
    # inherits: kill(0, sig) and a negative pid reach every process of the caller's group,
    # whatever its pid namespace, and the group was the waiter's (it is the launched child's
    # pid, leader of the new session). A failure here is seen by the component below.
    if own_group:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    if os.fork():
        os._exit(0)
    sock.close()
    # Until pid 2 has ended the component is still its child: code that asks for its parent
    # right away got 2, not PID 1 (seen once in CI, test_enforcement). Wait for the kernel to
    # reparent it, so that it is PID 1's child before any step or program runs.
    deadline = time.monotonic() + _REPARENT_SECONDS
    while os.getppid() != 1:
        if time.monotonic() > deadline:
            raise EnforcementError(_STEP, f"pid 2 did not end within {_REPARENT_SECONDS:g} s: the component's "
                                          f"parent is pid {os.getppid()}, not PID 1")
        time.sleep(0.0002)
    if os.getpid() != COMPONENT:     # PID 1 waits for it and passes termination signals on
        raise EnforcementError(_STEP, f"the component is pid {os.getpid()} in its namespace, not {COMPONENT}")
    if own_group and os.getpgrp() != COMPONENT - 1:   # 0: a group whose leader is outside
        raise EnforcementError(_STEP, f"the component's process group is {os.getpgrp()} in its namespace, "
                                      f"not pid 2's: kill(0) would reach its waiter outside")
    if inherited is not None:          # None: a handler not set from Python; the default stays
        signal.signal(signal.SIGCHLD, inherited)
