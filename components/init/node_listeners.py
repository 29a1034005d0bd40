"""CleanCoin-node's listening sockets, all bound before it confines itself.

The confined node runs in a network namespace of its own (policies/node.toml, since 12-07):
an abstract unix name it could bind in the host's namespace was the host's (a display's
@/tmp/.X11-unix/X<n>, taken before its server started, and read by that server's clients of
any user). A socket keeps the namespace it was made in, so every listener is made here, in
the host's namespace, and served on once confined: P2P (-bind, -port), RPC and REST
(-rpcbind, -rpcport) and IPC (-ipcbind=unix and tcp). After that the node binds nothing
(its filter refuses bind(2)); its outgoing P2P connections are its connect broker's.

A failure says what the node says when it binds in its own start (node.py), so an operator
sees the same message with and without the sandbox.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..common.chainparams import params_for
from ..ipc.address import parse
from ..ipc.transport import AddressError
from ..ipc.transport import bind as bind_ipc
from ..node.p2p.listen_sockets import bind_listeners as bind_p2p
from ..rpc.server import bind_endpoints, bind_sockets as bind_rpc

if TYPE_CHECKING:
    from ..node.node import NodeConfig

NODE_SOCKET = "node.sock"


class ListenError(Exception):
    """A listener that cannot be bound; the message is the node's own for it."""


@dataclass
class NodeListeners:
    """The bound listeners: `ipc` by -ipcbind value, `p2p` (None: the node does not listen)
    and `rpc` ((host, port, socket); None: no RPC server)."""

    ipc: dict[str, socket.socket] = field(default_factory=dict)
    p2p: list[socket.socket] | None = None
    rpc: list[tuple[str, int, socket.socket]] | None = None

    def descriptors(self) -> set[int]:
        """What the process keeps across its confinement."""
        return ({s.fileno() for s in self.ipc.values()} | {s.fileno() for s in self.p2p or ()}
                | {s.fileno() for _, _, s in self.rpc or ()})

    def close(self) -> None:
        """Close what a failed start never served on (unix listeners' files removed)."""
        close_ipc(self.ipc)
        for sock in self.p2p or ():
            sock.close()
        for _, _, sock in self.rpc or ():
            sock.close()
        self.p2p = self.rpc = None


def bind_all(config: NodeConfig, ipc_binds: Sequence[str], netdatadir: str) -> NodeListeners:
    """Bind every listener `config` (a NodeConfig) and `ipc_binds` name. Raises ListenError,
    having closed what it bound, when one cannot be bound."""
    listeners = NodeListeners()
    try:
        listeners.ipc = bind_ipc_listeners(ipc_binds, netdatadir)
        params = params_for(config.chain)
        listen = config.listen if config.listen is not None else not config.connect
        if listen:
            port = params.default_port if config.port is None else config.port
            try:
                listeners.p2p = bind_p2p(config.bind, port)
            except OSError as exc:
                raise ListenError(f"Unable to bind to {config.bind}:{port} on this computer. "
                                  f"CleanCoind is probably already running. ({exc})") from None
        if config.server:
            rpcport = params.rpc_port if config.rpcport is None else config.rpcport
            endpoints, _ = bind_endpoints(config.rpcbind, config.rpcallowip, rpcport)
            try:
                listeners.rpc = bind_rpc(endpoints)
            except OSError as exc:
                raise ListenError(f"Unable to start HTTP server. See debug log for details. ({exc})") from None
    except AddressError as exc:
        listeners.close()
        raise ListenError(str(exc)) from None
    except BaseException:
        listeners.close()
        raise
    return listeners


def bind_ipc_listeners(binds: Sequence[str], netdatadir: str) -> dict[str, socket.socket]:
    """Bind every -ipcbind listener of `binds` (`unix` alone: `<netdatadir>/node.sock`), by
    its -ipcbind value; closes what it bound and raises AddressError if one cannot be."""
    bound: dict[str, socket.socket] = {}
    try:
        for value in binds:
            if value not in bound:
                bound[value] = bind_ipc(parse(value, os.path.join(netdatadir, NODE_SOCKET)))
    except AddressError:
        close_ipc(bound)
        raise
    return bound


def close_ipc(prebound: dict[str, socket.socket]) -> None:
    """Close the IPC listeners left in `prebound` (a start that failed before it listened on
    them), removing a unix listener's file."""
    while prebound:
        _, sock = prebound.popitem()
        path = sock.getsockname()
        sock.close()
        if isinstance(path, str) and path:
            try:
                os.unlink(path)
            except OSError:
                pass        # out of this confined process's view: the next start removes it as stale
