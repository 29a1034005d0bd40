"""IPC benchmarks: Echo round trip across two processes, against a raw socket ping-pong
measured in the same run; pipelined calls per second.

The echo component is started as CleanCoin-node starts its wallet: through a zygote (a fresh
interpreter), with the production echo target (ECHO_TARGET, tests/ipc_spawn.py), no sandbox.

Beside the figures: the CPU per call on each side (the slower side sets the pipelined rate),
and the pipelined rate of pycapnp's own client call without our binding (its floor).

A forwarded wallet call's hop, alone (`test_forwarded_wallet_call_hop`): the node's side
(WalletRpcRouter's forwarder: RpcRequest out, the answer checked with `loads_untrusted`)
against a WalletRpcHandler in another process (tests/bench/hop_server.py), with the two
processes free to run on any CPU (as CleanCoin-node runs them) and both on one CPU: what the
cross-CPU wake-ups of this machine cost beside the code (issue #16's wallet RPC target).

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import subprocess
from pathlib import Path

import pytest
from figures import out, verdict
from ipc_spawn import ECHO_TARGET, spawn
from proc_tree import cpu_seconds

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


@dataclass
class _Round:
    """One round's figures: seconds per sequential call, pipelined calls per second (our
    binding, and pycapnp's own `_send` without it), and the CPU seconds per call of each side."""

    seq: float
    rate: float
    plain_rate: float
    seq_cpu: tuple[float, float]        # (client, server) per sequential call
    pipe_cpu: tuple[float, float]       # (client, server) per pipelined call


async def _ipc(n_seq: int, n_pipe: int, batch: int) -> _Round:
    from cleancoin.components.interfaces.init import IpcPeer
    child = await spawn(ECHO_TARGET, "CleanCoin-echo", None, IpcPeer("bench", os.getpid()))
    me = os.getpid()
    try:
        echo = await child.connection.init.make_echo()
        for _ in range(300):
            await echo.echo("x")
        c0, s0 = cpu_seconds(me), cpu_seconds(child.pid)
        start = time.perf_counter()
        for _ in range(n_seq):
            if await echo.echo("x") != "x":
                pytest.fail("measurement broken: echo mismatch")
        seq = (time.perf_counter() - start) / n_seq
        seq_cpu = ((cpu_seconds(me) - c0) / n_seq, (cpu_seconds(child.pid) - s0) / n_seq)

        async def pipelined(call: Callable[[], Awaitable[Any]], check: Callable[[Any], bool]) -> float:
            start, done = time.perf_counter(), 0
            while done < n_pipe:
                results = await asyncio.gather(*[call() for _ in range(batch)])
                if not check(results[-1]):
                    pytest.fail("measurement broken: pipelined echo mismatch")
                done += batch
            return done / (time.perf_counter() - start)

        c0, s0 = cpu_seconds(me), cpu_seconds(child.pid)
        rate = await pipelined(lambda: echo.echo("x"), lambda r: r == "x")
        pipe_cpu = ((cpu_seconds(me) - c0) / n_pipe, (cpu_seconds(child.pid) - s0) / n_pipe)
        # pycapnp's own client path, without our binding's method (its floor on this side).
        cap = echo._cap
        plain_rate = await pipelined(lambda: cap._send("echo", echo="x"), lambda r: r.result == "x")
        return _Round(seq, rate, plain_rate, seq_cpu, pipe_cpu)
    finally:
        child.kill()
        await child.exited
        child.close()       # its zygote


def ipc_round(n_seq: int, n_pipe: int, batch: int) -> _Round:
    import capnp
    return asyncio.run(capnp.run(_ipc(n_seq, n_pipe, batch)))


def test_ipc_round_trip_and_pipelining() -> None:
    raws, rounds = [], []
    for _ in range(ROUNDS):   # interleaved, so drift hits both alike
        raws.append(raw_pingpong(5000))
        rounds.append(ipc_round(2000, 20000, 1000))
    raw = statistics.median(raws)
    seq = statistics.median(r.seq for r in rounds)
    rate = statistics.median(r.rate for r in rounds)
    plain = statistics.median(r.plain_rate for r in rounds)

    def us(values: Iterable[float]) -> float:
        return statistics.median(values) * 1e6
    ratio = seq / raw
    out("")
    out(f"IPC ROUND TRIP ({ROUNDS} interleaved rounds, medians; python {sys.version.split()[0]})")
    out(f"  raw socket ping-pong (blocking, socketpair, 1 byte)   {raw * 1e6:8.1f} us")
    out(f"  Echo.echo over Cap'n Proto (pycapnp, our binding)     {seq * 1e6:8.1f} us")
    out(f"  ratio                                                 {ratio:8.2f}x  "
        f"target (issue #16) <= {RATIO_TARGET:.0f}x -> {verdict(ratio <= RATIO_TARGET)}")
    out(f"    CPU per call: client {us(r.seq_cpu[0] for r in rounds):.1f} us, "
        f"server {us(r.seq_cpu[1] for r in rounds):.1f} us (each thread's schedstat)")
    out(f"  pipelined Echo.echo (batches of 1000 in flight)       {rate:8.0f} calls/s  "
        f"target (issue #16) >= {PIPELINED_TARGET} -> {verdict(rate >= PIPELINED_TARGET)}")
    out(f"    CPU per call: client {us(r.pipe_cpu[0] for r in rounds):.1f} us, "
        f"server {us(r.pipe_cpu[1] for r in rounds):.1f} us; the slower side sets the rate")
    out(f"  pipelined, pycapnp's own _send (no binding)           {plain:8.0f} calls/s  "
        f"(the client side's floor in pycapnp)")
    assert raw > 0 and seq > 0 and rate > 0 and plain > 0


