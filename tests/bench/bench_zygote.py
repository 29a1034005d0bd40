"""Spawn overhead through the zygote, the way a node starts its wallet (issue 2's target:
the whole sandbox adds at most 5 ms from spawn to a child answering on its socket).

The zygote is a small process forked before its parent restricts itself, with every policy
already fitted to the kernel, so this is the spawn cost a running node pays. Both kinds go
through the same zygote, interleaved: the strict policy and no sandbox at all.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time

import pytest

from cleancoin.sandbox.policy_loader import shipped_policy
from cleancoin.sandbox.zygote import ComponentSpec, Zygote

ECHO = (sys.executable, "-m", "cleancoin.sandbox.echo_child")
RUNS = 60


def _spawn_and_ping(z: Zygote, name: str) -> tuple[float, int]:
    ours, theirs = socket.socketpair()
    ours.settimeout(20)
    start = time.perf_counter()
    spawned = z.spawn(name, theirs.fileno())
    theirs.close()
    ours.sendall(b"ping")
    if ours.recv(16) != b"ping":
        pytest.fail("measurement broken: no echo")
    took = time.perf_counter() - start
    ours.close()
    return took, spawned.pid


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_spawn_overhead_through_the_zygote() -> None:
    datadir = tempfile.mkdtemp(dir="/var/tmp")
    z = Zygote.start({
        "strict": ComponentSpec("strict", ECHO, shipped_policy("strict"), {"datadir": datadir, "tmpdir": datadir}),
        "none": ComponentSpec("none", ECHO, None),
    })
    times: dict[str, list[float]] = {"strict": [], "none": []}
    try:
        for name in ("strict", "none"):      # warm the page cache for both
            _, pid = _spawn_and_ping(z, name)
            z.kill(pid)
        for _ in range(RUNS):
            for name in ("none", "strict"):
                took, pid = _spawn_and_ping(z, name)
                times[name].append(took)
                z.kill(pid)
        rss = _rss_kib(z.pid)
    finally:
        z.stop()
    none, strict = statistics.median(times["none"]), statistics.median(times["strict"])
    diff = (strict - none) * 1000
    # Paired by round (each round spawns one of each), so drift cancels in the differences.
    pairs = sorted((s - n) * 1000 for s, n in zip(times["strict"], times["none"]))
    paired = statistics.median(pairs)
    print()
    print(f"SPAWN THROUGH THE ZYGOTE (zygote RSS {rss / 1024:.1f} MiB; {RUNS} runs each, interleaved; medians)")
    print(f"  no sandbox        {none * 1000:8.2f} ms   (p90 {statistics.quantiles(times['none'], n=10)[-1] * 1000:.2f})")
    print(f"  strict policy     {strict * 1000:8.2f} ms   (p90 {statistics.quantiles(times['strict'], n=10)[-1] * 1000:.2f})")
    print(f"  difference        {diff:+8.2f} ms   ratio {strict / none:.3f}")
    print(f"  paired difference {paired:+8.2f} ms   (median of {RUNS} per-round differences; "
          f"middle half {pairs[RUNS // 4]:+.2f} .. {pairs[3 * RUNS // 4]:+.2f})   target <= +5 ms -> "
          f"{'PASS' if paired <= 5 else 'MISS'}")
    assert none > 0 and strict > 0
