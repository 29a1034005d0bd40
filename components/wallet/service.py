"""The wallet as a process of its own (started by CleanCoin-node's zygote, or CleanCoin-wallet
-ipcconnect/-ipcbind).

The node is reached only through a `Chain` (an IPC proxy here). The wallet's JSON-RPC
methods live in a `Registry` of this process; they are registered with the node
(`Chain.register_rpc`), which forwards matching requests to `WalletRpcHandler.execute`, so the
methods, their parameter checks and their errors are exactly those of CleanCoind's wallet.

`WalletService` is the `WalletLoader` of components/interfaces/wallet.py that the node holds:
it loads the wallets the node names and closes them all when told, or when the connection
ends (`close`, called by the IPC runtime).
"""

from __future__ import annotations

import logging
import os

from cleancoin.components.interfaces.chain import (
    Chain, Handler, RpcMethodInfo, RpcRequest, RpcResponse,
)
from cleancoin.components.rpc.carried import execute_request
from cleancoin.components.rpc.registry import Registry
from cleancoin.components.interfaces.wallet import WalletNotifications, WalletOptions

from .events import WalletNotificationsRelay
from cleancoin.components.common.fee_cap import DEFAULT_MAX_TX_FEE
from .rpc import register_wallet_methods
from .store import WALLET_LOG_FILENAME
from .wallet import StartupWalletError, WalletManager

log = logging.getLogger("cleancoin.wallet")


def method_infos(registry: Registry) -> list[RpcMethodInfo]:
    """What the node needs to list and forward each method (its own `help` stays the node's)."""
    return [RpcMethodInfo(m.name, m.category, m.signature(), m.help_text(), m.hidden)
            for m in registry if m.name not in ("help", "stop")]


class WalletRpcHandler:
    """`RpcHandler`: runs a forwarded call in this process's registry."""

    def __init__(self, registry: Registry, loader: WalletManager) -> None:
        self._registry = registry
        self._loader = loader

    async def execute(self, request: RpcRequest) -> RpcResponse:
        return await execute_request(self._registry, request, before=lambda: self._catch_up(request.tip))

    async def _catch_up(self, tip: bytes) -> None:
        """Bring every loaded wallet that is not at `tip` (the node's tip when it forwarded
        the call) up to the chain: cheap when notifications already did (no query at all)."""
        if not tip:
            return
        for wallet in list(self._loader.wallets.values()):
            if wallet.store.best_hash != tip:       # one query per call and wallet
                await wallet.sync()


def node_registry(registry: Registry, methods: frozenset[str] | None) -> Registry:
    """The methods the node may call: all of `registry`, or only `methods` (-forwardrpc=read).
    Its own table, not a filter on names: a call the node forwards for any other method is
    "Method not found" here, whatever the node was made to send."""
    if methods is None:
        return registry
    subset = Registry(wallet_resolver=registry.wallet_resolver, with_help=False,
                      amount_decimals=registry.amount_decimals)
    for method in registry:
        if method.name in methods:
            subset.register(method)
    return subset


class WalletService:
    """The `WalletLoader` a node holds; see the module docstring."""

    def __init__(self, loader: WalletManager, registry: Registry, registration: Handler | None,
                 node_methods: frozenset[str] | None = None) -> None:
        self.loader = loader
        self.registry = registry
        self.node_registry = node_registry(registry, node_methods)
        self._registration = registration
        self._closed = False
        self._relays: list[WalletNotificationsRelay] = []
        self.ignore_startup_list = False     # WalletOptions.ignore_startup_list (-nowallet)

    async def load_wallets(self, names: list[str]) -> list[str]:
        """The node's -wallet names (or, after a restart, the wallets loaded before), plus the
        start-up list of `<netdatadir>/wallets/settings.json` (WalletManager.load_startup_wallets:
        a listed wallet that no longer exists is only a warning in this process's log)."""
        try:
            return await self.loader.load_startup_wallets(names, include_listed=not self.ignore_startup_list)
        except StartupWalletError as exc:
            # CleanCoind's wording: the node reports it and refuses to start.
            raise RuntimeError(f"Failed to load wallet {exc.name!r}: {exc}") from None

    async def register(self, chain: Chain) -> None:
        """Register the wallet RPC methods with the node (once; a refusal raises)."""
        if self._registration is None:
            self._registration = await chain.register_rpc(method_infos(self.node_registry),
                                                          WalletRpcHandler(self.node_registry, self.loader))

    async def loaded_wallets(self) -> list[str]:
        return self.loader.names()

    async def shutdown(self) -> None:
        await self.close()

    async def handle_notifications(self, notifications: WalletNotifications) -> Handler:
        """Push the wallets' changes to `notifications` (the node, for its front ends): a
        "loaded" event per loaded wallet first, then every change (events.py)."""
        relay = WalletNotificationsRelay(self.loader.events, notifications)
        relay.start([w.event("loaded") for w in self.loader.wallets.values()])
        self._relays.append(relay)
        return relay

    async def close(self) -> None:
        """Close every wallet and end the RPC registration; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        registration, self._registration = self._registration, None
        if registration is not None:
            try:
                await registration.disconnect()
            except Exception as exc:  # noqa: BLE001 - the node may be gone already
                log.debug("ending the RPC registration: %s", exc)
        for relay in self._relays:
            await relay.disconnect()
        await self.loader.close_all()
        log.info("wallets closed")


async def make_wallet_service(chain: Chain, options: WalletOptions, *, register: bool = True,
                              node_methods: frozenset[str] | None = None,
                              max_tx_fee: int = DEFAULT_MAX_TX_FEE,
                              minimum_chain_work: int | None = None) -> WalletService:
    """The wallets of `options.netdatadir` over `chain`, their RPC methods registered with
    the node (unless `register` is false: call `register` later, e.g. once the wallets are
    loaded): all of them, or only `node_methods` (-forwardrpc=read: rpc.READ_METHODS).
    `max_tx_fee` (-maxtxfee) is the caller's own setting, never one of `options`, which the
    node sends (components/common/fee_cap.py); so is `minimum_chain_work` (-minimumchainwork,
    None: the network's; headers.py)."""
    loader = WalletManager(options.netdatadir, chain, options.network, max_tx_fee, minimum_chain_work)
    registry = Registry()
    register_wallet_methods(registry, loader)
    service = WalletService(loader, registry, None, node_methods)
    service.ignore_startup_list = options.ignore_startup_list
    if register:
        await service.register(chain)
    return service


def wallet_log_path(netdatadir: str) -> str:
    """Where a wallet process logs: inside the wallets directory, the only place it may write."""
    return os.path.join(netdatadir, "wallets", WALLET_LOG_FILENAME)
