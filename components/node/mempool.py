"""The memory pool: unconfirmed transactions that are valid on top of the current tip.

The pool is written against a small read-only `ChainView` (tip height, confirmed coins, median
time past of the tip), not against the storage code, so any chain state can back it: SQLite in
the node, a dict in tests.

Acceptance (`Mempool.accept`), in Bitcoin Core's order (MemPoolAccept::PreChecks and after),
cheap checks before the expensive signatures:

1. consensus.check_transaction (context-free; sizes against the block limit)
2. "coinbase": a coinbase is only valid as the first transaction of a block
3. standardness: "version" (1 or 2), "tx-size" (at most MAX_STANDARD_TX_SIZE bytes)
4. "non-final": the locktime must allow the transaction into the next block
5. "txn-already-in-mempool"
6. "txn-mempool-conflict": an input is already spent by a pool transaction. There is no
   replace-by-fee in this version: the first spend seen wins, whatever the fees.
   Then "too-long-mempool-chain" for a transaction spending outputs of more pool transactions
   than the ancestor limit allows: counted before any input is read (since 12-07).
7. inputs through an overlay of pool outputs on the confirmed coins, so a chain of
   unconfirmed transactions is fine (consensus.check_tx_inputs, spend height = tip + 1):
   "bad-txns-inputs-missingorspent" (or "txn-already-known" when the transaction's own
   outputs are in the UTXO set, i.e. it is confirmed), "bad-txns-premature-spend-of-coinbase",
   value ranges, "bad-txns-in-belowout"
8. fees: "mempool min fee not met" (the rolling minimum after the pool was full), then
   "min relay fee not met"
9. "too-long-mempool-chain": ancestor and descendant count/size limits
10. signatures ("mandatory-script-verify-flag-failed")
11. size limit: the lowest-feerate packages are evicted; if that evicts the new transaction,
    "mempool full"

Every rejection is a `MempoolReject(reason, code)`; `code` is the JSON-RPC error
sendrawtransaction answers with (see `MempoolReject`).

Listeners (`add_listener`) hear every change of the pool's contents, after the pool was
updated, in the order the changes happened: `transaction_added(tx)` for each transaction
entering the pool (`accept`, and the block transactions `readd_for_disconnect` takes back), and
`transaction_removed(txid, reason)` for each leaving it, with bitcoind's MemPoolRemovalReason:
"block" (confirmed by `remove_for_block`), "conflict" (spends an input a connected block
spends, or descends from such a tx), "reorg" (no longer valid after `readd_for_disconnect`),
"eviction" (the size limit). There is no replacement, so never "replaced". A transaction
`accept` refuses, including one evicted at once ("mempool full"), is never reported as added.
`clear` reports nothing. Listeners run synchronously under the pool's lock; an exception in
one is logged and does not stop the others or the pool.

Fee rates are integers of units per 1000 bytes, as bitcoind's CFeeRate (satoshis per kvB);
there is no witness data, so a transaction's vsize is its size.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time as _time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..common.amount import format_amount
from ..common.chainparams import ChainParams
from ..common.consensus import Coin, check_transaction, check_tx_inputs, is_final_tx
from ..common.errors import Failure, ValidationError
from ..common.keys import prepare_input_check, signature_failure
from ..common.sigcheck import SignatureChecker
from ..common.hashes import hash_to_hex
from ..common.policy import MAX_STANDARD_TX_SIZE, fee_for_size, fee_rate
from ..common.primitives import Block, OutPoint, Transaction

__all__ = [
    "BLOCK_FULL_ENOUGH_BYTES", "ChainView", "DEFAULT_ANCESTOR_LIMIT", "DEFAULT_ANCESTOR_SIZE_LIMIT",
    "DEFAULT_DESCENDANT_LIMIT", "DEFAULT_DESCENDANT_SIZE_LIMIT", "DEFAULT_INCREMENTAL_RELAY_FEE",
    "DEFAULT_MAX_MEMPOOL_SIZE", "DEFAULT_MIN_RELAY_FEE", "MAX_CONSECUTIVE_FAILURES",
    "MAX_STANDARD_TX_SIZE", "Mempool",
    "MempoolEntry", "MempoolReject", "REMOVED_BLOCK", "REMOVED_CONFLICT", "REMOVED_EVICTION",
    "REMOVED_REORG", "RPC_VERIFY_ALREADY_IN_CHAIN", "RPC_VERIFY_ERROR",
    "RPC_VERIFY_REJECTED", "fee_for_size", "fee_rate",
]

log = logging.getLogger("cleancoin.mempool")

#: Why a transaction left the pool (`transaction_removed`'s reason; see the module docstring).
REMOVED_BLOCK = "block"
REMOVED_CONFLICT = "conflict"
REMOVED_REORG = "reorg"
REMOVED_EVICTION = "eviction"

# JSON-RPC codes (bitcoind's src/rpc/protocol.h). Same values as components/rpc/errors.py;
# repeated here rather than imported so that the node does not depend on the RPC layer.
RPC_VERIFY_ERROR: int = -25             # missing inputs (the tx may be an orphan)
RPC_VERIFY_REJECTED: int = -26          # rejected by consensus or policy
RPC_VERIFY_ALREADY_IN_CHAIN: int = -27  # the transaction is already confirmed

#: Units per 1000 bytes (bitcoind's DEFAULT_MIN_RELAY_TX_FEE, 1 sat/vB).
DEFAULT_MIN_RELAY_FEE: int = 1000
#: Step by which the rolling minimum fee sits above an evicted package (DEFAULT_INCREMENTAL_RELAY_FEE).
DEFAULT_INCREMENTAL_RELAY_FEE: int = 1000
#: -maxmempool default, 300 MB.
DEFAULT_MAX_MEMPOOL_SIZE: int = 300_000_000
#: Block assembly gives up after this many packages in a row that do not fit, once the block
#: is within BLOCK_FULL_ENOUGH_BYTES of full (bitcoind's MAX_CONSECUTIVE_FAILURES and
#: BLOCK_FULL_ENOUGH_WEIGHT_DELTA, 4000 weight units: 1000 bytes without witnesses).
MAX_CONSECUTIVE_FAILURES: int = 1000
BLOCK_FULL_ENOUGH_BYTES: int = 1000
#: Ancestor/descendant limits (counts include the transaction itself; sizes in bytes), as
#: bitcoind's defaults: bound the work of every update along a chain of unconfirmed txs.
DEFAULT_ANCESTOR_LIMIT: int = 25
DEFAULT_ANCESTOR_SIZE_LIMIT: int = 101_000
DEFAULT_DESCENDANT_LIMIT: int = 25
DEFAULT_DESCENDANT_SIZE_LIMIT: int = 101_000
#: Rolling minimum fee half-life (bitcoind's ROLLING_FEE_HALFLIFE, 12 hours).
ROLLING_FEE_HALFLIFE: int = 60 * 60 * 12
_STANDARD_VERSIONS = (1, 2)
_SCRIPT_FAILED = "mandatory-script-verify-flag-failed"
# Memory estimate per entry beyond the serialized bytes (see Mempool.info()["usage"]): the
# parsed Transaction with its TxIn/TxOut/OutPoint objects and cached digests, the entry, and
# its slots in the pool's indexes. Fitted to tracemalloc measurements on CPython 3.11 of
# transactions parsed from bytes and accepted (1-in/1-out, 181 bytes: ~1,840 bytes in
# memory; 10-in/1-out, 1,474 bytes: ~5,850). An estimate, never exact, but it makes
# -maxmempool bound memory rather than serialized bytes, as bitcoind's DynamicMemoryUsage.
_ENTRY_OVERHEAD = 1_200 + 130       # + its item in the eviction heap (a tuple and two ints)
_PER_INPUT_OVERHEAD = 310
_PER_OUTPUT_OVERHEAD = 155




class ChainView(Protocol):
    """What the pool needs from the chain: the confirmed state at the active tip."""

    @property
    def tip_height(self) -> int:
        """Height of the active tip (a new block would be at tip_height + 1)."""
        ...

    def utxo(self, outpoint: OutPoint) -> Coin | None:
        """The confirmed unspent coin at `outpoint` as of the tip, or None."""
        ...

    def has_coins_of(self, txid: bytes) -> bool:
        """Whether any output of transaction `txid` is unspent as of the tip: one lookup,
        however many outputs the transaction names."""
        ...

    def median_time_past_tip(self) -> int:
        """Median time of the tip and its ten predecessors: the locktime cutoff (BIP113) for a
        block built on the tip."""
        ...


class MempoolReject(Exception):
    """A transaction the pool refused.

    `reason` is bitcoind's reject reason ("txn-mempool-conflict", ...), `code` the JSON-RPC
    error code sendrawtransaction answers with: -25 (RPC_VERIFY_ERROR) for missing inputs,
    -27 (RPC_VERIFY_ALREADY_IN_CHAIN) for "txn-already-known", -26 (RPC_VERIFY_REJECTED) for
    everything else. (bitcoind's sendrawtransaction does not fail for a tx already in its
    mempool: it just returns the txid; the RPC layer should check `txid in mempool` first.)
    `failure` is the consensus Failure category when a consensus rule failed, None for a
    policy rule: a peer relaying a consensus-invalid tx misbehaves, one relaying a tx our
    policy dislikes does not. `message` is bitcoind's text for the RPC error.
    """

    def __init__(self, reason: str, code: int = RPC_VERIFY_REJECTED, debug: str = "",
                 failure: Failure | None = None) -> None:
        self.reason = reason
        self.code = code
        self.debug = debug
        self.failure = failure
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What bitcoind says: "reason, debug" (TxValidationState::ToString); script failures
        read "mandatory-script-verify-flag-failed (why)", as bitcoind's reason does."""
        if not self.debug:
            return self.reason
        if self.reason == _SCRIPT_FAILED:
            return f"{self.reason} ({self.debug})"
        return f"{self.reason}, {self.debug}"

    @property
    def missing_inputs(self) -> bool:
        """True when an input is unknown: the tx may be an orphan waiting for its parent."""
        return self.failure is Failure.MISSING_INPUTS

    @classmethod
    def from_validation(cls, e: ValidationError) -> MempoolReject:
        """The rejection for a consensus ValidationError (same reason, debug and category)."""
        code = RPC_VERIFY_ERROR if e.failure is Failure.MISSING_INPUTS else RPC_VERIFY_REJECTED
        return cls(e.reason, code, e.debug, e.failure)


