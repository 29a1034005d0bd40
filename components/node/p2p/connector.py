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
from collections.abc import Iterable
from typing import Protocol

from ..connect_rule import ConnectRefused, ConnectRule, connect_checked

__all__ = ["Connector", "DirectConnector", "ConnectRefused", "UNRESTRICTED"]


class Connector(Protocol):
    async def open(self, host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connected stream to host:port; raises ConnectRefused (the rule), OSError or
        TimeoutError (within about `timeout` seconds)."""
        ...


class DirectConnector:
    """Resolve and connect in this process, in an executor thread (getaddrinfo blocks, as
    asyncio's own open_connection does it), with `rule` applied to every resolved address.
    `rule` None applies none: only for tests and embedders that dial their own loopback
    peers (P2PNode's default); the daemons always pass a rule."""

    def __init__(self, rule: ConnectRule | None) -> None:
        self.rule = rule

    async def open(self, host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.rule is None:
            return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, connect_checked, self.rule, host, port, timeout)
        try:
            sock = await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException:
            # The thread may still connect after we gave up: close what it returns.
            future.add_done_callback(_close_result)
            raise
        return await asyncio.open_connection(sock=sock)


def _close_result(future: "asyncio.Future[socket.socket]") -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


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
