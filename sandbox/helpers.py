"""The sandbox's helper processes (the denial monitor, the learn recorder), and how
`CleanCoin-sandbox status` tells them from the processes they serve.

A helper is judged by what it is, not by a component's report: the learn recorder runs with
no filter by design, the denial monitor with its own. `status` used to know them by the name
they give themselves, and any process may take any name (prctl(PR_SET_NAME)): a confined
program's child called "denial-monitor" was shown as the sandbox's own monitor. Now a helper
is a process its component's report names, recorded by the component's set-up code (trusted:
nothing untrusted has run yet) as the double fork that starts it returns: its pid as the
component sees it and, where /proc can still be read there, its start time. `status` finds
that pid in the component's own pid namespace (the namespace's first process, reached through
the parents from /proc/PID/status, which anyone may read), and compares the start time. A pid
is unique in its namespace while its process lives, and the start time tells a later process
that took the pid of a helper that is gone; the helper's name plays no part.

Where the start time could not be read there (no /proc in the view yet: a launched component's
monitor), the launcher reads it from outside as it registers the report (`completed`), from the
process with that pid in the component's namespace; the component is confined by then, but
cannot end its monitor (outside its Landlock domain, which scopes signals) nor take a pid that
is in use. Where nobody could read it, the match is by pid and namespace alone: a helper lives as long as the component's filter (it holds the listener), so
its pid is not free while a confined process could take it, unless the helper died first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict

from . import report_registry
from .records import Record, record

DENIAL_MONITOR = "denial monitor"
LEARN_RECORDER = "learn recorder"
#: The relay of a self-restricting process's output to its terminal (stdio.py): unconfined
#: but for no_new_privs and no capabilities; it only copies bytes, control characters shown.
OUTPUT_RELAY = "output relay"


@record
class Helper(Record):
    """A helper as its component's report names it."""

    role: str                       # DENIAL_MONITOR, LEARN_RECORDER or OUTPUT_RELAY
    pid: int                        # as the component sees it (its pid namespace), or `outside`
    start_time: int | None = None   # clock ticks since boot; None: /proc unreadable there
    #: Started by the component's launcher, not by the component (a zygote's forked denial
    #: monitor, since 12-07): `pid` and `start_time` are as the launcher sees them, in the pid
    #: namespace its reports are registered in (report_registry), outside the component's.
    outside: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def started(role: str, pid: int) -> Helper:
    """The helper `pid` just started, as the component's set-up code records it."""
    return Helper(role, pid, report_registry.start_time(pid))


def detached(grandchild: Callable[[], object]) -> int:
    """Run `grandchild` (which execs or exits, never returns) in a process that is nobody's
    child here: a double fork whose middle process ends at once and is reaped here, so the
    helper is neither the component's child (a zombie it would have to reap, a pid its own
    waits could take) nor left behind as one. A grandchild that returns or raises ends.
    Returns the grandchild's pid (as this process sees it), which the middle one passes on.

    The grandchild goes to the nearest subreaper above, else to PID 1 (of the pid namespace),
    which must reap it: a zygote is the subreaper of its forks and reaps them (since 12-07);
    where PID 1 does not reap (a container without an init) one made elsewhere stays a
    zombie once it ends (docs/sandbox.md, "Known limits")."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_end)
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                grandchild()
            os.write(write_end, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(middle, 0)
    return int(data) if data.isdigit() else 0


def completed(report: dict[str, object], component: int) -> dict[str, object]:
    """`report` (a launched component's, as a dict) with each helper's start time that its
    set-up could not read filled in from this side (the host's /proc), for the helper with
    that pid in `component`'s pid namespace."""
    wanted = [h for h in report.get("helpers", []) or []
              if isinstance(h, dict) and h.get("start_time") is None and not h.get("outside")]
    home = namespace_init(component) if wanted else None
    if home is None:
        return report
    try:
        depth = len(_nspids(_status_fields(home[0])))
    except (OSError, ValueError):
        return report
    by_pid: dict[int, int] = {}          # pid in the component's namespace -> host pid
    pending = [home[0]]
    while pending and len(by_pid) < 65536:
        current = pending.pop()
        try:
            by_pid[_nspids(_status_fields(current))[depth - 1]] = current
        except (OSError, ValueError, IndexError):
            continue
        pending += children(current)
    for helper in wanted:
        host = by_pid.get(int(helper.get("pid", 0)))
        if host is not None:
            helper["start_time"] = report_registry.start_time(host)
    return report


def children(pid: int) -> list[int]:
    """The process's children (every thread's), from /proc (empty when it is gone)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                found += [int(c) for c in handle.read().split()]
        except OSError:
            continue
    return found


# --------------------------------------------------------------------- the reader's side


def _status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in handle)}


def _nspids(fields: Mapping[str, str]) -> list[int]:
    return [int(p) for p in fields.get("NSpid", "").split()]


def namespace_init(pid: int) -> tuple[int, int | None] | None:
    """The first process (pid 1) of `pid`'s pid namespace, as (host pid, start time), found
    through the parents: a process cannot leave its pid namespace, and its orphans are
    reparented within it. None if the chain cannot be read (a process gone)."""
    try:
        fields = _status_fields(pid)
        depth = len(_nspids(fields))
        current = pid
        for _ in range(4096):
            ids = _nspids(fields)
            if len(ids) != depth:
                return None
            if ids[-1] == 1:
                return current, report_registry.start_time(current)
            current = int(fields.get("PPid", "0"))
            if current <= 0:
                return None
            fields = _status_fields(current)
    except (OSError, ValueError):
        return None
    return None


def role_of(pid: int, entries: Iterable[Mapping[str, object]]) -> str:
    """The helper role `pid` has according to the registered reports (`entries`, each with
    the component's pid and its report), or ""."""
    try:
        ids = _nspids(_status_fields(pid))
    except (OSError, ValueError):
        return ""
    if not ids:
        return ""
    started_at = report_registry.start_time(pid)
    home = None
    for entry in entries:
        report = entry.get("report")
        component = entry.get("pid")
        if not isinstance(report, Mapping) or not isinstance(component, int):
            continue
        for helper in report.get("helpers", []) or []:
            if not isinstance(helper, Mapping):
                continue
            if helper.get("outside"):
                # Numbered as the registry numbers its components (`Helper.outside`), with the
                # start time its launcher read: both must match, or it is another process.
                if helper.get("pid") == pid and started_at is not None and helper.get("start_time") == started_at:
                    return str(helper.get("role", ""))
                continue
            if helper.get("pid") != ids[-1]:
                continue
            if helper.get("start_time") is not None and helper.get("start_time") != started_at:
                continue
            if home is None:
                home = namespace_init(pid) or (0, None)
            if home[0] and namespace_init(component) == home:
                return str(helper.get("role", ""))
    return ""
