"""The method tables of the IPC interfaces (see `binding`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import schema
from .binding import PLAIN, Codec, InterfaceSpec, Method, capability_codec, struct_codec
from ..chain_interface import BlockInfo, BroadcastResult
from .interfaces import Peer

PEER = struct_codec(Peer)
LIST = Codec(lambda v, _: list(v), lambda v, _: [str(x) for x in v])
# Data: pycapnp may hand back a view into the message; copy it out (the message goes away).
BYTES = Codec(lambda v, _: bytes(v), lambda v, _: bytes(v))
BYTES_LIST = Codec(lambda v, _: [bytes(x) for x in v], lambda v, _: [bytes(x) for x in v])


def camel_struct_codec(cls: type) -> Codec:
    """A dataclass carried as a capnp struct whose field names are the camelCase of the
    Python ones (capnp forbids underscores): prev_hash <-> prevHash. Data fields are copied to
    bytes on the way in."""
    names = [f.name for f in dataclasses.fields(cls)]
    wire = {n: n.split("_")[0] + "".join(w.title() for w in n.split("_")[1:]) for n in names}

    def decode(r: Any, _: Any) -> Any:
        values = {n: getattr(r, wire[n]) for n in names}
        return cls(**{n: bytes(v) if isinstance(v, memoryview) else v for n, v in values.items()})

    return Codec(lambda v, _: {wire[n]: getattr(v, n) for n in names}, decode)


BLOCK_INFO = camel_struct_codec(BlockInfo)
BROADCAST_RESULT = camel_struct_codec(BroadcastResult)

ECHO = InterfaceSpec("Echo", lambda: schema.load("echo").Echo, (
    Method("echo", "echo", (("echo", PLAIN),), ("result", PLAIN)),
    Method("destroy", "destroy"),
))

INIT = InterfaceSpec("Init", lambda: schema.load("init").Init, (
    Method("hello", "hello", (("client", PEER), ("debug", LIST)), ("server", PEER)),
    Method("make_echo", "makeEcho", (), ("echo", capability_codec(lambda: ECHO))),
    Method("make_chain", "makeChain", (), ("chain", capability_codec(lambda: CHAIN))),
))

# The Chain interface (components/chain_interface.py); capability_codec makes the wallet's
# notifications object a capability the node calls back, and the Handler one the wallet
# calls to stop them.
HANDLER = InterfaceSpec("Handler", lambda: schema.load("chain").Handler, (
    Method("disconnect", "disconnect"),
))

CHAIN_NOTIFICATIONS = InterfaceSpec("ChainNotifications", lambda: schema.load("chain").ChainNotifications, (
    Method("block_connected", "blockConnected", (("block", BYTES), ("height", PLAIN))),
    Method("block_disconnected", "blockDisconnected", (("block", BYTES), ("height", PLAIN))),
    Method("transaction_added_to_mempool", "transactionAddedToMempool", (("tx", BYTES),)),
    Method("transaction_removed_from_mempool", "transactionRemovedFromMempool",
           (("txid", BYTES), ("reason", PLAIN))),
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
))
