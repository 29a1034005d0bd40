"""What CleanCoin-node adds to a Node: the wallet in its own process, and IPC listeners.

`NodeProcesses` is the node's `NodeExtension` (node.py). At start it makes the router that
serves wallet RPC methods registered over IPC (wallet_router.py), opens the -ipcbind
listeners (whose clients get the node's Init: makeChain, makeNode), and starts the wallet
process through the zygote (wallet_process.py) unless -disablewallet, or uses the running
one -ipcconnect names. At shutdown it stops them in reverse order.

Only that wallet process may register wallet RPC methods. The `Chain` a listener's client
gets refuses registrations, unless the operator allowed wallets there (-ipcallowwallet=1,
which takes effect only when the node has no wallet process of its own: -disablewallet);
then a separately started `CleanCoin-wallet -ipcconnect` can serve the wallet methods.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from cleancoin.sandbox import Report, Zygote

from ..ipc.address import parse
from ..ipc.auth import write_cookie
from ..ipc.init_impl import ProcessInit
from ..ipc.interfaces import Peer
from ..ipc.settings import IpcSettings
from ..ipc.transport import Listener, listen
from .chain_binding import RpcRegistrar, make_chain
from .node_binding import NodeService
from .wallet_connection import ConnectedWallet
from .wallet_process import WalletProcess
from .wallet_router import WalletRpcRouter, WalletSlot

log = logging.getLogger("cleancoin.node")

NODE_SOCKET = "node.sock"
WALLET_SOCKET = "wallet.sock"      # where a CleanCoin-wallet -ipcbind=unix waits for nodes


@dataclass
class NodeProcesses:
    """See the module docstring. `zygote` is None with -disablewallet; `report` is the node's
    own enforcement report (None with -sandbox=0)."""

    zygote: Zygote | None
    ipc: IpcSettings
    local: Peer
    wallets: list[str]
    report: Report | None = None
    prestarted_wallet: Any = None     # wallet_process.prestart()'s socket, if called
    connect_wallet: bool = False      # -ipcconnect: use a running wallet process instead
    allow_wallet_clients: bool = False  # -ipcallowwallet: listener clients may be the wallet
    router: WalletRpcRouter | None = None
    wallet: WalletProcess | ConnectedWallet | None = None
    listeners: list[Listener] = field(default_factory=list)
    _node: Any = None
    _client_slot: WalletSlot | None = None     # -ipcallowwallet: the listener clients' slot

    async def start(self, node: Any) -> None:
        self._node = node
        self.router = WalletRpcRouter(node.registry, after_call=self._after_wallet_call,
                                      tip=lambda: node.chain.tip.hash if node.chain is not None else b"")
        self._add_process_info(node)
        own_wallet = self.connect_wallet or self.zygote is not None
        if self.allow_wallet_clients and own_wallet:
            log.warning("-ipcallowwallet has no effect: this node serves its own wallet process "
                        "(use it with -disablewallet)")
        elif self.allow_wallet_clients:
            self._client_slot = self.router.slot("a wallet process connected to an IPC listener "
                                                 "(-ipcallowwallet)", reserve=False, gated=False)
        if self.ipc.binds:
            await self._listen(node)
        if self.connect_wallet:
            self.wallet = ConnectedWallet(self.ipc, os.path.join(node.netdatadir, WALLET_SOCKET), node,
                                          self.router, self.wallets, self.local)
            await self.wallet.start()
        elif self.zygote is not None:
            self.wallet = WalletProcess(self.zygote, node, self.router, self.wallets, self.local,
                                        self.ipc.debug, self.prestarted_wallet)
            self.prestarted_wallet = None
            await self.wallet.start()

    async def _after_wallet_call(self, method: str) -> None:
        if self.wallet is not None:
            await self.wallet.refresh_loaded(method)

    async def _listen(self, node: Any) -> None:
        assert self.router is not None
        registrar = self._listener_registrar
        make_init = functools.partial(ProcessInit, chain_factory=lambda: make_chain(node, registrar()),
                                      node_factory=lambda: NodeService(node))
        tcp = any(b.startswith("tcp") for b in self.ipc.binds)
        cookie = write_cookie(node.netdatadir) if tcp else None
        options = self.ipc.listen_options(cookie)
        for bind in self.ipc.binds:
            address = parse(bind, os.path.join(node.netdatadir, NODE_SOCKET))
            self.listeners.append(await listen(address, make_init, self.local, options))
            log.info("IPC: listening on %s", bind if address.kind == "tcp" else address.path)

    def _listener_registrar(self) -> RpcRegistrar:
        """What the Chain of a listener's client does with register_rpc (module docstring);
        one per connection (made with its Chain)."""
        assert self.router is not None
        who = "an IPC client"
        if self.connect_wallet or self.zygote is not None:
            return self.router.refusing(who, "this node takes no wallet RPC registrations from its IPC "
                                             "clients: it serves its own wallet process")
        if self._client_slot is None:
            return self.router.refusing(who, "this node takes no wallet RPC registrations from its IPC "
                                             "clients (start it with -ipcallowwallet=1 to allow that)")
        return self.router.registrar(self._client_slot)

    def _add_process_info(self, node: Any) -> None:
        """`getprocessinfo`: the processes of this node and what confines each (for operators
        and `make demo`; CleanCoind has no such method, having one process)."""
        from cleancoin.components.rpc.registry import CallContext

        def info(ctx: CallContext) -> dict[str, Any]:
            node_entry = {"name": self.local.name, "pid": os.getpid(),
                          "sandbox": self.report.to_dict() if self.report else None}
            processes = [node_entry]
            if isinstance(self.wallet, WalletProcess):
                processes.append({"name": "CleanCoin-wallet", "pid": self.wallet.pid,
                                  "sandbox_report": self.wallet.report_text,
                                  "restarts": self.wallet.restarts, "wallets": self.wallet.wanted})
            elif isinstance(self.wallet, ConnectedWallet):
                remote = self.wallet.remote
                processes.append({"name": remote.name if remote else "CleanCoin-wallet",
                                  "pid": remote.pid if remote else None,
                                  "sandbox_report": "not started by this node (-ipcconnect): its "
                                                    "confinement is whatever it was started with",
                                  "reconnects": self.wallet.reconnects, "wallets": self.wallet.wanted})
            return {"processes": processes,
                    "wallet_rpc": "connected" if self.router and self.router.connected
                    else (self.router.status if self.router else "none")}

        node.registry.add("getprocessinfo", info, category="control",
                          help="Returns the processes of this multiprocess node (pid, sandbox report).",
                          result='{ "processes" : [ { "name" : "str", "pid" : n, "sandbox" : {...} }, ... ],\n'
                                 '  "wallet_rpc" : "str" }    (json object)')

    async def stop(self) -> None:
        if self.wallet is not None:
            await self.wallet.stop()
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        if self.zygote is not None:
            self.zygote.stop()