@dataclass(eq=False, slots=True)
class MempoolEntry:
    """A pool transaction with its fee and its package statistics.

    Ancestor/descendant counts, sizes and fees include the transaction itself (as bitcoind's);
    the pool keeps them current as transactions arrive and leave. Treat the entry as
    read-only: it is the pool's own record.
    """

    tx: Transaction
    fee: int                     # units: inputs - outputs
    time: int                    # Unix time it entered the pool
    height: int                  # tip height when it entered the pool
    sequence: int = field(repr=False)   # arrival order; parents always come before children
    ancestor_count: int = 1
    ancestor_size: int = 0
    ancestor_fees: int = 0
    descendant_count: int = 1
    descendant_size: int = 0
    descendant_fees: int = 0
    usage: int = field(default=0, repr=False)   # memory estimate, see Mempool.info()

    @property
    def txid(self) -> bytes:
        """The transaction id (internal byte order)."""
        return self.tx.txid

    @property
    def size(self) -> int:
        """Serialized size in bytes."""
        return self.tx.size

    @property
    def vsize(self) -> int:
        """Virtual size: the size, as there is no witness data."""
        return self.tx.size

    @property
    def fee_rate(self) -> int:
        """Fee per 1000 bytes of this transaction alone."""
        return fee_rate(self.fee, self.size)

    @property
    def ancestor_fee_rate(self) -> int:
        """Fee per 1000 bytes of the transaction with its unconfirmed ancestors: what mining
        it really pays, since a miner must include the ancestors too."""
        return fee_rate(self.ancestor_fees, self.ancestor_size)

    @property
    def descendant_fee_rate(self) -> int:
        """Fee per 1000 bytes of the transaction with its descendants."""
        return fee_rate(self.descendant_fees, self.descendant_size)


