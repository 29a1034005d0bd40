"""The `Chain` interface: everything the wallet may ask of, or hear from, the node.

Defined once, here, as Python protocols. Two bindings implement it and component code cannot
tell them apart:

- in process (CleanCoind): `components.node.chain_binding.NodeChain`, direct calls;
- over Cap'n Proto (CleanCoin-node -> CleanCoin-wallet): the proxy that
  `components.ipc.specs.spec("Chain")` builds from `interfaces/chain.capnp`, obtained from a node
  process's `Init.make_chain()`.

Every method is a coroutine, because the IPC binding has to await the round trip; the local
binding just returns. Blocks and transactions travel serialized (`to_bytes`), so that the
wallet needs no node objects and the wire format is the consensus format.

Errors: a failing call raises. Locally that is the binding's own exception (`ChainError`);
over IPC the runtime turns every server-side failure into an `IpcError` carrying the same
message. Callers that must survive either catch `Exception` around such calls; the normal
paths (what the wallet does on every rescan) return values instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


#: Most headers one get_headers call returns (bitcoind's MAX_HEADERS_RESULTS): 160 KB.
MAX_GET_HEADERS: int = 2000


class ChainError(Exception):
    """A request the chain cannot answer (unknown block, height out of range)."""


@dataclass(frozen=True)
class BlockInfo:
    """What the wallet needs to know about one block header."""

    hash: bytes            # internal byte order, as everywhere in the node
    height: int
    time: int              # header timestamp (Unix time)
    prev_hash: bytes       # all zero for genesis
    in_active_chain: bool  # False for a block on a side branch (stale after a reorg)


@dataclass(frozen=True)
class BroadcastResult:
    """The outcome of `Chain.broadcast_transaction`.

    `reason` is the machine-readable reject reason when `ok` is False (bitcoind's reasons:
    "txn-mempool-conflict", "max-fee-exceeded", "TX decode failed", ...) and "" otherwise.
    `txid` is empty only when the bytes could not be decoded as a transaction.
    """

    ok: bool
    txid: bytes
    reason: str


@dataclass(frozen=True)
class ChainEvent:
    """One notification inside a batch (`ChainNotifications.chain_events`).

    `kind` is the name of the single-event method it stands for ("block_connected",
    "block_disconnected", "transaction_added_to_mempool", "transaction_removed_from_mempool");
    `data` the serialized block or transaction, or the txid for a removal; `height` for block
    events (0 otherwise); `reason` for removals ("" otherwise).
    """

    kind: str
    data: bytes
    height: int = 0
    reason: str = ""

    def args(self) -> tuple[object, ...]:
        """The arguments of the single-event method `kind`."""
        if self.kind in ("block_connected", "block_disconnected"):
            return (self.data, self.height)
        if self.kind == "transaction_removed_from_mempool":
            return (self.data, self.reason)
        return (self.data,)


EVENT_KINDS: tuple[str, ...] = ("block_connected", "block_disconnected",
                                "transaction_added_to_mempool", "transaction_removed_from_mempool")


@dataclass(frozen=True)
class RpcMethodInfo:
    """An RPC method a wallet registers with the node (`Chain.register_rpc`): what the node
    needs to list it in `help` and to forward calls of it."""

    name: str
    category: str
    signature: str      # the first line of its help: `sendtoaddress "address" amount ( ... )`
    help: str           # its full help text
    hidden: bool = False


@dataclass(frozen=True)
class RpcRequest:
    """One forwarded JSON-RPC call. `params` is JSON text (array or object, or "null");
    `uri_wallet` the name in /wallet/<name>, None at "/"."""

    method: str
    params: str
    uri_wallet: str | None
    user: str = ""
    # The node's tip when it forwarded the call: the wallet first catches up to it, so a
    # call right after a block (generatetoaddress, then sendtoaddress) sees that block even
    # if its notification is still on its way (bitcoind's BlockUntilSyncedToCurrentChain).
    tip: bytes = b""

    def __repr__(self) -> str:
        # -debug=ipc prints requests. Like bitcoind's -debug=rpc, which logs the method and
        # never the parameters, it shows no parameter of any method: passphrases, keys,
        # addresses and amounts stay out of the log whatever the method.
        method = self.method[:64].encode("unicode_escape").decode("ascii")
        return f"RpcRequest({method} *** wallet={self.uri_wallet!r})"


@dataclass(frozen=True)
class RpcResponse:
    """The answer to an RpcRequest: JSON text of the result, or a JSON-RPC error."""

    ok: bool
    result: str = "null"
    error_code: int = 0
    error_message: str = ""

    def __repr__(self) -> str:
        # -debug=ipc prints responses: a result (an address, a signature, a descriptor) or an
        # error message (which may repeat a parameter) is not shown, only its size or code.
        if self.ok:
            return f"RpcResponse(ok, result=*** ({len(self.result)} bytes))"
        return f"RpcResponse(error {self.error_code}, message=***)"


class RpcHandler(Protocol):
    """Implemented by a wallet process: runs forwarded calls of the methods it registered."""

    async def execute(self, request: RpcRequest) -> RpcResponse:
        """Run one call; RPC errors come back in the response, never as an exception."""
        ...


class Handler(Protocol):
    """A registration (of notifications); `disconnect` ends it."""

    async def disconnect(self) -> None:
        """Stop delivering: no callback starts after this returns."""
        ...


class ChainNotifications(Protocol):
    """Events the node pushes to the wallet. Over IPC this object travels as a capability,
    so the node calls the wallet back; nobody polls.

    Events of one registration are delivered one at a time, in the order they happened, and
    each after the chain (or mempool) change it reports is committed.
    """

    async def block_connected(self, block: bytes, height: int) -> None:
        """`block` (serialized) became the active tip at `height`."""
        ...

    async def block_disconnected(self, block: bytes, height: int) -> None:
        """`block` (serialized), the tip at `height`, left the active chain (reorg, invalidate)."""
        ...

    async def transaction_added_to_mempool(self, tx: bytes) -> None:
        """`tx` (serialized) entered the mempool."""
        ...

    async def transaction_removed_from_mempool(self, txid: bytes, reason: str) -> None:
        """The transaction `txid` left the mempool ("block", "conflict", "expiry", ...)."""
        ...

    async def chain_events(self, events: list[ChainEvent]) -> None:
        """Several events at once, in order: what the single-event methods would have said.

        The node sends a batch when events queue up faster than the receiver takes them (a
        reorg, a burst of mined blocks), so that a wallet in another process pays one round
        trip per batch, not per event.
        """
        ...


class Chain(Protocol):
    """The node as the wallet sees it."""

    async def get_height(self) -> int:
        """Height of the active tip; -1 when the chain holds no block at all."""
        ...

    async def get_block_hash(self, height: int) -> bytes:
        """Hash of the active chain's block at `height`; fails when out of range."""
        ...

    async def get_block_header_info(self, block_hash: bytes) -> BlockInfo:
        """What is known of the header `block_hash` (active or not); fails when unknown."""
        ...

    async def get_blocks(self, start_height: int, count: int) -> list[bytes]:
        """Up to `count` serialized blocks of the active chain from `start_height` on.

        Batched on purpose: a rescan over IPC must not pay one round trip per block. The
        answer may be shorter than asked (past the tip, or cut at a size bound that keeps one
        message well under the IPC traversal limit); an empty list means nothing at or after
        `start_height`. Callers continue from `start_height + len(answer)`.
        """
        ...

    async def find_fork(self, locator: list[bytes]) -> int:
        """Height of the last block the locator's chain shares with the active chain
        (0, genesis, when no entry is known)."""
        ...

    async def broadcast_transaction(self, tx: bytes, max_fee: int) -> BroadcastResult:
        """Submit `tx` (serialized) to the mempool and, if accepted, relay it to peers.

        `max_fee`: refuse ("max-fee-exceeded") a transaction whose absolute fee is higher;
        0 disables the check. A transaction already in the pool counts as accepted (and is
        announced again), as in bitcoind.
        """
        ...

    async def relay_min_fee(self) -> int:
        """The node's minimum relay fee rate, in units per 1000 bytes."""
        ...

    async def is_in_mempool(self, txid: bytes) -> bool:
        """Whether the transaction `txid` is in the mempool."""
        ...

    async def get_headers(self, start_height: int, count: int) -> bytes:
        """Up to `count` (at most MAX_GET_HEADERS) headers of the active chain from
        `start_height` on, 80 bytes each, concatenated: fewer past the tip, b"" at or past
        it. What a wallet checks from genesis before it takes its anchor (wallet/headers.py):
        80 bytes a block, so a long chain costs a few round trips. Added after the other
        methods: a node from before answers with an error (over IPC, "unimplemented")."""
        ...

    async def handle_notifications(self, notifications: ChainNotifications) -> Handler:
        """Deliver chain and mempool events to `notifications` until the handler is
        disconnected (or, over IPC, the connection is lost). First comes
        `transaction_added_to_mempool` for each transaction in the mempool now (parents
        first), delivered before this returns; then the events as they happen. Fails beyond
        the node's bound of registrations per connection (components/node/notifications.py);
        a receiver that falls too far behind is dropped."""
        ...

    async def register_rpc(self, methods: list[RpcMethodInfo], handler: RpcHandler) -> Handler:
        """Serve `methods` on the node's JSON-RPC server by forwarding their calls to
        `handler` (a wallet in another process registers its methods this way), until the
        returned handler is disconnected or the connection is lost. Fails when this Chain
        takes no registrations (only the node's own wallet process gets one that does), when
        a method is malformed (components/node/rpc_registration.py) or the node's own, or
        when another wallet process holds or has reserved one of the names."""
        ...
