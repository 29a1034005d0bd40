"""CleanCoin-node's wallet when it is a running process of its own (-ipcconnect).

Instead of starting a wallet through the zygote, the node connects to a
`CleanCoin-wallet -ipcbind=...` that waits for nodes (`<netdatadir>/wallet.sock` by default),
and uses it exactly like a wallet it started: a `Chain` of its own in
`Init.makeWalletLoader(chain, options)`, the wallet's RPC methods registered through it, the
-wallet wallets loaded. The two processes come and go independently: when the connection
ends, wallet RPC methods answer RPC_IN_WARMUP and the node tries again every
RECONNECT_SECONDS, loading the same wallets when the wallet process is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..ipc.connection import Connection
from ..interfaces.init import Peer
from ..ipc.settings import IpcSettings, open_peer
from .wallet_process import WalletProcessError
from .wallet_router import WalletRpcRouter
from .wallet_session import RemoteWallet

log = logging.getLogger("cleancoin.node")

RECONNECT_SECONDS = 2.0


class ConnectedWallet(RemoteWallet):
    """See the module docstring. `socket_path` is where `unix` points (the wallet.sock of
    the network datadir)."""

    def __init__(self, ipc: IpcSettings, socket_path: str, node: Any, router: WalletRpcRouter,
                 wallets: list[str], local: Peer) -> None:
        super().__init__(node, router, wallets, local)
        self._ipc = ipc
        self._socket_path = socket_path
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self.remote: Peer | None = None
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and load the -wallet wallets; raises WalletProcessError (the node then
        refuses to start, as it does when it cannot start its own wallet process)."""
        try:
            await self._connect()
        except Exception as exc:
            raise WalletProcessError(f"cannot use the wallet process at {self._ipc.connect}: {exc}") from exc

    async def _connect(self) -> None:
        async def refuse_spawn() -> Connection:
            raise WalletProcessError("no wallet process answers")

        connection = await open_peer(self._ipc, self._socket_path, self._local, self._node.netdatadir,
                                     refuse_spawn)
        await self._attach(connection)
        self.remote = connection.remote
        log.info("using the wallet process %s (wallets loaded: %s)", connection.remote,
                 ", ".join(self.wanted) or "none")
        self._watch = asyncio.get_running_loop().create_task(self._watch_connection(connection))

    async def _watch_connection(self, connection: Connection) -> None:
        await connection.closed()
        if self._stopping:
            return
        log.warning("the wallet process %s went away; trying to reconnect every %.0f s",
                    connection.remote, RECONNECT_SECONDS)
        self._router.status = f"Wallet process {connection.remote} disconnected; reconnecting"
        await self._detach()
        while not self._stopping:
            await asyncio.sleep(RECONNECT_SECONDS)
            try:
                await self._connect()
                self.reconnects += 1
                return
            except Exception as exc:  # noqa: BLE001 - keep trying; the next attempt may work
                log.debug("reconnecting to the wallet process failed: %s", exc)

    async def stop(self) -> None:
        """Let the wallet process close our wallets (it keeps running), then hang up."""
        self._stopping = True
        await self._close_wallets()        # hanging up closes them too
        if self._watch is not None:
            self._watch.cancel()
        await self._detach()
