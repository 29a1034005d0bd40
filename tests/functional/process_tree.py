"""The processes below a pid (from /proc), and ending all of them.

The functional runner (test_runner.py) uses this to stop every process its tests started: a
test's nodes may run in sessions of their own (TestNode(new_session=True), the crash tests),
where a signal to the test's process group does not reach them, and a node whose test died
is an orphan. The runner is its children's subreaper (PR_SET_CHILD_SUBREAPER), so such
orphans become its children and stay in the tree below it, where `end_tree` finds them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (from /proc; empty when it is gone)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return children


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop(0)):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot): with the pid, names one process (pids
    are reused, soon where pid_max is 32768); None when it is gone."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def running(pid: int, started: int | None = None) -> bool:
    """Whether `pid` exists and is not a zombie (and, given `started`, is the process that
    started then, not a later one with its pid)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and (started is None or int(fields[19]) == started)


def describe(pid: int) -> str:
    """'PID NAME ARGS' (the command line cut to 120 characters), for a report line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmdline = "?"
    return f"{pid} {cmdline.strip()[:120]}"


def reap_children(keep: set[int]) -> None:
    """Reap this process's children that have exited, except those in `keep` (the ones a
    subprocess.Popen waits for itself): orphans it adopted as a subreaper."""
    for pid in child_pids(os.getpid()):
        if pid in keep:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue


def end_tree(root: int, grace: float, include_root: bool = True, keep: set[int] = frozenset()) -> list[int]:
    """SIGTERM `root` (when include_root) and every process below it, SIGKILL what is still
    running `grace` seconds later; returns when all of them are gone (or after 20 s more),
    with the pids it signalled. Processes found below any of them later (forked meanwhile, or
    adopted by this process as their subreaper) are ended too. Zombies among this process's
    own children are reaped, except the pids in `keep`."""
    root_started = start_time(root)
    known: dict[int, int | None] = {root: root_started} if include_root else {}
    signalled: dict[int, int] = {}
    kill_at = time.monotonic() + grace
    give_up = kill_at + 20.0
    while True:
        # Below the root and below each known process that is still the one it was (a pid
        # reused meanwhile is a stranger's).
        current = [p for p, started in [(root, root_started), *known.items()]
                   if started is not None and running(p, started)]
        for pid in current:
            for found in descendants(pid):
                if found not in known and found != os.getpid():
                    known[found] = start_time(found)
        reap_children(keep)
        live = [p for p, started in known.items() if started is not None and running(p, started)]
        if not live or time.monotonic() > give_up:
            return list(signalled)
        sig = signal.SIGKILL if time.monotonic() >= kill_at else signal.SIGTERM
        for pid in live:
            if signalled.get(pid) != sig:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
                signalled[pid] = sig
        time.sleep(0.05)
