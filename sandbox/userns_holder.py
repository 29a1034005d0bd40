"""Enter a new user namespace without ever being dumpable: a throwaway holder process makes
it, this process writes its id maps from outside and joins it with setns.

Why (since 12-07): a process that keeps its memory private (not dumpable: CleanCoin-node from
its start, its zygote and every component the zygote forks) finds its /proc/self files owned
by root, so a non-root one cannot write its own uid_map after unshare(CLONE_NEWUSER). It used
to be made dumpable for the three writes; a process of the same user could stop it in that
window, attach with ptrace, write its memory, keep /proc/PID/mem open (checked at open only)
and detach again, unseen by any tracer check. Now the process that will hold keys is never
dumpable.

The kernel's rules this stands on (user_namespaces(7), proc(5) on uid_map, setns(2)):

- The holder is a fresh program started by exec (no memory and no descriptors of ours, an
  empty environment), so its being dumpable exposes nothing. It unshares a user namespace,
  whose owner is our effective uid, says so, and waits.
- A process of the parent namespace whose effective uid owns a namespace has every capability
  in it. This one opens the holder's /proc/PID/setgroups, uid_map and gid_map (the holder is
  dumpable, so they are our uid's) and writes what an unprivileged process may: setgroups
  "deny", then one line mapping its own uid, and its own gid.
- setns(CLONE_NEWUSER) needs CAP_SYS_ADMIN in the target (the owner has it), a single-threaded
  caller (the "single-thread check" step comes first) sharing no filesystem attributes with
  another process (a fork does not). The caller gets every capability in the namespace, so
  the next unshare of mount, pid, net, ipc and uts works as after unshare(CLONE_NEWUSER).
- setns keeps the caller's memory (its mm): still not dumpable, and its mm stays tied to the
  namespace it was started in, where the same user has no CAP_SYS_PTRACE.

What the holder's namespace is is checked, not assumed (a process of the same user may tamper
with the holder, which holds nothing): a child of our own user namespace, maps that nobody
wrote before us (a map is written once: a second write fails), and after setns our own ids
and the maps we wrote. The holder is killed and reaped before this returns. Every failure is
EnforcementError("namespaces", ...) naming the step of this sequence that failed.
"""

from __future__ import annotations

import os
import sys

from . import syscalls
from .errors import EnforcementError

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    import subprocess

#: ioctl(2) on a namespace file: a descriptor of its parent namespace (ioctl_ns(2)).
NS_GET_PARENT = 0xB702

#: The holder: unshare a user namespace, answer "u" (or "e" and the errno), wait for stdin.
#: `-I -S`: no site, no environment variables, no user's site directory, no cwd on sys.path.
_HOLDER = """\
import os
try:
    os.unshare(0x10000000)
except AttributeError:
    import ctypes
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        os.write(1, b"e%d" % ctypes.get_errno())
        raise SystemExit(1)
except OSError as exc:
    os.write(1, b"e%d" % exc.errno)
    raise SystemExit(1)
os.write(1, b"u")
os.read(0, 1)
"""


def _fail(what: str, reason: str) -> EnforcementError:
    return EnforcementError("namespaces", f"user namespace through a holder process, {what}: {reason}")


def join(uid: int, gid: int) -> None:
    """Enter a new user namespace in which `uid` and `gid` map to themselves, never dumpable
    on the way (see the module's docstring). Raises EnforcementError naming what failed."""
    # Here, not at the top: a launch that needs no holder (root, a dumpable caller) does not
    # pay for the import (tests/test_sandbox_startup.py).
    import subprocess
    own = os.stat("/proc/self/ns/user")
    try:
        holder = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLDER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, env={},
                                  cwd="/")
    except OSError as exc:
        raise _fail(f"starting {sys.executable}", exc.strerror or str(exc)) from None
    try:
        _enter(holder, own, uid, gid)
    finally:
        holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()


def _enter(holder: subprocess.Popen[bytes], own: os.stat_result, uid: int, gid: int) -> None:
    assert holder.stdout is not None
    answer = os.read(holder.stdout.fileno(), 32)
    if answer != b"u":
        errno_text = answer[1:].decode(errors="replace")
        reason = os.strerror(int(errno_text)) if answer[:1] == b"e" and errno_text.isdigit() else \
            f"it ended without an answer (status {holder.wait()})"
        raise _fail("the holder's unshare", reason)
    proc = f"/proc/{holder.pid}"
    try:
        ns_fd = os.open(f"{proc}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail("opening its namespace", exc.strerror or str(exc)) from None
    try:
        _check_parent(ns_fd, own)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n")):
            try:
                fd = os.open(f"{proc}/{name}", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _fail(f"writing its {name}", exc.strerror or str(exc)) from None
        try:
            syscalls.setns(ns_fd, syscalls.CLONE_NEWUSER)
        except OSError as exc:
            raise _fail("setns", exc.strerror or str(exc)) from None
        _verify(ns_fd, uid, gid)
    finally:
        os.close(ns_fd)


def _check_parent(ns_fd: int, own: os.stat_result) -> None:
    import fcntl
    try:
        parent_fd = fcntl.ioctl(ns_fd, NS_GET_PARENT)
    except OSError as exc:
        raise _fail("asking for its parent namespace", exc.strerror or str(exc)) from None
    try:
        parent = os.fstat(parent_fd)
    finally:
        os.close(parent_fd)
    if (parent.st_dev, parent.st_ino) != (own.st_dev, own.st_ino):
        raise _fail("checking its namespace", "it is not a child of this process's user namespace")


def _verify(ns_fd: int, uid: int, gid: int) -> None:
    """After setns: in that namespace, as our own ids, under the maps we wrote, and still not
    dumpable."""
    joined, now = os.fstat(ns_fd), os.stat("/proc/self/ns/user")
    problems = []
    if (joined.st_dev, joined.st_ino) != (now.st_dev, now.st_ino):
        problems.append("this process is not in the holder's namespace")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        problems.append(f"ids are {os.getresuid()}/{os.getresgid()}, not {uid}/{gid}")
    for name, expected in (("uid_map", [str(uid), str(uid), "1"]), ("gid_map", [str(gid), str(gid), "1"]),
                           ("setgroups", ["deny"])):
        with open(f"/proc/self/{name}", encoding="ascii") as file:
            found = file.read().split()
        if found != expected:
            problems.append(f"{name} is {' '.join(found) or 'empty'!r}")
    if syscalls.prctl(syscalls.PR_GET_DUMPABLE) != 0:
        problems.append("the process is dumpable")
    if problems:
        raise _fail("checking it after setns", "; ".join(problems))
