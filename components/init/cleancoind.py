"""CleanCoind: the node and its wallets in one process.

The wallet still sees the node only through the `Chain` interface, bound in process
(`node/chain_binding.make_chain`): the same protocol CleanCoin-node's wallet process gets
over IPC. `InProcessWallets` is the node's extension that loads them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from ..common import startup_gc
from ..node.node import InitError, NodeContext, NodeConfig

log = logging.getLogger("cleancoin.node")


class InProcessWallets:
    """The node's extension (node.NodeExtension) for CleanCoind: the wallets in this process,
    their RPC methods in the node's table, the -wallet ones and the start-up list loaded."""

    def __init__(self, wanted: list[str]) -> None:
        self.wanted = wanted
        self.loader: Any = None      # wallet.wallet.WalletManager

    async def start(self, node: NodeContext) -> None:
        from ..node.chain_binding import make_chain
        from ..wallet.rpc import register_wallet_methods
        from ..wallet.wallet import StartupWalletError, WalletManager

        self.loader = WalletManager(node.netdatadir, make_chain(node), node.params.name, node.config.max_tx_fee,
                                    node.config.minimum_chain_work)
        register_wallet_methods(node.registry, self.loader)
        if node.frontend is not None:       # wallet events for front ends (CleanCoin-qt)
            self.loader.events.add_listener(node.frontend.wallet_events)
        try:
            # -wallet names, then <netdatadir>/wallets/settings.json's list (load_on_startup).
            await self.loader.load_startup_wallets(
                self.wanted, include_listed=not node.config.ignore_startup_wallets)
        except StartupWalletError as exc:  # bitcoind refuses to start without a -wallet it was given
            raise InitError(f"Failed to load wallet {exc.name!r}: {exc}") from exc

    async def stop(self) -> None:
        # Called before the chain closes: a wallet may be mid-sync through it.
        if self.loader is not None:
            await self.loader.close_all()
            self.loader = None

    async def finish(self) -> None:
        """Nothing left to wait for: the wallets closed in `stop`."""


def run(config: NodeConfig) -> int:
    """Start CleanCoind in this process (options parsed, logging set up); returns the exit
    status."""
    node = NodeContext(config, None if config.disable_wallet else InProcessWallets(list(config.wallets)))
    startup_gc.resume()     # the node's code is imported (cli/node_main.build_config)
    try:
        return asyncio.run(node.run())
    except InitError as exc:
        log.error("Error: %s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
