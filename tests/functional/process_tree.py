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


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


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
    known: list[int] = [root] if include_root else []
    signalled: dict[int, int] = {}
    kill_at = time.monotonic() + grace
    give_up = kill_at + 20.0
    while True:
        for pid in [root, *known]:
            known += [p for p in descendants(pid) if p not in known and p != os.getpid()]
        reap_children(keep)
        live = [p for p in known if running(p)]
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
