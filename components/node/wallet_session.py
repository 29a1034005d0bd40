"""What CleanCoin-node keeps of a wallet that runs in another process, however that process
was reached (started through the zygote: wallet_process.py; a running one reached with
-ipcconnect: wallet_connection.py).

Attaching to a connection gives the wallet a `Chain` of its own, the only one through which
wallet RPC methods can be registered with this node (the router's reserving, gated slot of
"the node's wallet process", see wallet_router.py), asks `Init.make_wallet_loader` for its
loader and loads the wanted wallets; only then do the methods answer (until then, -28).
Detaching ends that chain's registrations and closes the connection; the names stay
reserved for the next process attached here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..ipc.connection import Connection
from ..ipc.interfaces import Peer
from ..wallet_interface import WalletLoader, WalletOptions
from .chain_binding import NodeChain, make_chain
from .wallet_router import WalletRpcRouter

log = logging.getLogger("cleancoin.node")

#: How long a wallet process may take to close its wallets at shutdown.
SHUTDOWN_TIMEOUT = 10.0
#: Who holds the wallet methods, in messages and logs.
WALLET_SLOT_LABEL = "the node's wallet process"


class RemoteWallet:
    """The connection, the Chain served over it, the loader, and the wallets loaded (`wanted`:
    loaded again after a restart or a reconnect)."""

    def __init__(self, node: Any, router: WalletRpcRouter, wallets: list[str], local: Peer) -> None:
        self._node = node
        self._router = router
        self.wanted: list[str] = list(wallets)
        self._local = local
        self._connection: Connection | None = None
        self._chain: NodeChain | None = None
        self.loader: WalletLoader | None = None
        self._slot = router.slot(WALLET_SLOT_LABEL, reserve=True, gated=True)

    async def _attach(self, connection: Connection) -> None:
        """Use the wallet process at the other end of `connection`; on failure, detach and raise."""
        self._connection = connection
        self._chain = make_chain(self._node, self._router.registrar(self._slot))
        try:
            self.loader = await connection.init.make_wallet_loader(
                self._chain, WalletOptions(self._node.params.name, self._node.netdatadir,
                                           self._node.config.ignore_startup_wallets))
            await self.loader.load_wallets(self.wanted)
            self.wanted = await self.loader.loaded_wallets()
        except BaseException:
            await self._detach()
            raise
        self._router.set_ready(self._slot)

    async def refresh_loaded(self, _method: str = "") -> None:
        """After createwallet/loadwallet/unloadwallet/restorewallet: remember what is loaded."""
        if self.loader is not None:
            with contextlib.suppress(Exception):
                self.wanted = await self.loader.loaded_wallets()

    async def _close_wallets(self) -> None:
        """Ask the wallet process to close our wallets (at shutdown)."""
        if self.loader is None:
            return
        try:
            await asyncio.wait_for(self.loader.shutdown(), SHUTDOWN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - hanging up (or a kill) follows
            log.warning("the wallet process did not close its wallets cleanly: %s", exc)

    async def _detach(self) -> None:
        """End the chain's registrations and hang up; safe to call twice."""
        chain, self._chain = self._chain, None
        connection, self._connection, self.loader = self._connection, None, None
        if chain is not None:
            await chain.close()
        if connection is not None:
            connection.close()
