"""The namespace steps: enter user, mount, pid, net, ipc and uts namespaces, and map the ids.

The order is bubblewrap's: unshare everything at once (the kernel makes the user namespace
first, so the others belong to it), write the id maps, make mounts private. The filesystem
view is `rootfs`, the pid namespace's processes are `pidns`.
"""

from __future__ import annotations

import os

from . import syscalls
from .errors import EnforcementError

FLAGS = {"user": syscalls.CLONE_NEWUSER, "mount": syscalls.CLONE_NEWNS, "pid": syscalls.CLONE_NEWPID,
         "net": syscalls.CLONE_NEWNET, "ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS}


def unshare(names: list[str]) -> None:
    """Enter new namespaces of the given kinds in one unshare(2) call."""
    flags = 0
    for name in names:
        flags |= FLAGS[name]
    if not flags:
        return
    try:
        syscalls.unshare(flags)
    except OSError as exc:
        raise EnforcementError("namespaces", f"unshare({'|'.join(names)}): {exc.strerror}") from None


def enter(wanted: list[str], level: str) -> tuple[list[str], str | None]:
    """Unshare `wanted` at once; below compatibility level hard, when that fails, one by one
    as far as the kernel allows. Returns (entered, the first failure's reason or None).

    Level hard re-raises the failure; what a lower level accepts is the runner's judgement.
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
    return entered, first_error


def write_id_maps(uid: int, gid: int) -> None:
    """Map our own uid and gid into the new user namespace, as the same numbers.

    Keeping the numbers means files the component creates in its datadir belong to the user
    who launched it. setgroups is denied first, as the kernel requires of an unprivileged map.

    A process that is not dumpable (CleanCoin-node keeps its memory private from the start,
    and its zygote and the zygote's children inherit that) finds its /proc/self files owned
    by root: a non-root caller may not open its own maps then, while root may (so only a
    non-root run shows it). For the three writes it is made dumpable again, and then not.
    A process of the same user that attaches with ptrace in that window would stay attached
    after it (the kernel checks dumpable only at attach) and could later read what the
    component holds: a tracer that was not there before the window stops the launch.
    """
    hidden = os.geteuid() != 0 and syscalls.prctl(syscalls.PR_GET_DUMPABLE) == 0
    tracer = _tracer() if hidden else 0
    if hidden:
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
    try:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1\n")):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise EnforcementError("id maps", f"writing {path}: {exc.strerror}") from None
    finally:
        if hidden:
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    if hidden and _tracer() != tracer:
        raise EnforcementError("id maps", "a process attached with ptrace while this one was dumpable "
                                          "to write its id maps: not going on under a new tracer")


def _tracer() -> int:
    """The pid tracing this process (0: none), from /proc/self/status. EnforcementError if it
    cannot be read: a tracer that cannot be ruled out is not let through."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    raise EnforcementError("id maps", "cannot read this process's tracer from /proc/self/status")


def make_mounts_private() -> None:
    """Stop mount events from travelling back to the parent's namespace."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
