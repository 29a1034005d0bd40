"""How the P2P node opens an outgoing connection: the one connect site, behind one interface.

`P2PNode._dial` asks a `Connector` for a connected stream. CleanCoind (one unconfined
process) and CleanCoin-node without a sandbox use `DirectConnector`: resolution and connect in
this process, each resolved address checked against the connect rule (connect_rule.py).
A confined CleanCoin-node cannot open a TCP connection itself (policies/node.toml); it uses
`BrokerConnector` (below), which asks its connect broker (connect_broker.py), a process of its own that
applies the same rule with the same code (`connect_rule.connect_checked`) and passes the
connected socket back. Both raise `ConnectRefused` for what the rule refuses, so both
executables behave the same and log the same line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from ..connect_broker import (CODES, FAILED, MAX_MESSAGE, MAX_REQUEST, OK, REFUSED, REPLY_SIZE, REQUEST_SIZE, TIMEOUT,
                              Request, encode_request, parse_reply)
from ..connect_rule import ConnectRefused, ConnectRule, Resolver, connect_checked

__all__ = ["Connector", "DirectConnector", "BrokerConnector", "ConnectRefused", "UNRESTRICTED"]

log = logging.getLogger("cleancoin.net")


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


class BrokerConnector:
    """The node's side (connector.Connector): each open() is one request; replies come back
    in any order and are matched by id. When the broker is gone every open() fails with
    ConnectionError, and the node goes on without outgoing connections."""

    def __init__(self, channel: socket.socket, pid: int = 0) -> None:
        self.channel = channel
        self.pid = pid
        self.channel.setblocking(False)
        self.status = "starting"
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next = 0
        self._reading: asyncio.AbstractEventLoop | None = None
        self._gone: str | None = None

    def attach(self) -> None:
        """Start hearing the broker on the running loop (its start-up word: `status`); open()
        does it too."""
        self._ensure_reader()

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reading is not loop and self._gone is None:
            loop.add_reader(self.channel.fileno(), self._readable)
            self._reading = loop

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, REPLY_SIZE + MAX_MESSAGE + 1, 1, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(f"the connect broker has ended (its channel failed: {exc.strerror or exc})")
                return
            if not data and not fds:
                self._lost("the connect broker has ended")
                return
            self._dispatch(data, fds)

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        try:
            ident, code, message = parse_reply(data)
        except ValueError:
            ident, code, message = -1, FAILED, "unreadable reply"
        future = self._pending.pop(ident, None)
        if ident == 0:
            self.status = "ready" if code == OK else f"failed: {message}"
            if code != OK:
                log.error("the connect broker did not start (%s): this node makes no outgoing connections",
                          message)
        if future is None or future.done() or code != OK or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            if future is not None and not future.done():
                future.set_exception(_error(code, message if fds or code != OK else "no socket in the reply"))
            return
        future.set_result(fds[0])

    def _lost(self, reason: str) -> None:
        if self._gone is None:
            log.error("%s: this node makes no outgoing connections until it is restarted", reason)
            self.status = f"gone: {reason}"
        self._gone = reason
        if self._reading is not None:
            self._reading.remove_reader(self.channel.fileno())
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self._pending.clear()

    async def open(self, host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(sock=await self.open_socket(host, port, timeout))

    async def open_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """The broker's connected socket (non-blocking) for one request: host:port, or
        connect_broker.IPC_HOST for the -ipcconnect=tcp wallet, its listener checked."""
        if self._gone is not None:
            raise ConnectionError(self._gone)
        self._ensure_reader()
        self._next = self._next % 0xFFFFFFFF + 1
        ident = self._next
        request = encode_request(Request(ident, host, port))
        if len(request) > MAX_REQUEST:
            raise OSError(f"host name longer than {MAX_REQUEST - REQUEST_SIZE} bytes")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self.channel.send(request)
        except BlockingIOError:
            self._pending.pop(ident, None)
            raise ConnectionError("the connect broker is not keeping up") from None
        except OSError as exc:
            self._pending.pop(ident, None)
            self._lost(f"the connect broker has ended ({exc.strerror or exc})")
            raise ConnectionError(self._gone) from None
        try:
            # The broker times out on its own after `timeout`; a little longer here.
            fd = await asyncio.wait_for(asyncio.shield(future), timeout + 1.0)
        except BaseException:
            self._pending.pop(ident, None)
            future.add_done_callback(lambda f: os.close(f.result()) if not f.cancelled() and f.exception() is None else None)
            raise
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        if self._reading is not None and self._gone is None:
            self._reading.remove_reader(self.channel.fileno())
        self._gone = self._gone or "closed"
        self.channel.close()


def _error(code: int, message: str) -> OSError:
    if code == REFUSED:
        return ConnectRefused(message)
    if code == TIMEOUT:
        return TimeoutError(message)
    return OSError(f"{CODES.get(code, f'code {code}')}: {message}")



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


def broker_endpoints(config: Any) -> list[str]:
    """`named_endpoints` of a node's configuration (cli/node_main.NodeConfig): the endpoints
    of its connect rule, the broker's under CleanCoin-node (fixed from the options before the
    node confines itself) or CleanCoind's own DirectConnector's."""
    from ...common.chainparams import params_for
    return named_endpoints(config.connect, config.addnode, config.allow_local_peers,
                           params_for(config.chain).default_port)


#: P2PNode's default connector (see DirectConnector).
UNRESTRICTED = DirectConnector(None)
