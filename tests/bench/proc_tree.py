"""What the memory benchmarks need from /proc: the process group a process is in, and the
members of a group (a denial monitor started by a double fork is nobody's child; it keeps
the process group of the process that restricted itself)."""

from __future__ import annotations

import os


def group_of(pid: int) -> int | None:
    """The process group of `pid` (field 5 of /proc/PID/stat), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Counted after the ")" that ends the command name, which may hold spaces.
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Every live process of process group `pgid`."""
    return sorted(int(e) for e in os.listdir("/proc") if e.isdigit() and group_of(int(e)) == pgid)
