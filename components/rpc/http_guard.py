"""Deadlines and a cap for the RPC server's HTTP connections (slowloris and the like).

A connection is either *waiting* for a request (since it was accepted, or since its last
answer) or *busy* with one. `ConnectionGuard` keeps that state for each and enforces:

- a connection that waits longer than `timeout` (bitcoind's -rpcservertimeout) is closed:
  request headers sent slowly or not at all, or an idle keep-alive connection. Time the event
  loop could not run (the sweep comes late) does not count (since 12-08): a request sent
  meanwhile cannot have been read;
- the body is read under the same deadline by the server (RpcServer), from the end of the
  headers;
- at most `max_connections` connections are kept. A new one past that closes the connection
  that has waited longest for a request (an honest client sends its request at once, so that
  is the likeliest to be hostile); when every connection is busy, the new one is closed.

Every closing is logged. `GuardedServer` is aiohttp's low-level server reporting its
connections to the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from cleancoin.components.rpc.aiohttp_web import web

LOG = logging.getLogger("cleancoin.rpc")


@dataclass
class _Connection:
    """An open RPC connection the guard watches."""

    transport: asyncio.BaseTransport
    peer: str
    waiting_since: float | None      # loop time; None while a request is being handled


def peer_text(transport: asyncio.BaseTransport | None) -> str:
    """ip:port of the client, [ip]:port for IPv6."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple):
        return "?"
    ip, port = str(peer[0]), int(peer[1])
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class ConnectionGuard:
    """See the module docstring. `start()` runs the deadline sweep; `stop()` ends it."""

    def __init__(self, timeout: float, max_connections: int) -> None:
        if timeout <= 0 or max_connections < 1:
            raise ValueError("the RPC server needs a positive timeout and at least one connection")
        self.timeout = timeout
        self.max_connections = max_connections
        self._connections: dict[Any, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="rpc-deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def opened(self, handler: Any, transport: asyncio.BaseTransport) -> None:
        """A connection was accepted: keep it (closing another when full) or close it."""
        now = asyncio.get_running_loop().time()
        peer = peer_text(transport)
        if len(self._connections) >= self.max_connections:
            waiting = [(c.waiting_since, h) for h, c in self._connections.items() if c.waiting_since is not None]
            if not waiting:
                LOG.warning("RPC: refused a connection from %s: %d connections, all busy",
                            peer, self.max_connections)
                transport.abort()
                return
            _, oldest = min(waiting, key=lambda item: item[0])
            victim = self._connections.pop(oldest)
            LOG.warning("RPC: %d connections: closing the one from %s, which waited %.1f s for a request",
                        self.max_connections, victim.peer, now - (victim.waiting_since or now))
            victim.transport.abort()
        self._connections[handler] = _Connection(transport, peer, now)

    def closed(self, handler: Any) -> None:
        self._connections.pop(handler, None)

    def busy(self, handler: Any) -> None:
        """A request's headers are in: no deadline while it is handled."""
        connection = self._connections.get(handler)
        if connection is not None:
            connection.waiting_since = None

    def idle(self, handler: Any) -> None:
        """The request was answered: the connection waits for the next one from now."""
        connection = self._connections.get(handler)
        if connection is not None:
            connection.waiting_since = asyncio.get_running_loop().time()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.timeout / 4)
        last = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            # A sweep later than its tick means the loop could not run (a REST reply being
            # built, a long P2P message; seconds on a loaded machine): a request that came
            # meanwhile sits unread, or read but not yet handed to its handler, which runs
            # after this sweep. That time is not the client's: before 12-08 such a
            # connection was closed unanswered ("no request within -rpcservertimeout") and
            # the client got "Remote end closed connection without response".
            stalled = now - last - tick
            last = now
            if stalled > 0:
                self._credit(stalled)
            for handler, connection in list(self._connections.items()):
                if connection.waiting_since is not None and now - connection.waiting_since > self.timeout:
                    LOG.info("RPC: closing the connection from %s: no request within -rpcservertimeout (%g s)",
                             connection.peer, self.timeout)
                    del self._connections[handler]
                    connection.transport.abort()

    def _credit(self, seconds: float) -> None:
        """Move the waiting connections' deadlines `seconds` later (the loop was stalled)."""
        for connection in self._connections.values():
            if connection.waiting_since is not None:
                connection.waiting_since += seconds


class GuardedServer(web.Server):
    """aiohttp's low-level server, telling `guard` about each connection."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._guard = guard

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._guard.opened(handler, transport)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self._guard.closed(handler)
        super().connection_lost(handler, exc)
