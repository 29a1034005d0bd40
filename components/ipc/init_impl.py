"""Local implementations every process offers through its Init: hello and Echo."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..interfaces.chain import Chain
from ..interfaces.wallet import WalletLoader, WalletOptions
from .debug_log import CallLog
from .errors import IpcError
from ..interfaces.init import Echo, IpcPeer

#: Makes the Chain a node process offers (e.g. `lambda: make_chain(node)`).
ChainFactory = Callable[[], Chain]
#: Makes the Node a node process offers to front ends.
NodeFactory = Callable[[], Any]
#: Makes a wallet process's WalletLoader over the caller's Chain.
WalletLoaderFactory = Callable[[Chain, WalletOptions], Awaitable[WalletLoader]]


class LocalEcho:
    """Echo, implemented in process."""

    async def echo(self, echo: str) -> str:
        return echo

    async def destroy(self) -> None:
        return None


class ProcessInit:
    """The Init of a process, one per connection; components extend it with factories."""

    def __init__(self, log: CallLog, chain_factory: ChainFactory | None = None,
                 wallet_loader_factory: WalletLoaderFactory | None = None,
                 node_factory: NodeFactory | None = None) -> None:
        # The factories: a node process has a chain_factory, a wallet process a
        # wallet_loader_factory; connection.InitFactory stays `(log) -> Init`, so a process
        # passes `functools.partial(ProcessInit, chain_factory=...)`.
        self._log = log
        self._chain_factory = chain_factory
        self._wallet_loader_factory = wallet_loader_factory
        self._node_factory = node_factory
        self._made: list[Any] = []      # what this connection made, closed when it ends

    async def hello(self, client: IpcPeer, debug: list[str]) -> IpcPeer:
        # The client names itself; the log of this connection uses the name from now on.
        self._log.remote = client
        if "ipc" in debug and self._log.peer_may_enable and not self._log.enabled:
            self._log.enabled = True
            logging.getLogger("cleancoin.ipc").setLevel(logging.DEBUG)
        self._log.event("connected to")
        return self._log.local

    async def make_echo(self) -> Echo:
        return LocalEcho()

    async def make_chain(self) -> Chain:
        if self._chain_factory is None:
            # Every Init has the method (one schema for all processes); a clear refusal beats
            # the generic "unimplemented" a client would otherwise have to interpret.
            raise IpcError("this process offers no Chain")
        chain = self._chain_factory()
        self._made.append(chain)
        return chain

    async def make_node(self) -> Any:
        if self._node_factory is None:
            raise IpcError("this process offers no Node")
        node = self._node_factory()
        self._made.append(node)      # its notification subscriptions end with the connection
        return node

    async def make_wallet_loader(self, chain: Chain, options: WalletOptions) -> WalletLoader:
        if self._wallet_loader_factory is None:
            raise IpcError("this process offers no WalletLoader")
        loader = await self._wallet_loader_factory(chain, options)
        self._made.append(loader)
        return loader

    async def close(self) -> None:
        """The connection ended: close what it made (their registrations have no one left to
        end them; a wallet loader closes its wallets)."""
        made, self._made = self._made, []
        for obj in reversed(made):
            close = getattr(obj, "close", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:  # noqa: BLE001 - closing one must not stop closing the others
                logging.getLogger("cleancoin.ipc").exception("closing %s failed", type(obj).__name__)
