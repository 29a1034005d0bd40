"""The `Node` interface: what a front end (CleanCoin-gui, a tool) drives in a node process.

Defined once as a Python protocol; the node implements it in components/node/node_binding.py
and serves it through `Init.make_node()` (its IPC table: components/ipc/specs.py, spec("Node")). JSON-RPC calls travel
as `RpcRequest`/`RpcResponse` (components/interfaces/chain.py), the same shapes a wallet process
uses to serve its methods through the node. What changes reaches the front end as
`NodeNotifications` callbacks, in the manner of `ChainNotifications`: nobody polls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .chain import Handler, RpcRequest, RpcResponse
from .wallet import WalletEvent


@dataclass(frozen=True)
class TipInfo:
    """The node's active tip and its sync state."""

    height: int
    hash: bytes
    time: int                 # the tip's header time (Unix time)
    headers: int              # height of the best header known
    progress: float           # verification progress, 0 to 1
    initial_download: bool
    mempool_size: int = 0


#: ProcessEvent kinds.
PROCESS_EVENT_KINDS: tuple[str, ...] = ("started", "exited", "restarted", "connected", "disconnected")


@dataclass(frozen=True)
class ProcessEvent:
    """A process of the node's tree changed (a wallet process died and came back...)."""

    kind: str
    name: str
    pid: int = 0
    detail: str = ""
    restarts: int = 0


class NodeNotifications(Protocol):
    """Implemented by a front end; the node calls it back one call at a time, in order."""

    async def tip_changed(self, tip: TipInfo) -> None:
        """The active tip is now `tip` (a burst of blocks arrives as its last tip)."""
        ...

    async def wallet_events(self, events: list[WalletEvent]) -> None:
        """Wallets changed (loaded, unloaded, transactions, balances, lock state)."""
        ...

    async def process_event(self, event: ProcessEvent) -> None:
        """A process of the node's tree started, exited, restarted, connected or disconnected."""
        ...

    async def log_lines(self, lines: list[str]) -> None:
        """The node's warnings and errors, as they are logged."""
        ...


class Node(Protocol):
    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        """Run one JSON-RPC call as the node's RPC server would; errors come back in the
        response, never as an exception."""
        ...

    async def shutdown(self) -> None:
        """Ask the node to shut down, as the `stop` RPC does."""
        ...

    async def handle_notifications(self, notifications: NodeNotifications) -> Handler:
        """Deliver tip changes, wallet events, process events and log lines to
        `notifications` until the handler is disconnected (or, over IPC, the connection is
        lost). The current tip and a "loaded" event per loaded wallet come first, delivered
        before this returns."""
        ...
