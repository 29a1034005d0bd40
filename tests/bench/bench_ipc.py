"""IPC benchmarks: Echo round trip across two processes, against a raw socket ping-pong
measured in the same run; pipelined calls per second.

The echo component is started as CleanCoin-node starts its wallet: through a zygote (a fresh
interpreter), with the production echo target (ECHO_TARGET, tests/ipc_spawn.py), no sandbox.

Targets (issue #16, which restated issue #3's 3x and 20,000/s after measuring): a sequential
round trip within 6x of the raw ping-pong; at least 60,000 pipelined calls per second. A miss
prints MISS and does not fail the run; a broken measurement fails it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time

import pytest
from figures import out, verdict
from ipc_spawn import ECHO_TARGET, spawn

ROUNDS = 5
RATIO_TARGET = 6.0           # issue #16 (issue #3 asked for 3x)
PIPELINED_TARGET = 60_000    # calls/s, issue #16 (issue #3 asked for 20,000)


def raw_pingpong(n: int) -> float:
    """Seconds per round trip of a 1-byte blocking ping-pong over a socket pair."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        while True:
            data = theirs.recv(64)
            if not data:
                os._exit(0)
            theirs.sendall(data)
    theirs.close()
    for _ in range(500):
        ours.sendall(b"x")
        ours.recv(64)
    start = time.perf_counter()
    for _ in range(n):
        ours.sendall(b"x")
        if ours.recv(64) != b"x":
            pytest.fail("measurement broken: raw echo mismatch")
    took = (time.perf_counter() - start) / n
    ours.close()
    os.waitpid(pid, 0)
    return took


async def _ipc(n_seq: int, n_pipe: int, batch: int) -> tuple[float, float]:
    from cleancoin.components.interfaces.init import IpcPeer
    child = await spawn(ECHO_TARGET, "CleanCoin-echo", None, IpcPeer("bench", os.getpid()))
    try:
        echo = await child.connection.init.make_echo()
        for _ in range(300):
            await echo.echo("x")
        start = time.perf_counter()
        for _ in range(n_seq):
            if await echo.echo("x") != "x":
                pytest.fail("measurement broken: echo mismatch")
        seq = (time.perf_counter() - start) / n_seq
        start = time.perf_counter()
        done = 0
        while done < n_pipe:
            results = await asyncio.gather(*[echo.echo("x") for _ in range(batch)])
            if results[-1] != "x":
                pytest.fail("measurement broken: pipelined echo mismatch")
            done += batch
        rate = done / (time.perf_counter() - start)
        return seq, rate
    finally:
        child.kill()
        await child.exited
        child.close()       # its zygote


def ipc_round(n_seq: int, n_pipe: int, batch: int) -> tuple[float, float]:
    import capnp
    return asyncio.run(capnp.run(_ipc(n_seq, n_pipe, batch)))


def test_ipc_round_trip_and_pipelining() -> None:
    raws, seqs, rates = [], [], []
    for _ in range(ROUNDS):   # interleaved, so drift hits both alike
        raws.append(raw_pingpong(5000))
        seq, rate = ipc_round(2000, 20000, 1000)
        seqs.append(seq)
        rates.append(rate)
    raw, seq, rate = statistics.median(raws), statistics.median(seqs), statistics.median(rates)
    ratio = seq / raw
    out("")
    out(f"IPC ROUND TRIP ({ROUNDS} interleaved rounds, medians; python {sys.version.split()[0]})")
    out(f"  raw socket ping-pong (blocking, socketpair, 1 byte)   {raw * 1e6:8.1f} us")
    out(f"  Echo.echo over Cap'n Proto (pycapnp, our binding)     {seq * 1e6:8.1f} us")
    out(f"  ratio                                                 {ratio:8.2f}x  "
        f"target (issue #16) <= {RATIO_TARGET:.0f}x -> {verdict(ratio <= RATIO_TARGET)}")
    out(f"  pipelined Echo.echo (batches of 1000 in flight)       {rate:8.0f} calls/s  "
        f"target (issue #16) >= {PIPELINED_TARGET} -> {verdict(rate >= PIPELINED_TARGET)}")
    assert raw > 0 and seq > 0 and rate > 0
