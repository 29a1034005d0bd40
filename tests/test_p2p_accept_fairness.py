"""Attack on the P2P accept gate (accept_gate.py, since 12-08): keep honest newcomers out by
filling the listening socket's backlog.

The gate admits inbound connections at ACCEPT_RATE CPU-s/s of their cost (about 60 a second)
and, while its bucket is in debt, stopped polling the listening sockets: connections waited
in the kernel's backlog (BACKLOG = 100), and past it the kernel drops the handshake. One
address that connects faster than the gate admits (a Python thread here makes thousands a
second) then kept the backlog full of its own connections: an honest newcomer from another
address group either waited behind 100 of them or, with the backlog full, had its handshake
dropped and retried with exponential back-off against a flood that takes every slot freed.
On 12-08's code the newcomer was not admitted within the test's 8 s in half the runs and
after 1.8 s in the others (the test's docstring has the figures).

Now the gate keeps draining the backlog (an accept costs tens of microseconds, bounded by
DRAIN_RATE a second) and, while its bucket is in debt, admits a connection at once only from
an address group that had none admitted in the last GROUP_SPACING seconds (and never past
DEBT_FLOOR): the flooding group gets one connection a GROUP_SPACING, the others get in at
once; the rest wait in the gate (MAX_PARKED, the oldest of the most crowded group reset past
it) for the bucket, group by group in turn. Real sockets, real kernel backlog, the real gate.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from cleancoin.components.node.p2p import accept_gate
from cleancoin.components.node.p2p.accept_gate import AcceptGate
from cleancoin.components.node.p2p.listen_sockets import BACKLOG

FLOOD_SECONDS = 8.0
FLOODERS = 2


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    return sock


#: The attacker: a process that connects from 127.0.0.1 as fast as it can, closing each
#: connection at once with RST (no TIME_WAIT runs out the ports), printing how many it made
#: when told to stop (SIGTERM). Its own process: a thread of the test's would share the GIL
#: with the gate's loop and flood far slower.
FLOOD = """
import collections, resource, signal, socket, sys
made = 0
def done(*_):
    print(made, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
port = int(sys.argv[1])
linger = bytes([1, 0, 0, 0, 0, 0, 0, 0])
flight = collections.deque()
while True:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.setblocking(False)
    try:
        s.bind(("127.0.0.1", 0))
        s.connect_ex(("127.0.0.1", port))
        made += 1
        flight.append(s)
    except OSError:
        s.close()
    while len(flight) > 1000:
        flight.popleft().close()
"""


async def _newcomer_wait(gate_kwargs: dict[str, object]) -> tuple[float | None, int, int, float]:
    """Flood the gate from 127.0.0.1, then connect once from 127.0.0.2: how long until the gate
    handed 127.0.0.2's connection to the node (None: not within FLOOD_SECONDS), how many
    connections the flood made, how many the gate admitted, and for how long it ran."""
    listener = _listener()
    port = listener.getsockname()[1]
    admitted: list[str] = []
    honest = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""         # a flood connection reset before it was set up
        admitted.append(host)
        if host == "127.0.0.2":
            honest.set()
        writer.close()

    gate = AcceptGate([listener], handler, **gate_kwargs)  # type: ignore[arg-type]
    began = asyncio.get_running_loop().time()
    gate.start()
    flooders = [subprocess.Popen([sys.executable, "-c", FLOOD, str(port)], stdout=subprocess.PIPE)
                for _ in range(FLOODERS)]
    made = 0
    try:
        await asyncio.sleep(1.0)            # the bucket spent, the backlog full
        loop = asyncio.get_running_loop()
        newcomer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        newcomer.bind(("127.0.0.2", 0))
        newcomer.setblocking(False)
        start = loop.time()
        connecting = loop.create_task(loop.sock_connect(newcomer, ("127.0.0.1", port)))
        try:
            await asyncio.wait_for(honest.wait(), FLOOD_SECONDS)
            waited: float | None = loop.time() - start
        except asyncio.TimeoutError:
            waited = None
        connecting.cancel()
        newcomer.close()
    finally:
        for proc in flooders:
            proc.terminate()
        for proc in flooders:
            out, _ = await asyncio.to_thread(proc.communicate)
            made += int(out or 0)
        gate.close()
        span = asyncio.get_running_loop().time() - began
    return waited, made, len(admitted), span


def test_a_flood_from_one_group_does_not_keep_a_newcomer_out() -> None:
    """Attack: two processes on one address (one address group) connect non-blocking and
    reset as fast as they can (5,000 to 15,000 attempts a second here); a newcomer from another
    group connects 1 s in. On 12-08's gate (6 runs, load 7 to 14) the newcomer was not admitted
    within 8 s in 3 and got in after 1.8 s in the others, behind the full backlog (~60
    admissions a second, all the flood's). Now (14 runs, load 10 to 31) it is admitted within
    0.0005 to 0.63 s, once after 1.26 s (a SYN of its dropped and sent again); the
    test allows 8 s (CI's load): it fails on the old gate only when the flood kept the backlog
    full throughout, about half the runs. The gate's admissions stay within its bound: the
    bucket's burst and rate, plus one connection a GROUP_SPACING for each of the two groups
    while in debt."""
    waited, made, admitted, span = asyncio.run(_newcomer_wait({"group": lambda host: host}))
    bound = (accept_gate.ACCEPT_BURST + accept_gate.ACCEPT_RATE * span) / accept_gate.CONNECTION_COST \
        + 2 * (span / accept_gate.GROUP_SPACING + 1)
    print(f"newcomer waited {waited} s; the flood made {made} connections, the gate admitted {admitted} "
          f"(bound {bound:.0f})")
    assert waited is not None, (made, admitted)
    assert admitted <= bound * 1.1, (admitted, bound)


if __name__ == "__main__":      # pragma: no cover - the attack on its own
    pytest.main([__file__, "-q", "-s"])