# ============================================================ a forwarded wallet call's hop

HOP_ROUNDS = 5
HOP_CALLS = 2000


def _set_affinity(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of each of `pids` on `cpus`."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)


async def _hop_rounds(sock: socket.socket, server_pid: int) -> dict[str, list[tuple[float, float, float]]]:
    """(wall, node CPU, wallet CPU) per call, in rounds alternating free and one-CPU runs."""
    import capnp

    from cleancoin.components.interfaces.chain import RpcMethodInfo
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.connection import NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS
    from cleancoin.components.ipc.debug_log import CallLog
    from cleancoin.components.ipc.specs import spec
    from cleancoin.components.ipc.transport import stream_on_socket
    from cleancoin.components.node.wallet_router import WalletRpcRouter
    from cleancoin.components.rpc.registry import CallContext, Registry

    stream = await stream_on_socket(sock)
    client = capnp.TwoPartyClient(stream, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
                                  nesting_limit=NESTING_LIMIT)
    handler = spec("RpcHandler").client(client.bootstrap(), CallLog(IpcPeer("bench-node", os.getpid()), enabled=False))
    registry = Registry()
    router = WalletRpcRouter(registry, tip=lambda: bytes(32))
    slot = router.slot("bench", reserve=True, gated=False)
    router.register(slot, [RpcMethodInfo("getwalletinfo", "wallet", "getwalletinfo", "", False)], handler)
    forward = registry.get("getwalletinfo").handler  # type: ignore[union-attr]
    ctx = CallContext("getwalletinfo", registry, uri_wallet="w")
    me, everywhere = os.getpid(), os.sched_getaffinity(0)
    one = {min(everywhere)}
    figures: dict[str, list[tuple[float, float, float]]] = {"free": [], "one CPU": []}
    try:
        for _ in range(300):
            await forward(ctx, [])
        for i in range(HOP_ROUNDS * 2):
            mode = ("free", "one CPU")[i % 2]
            _set_affinity((me, server_pid), everywhere if mode == "free" else one)
            c0, s0, start = cpu_seconds(me), cpu_seconds(server_pid), time.perf_counter()
            for _ in range(HOP_CALLS):
                result = await forward(ctx, [])
            figures[mode].append(((time.perf_counter() - start) / HOP_CALLS, (cpu_seconds(me) - c0) / HOP_CALLS,
                                  (cpu_seconds(server_pid) - s0) / HOP_CALLS))
            if result.get("txcount") != 101:
                pytest.fail(f"measurement broken: the forwarded call answered {result!r}")
    finally:
        _set_affinity((me,), everywhere)
        client.close()
        stream.close()
    return figures


def test_forwarded_wallet_call_hop() -> None:
    import capnp
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hop_server.py")), str(theirs.fileno())],
                              pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        figures = asyncio.run(capnp.run(_hop_rounds(ours, server.pid)))
    finally:
        ours.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    everywhere = os.sched_getaffinity(0)
    raws = {}
    for mode in ("free", "one CPU"):
        if mode == "one CPU":
            os.sched_setaffinity(0, {min(everywhere)})     # the forked echo inherits it
        try:
            raws[mode] = raw_pingpong(5000)
        finally:
            os.sched_setaffinity(0, everywhere)
    out("")
    out(f"FORWARDED WALLET CALL, THE HOP ALONE ({HOP_ROUNDS} interleaved rounds of {HOP_CALLS} getwalletinfo; "
        "medians, us per call; CPU from each thread's schedstat)")
    out(f"    {'processes':12}{'wall':>8}{'node CPU':>10}{'wallet CPU':>12}{'raw ping-pong':>15}")
    for mode, rows in figures.items():
        wall, node, wallet = (statistics.median(r[k] for r in rows) * 1e6 for k in range(3))
        out(f"    {mode:12}{wall:8.0f}{node:10.0f}{wallet:12.0f}{raws[mode] * 1e6:15.1f}")
    assert all(r[0] > 0 and r[1] > 0 and r[2] > 0 for rows in figures.values() for r in rows)

