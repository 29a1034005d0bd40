"""The method tables of the IPC interfaces (see `binding`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import schema
from .binding import PLAIN, Codec, InterfaceSpec, Method, capability_codec, struct_codec
from ..interfaces.chain import (
    EVENT_KINDS, BlockInfo, BroadcastResult, ChainEvent, RpcMethodInfo, RpcRequest, RpcResponse,
)
from ..interfaces.node import ProcessEvent, TipInfo
from ..interfaces.wallet import WalletEvent, WalletOptions
from ..interfaces.init import Peer

PEER = struct_codec(Peer)
LIST = Codec(lambda v, _: list(v), lambda v, _: [str(x) for x in v])
# Data: pycapnp may hand back a view into the message; copy it out (the message goes away).
BYTES = Codec(lambda v, _: bytes(v), lambda v, _: bytes(v))
BYTES_LIST = Codec(lambda v, _: [bytes(x) for x in v], lambda v, _: [bytes(x) for x in v])


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(w.title() for w in rest)


def camel_struct_codec(cls: type) -> Codec:
    """A dataclass carried as a capnp struct whose field names are the camelCase of the
    Python ones (capnp forbids underscores): prev_hash <-> prevHash. Data fields are copied to
    bytes on the way in."""
    names = [f.name for f in dataclasses.fields(cls)]
    wire = {n: _camel(n) for n in names}

    def decode(r: Any, _: Any) -> Any:
        values = {n: getattr(r, wire[n]) for n in names}
        return cls(**{n: bytes(v) if isinstance(v, memoryview) else v for n, v in values.items()})

    return Codec(lambda v, _: {wire[n]: getattr(v, n) for n in names}, decode)


BLOCK_INFO = camel_struct_codec(BlockInfo)
BROADCAST_RESULT = camel_struct_codec(BroadcastResult)
RPC_METHOD_INFO = camel_struct_codec(RpcMethodInfo)
RPC_RESPONSE = camel_struct_codec(RpcResponse)
WALLET_OPTIONS = camel_struct_codec(WalletOptions)
WALLET_EVENT = camel_struct_codec(WalletEvent)
TIP_INFO = camel_struct_codec(TipInfo)
PROCESS_EVENT = camel_struct_codec(ProcessEvent)


def list_codec(item: Codec) -> Codec:
    """A capnp List of what `item` carries."""
    return Codec(lambda v, log: [item.encode(x, log) for x in v],
                 lambda r, log: [item.decode(x, log) for x in r])


# Event kinds travel in the schema's camelCase spelling.
_EVENT_WIRE = {kind: _camel(kind) for kind in EVENT_KINDS}
_EVENT_PY = {wire: kind for kind, wire in _EVENT_WIRE.items()}
CHAIN_EVENT = Codec(
    lambda e, _: {"kind": _EVENT_WIRE[e.kind], "data": e.data, "height": e.height, "reason": e.reason},
    lambda r, _: ChainEvent(_EVENT_PY.get(r.kind, r.kind), bytes(r.data), r.height, r.reason))
# uri_wallet may be None (a call to "/"): capnp Text cannot be null, hence hasUriWallet.
RPC_REQUEST = Codec(
    lambda q, _: {"method": q.method, "params": q.params, "uriWallet": q.uri_wallet or "",
                  "hasUriWallet": q.uri_wallet is not None, "user": q.user, "tipHash": q.tip},
    lambda r, _: RpcRequest(r.method, r.params, r.uriWallet if r.hasUriWallet else None, r.user,
                            bytes(r.tipHash)))

ECHO = InterfaceSpec("Echo", lambda: schema.load("echo").Echo, (
    Method("echo", "echo", (("echo", PLAIN),), ("result", PLAIN)),
    Method("destroy", "destroy"),
))

INIT = InterfaceSpec("Init", lambda: schema.load("init").Init, (
    Method("hello", "hello", (("client", PEER), ("debug", LIST)), ("server", PEER)),
    Method("make_echo", "makeEcho", (), ("echo", capability_codec(lambda: ECHO))),
    Method("make_chain", "makeChain", (), ("chain", capability_codec(lambda: CHAIN))),
    Method("make_wallet_loader", "makeWalletLoader",
           (("chain", capability_codec(lambda: CHAIN)), ("options", WALLET_OPTIONS)),
           ("loader", capability_codec(lambda: WALLET_LOADER))),
    Method("make_node", "makeNode", (), ("node", capability_codec(lambda: NODE))),
))

# The Chain interface (components/interfaces/chain.py); capability_codec makes the wallet's
# notifications object a capability the node calls back, and the Handler one the wallet
# calls to stop them.
HANDLER = InterfaceSpec("Handler", lambda: schema.load("chain").Handler, (
    Method("disconnect", "disconnect"),
))

async def _each_event(impl: Any, events: list[ChainEvent]) -> None:
    """chainEvents for a receiver that implements only the single-event methods."""
    for event in events:
        await getattr(impl, event.kind)(*event.args())


CHAIN_NOTIFICATIONS = InterfaceSpec("ChainNotifications", lambda: schema.load("chain").ChainNotifications, (
    Method("block_connected", "blockConnected", (("block", BYTES), ("height", PLAIN))),
    Method("block_disconnected", "blockDisconnected", (("block", BYTES), ("height", PLAIN))),
    Method("transaction_added_to_mempool", "transactionAddedToMempool", (("tx", BYTES),)),
    Method("transaction_removed_from_mempool", "transactionRemovedFromMempool",
           (("txid", BYTES), ("reason", PLAIN))),
    Method("chain_events", "chainEvents", (("events", list_codec(CHAIN_EVENT)),), fallback=_each_event),
))

RPC_HANDLER = InterfaceSpec("RpcHandler", lambda: schema.load("chain").RpcHandler, (
    Method("execute", "execute", (("request", RPC_REQUEST),), ("response", RPC_RESPONSE)),
))

# What a front end hears from the node (components/interfaces/node.py), and what the node
# hears from its wallet process (interfaces/wallet.py) to pass on.
NODE_NOTIFICATIONS = InterfaceSpec("NodeNotifications", lambda: schema.load("node").NodeNotifications, (
    Method("tip_changed", "tipChanged", (("tip", TIP_INFO),)),
    Method("wallet_events", "walletEvents", (("events", list_codec(WALLET_EVENT)),)),
    Method("process_event", "processEvent", (("event", PROCESS_EVENT),)),
    Method("log_lines", "logLines", (("lines", LIST),)),
))

NODE = InterfaceSpec("Node", lambda: schema.load("node").Node, (
    Method("execute_rpc", "executeRpc", (("request", RPC_REQUEST),), ("response", RPC_RESPONSE)),
    Method("shutdown", "shutdown"),
    Method("handle_notifications", "handleNotifications",
           (("notifications", capability_codec(lambda: NODE_NOTIFICATIONS)),),
           ("handler", capability_codec(lambda: HANDLER))),
))

WALLET_NOTIFICATIONS = InterfaceSpec("WalletNotifications",
                                     lambda: schema.load("wallet").WalletNotifications, (
    Method("wallet_events", "walletEvents", (("events", list_codec(WALLET_EVENT)),)),
))

WALLET_LOADER = InterfaceSpec("WalletLoader", lambda: schema.load("wallet").WalletLoader, (
    Method("load_wallets", "loadWallets", (("names", LIST),), ("loaded", LIST)),
    Method("loaded_wallets", "loadedWallets", (), ("names", LIST)),
    Method("shutdown", "shutdown"),
    Method("handle_notifications", "handleNotifications",
           (("notifications", capability_codec(lambda: WALLET_NOTIFICATIONS)),),
           ("handler", capability_codec(lambda: HANDLER))),
))

CHAIN = InterfaceSpec("Chain", lambda: schema.load("chain").Chain, (
    Method("get_height", "getHeight", (), ("height", PLAIN)),
    Method("get_block_hash", "getBlockHash", (("height", PLAIN),), ("hash", BYTES)),
    Method("get_block_header_info", "getBlockHeaderInfo", (("hash", BYTES),), ("info", BLOCK_INFO)),
    Method("get_blocks", "getBlocks", (("startHeight", PLAIN), ("count", PLAIN)), ("blocks", BYTES_LIST)),
    Method("find_fork", "findFork", (("locator", BYTES_LIST),), ("height", PLAIN)),
    Method("broadcast_transaction", "broadcastTransaction", (("tx", BYTES), ("maxFee", PLAIN)),
           ("result", BROADCAST_RESULT)),
    Method("relay_min_fee", "relayMinFee", (), ("feePerKb", PLAIN)),
    Method("is_in_mempool", "isInMempool", (("txid", BYTES),), ("result", PLAIN)),
    Method("handle_notifications", "handleNotifications",
           (("notifications", capability_codec(lambda: CHAIN_NOTIFICATIONS)),),
           ("handler", capability_codec(lambda: HANDLER))),
    Method("register_rpc", "registerRpc",
           (("methods", list_codec(RPC_METHOD_INFO)), ("handler", capability_codec(lambda: RPC_HANDLER))),
           ("registration", capability_codec(lambda: HANDLER))),
))
