"""The namespace steps: enter user, mount, pid, net, ipc and uts namespaces, and map the ids.

The order is bubblewrap's: unshare everything at once (the kernel makes the user namespace
first, so the others belong to it), write the id maps, make mounts private. A non-root
process that keeps its memory private joins a user namespace whose maps were written from
outside (userns_holder) and then unshares the others. The filesystem
view is `rootfs`, the pid namespace's processes are `pidns`.
"""

from __future__ import annotations

import os

from . import syscalls, userns_holder
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


def enter(wanted: list[str], level: str, uid: int, gid: int) -> tuple[list[str], str | None, bool]:
    """Unshare `wanted` at once; below compatibility level hard, when that fails, one by one
    as far as the kernel allows. Returns (entered, the first failure's reason or None, whether
    the ids are mapped already).

    A process that keeps its memory private (`memory_private`) joins a user namespace made by
    a holder process instead, its ids mapped from outside (userns_holder), and then unshares
    the others: it is never made dumpable to write its own maps. Level hard re-raises the
    failure; what a lower level accepts is the runner's judgement.
    """
    if "user" not in wanted or not memory_private():
        entered, first_error = _unshare_all(wanted, level)
        return entered, first_error, False
    others = [name for name in wanted if name != "user"]
    try:
        userns_holder.join(uid, gid)
    except EnforcementError as exc:
        if level == "hard":
            raise
        return _one_by_one(others), exc.reason, False
    entered, first_error = _unshare_all(others, level)
    return ["user", *entered], first_error, True


def _unshare_all(wanted: list[str], level: str) -> tuple[list[str], str | None]:
    try:
        unshare(wanted)
        return list(wanted), None
    except EnforcementError as exc:
        if level == "hard":
            raise
        return _one_by_one(wanted), exc.reason


def _one_by_one(wanted: list[str]) -> list[str]:
    entered = []
    for name in wanted:   # "user" first: the others may need its capabilities
        try:
            unshare([name])
            entered.append(name)
        except EnforcementError:
            pass
    return entered


def memory_private() -> bool:
    """Whether this process keeps its memory from the other processes of its uid: not root
    (root's are root's anyway), and not dumpable. Its /proc/self files are root's then."""
    return os.geteuid() != 0 and syscalls.prctl(syscalls.PR_GET_DUMPABLE) == 0


def write_id_maps(uid: int, gid: int) -> None:
    """Map our own uid and gid into the user namespace just unshared, as the same numbers.

    Keeping the numbers means files the component creates in its datadir belong to the user
    who launched it. setgroups is denied first, as the kernel requires of an unprivileged map.

    For root and for a dumpable caller only: a non-root process that is not dumpable cannot
    open its own /proc/self files (root's), and is never made dumpable for them (before 12-07
    it was, and a process of the same user could take it over in those microseconds): it
    enters its user namespace with `enter`, which maps its ids from outside.
    """
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


def make_mounts_private() -> None:
    """Stop mount events from travelling back to the parent's namespace."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
