"""The namespace step: user, mount, pid, net, ipc and uts namespaces, before exec.

Python 3.11 has no os.unshare, and mount(2) and sethostname(2) have no wrapper at all, hence
ctypes. The order is bubblewrap's: unshare everything at once (the kernel makes the user
namespace first, so the others belong to it), write the id maps, make mounts private, and
only in the pid namespace's first process mount the fresh /proc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Iterable

from .errors import EnforcementError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

FLAGS = {"user": CLONE_NEWUSER, "mount": CLONE_NEWNS, "pid": CLONE_NEWPID,
         "net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, loaded once: each dlopen costs a few hundred microseconds in a fresh
    fork, and the pre-exec path calls into it several times."""
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> EnforcementError:
    return EnforcementError("namespaces", f"{what}: {os.strerror(ctypes.get_errno())}")


def unshare(names: Iterable[str]) -> None:
    """Enter new namespaces of the given kinds in one unshare(2) call."""
    flags = 0
    for name in names:
        flags |= FLAGS[name]
    if flags and libc().unshare(flags) != 0:
        raise _fail(f"unshare({'|'.join(names)})")


def enter(wanted: list[str], level: str) -> tuple[list[str], str | None]:
    """Unshare `wanted` at once; below compatibility level hard, when that fails, one by one
    as far as the kernel allows. Returns (entered, the first failure's reason or None).

    Level hard re-raises the failure; level soft demands at least one namespace.
    """
    try:
        unshare(wanted)
        return list(wanted), None
    except EnforcementError as exc:
        if level == "hard":
            raise
        first_error = exc.reason
    entered = []
    for name in wanted:   # "user" first: the others may need its capabilities
        try:
            unshare([name])
            entered.append(name)
        except EnforcementError:
            pass
    if not entered and wanted and level == "soft":
        raise EnforcementError("namespaces", f"no namespace could be entered: {first_error}")
    return entered, first_error


def write_id_maps(uid: int, gid: int) -> None:
    """Map our own uid and gid into the new user namespace, as the same numbers.

    Keeping the numbers means files the component creates in its datadir belong to the user
    who launched it. setgroups is denied first, as the kernel requires of an unprivileged map.
    """
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1\n")):
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise EnforcementError("namespaces", f"writing {path}: {exc.strerror}") from None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if libc().mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                     ctypes.c_ulong(flags), data and data.encode()) != 0:
        raise _fail(f"mount {fstype or source or ''} on {target}")


def make_mounts_private() -> None:
    """Stop mount events from travelling back to the parent's namespace."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def private_tmp(keep: Iterable[str]) -> None:
    """An empty tmpfs on /tmp, with the granted paths under /tmp bound back into it.

    Test and user datadirs often live under /tmp; a private /tmp must not hide the very
    directory the policy grants (bubblewrap needs an explicit --bind for the same reason).
    """
    kept: list[tuple[str, int]] = []
    try:
        for path in sorted(set(keep)):
            if os.path.exists(path):
                kept.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC)))
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        for path, fd in kept:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "a").close()
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    except OSError as exc:
        raise EnforcementError("namespaces", f"private /tmp: {exc.filename}: {exc.strerror}") from None
    finally:
        for _, fd in kept:
            os.close(fd)


def hide(paths: Iterable[str]) -> None:
    """Cover each path with an empty, read-only tmpfs (`filesystem.hide`).

    Landlock rules are hierarchical: a grant on a directory cannot leave out a subdirectory.
    A mount can: below the tmpfs the process sees an empty directory (or an empty file's
    worth of nothing) and can create nothing, whatever Landlock grants on the parent. The
    flags keep the cover itself inert: read-only, no setuid, no devices, no exec. The mount
    cannot be undone later: seccomp denies umount2 and mount, capabilities are dropped, and a
    Landlock domain forbids changes to the mount topology.

    Only directories can be covered (the plan compiler refuses files before fork); the check
    here guards against the path changing between planning and mounting.
    """
    for path in paths:
        if not os.path.isdir(path):
            raise EnforcementError("hide", f"{path}: not a directory (hide covers directories "
                                           "with an empty tmpfs)" if os.path.exists(path) else
                                   f"{path}: does not exist in the component's mount namespace")
        if libc().mount(b"tmpfs", path.encode(), b"tmpfs",
                        ctypes.c_ulong(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
                        b"mode=0555,size=4k,nr_inodes=1") != 0:
            raise EnforcementError("hide", f"mount tmpfs on {path}: {os.strerror(ctypes.get_errno())}")


def mount_proc() -> None:
    """A /proc that shows only the new pid namespace. Must run inside it (as its PID 1)."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def set_hostname(name: str) -> None:
    data = name.encode()
    if libc().sethostname(data, len(data)) != 0:
        raise _fail("sethostname")


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


def run_init(child: int) -> int:
    """PID 1 of a pid namespace: reap every child, forward signals to the component.

    Returns the wait status of `child`, the component; when it is gone the namespace ends and
    the kernel kills whatever is left in it.
    """
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == child:
            return status
