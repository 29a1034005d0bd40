"""What the memory and latency benchmarks need from /proc: the process group a process is in,
the members of a group (a denial monitor started by a double fork is nobody's child; it keeps
the process group of the process that restricted itself), the CPU time they used, and when
a freshly started node first answers."""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING

from figures import broken

if TYPE_CHECKING:
    from cleancoin.components.rpc.client import RpcClient


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


def cpu_seconds(pid: int) -> float:
    """CPU time `pid`'s live threads have used, in ns precision (the first field of each
    thread's /proc/PID/task/TID/schedstat; /proc/PID/stat counts 10 ms ticks), 0 once gone."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass        # the thread ended meanwhile
    return total / 1e9


#: How `private_by_kind` names a mapping: malloc's heap, anonymous memory (Python's object
#: arenas, large allocations, thread stacks), the interpreter (python binary or libpython:
#: its relocated and written data), extension modules and other shared libraries.
KINDS = ("heap", "anonymous", "python", "extensions", "libraries", "other")


def _kind(name: str) -> str:
    if name == "[heap]":
        return "heap"
    if not name or name == "[stack]":
        return "anonymous"
    if name.startswith("["):
        return "other"
    base = os.path.basename(name)
    if base.startswith(("python3", "libpython3")):
        return "python"
    if ".cpython-" in base or ".abi3." in base:
        return "extensions"
    return "libraries" if ".so" in base else "other"


def private_by_kind(pid: int) -> dict[str, int]:
    """Pages only `pid` maps (USS, in kB) by the kind of mapping they lie in (KINDS), from
    /proc/PID/smaps; empty once it is gone. Where a fork's private pages come from: the
    anonymous ones it wrote of its parent's image (copy-on-write) or made, the heap's."""
    kinds = dict.fromkeys(KINDS, 0)
    kind = "other"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):          # a mapping's first line: range perms ... name
                    parts = line.split(None, 5)
                    kind = _kind(parts[5].strip() if len(parts) > 5 else "")
                elif head in ("Private_Clean:", "Private_Dirty:"):
                    kinds[kind] += int(line.split()[1])
    except OSError:
        return {}
    return kinds


def bare_interpreter_kb(python: str) -> tuple[int, int]:
    """(PSS, USS) in kB of `python -I -S` that has started and does nothing: the least any
    Python process of a tree costs (a fork of a bigger one writes more of its parent's pages
    than this, a compiled helper far less). Read from its /proc/PID/smaps_rollup."""
    import subprocess
    child = subprocess.Popen([python, "-I", "-S", "-c", "import sys; sys.stdout.write('r'); "
                              "sys.stdout.flush(); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.read(1) == b"r"
        fields: dict[str, int] = {}
        with open(f"/proc/{child.pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    fields[key] = int(value.split()[0])
        return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]
    finally:
        child.kill()
        child.wait()


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of every live process of `root`'s tree and process group,
    by pid, with what each has reaped (a denial monitor is nobody's child; a wallet process
    is in its own session). A live process counts its threads' schedstat (ns; /proc/PID/stat's
    10 ms ticks truncate up to 10 ms per process, and the tree has seven), or its ticks where
    those are more (threads that ended); what it reaped is known in ticks only."""
    stats: dict[int, tuple[int, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own = max(cpu_seconds(int(entry)), (int(fields[11]) + int(fields[12])) / _TICK)
        stats[int(entry)] = (int(fields[1]), int(fields[2]), own + (int(fields[13]) + int(fields[14])) / _TICK)
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, pgid, _) in stats.items():
            if pid not in members and (ppid in members or pgid == root):
                members.add(pid)
                grew = True
    return {pid: stats[pid][2] for pid in members if pid in stats}


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root`'s whole tree (`tree_cpu`)."""
    return sum(tree_cpu(root).values())


def wait_for_first_answer(executable: str, process: subprocess.Popen, client: RpcClient) -> None:
    """Until a fresh node answers getblockcount (polled every 2 ms, at most 60 s)."""
    from cleancoin.components.rpc.client import RpcTransportError
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            broken(f"{executable} exited with {process.returncode} before it answered")
        try:
            if client.call("getblockcount") == 0:
                return
        except (RpcTransportError, OSError):
            pass
        if time.monotonic() > deadline:
            broken(f"{executable}: RPC not up after 60 s")
        time.sleep(0.002)
