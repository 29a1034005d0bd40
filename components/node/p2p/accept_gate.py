"""Accepting inbound P2P connections at a bounded CPU cost: the listening sockets' own loop.

A connection costs the node's one event-loop thread before any message of it is read: the
accept, the transport, the stream, two tasks, the peer's state, and at its end the close and
what the node forgets with it (about 0.5 to 0.9 ms here, 12-08). Messages are charged to their
address group's CPU budget (cpu_budget.py), connections were not: before 12-08 four threads
connecting from ever new addresses and closing at once (250 connections a second, the most a
Python client here made) took 0.1 to 0.22 node CPU-s/s, with or without a `version`, however
the budget was shared; one /48 of IPv6 holds 65,536 /64s, so budgets per group alone cannot
bound it.

So connections are accepted here, not by asyncio's server: each one accepted is charged
CONNECTION_COST CPU seconds (plus the accept loop's own measured time) to one token bucket
all inbound connections share, refilled with ACCEPT_RATE; while it is in debt the listening
sockets are not polled, and connections wait in the kernel's backlog (an honest newcomer is
late, not refused; past the backlog, the kernel drops SYNs and the client sends them again).
The node also charges CONNECTION_COST to the connection's own address group (node.py), so
that a group that keeps reconnecting waits for its budget like one that keeps sending.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from .cpu_budget import CpuBudget

log = logging.getLogger("cleancoin.net")

#: CPU seconds one inbound connection costs the event-loop thread outside its messages, about:
#: accepted, set up, closed and forgotten (measured 12-08: 0.6 to 0.9 ms a connection that
#: closes at once, with or without its `version`; the accept loop's own part is measured).
CONNECTION_COST: float = 0.0008
#: CPU seconds per second all inbound connections' set-up and tear-down may take together
#: (some 60 connections a second), and what may be spent at once (some 120: a restart's
#: peers reconnecting all at once are let in together).
ACCEPT_RATE: float = 0.05
ACCEPT_BURST: float = 0.1
#: Connections accepted in one turn of the loop at most (asyncio's server takes up to its
#: backlog, 100, at once).
ACCEPTS_PER_TURN: int = 16
#: Stream buffer limit of a connection (asyncio's default, as start_server's).
STREAM_LIMIT: int = 2 ** 16

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class AcceptGate:
    """Serves `sockets` (listening, bound) with `handler`, as `asyncio.start_server` would, but
    pays each connection's cost from a bucket of `rate` CPU seconds a second first."""

    def __init__(self, sockets: Sequence[socket.socket], handler: Handler, *, rate: float = ACCEPT_RATE,
                 burst: float = ACCEPT_BURST) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = list(sockets)
        self._handler = handler
        self._rate = rate
        self._burst = burst
        self._bucket = CpuBudget(burst, self._loop.time())
        self._polling = False
        self._resume: asyncio.TimerHandle | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Connections accepted, and times the gate paused accepting (tests, logs).
        self.accepted = 0
        self.paused = 0

    def start(self) -> None:
        """Begin accepting."""
        for sock in self._sockets:
            sock.setblocking(False)
        self._poll(True)

    def _poll(self, on: bool) -> None:
        if on == self._polling or self._closed:
            return
        self._polling = on
        for sock in self._sockets:
            if on:
                self._loop.add_reader(sock.fileno(), self._ready, sock)
            else:
                self._loop.remove_reader(sock.fileno())

    def _ready(self, sock: socket.socket) -> None:
        start = time.thread_time()
        accepted = 0
        try:
            for _ in range(ACCEPTS_PER_TURN):
                self._bucket.refill(self._loop.time(), self._rate, self._burst)
                if self._bucket.tokens < 0:
                    wait = -self._bucket.tokens / self._rate
                    self.paused += 1
                    log.debug("inbound connections cost more than %.2f CPU-s/s: not accepting for %.2f s",
                              self._rate, wait)
                    self._poll(False)
                    self._resume = self._loop.call_later(wait, self._resumed)
                    return
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    # (EMFILE, ENOBUFS ...: asyncio's server waits a second too.)
                    log.error("accepting a P2P connection failed: %s; trying again in 1 s", e)
                    self._poll(False)
                    self._resume = self._loop.call_later(1.0, self._resumed)
                    return
                accepted += 1
                self.accepted += 1
                self._bucket.tokens -= CONNECTION_COST
                task = self._loop.create_task(self._open(conn))
                self._opening.add(task)
                task.add_done_callback(self._opening.discard)
        finally:
            if accepted:
                self._bucket.tokens -= time.thread_time() - start

    def _resumed(self) -> None:
        self._resume = None
        self._poll(True)

    async def _open(self, conn: socket.socket) -> None:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader, self._handler)
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (connections are the node's)."""
        self._poll(False)
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        for sock in self._sockets:
            sock.close()
        for task in self._opening:
            task.cancel()