class _OverlayView:
    """Confirmed coins plus the outputs of pool transactions (the consensus UtxoView protocol).

    Spends by pool transactions are not subtracted here: accept() refuses any input a pool
    transaction already spends before it asks this view. Coins read are remembered, so the
    signature pass does not ask the chain (maybe a database) a second time.
    """

    def __init__(self, pool: Mempool) -> None:
        self._entries = pool._entries
        self._chain = pool._chain
        self._height = pool._chain.tip_height + 1
        self.fetched: dict[OutPoint, Coin] = {}

    def get(self, outpoint: OutPoint) -> Coin | None:
        coin = self.fetched.get(outpoint)
        if coin is not None:
            return coin
        entry = self._entries.get(outpoint.txid)
        if entry is not None:
            vout = entry.tx.vout
            if outpoint.n >= len(vout):
                return None
            # Never a coinbase (those are refused), so the height only has to be plausible.
            coin = Coin(vout[outpoint.n].value, vout[outpoint.n].pkh, self._height, False)
        else:
            coin = self._chain.utxo(outpoint)
        if coin is not None:
            self.fetched[outpoint] = coin
        return coin


class Mempool:
    """Unconfirmed transactions valid on top of `chain`'s tip; see the module docstring.

    Thread-safe: every public method holds one re-entrant lock, so RPC threads and the P2P
    loop may share a pool (signature checks run under the lock, serialising acceptance).
    """

    def __init__(self, params: ChainParams, chain: ChainView, *,
                 min_relay_fee_per_kb: int = DEFAULT_MIN_RELAY_FEE,
                 max_size_bytes: int = DEFAULT_MAX_MEMPOOL_SIZE,
                 incremental_relay_fee_per_kb: int = DEFAULT_INCREMENTAL_RELAY_FEE,
                 ancestor_limit: int = DEFAULT_ANCESTOR_LIMIT,
                 ancestor_size_limit: int = DEFAULT_ANCESTOR_SIZE_LIMIT,
                 descendant_limit: int = DEFAULT_DESCENDANT_LIMIT,
                 descendant_size_limit: int = DEFAULT_DESCENDANT_SIZE_LIMIT,
                 signatures: SignatureChecker | None = None) -> None:
        if min_relay_fee_per_kb < 0 or incremental_relay_fee_per_kb < 0:
            raise ValueError("fee rates must not be negative")
        if max_size_bytes <= 0:
            raise ValueError("max_size_bytes must be positive")
        self.params = params
        self.min_relay_fee_per_kb = min_relay_fee_per_kb
        self.max_size_bytes = max_size_bytes
        self.incremental_relay_fee_per_kb = incremental_relay_fee_per_kb
        self.ancestor_limit = ancestor_limit
        self.ancestor_size_limit = ancestor_size_limit
        self.descendant_limit = descendant_limit
        self.descendant_size_limit = descendant_size_limit
        self._chain = chain
        # The chain's checker: a signature verified here is in its cache when the block comes.
        self._signatures = signatures or SignatureChecker(1)
        self._lock = threading.RLock()
        self._listeners: list[Any] = []
        # Events of the current operation, delivered by _flush_events once the pool is updated:
        # ("added", tx) or ("removed", txid, reason).
        self._pending: list[tuple[Any, ...]] = []
        self._reset()

    def _reset(self) -> None:
        # Insertion-ordered, and a parent is always inserted before its children, so iterating
        # _entries is a topological order (readd_for_disconnect rebuilds it to keep that true).
        self._entries: dict[bytes, MempoolEntry] = {}
        self._parents: dict[bytes, set[bytes]] = {}     # in-pool txs an entry spends from
        self._children: dict[bytes, set[bytes]] = {}    # in-pool txs spending an entry
        self._spends: dict[OutPoint, bytes] = {}        # outpoint -> txid of the pool spender
        # Eviction order (see _trim): (descendant score, -sequence, txid) for every entry, as
        # a heap with lazy deletion: an entry whose descendants change is pushed again and
        # its older items are skipped when they surface (_eviction_key no longer matches).
        self._eviction_heap: list[tuple[int, int, bytes]] = []
        self._sequence = 0
        self._total_size = 0
        self._total_fee = 0
        self._usage = 0
        # Rolling minimum fee (bitcoind's rollingMinimumFeeRate): raised when the pool is full
        # and evicts, decaying once blocks make room again. A float, as bitcoind's, because it
        # decays continuously.
        self._rolling_min_fee = 0.0
        self._last_rolling_update = 0
        self._block_since_bump = False

    # --------------------------------------------------------------------------- listeners

    def add_listener(self, listener: Any) -> None:
        """Register an object with transaction_added(tx) and/or transaction_removed(txid,
        reason); see the module docstring. Registering twice has no effect."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        """Unregister a listener (no error if it was not registered)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _flush_events(self) -> None:
        """Deliver the recorded events of the operation just finished, in order (under the
        lock, so that listeners see the pool's changes in the order they happened)."""
        events, self._pending = self._pending, []
        for event in events:
            name = "transaction_added" if event[0] == "added" else "transaction_removed"
            for listener in list(self._listeners):
                fn = getattr(listener, name, None)
                if fn is None:
                    continue
                try:
                    fn(*event[1:])
                except Exception:
                    log.exception("mempool listener %r failed in %s", listener, name)

    # --------------------------------------------------------------------------- queries

    def __contains__(self, txid: object) -> bool:
        with self._lock:
            return txid in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, txid: bytes) -> MempoolEntry | None:
        """The entry for `txid` (internal byte order), or None."""
        with self._lock:
            return self._entries.get(txid)

    def txids(self) -> list[bytes]:
        """All txids, parents before children (arrival order)."""
        with self._lock:
            return list(self._entries)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[list[Transaction]]:
        """Every pool transaction, parents before children, with the pool held still (and
        its listeners silent) until the block ends: a new listener can pick up exactly where
        this picture ends (components/node/notifications.py)."""
        with self._lock:
            yield [e.tx for e in self._entries.values()]

    def spends(self, outpoint: OutPoint) -> bytes | None:
        """The txid of the pool transaction spending `outpoint`, or None."""
        with self._lock:
            return self._spends.get(outpoint)

    def fee_of(self, tx: Transaction) -> int | None:
        """Inputs (confirmed, or outputs of pool transactions) minus outputs; None when an
        input is unknown. For max-fee checks before `accept`, which refuses unknown inputs."""
        with self._lock:
            view = _OverlayView(self)
            total = 0
            for txin in tx.vin:
                coin = view.get(txin.prevout)
                if coin is None:
                    return None
                total += coin.value
            return total - tx.value_out

    def min_fee_per_kb(self, now: int | None = None) -> int:
        """The fee rate a new transaction must pay now: the larger of the min relay fee and
        the rolling minimum left by evictions (getmempoolinfo's mempoolminfee)."""
        with self._lock:
            return max(self._rolling_min_fee_rate(_now(now)), self.min_relay_fee_per_kb)

    def info(self, now: int | None = None) -> dict[str, Any]:
        """getmempoolinfo. Amounts are Decimal coins, fee rates coins per 1000 bytes."""
        with self._lock:
            return {
                "loaded": True,
                "size": len(self._entries),
                "bytes": self._total_size,
                "usage": self._usage,
                "total_fee": format_amount(self._total_fee),
                "maxmempool": self.max_size_bytes,
                "mempoolminfee": format_amount(self.min_fee_per_kb(now)),
                "minrelaytxfee": format_amount(self.min_relay_fee_per_kb),
                "incrementalrelayfee": format_amount(self.incremental_relay_fee_per_kb),
                "unbroadcastcount": 0,
                "fullrbf": False,       # no replacement at all, see txn-mempool-conflict
            }

    def entry_dict(self, txid: bytes) -> dict[str, Any]:
        """getmempoolentry for `txid`; KeyError when it is not in the pool (the RPC layer
        answers -5, "Transaction not in mempool")."""
        with self._lock:
            e = self._entries[txid]
            return {
                "vsize": e.vsize,
                "weight": 4 * e.size,
                "time": e.time,
                "height": e.height,
                "descendantcount": e.descendant_count,
                "descendantsize": e.descendant_size,
                "ancestorcount": e.ancestor_count,
                "ancestorsize": e.ancestor_size,
                "wtxid": e.tx.txid_hex,
                "fees": {
                    "base": format_amount(e.fee),
                    "modified": format_amount(e.fee),   # no prioritisetransaction
                    "ancestor": format_amount(e.ancestor_fees),
                    "descendant": format_amount(e.descendant_fees),
                },
                "depends": sorted(hash_to_hex(p) for p in self._parents[txid]),
                "spentby": sorted(hash_to_hex(c) for c in self._children[txid]),
                "bip125-replaceable": False,
                "unbroadcast": False,
                # Pre-v23 bitcoind fields, still read by older clients.
                "fee": format_amount(e.fee),
                "modifiedfee": format_amount(e.fee),
            }

    # --------------------------------------------------------------------------- accept

    def accept(self, tx: Transaction, now: int | None = None) -> MempoolEntry:
        """Validate `tx` against the tip plus the pool and add it; MempoolReject if refused.

        `now` (Unix time) stamps the entry and drives the rolling minimum fee; default: the
        clock.
        """
        with self._lock:
            try:
                now = _now(now)
                entry = self._accept(tx, now, self._chain.tip_height, check_fees=True,
                                     verify_signatures=True)
                self._pending.append(("added", tx))
                evicted = self._trim(now)
                if entry.txid in evicted:
                    # Added, then evicted as the lowest fee rate (the evictions stand, as in
                    # bitcoind); the tx itself was never in the pool for the listeners.
                    self._pending = [e for e in self._pending if e[1] is not tx and e[1] != entry.txid]
                    raise MempoolReject("mempool full")
                return entry
            finally:
                self._flush_events()

    def _accept(self, tx: Transaction, now: int, height: int, *, check_fees: bool,
                verify_signatures: bool) -> MempoolEntry:
        """All checks, then insertion; no size trimming (the caller trims)."""
        txid = tx.txid
        try:
            check_transaction(tx, self.params.max_block_size)
        except ValidationError as e:
            raise MempoolReject.from_validation(e) from None
        if tx.is_coinbase:
            raise MempoolReject("coinbase", RPC_VERIFY_REJECTED,
                                "a coinbase is only valid as a block's first transaction",
                                Failure.CONSENSUS)
        if tx.version not in _STANDARD_VERSIONS:
            raise MempoolReject("version", debug=f"version {tx.version} is not standard")
        if tx.size > MAX_STANDARD_TX_SIZE:
            raise MempoolReject("tx-size", debug=f"{tx.size} > {MAX_STANDARD_TX_SIZE} bytes")
        tip = self._chain.tip_height
        # The next block is at tip + 1 and its locktime cutoff is the tip's median time past
        # (bitcoind's CheckFinalTxAtTip): a tx that could not be mined next is not relayed.
        if not is_final_tx(tx, tip + 1, self._chain.median_time_past_tip()):
            raise MempoolReject("non-final", debug=f"locktime {tx.locktime}",
                                failure=Failure.PREMATURE_SPEND)
        if txid in self._entries:
            raise MempoolReject("txn-already-in-mempool")
        for txin in tx.vin:
            other = self._spends.get(txin.prevout)
            if other is not None:
                # No replace-by-fee: the first spend seen stays, however much the newcomer pays.
                raise MempoolReject("txn-mempool-conflict",
                                    debug=f"{txin.prevout} already spent by {hash_to_hex(other)}")

        # Counted before the inputs are read (bitcoind reads them first, in C++): a tx of
        # 2,300 inputs spending the outputs of 25 pool txs, refused for its ancestors in the
        # end, cost the node 1.6 times its decoding, one spending 2,400 pool txs 2.5 times;
        # unpunished (a policy rule), without a coin of the sender's (no signature is read).
        parents = {txin.prevout.txid for txin in tx.vin if txin.prevout.txid in self._entries}
        if len(parents) + 1 > self.ancestor_limit:
            raise MempoolReject("too-long-mempool-chain",
                                debug=f"too many unconfirmed parents [limit: {self.ancestor_limit}]")

        view = _OverlayView(self)
        try:
            fee = check_tx_inputs(tx, view, tip + 1, self.params, verify_signatures=False)
        except ValidationError as e:
            if e.failure is Failure.MISSING_INPUTS and self._chain.has_coins_of(txid):
                # Its inputs are gone because it spent them itself: it is confirmed. One
                # lookup: asking for each output (as bitcoind does, from its cache) made a
                # 2,900-output tx with a made-up input cost the node 17.7 ms of CPU (3 times
                # its decoding), unpunished, any number of times (the txid is new each time).
                raise MempoolReject("txn-already-known", RPC_VERIFY_ALREADY_IN_CHAIN,
                                    "outputs already in the UTXO set") from None
            raise MempoolReject.from_validation(e) from None

        size = tx.size
        if check_fees:
            pool_rate = self._rolling_min_fee_rate(now)
            if pool_rate > 0 and fee < fee_for_size(pool_rate, size):
                raise MempoolReject("mempool min fee not met",
                                    debug=f"{fee} < {fee_for_size(pool_rate, size)}")
            relay_fee = fee_for_size(self.min_relay_fee_per_kb, size)
            if fee < relay_fee:
                raise MempoolReject("min relay fee not met", debug=f"{fee} < {relay_fee}")

        ancestors = self._ancestors_of(parents)
        self._check_chain_limits(size, ancestors)

        if verify_signatures:
            for i, txin in enumerate(tx.vin):
                try:
                    if not self._signatures.verify_one(prepare_input_check(tx, i, view.fetched[txin.prevout].pkh)):
                        raise signature_failure()
                except ValidationError as e:
                    raise MempoolReject.from_validation(e) from None

        entry = MempoolEntry(tx, fee, now, height, self._sequence)
        self._sequence += 1
        self._insert(entry, parents, ancestors)
        return entry

    def _check_chain_limits(self, size: int, ancestors: set[bytes]) -> None:
        """bitcoind's ancestor/descendant package limits ("too-long-mempool-chain")."""
        anc_size = size + sum(self._entries[a].size for a in ancestors)
        if len(ancestors) + 1 > self.ancestor_limit:
            raise MempoolReject("too-long-mempool-chain",
                                debug=f"too many unconfirmed ancestors [limit: {self.ancestor_limit}]")
        if anc_size > self.ancestor_size_limit:
            raise MempoolReject("too-long-mempool-chain",
                                debug=f"exceeds ancestor size limit [limit: {self.ancestor_size_limit}]")
        for a in ancestors:
            e = self._entries[a]
            if e.descendant_count + 1 > self.descendant_limit:
                raise MempoolReject("too-long-mempool-chain",
                                    debug=f"too many descendants for tx {e.tx.txid_hex} "
                                          f"[limit: {self.descendant_limit}]")
            if e.descendant_size + size > self.descendant_size_limit:
                raise MempoolReject("too-long-mempool-chain",
                                    debug=f"exceeds descendant size limit for tx {e.tx.txid_hex} "
                                          f"[limit: {self.descendant_size_limit}]")

    # --------------------------------------------------------------------------- graph

    @staticmethod
    def _reachable(start: Iterable[bytes], edges: Mapping[bytes, Iterable[bytes]]) -> set[bytes]:
        """`start` and everything reachable from it along `edges`."""
        out: set[bytes] = set()
        stack = list(start)
        while stack:
            t = stack.pop()
            if t not in out:
                out.add(t)
                stack.extend(edges[t])
        return out

    def _ancestors_of(self, parents: Iterable[bytes]) -> set[bytes]:
        """`parents` and all their in-pool ancestors."""
        return self._reachable(parents, self._parents)

    def _descendants(self, txid: bytes) -> set[bytes]:
        """All in-pool descendants of `txid` (not itself)."""
        return self._reachable(self._children[txid], self._children)

    def _insert(self, entry: MempoolEntry, parents: set[bytes], ancestors: set[bytes]) -> None:
        txid, size, fee = entry.txid, entry.size, entry.fee
        entry.ancestor_count = len(ancestors) + 1
        entry.ancestor_size = size + sum(self._entries[a].size for a in ancestors)
        entry.ancestor_fees = fee + sum(self._entries[a].fee for a in ancestors)
        entry.descendant_size, entry.descendant_fees = size, fee
        for a in ancestors:
            e = self._entries[a]
            e.descendant_count += 1
            e.descendant_size += size
            e.descendant_fees += fee
            self._push_eviction(e)
        self._entries[txid] = entry
        self._push_eviction(entry)
        self._parents[txid] = parents
        self._children[txid] = set()
        for p in parents:
            self._children[p].add(txid)
        for txin in entry.tx.vin:
            self._spends[txin.prevout] = txid
        entry.usage = (size + _ENTRY_OVERHEAD + _PER_INPUT_OVERHEAD * len(entry.tx.vin)
                       + _PER_OUTPUT_OVERHEAD * len(entry.tx.vout))
        self._total_size += size
        self._total_fee += fee
        self._usage += entry.usage

    def _remove(self, txids: set[bytes], reason: str) -> None:
        """Remove exactly `txids` (not necessarily closed under descendants: a confirmed tx
        leaves, its children stay) and fix the package statistics of what remains; record a
        removal event with `reason` for each, in arrival order (parents first)."""
        for t in sorted(txids, key=lambda t: self._entries[t].sequence):
            self._pending.append(("removed", t, reason))
        # Account first, while the links still describe the graph.
        rescored: set[bytes] = set()
        for t in txids:
            e = self._entries[t]
            for a in self._ancestors_of(self._parents[t]) - txids:
                anc = self._entries[a]
                anc.descendant_count -= 1
                anc.descendant_size -= e.size
                anc.descendant_fees -= e.fee
                rescored.add(a)
            for d in self._descendants(t) - txids:
                desc = self._entries[d]
                desc.ancestor_count -= 1
                desc.ancestor_size -= e.size
                desc.ancestor_fees -= e.fee
        for t in txids:
            e = self._entries.pop(t)
            for p in self._parents.pop(t):
                if p not in txids:
                    self._children[p].discard(t)
            for c in self._children.pop(t):
                if c not in txids:
                    self._parents[c].discard(t)
            for txin in e.tx.vin:
                if self._spends.get(txin.prevout) == t:
                    del self._spends[txin.prevout]
            self._total_size -= e.size
            self._total_fee -= e.fee
            self._usage -= e.usage
        for a in rescored:
            self._push_eviction(self._entries[a])

    def _remove_recursive(self, txid: bytes, reason: str) -> list[bytes]:
        """Remove `txid` and everything that spends from it, for `reason`; the removed txids,
        parents first."""
        gone = {txid} | self._descendants(txid)
        ordered = sorted(gone, key=lambda t: self._entries[t].sequence)
        self._remove(gone, reason)
        return ordered

    # --------------------------------------------------------------------------- size limit

    def _rolling_min_fee_rate(self, now: int) -> int:
        """bitcoind's CTxMemPool::GetMinFee: the rolling minimum, halving every 12 hours (3 or
        6 when the pool is below a quarter or half full) once a block has arrived since the
        last eviction; dropped to 0 below half the incremental relay fee."""
        if not self._block_since_bump or self._rolling_min_fee == 0:
            return round(self._rolling_min_fee)
        if now > self._last_rolling_update + 10:
            halflife = float(ROLLING_FEE_HALFLIFE)
            if self._usage < self.max_size_bytes // 4:
                halflife /= 4
            elif self._usage < self.max_size_bytes // 2:
                halflife /= 2
            self._rolling_min_fee /= 2.0 ** ((now - self._last_rolling_update) / halflife)
            self._last_rolling_update = now
            if self._rolling_min_fee < self.incremental_relay_fee_per_kb / 2:
                self._rolling_min_fee = 0.0
                return 0
        return max(round(self._rolling_min_fee), self.incremental_relay_fee_per_kb)

    def _trim(self, now: int) -> list[bytes]:
        """Evict until usage fits max_size_bytes; the evicted txids, in eviction order.

        The victim is the entry with the lowest descendant score, max(own fee rate, fee rate
        with descendants), ties going to the newest (bitcoind's TrimToSize), removed with its
        descendants, which could not be mined without it. The rolling minimum fee rises to
        the evicted package's rate plus the incremental relay fee, so that a replacement
        must pay more than what it pushed out. The victim comes from _eviction_heap, in
        O(log n) (bitcoind's indexed descendant-score order): it was a scan of every entry,
        so that each transaction entering a full pool cost time in proportion to the pool
        (18 ms with 32000 entries; some 100 ms for a full 300 MB pool, per 200-byte
        transaction any peer relays).
        """
        evicted: list[bytes] = []
        while self._entries and self._usage > self.max_size_bytes:
            worst = self._pop_worst()
            removed_rate = worst.descendant_fee_rate + self.incremental_relay_fee_per_kb
            if removed_rate > self._rolling_min_fee:
                self._rolling_min_fee = float(removed_rate)
                self._last_rolling_update = now
                self._block_since_bump = False
            evicted.extend(self._remove_recursive(worst.txid, REMOVED_EVICTION))
        return evicted

    @staticmethod
    def _eviction_key(entry: MempoolEntry) -> tuple[int, int, bytes]:
        """An entry's place in the eviction order: lowest descendant score (max of its own
        fee rate and its package's with descendants) first, ties to the newest."""
        return (max(entry.fee_rate, entry.descendant_fee_rate), -entry.sequence, entry.txid)

    def _push_eviction(self, entry: MempoolEntry) -> None:
        """(Re)file `entry` in the eviction heap after it entered or its descendants changed;
        rebuilt from the entries when stale items make up more than half of it."""
        heapq.heappush(self._eviction_heap, self._eviction_key(entry))
        if len(self._eviction_heap) > 2 * len(self._entries) + 64:
            self._eviction_heap = [self._eviction_key(e) for e in self._entries.values()]
            heapq.heapify(self._eviction_heap)

    def _pop_worst(self) -> MempoolEntry:
        """The entry _trim evicts next (the pool is not empty)."""
        while True:
            key = heapq.heappop(self._eviction_heap)
            entry = self._entries.get(key[2])
            if entry is not None and self._eviction_key(entry) == key:
                return entry

    # --------------------------------------------------------------------------- blocks

    def remove_for_block(self, block: Block, now: int | None = None) -> list[bytes]:
        """Update the pool for a block just connected to the tip.

        Its transactions leave the pool (their pool children stay: their inputs are now
        confirmed); every pool transaction spending an input the block spends is a double
        spend that can never confirm, and leaves with all its descendants. Returns the txids
        removed as conflicts (the confirmed ones are the block's business). Listeners hear
        "block" for the confirmed ones and "conflict" for the others, in removal order.
        """
        with self._lock:
            try:
                return self._remove_for_block(block, now)
            finally:
                self._flush_events()

    def _remove_for_block(self, block: Block, now: int | None) -> list[bytes]:
        conflicts: list[bytes] = []
        for tx in block.txs:
            txid = tx.txid
            if txid in self._entries:
                # Its in-pool ancestors, if any, are earlier in the same block and already
                # gone; removing just this one keeps its children, re-rooted on the chain.
                self._remove({txid}, REMOVED_BLOCK)
            if tx.is_coinbase:
                continue
            for txin in tx.vin:
                spender = self._spends.get(txin.prevout)
                if spender is not None and spender != txid:
                    conflicts.extend(self._remove_recursive(spender, REMOVED_CONFLICT))
        # A block makes room: from now on the rolling minimum fee may decay.
        self._last_rolling_update = _now(now)
        self._block_since_bump = True
        return conflicts

    def readd_for_disconnect(self, block: Block, now: int | None = None) -> list[bytes]:
        """Update the pool after `block` was disconnected (a reorganisation). The chain view
        must no longer contain the block: call this right after disconnecting it (and then
        remove_for_block for each block of the new branch, which drops what conflicts with
        it), or after the whole reorganisation. Returns the txids dropped.

        The block's non-coinbase transactions are offered again, in block order, ahead of
        the pool's current entries (they are older, and pool entries may spend them). Those
        that no longer validate (an input spent or missing on the new chain, already
        confirmed there, premature or non-final at the lower tip) are dropped. Then every
        existing entry is re-checked against the new tip: one whose inputs are gone (say, it
        spent a block tx that was dropped) or became immature or non-final is dropped.

        The block's txs skip the fee checks (bitcoind's bypass_limits: miners took them, so
        do not lose them to a fee floor); existing entries keep their time and height and
        are not re-verified for signatures, which depend only on the tx and the spent
        output, both fixed by the outpoint. The pool is rebuilt in the process, so this
        costs time linear in the pool size per disconnected block; size trimming runs last.

        Listeners hear "added" for each block transaction taken back, "reorg" for each
        existing entry dropped, then "eviction" for what the size limit pushes out.
        """
        with self._lock:
            try:
                return self._readd_for_disconnect(block, _now(now))
            finally:
                self._flush_events()

    def _readd_for_disconnect(self, block: Block, now: int) -> list[bytes]:
        old = list(self._entries.values())      # topological order
        old_txids = {e.txid for e in old}
        rolling = (self._rolling_min_fee, self._last_rolling_update, self._block_since_bump)
        self._reset()
        self._rolling_min_fee, self._last_rolling_update, self._block_since_bump = rolling
        height = self._chain.tip_height
        dropped: list[bytes] = []
        block_txids = set()
        for tx in block.txs:
            if tx.is_coinbase:
                continue
            block_txids.add(tx.txid)
            try:
                self._accept(tx, now, height, check_fees=False, verify_signatures=True)
            except MempoolReject:
                dropped.append(tx.txid)
                if tx.txid in old_txids:    # cannot happen with a valid chain (see below)
                    self._pending.append(("removed", tx.txid, REMOVED_REORG))
            else:
                if tx.txid not in old_txids:
                    self._pending.append(("added", tx))
        for e in old:
            if e.txid in block_txids:
                continue        # cannot happen with a valid chain; the block copy wins
            try:
                self._accept(e.tx, e.time, e.height, check_fees=False, verify_signatures=False)
            except MempoolReject:
                dropped.append(e.txid)
                self._pending.append(("removed", e.txid, REMOVED_REORG))
        dropped.extend(self._trim(now))
        return dropped

    def clear(self) -> None:
        """Forget every transaction and the rolling minimum fee."""
        with self._lock:
            self._reset()

    # --------------------------------------------------------------------------- mining

    def select_for_block(self, max_size: int) -> list[Transaction]:
        """Transactions for a block template of at most `max_size` bytes of transactions,
        parents before children, best packages first.

        A package is a transaction with its not yet selected ancestors; its score is its
        ancestor fee rate (total fee / total size), so a high-fee child pulls in its low-fee
        parent (CPFP). Greedy, as bitcoind's BlockAssembler::addPackageTxs: take the best
        package that fits, re-score the descendants of what was taken (their packages shrank),
        repeat; a package that does not fit is skipped, not retried. Once the block is
        within BLOCK_FULL_ENOUGH_BYTES of `max_size`, MAX_CONSECUTIVE_FAILURES packages in a
        row that do not fit end the search (bitcoind's BlockAssembler, since 12-07): before,
        every entry of the pool was taken off the heap after the block was full.
        """
        with self._lock:
            anc_fees = {t: e.ancestor_fees for t, e in self._entries.items()}
            anc_size = {t: e.ancestor_size for t, e in self._entries.items()}
            version = dict.fromkeys(self._entries, 0)
            # Max-heap on the exact fee rate. The float rate comes first because comparing
            # floats costs no Python call (a _NegRate costs two per comparison: == then <;
            # 0.12 of 0.25 s CPU at 20,000 entries); rounding is monotonic, so floats that
            # differ are in the exact order, and equal ones fall through to the exact
            # comparison (fees cross-multiplied).
            heap = [(-anc_fees[t] / anc_size[t], _NegRate(anc_fees[t], anc_size[t]), e.sequence, t, 0)
                    for t, e in self._entries.items()]
            heapq.heapify(heap)
            selected: set[bytes] = set()
            failed: set[bytes] = set()
            out: list[Transaction] = []
            used = 0
            consecutive_failures = 0
            while heap:
                _, _, _, t, ver = heapq.heappop(heap)
                if ver != version[t] or t in selected or t in failed:
                    continue            # stale score, or already decided
                if used + anc_size[t] > max_size:
                    failed.add(t)
                    consecutive_failures += 1
                    if (consecutive_failures > MAX_CONSECUTIVE_FAILURES
                            and used > max_size - BLOCK_FULL_ENOUGH_BYTES):
                        break
                    continue
                consecutive_failures = 0
                package = sorted((self._ancestors_of(self._parents[t]) - selected) | {t},
                                 key=lambda x: self._entries[x].sequence)
                for x in package:
                    e = self._entries[x]
                    out.append(e.tx)
                    selected.add(x)
                    used += e.size
                for x in package:
                    e = self._entries[x]
                    for d in self._descendants(x) - selected:
                        anc_fees[d] -= e.fee
                        anc_size[d] -= e.size
                        version[d] += 1
                        heapq.heappush(heap, (-anc_fees[d] / anc_size[d], _NegRate(anc_fees[d], anc_size[d]),
                                              self._entries[d].sequence, d, version[d]))
            return out


class _NegRate:
    """A fee rate ordered highest first, compared exactly (fee1 * size2 vs fee2 * size1)."""

    __slots__ = ("fee", "size")

    def __init__(self, fee: int, size: int) -> None:
        self.fee = fee
        self.size = size

    def __lt__(self, other: _NegRate) -> bool:
        return self.fee * other.size > other.fee * self.size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NegRate) and self.fee * other.size == other.fee * self.size


def _now(now: int | None) -> int:
    return int(_time.time()) if now is None else now
