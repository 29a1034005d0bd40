"""Where `CleanCoin-sandbox status` finds a running process's enforcement report.

The kernel shows much of what is enforced on a process (/proc/PID/status: seccomp mode,
no_new_privs, capabilities; /proc/PID/ns; /proc/PID/limits) but not its policy, its Landlock
rules or its filter's hash. Each sandbox entry therefore leaves its report in a per-user
directory, one file per process, named by pid and checked against the process's start time
(in the file's name) so that a file of a dead process never describes a new one with the
same pid; entries of processes that are gone are removed when a zygote or a process that
restricts itself registers:

- a launch: the launcher (the zygote, `CleanCoin-sandbox run`) writes it once the child has
  reported, and removes it when it reaps the child;
- a process that restricts itself: it opens its file before the sandbox goes up (Landlock
  would refuse the open afterwards) and writes the report into it when the steps are done.

The directory is $CLEANCOIN_SANDBOX_REPORTS, else $XDG_RUNTIME_DIR/cleancoin-sandbox when
that runtime directory is the user's own and 0700, and no other user can swap it or a
directory above it (since 12-07, later: a runtime directory of the user's inside another
user's directory was used), as the XDG spec requires of it (since
12-07: one set to /tmp, as some containers and scripts do, put every user's reports at the
one name /tmp/cleancoin-sandbox, which another user could create first), else a directory
named for the host in $XDG_STATE_HOME/cleancoin-sandbox (XDG_STATE_HOME defaults to
~/.local/state; the host's name keeps hosts that share a home from pruning each other's
entries). It must be the
user's own, mode 0700, not a symlink, or nothing is written (a report is for reading; no
enforcement depends on it). Before 12-07 the last fallback was /tmp/cleancoin-sandbox-UID,
which another local user could create first: no report was written then. A home directory
is the user's alone; the zygote gets the directory its parent chose (it keeps no HOME).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

ENV = "CLEANCOIN_SANDBOX_REPORTS"


def directory() -> str | None:
    """The registry directory for this user (see the module docstring); None when there is
    none to be had (no runtime directory and no home)."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _private_directory(runtime):
        return os.path.join(runtime, "cleancoin-sandbox")
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):     # the spec: a relative path is to be ignored
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "cleancoin-sandbox", os.uname().nodename or "localhost")


def _private_directory(path: str) -> bool:
    """Whether `path` is a directory of this user's alone: its own, mode 0700, not a link,
    and no other user can swap it or a directory above it (`_fixed_above`)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
            and _fixed_above(path))


def _fixed_above(path: str) -> bool:
    """Whether no other user can rename `path` or a directory above it, or put a link in its
    place: every directory above it, as written and as resolved, belongs to root or this user
    and, where others (or a group not the user's own) may write it, has the sticky bit (then
    only an entry's owner renames it: /tmp); a link on the way belongs to root or this user.
    Until 12-07 only the last directory was looked at: the user's own 0700 directory inside another user's (a runtime
    directory made in their /tmp/x) passed, and that user could rename it between the check
    and the write, and put a link to a directory of theirs there."""
    me = os.getuid()
    for chain in (os.path.abspath(path), os.path.realpath(path)):
        parent = os.path.dirname(chain)
        while True:
            try:
                info = os.lstat(parent)
            except OSError:
                return False
            if info.st_uid not in (me, 0):
                return False
            # A group that may write: the user's own group (a home of mode 0775 under user
            # private groups) is taken as the user's.
            others = stat.S_IWOTH | (stat.S_IWGRP if info.st_gid != os.getgid() else 0)
            if stat.S_ISDIR(info.st_mode) and info.st_mode & others and not info.st_mode & stat.S_ISVTX:
                return False
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    return True


def _own_directory(create: bool) -> str | None:
    path = directory()
    if path is None:
        return None
    if create:
        try:
            # Its parents (~/.local/state ...) as XDG tools make them, private.
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    # Another user's directory, a link, or one others may read or write: not ours to trust.
    return path if _private_directory(path) else None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: the fields after it start after
    # its last ")".
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _file(folder: str, pid: int, started: int) -> str:
    # The start time is in the name: a file whose process is gone (or whose pid was reused)
    # is recognised from the name alone, and removed (`_prune`).
    return os.path.join(folder, f"{pid}-{started}.json")


def _prune(folder: str) -> None:
    """Remove the entries of processes that are gone (killed launchers leave theirs)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        stem, _, ext = name.partition(".")
        pid, _, started = stem.partition("-")
        if ext != "json" or not pid.isdigit() or not started.isdigit():
            continue
        if start_time(int(pid)) != int(started):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def register(pid: int, entry: dict[str, object]) -> bool:
    """Record a report (or a role such as "zygote") for a running process; False if the
    registry cannot be written (nothing depends on it)."""
    folder = _own_directory(create=True)
    started = start_time(pid)
    if folder is None or started is None:
        return False
    if entry.get("kind") != "launch":
        _prune(folder)          # once per zygote or self-restricting process: cheap enough
    final = _file(folder, pid, started)
    temp = f"{final}.{os.getpid()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            # dumps, not dump: dump takes json's Python encoder, dumps its C one (about 1 ms
            # less for a launch's report, on every `CleanCoin-sandbox run`).
            handle.write(json.dumps({"pid": pid, "start_time": started, **entry}))
        os.replace(temp, final)
        return True
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
        return False


def unregister(pid: int, started: int) -> None:
    """Remove a process's entry (when its launcher reaps it)."""
    folder = _own_directory(create=False)
    if folder is None:
        return
    try:
        os.unlink(_file(folder, pid, started))
    except OSError:
        pass


@dataclass
class Reservation:
    """A process's entry opened before it restricts itself, written afterwards."""

    fd: int
    start: int
    pid: int

    def write(self, entry: dict[str, object]) -> None:
        data = json.dumps({"pid": self.pid, "start_time": self.start, **entry}).encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        os.close(self.fd)


def reserve(pid: int) -> Reservation | None:
    """Open this process's entry now, to be written after the sandbox is up (or None)."""
    folder = _own_directory(create=True)
    started = start_time(pid)
    if folder is None or started is None:
        return None
    _prune(folder)
    try:
        fd = os.open(_file(folder, pid, started), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    return Reservation(fd, started, pid)


def lookup(pid: int) -> dict[str, object] | None:
    """The entry of a running process, if it has a current one (a stale one is removed)."""
    folder = _own_directory(create=False)
    started = start_time(pid)
    if folder is None or started is None:
        return None
    try:
        with open(_file(folder, pid, started), encoding="utf-8") as handle:
            entry = json.load(handle)
    except (OSError, ValueError):
        return None         # none, or one still being written
    return entry if isinstance(entry, dict) else None


def entries() -> list[dict[str, object]]:
    """The entries of every running process in the registry (`lookup` of each)."""
    folder = _own_directory(create=False)
    if folder is None:
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        stem, _, ext = name.partition(".")
        pid, _, _started = stem.partition("-")
        if ext == "json" and pid.isdigit() and (entry := lookup(int(pid))) is not None:
            found.append(entry)
    return found
