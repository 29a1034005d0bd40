"""How the P2P node opens an outgoing connection: the one connect site, behind one interface.

`P2PNode._dial` asks a `Connector` for a connected stream. CleanCoind (one unconfined
process) and CleanCoin-node without a sandbox use `DirectConnector`: resolution and connect in
this process, each resolved address checked against the connect rule (connect_rule.py).
A confined CleanCoin-node cannot open a TCP connection itself (policies/node.toml); it uses
`connect_broker.BrokerConnector`, which asks its connect broker, a process of its own that
applies the same rule with the same code (`connect_rule.connect_checked`) and passes the
connected socket back. Both raise `ConnectRefused` for what the rule refuses, so both
executables behave the same and log the same line.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from ..connect_rule import ConnectRefused, ConnectRule, Resolver, connect_checked

__all__ = ["Connector", "DirectConnector", "ConnectRefused", "UNRESTRICTED"]


class Connector(Protocol):
    async def open(self, host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connected stream to host:port; raises ConnectRefused (the rule), OSError or
        TimeoutError (within about `timeout` seconds)."""
        ...


class DirectConnector:
    """Resolve and connect in this process, with `rule` applied to every resolved address.
    Each open() is a daemon thread of its own (getaddrinfo and connect block), not the
    loop's default executor: that one has a few workers that lookups a DNS server never
    answers would all hold (numeric connects queued behind them), and asyncio.run waits for
    it at exit (a stop held for minutes). The thread ends by `timeout` (connect_checked);
    a lookup given up on goes on in the Resolver's own thread (connect_rule.py).
    `rule` None applies none: only for tests and embedders that dial their own loopback
    peers (P2PNode's default); the daemons always pass a rule."""

    def __init__(self, rule: ConnectRule | None) -> None:
        self.rule = rule
        self.resolver = Resolver()

    async def open(self, host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.rule is None:
            return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[socket.socket] = loop.create_future()
        rule, resolver = self.rule, self.resolver

        def work() -> None:
            try:
                outcome: Any = connect_checked(rule, host, port, timeout, resolver)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutine
                outcome = exc
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:            # the loop is closed: nobody waits for it
                if isinstance(outcome, socket.socket):
                    outcome.close()
        threading.Thread(target=work, name="p2p-connect", daemon=True).start()
        # The thread answers by `timeout`; a little longer here, as a backstop.
        sock = await asyncio.wait_for(asyncio.shield(future), timeout + 1.0)
        return await asyncio.open_connection(sock=sock)


def _settle(future: "asyncio.Future[socket.socket]", outcome: Any) -> None:
    """Hand a connect thread's outcome to its coroutine; a socket nobody waits for any more
    (cancelled, given up on) is closed."""
    if future.done():
        if isinstance(outcome, socket.socket):
            outcome.close()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def named_endpoints(connect: Iterable[str], addnode: Iterable[str], allow_local_peers: Iterable[str],
                    default_port: int) -> list[str]:
    """The endpoints the operator named at start, as the connect rule takes them: every
    -connect and -addnode peer (with the network's port where it has none) and every
    -allowlocalpeer value."""
    from .node import parse_host_port
    out = []
    for addr in (*connect, *addnode):
        host, port = parse_host_port(addr, default_port)
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return [*out, *allow_local_peers]


#: P2PNode's default connector (see DirectConnector).
UNRESTRICTED = DirectConnector(None)
