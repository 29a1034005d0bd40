"""Consensus checks: context-free (a transaction or block alone) and contextual (against the
previous block and a view of unspent outputs).

Order of use when a block arrives (each step assumes the previous ones passed):

1. `check_block_header`   proof of work (and, given `now`, not too far in the future)
2. `contextual_check_block_header`  bits, median-time-past, time-warp, against the parent
3. `check_block`          merkle root and mutation first, then sizes, coinbase position,
                          `check_transaction` for every transaction
4. `contextual_check_block`  coinbase height (BIP34-like), locktime finality
5. `connect_block_checks` inputs against the UTXO view: existence, maturity, signatures,
                          amounts, coinbase value; returns the spent and created coins.
                          `connect_block_inputs` is the same without the elliptic-curve
                          verifications, which it returns for sigcheck.SignatureChecker

Within a block the signature verifications run last, after every other check of every
transaction (as Bitcoin Core queues them to its script-check threads): a block with a bad
signature in one transaction and a missing input in a later one is refused for the missing
input. Either way the block is invalid; only the reported reason differs.

The merkle check comes before anything else about the transactions because a block whose
transactions do not match its header is *mutated*, not invalid: the hash belongs to a block
that may be perfectly valid. Only when the transactions are the committed ones is a later
failure a verdict on the block hash (see ValidationError.marks_block_invalid).

Rules we do not need, and why:
- BIP30 (no output may overwrite an unspent one): coinbases carry their height from block 1
  on, so every coinbase txid is unique, hence every transaction's; and the genesis coinbase
  never enters the UTXO set.
- Sigop limits: there are no scripts; the number of signature checks per block is bounded by
  the block size (an input is at least ~140 bytes).
- 64-byte transactions (CVE-2017-12842, a tx posing as an inner merkle node): outputs are a
  fixed 28 bytes and a valid tx has an input and an output, so none is shorter than 75 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .amount import MAX_MONEY, money_range
from .chainparams import MAX_BLOCK_SIZE, ChainParams
from .errors import DeserializationError, Failure, ValidationError
from .keys import SignatureCheck, check_signature, prepare_input_check, signature_failure, verify_input
from .pow import MAX_TIMEWARP, PrevBlock, check_proof_of_work, next_work_required
from .primitives import (
    Block, BlockHeader, OutPoint, Transaction, TxOut, coinbase_height_prefix,
)

__all__ = [
    "BlockConnection", "Coin", "DeserializationError", "Failure", "LOCKTIME_THRESHOLD",
    "MAX_COINBASE_SCRIPT", "MIN_COINBASE_SCRIPT", "SignatureCheck", "UtxoView", "ValidationError",
    "block_signature_failure", "block_subsidy", "check_block", "check_block_header",
    "check_transaction", "check_tx_inputs", "connect_block_checks", "connect_block_inputs",
    "contextual_check_block",
    "contextual_check_block_header", "is_final_tx", "verify_input",
]

MIN_COINBASE_SCRIPT: int = 2
MAX_COINBASE_SCRIPT: int = 100
#: Below: locktime is a block height; at or above: a Unix time (as in Bitcoin).
LOCKTIME_THRESHOLD: int = 500_000_000
_MIN_TX_SIZE = 10


@dataclass(frozen=True)
class Coin:
    """An unspent output as the UTXO set keeps it."""

    value: int
    pkh: bytes
    height: int          # height of the block that created it
    is_coinbase: bool

    @property
    def txout(self) -> TxOut:
        """The output itself."""
        return TxOut(self.value, self.pkh)


class CheckSink(Protocol):
    """Where prepared signature verifications go (a list, or sigcheck.SignatureSession)."""

    def append(self, check: SignatureCheck) -> None:
        """The next verification, in block order."""


class UtxoView(Protocol):
    """Read access to unspent outputs (the chain state the block or tx builds on)."""

    def get(self, outpoint: OutPoint) -> Coin | None:
        """The unspent coin at `outpoint`, or None if unknown or spent."""
        ...


def _consensus(reason: str, debug: str = "") -> ValidationError:
    return ValidationError(Failure.CONSENSUS, reason, debug)


# ------------------------------------------------------------------------------- context-free

def check_transaction(tx: Transaction, max_size: int = MAX_BLOCK_SIZE) -> None:
    """Rules a transaction must satisfy on its own (Bitcoin's CheckTransaction).

    Non-empty inputs and outputs; serialized size at most `max_size` (the block size limit);
    each output value and their sum within 0..MAX_MONEY; no input spent twice; a coinbase
    script of 2..100 bytes; no null prevout outside a coinbase.
    """
    if not tx.vin:
        raise _consensus("bad-txns-vin-empty")
    if not tx.vout:
        raise _consensus("bad-txns-vout-empty")
    if tx.size > max_size:
        raise _consensus("bad-txns-oversize")
    total = 0
    for out in tx.vout:
        if out.value < 0:
            raise _consensus("bad-txns-vout-negative")
        if out.value > MAX_MONEY:
            raise _consensus("bad-txns-vout-toolarge")
        total += out.value
        if not money_range(total):
            raise _consensus("bad-txns-txouttotal-toolarge")
    if len(tx.vin) > 1:
        # Tuple keys: an OutPoint hashes through the dataclass's Python-level __hash__.
        seen: set[tuple[bytes, int]] = set()
        for txin in tx.vin:
            key = (txin.prevout.txid, txin.prevout.n)
            if key in seen:
                raise _consensus("bad-txns-inputs-duplicate")
            seen.add(key)
    if tx.is_coinbase:
        if not MIN_COINBASE_SCRIPT <= len(tx.vin[0].script_sig) <= MAX_COINBASE_SCRIPT:
            raise _consensus("bad-cb-length")
    else:
        for txin in tx.vin:
            if txin.prevout.is_null:
                raise _consensus("bad-txns-prevout-null")


def check_block_header(header: BlockHeader, params: ChainParams, now: int | None = None) -> None:
    """Proof of work ("high-hash"); with `now`, a time at most max_future_block_time ahead."""
    if not check_proof_of_work(header.hash, header.bits, params):
        raise ValidationError(Failure.INVALID_HEADER, "high-hash", "proof of work failed")
    _check_not_future(header, params, now)


def _check_not_future(header: BlockHeader, params: ChainParams, now: int | None) -> None:
    if now is not None and header.time > now + params.max_future_block_time:
        raise ValidationError(Failure.TIME_FUTURE, "time-too-new",
                              "block timestamp too far in the future")


def check_block(block: Block, params: ChainParams, now: int | None = None, *,
                check_pow: bool = True, check_merkle_root: bool = True) -> None:
    """Context-free block rules (Bitcoin's CheckBlock).

    PoW (unless check_pow=False, e.g. for a template); merkle root and CVE-2012-2459
    mutation (MUTATED failures); transaction count and serialized size; the first and only
    the first transaction is a coinbase; every transaction passes check_transaction.
    """
    if check_pow:
        check_block_header(block.header, params, now)
    else:
        _check_not_future(block.header, params, now)
    if check_merkle_root:
        root, mutated = block.compute_merkle_root()
        if root != block.header.merkle_root:
            raise ValidationError(Failure.MUTATED, "bad-txnmrklroot", "hashMerkleRoot mismatch")
        if mutated:
            raise ValidationError(Failure.MUTATED, "bad-txns-duplicate", "duplicate transaction")
    max_size = params.max_block_size
    if not block.txs or len(block.txs) * _MIN_TX_SIZE > max_size or block.size > max_size:
        raise _consensus("bad-blk-length", "size limits failed")
    if not block.txs[0].is_coinbase:
        raise _consensus("bad-cb-missing", "first tx is not coinbase")
    for tx in block.txs[1:]:
        if tx.is_coinbase:
            raise _consensus("bad-cb-multiple", "more than one coinbase")
    for tx in block.txs:
        try:
            check_transaction(tx, max_size)
        except ValidationError as e:
            debug = f"Transaction check failed (tx hash {tx.txid_hex}) {e.debug}".rstrip()
            raise _consensus(e.reason, debug) from None


def block_subsidy(height: int, params: ChainParams) -> int:
    """New coins a block at `height` may create: initial_subsidy halved every halving_interval
    blocks, zero after 64 halvings (a shift by >= 64 would be undefined in C++; here it
    simply keeps the rule identical)."""
    halvings = height // params.halving_interval
    if halvings >= 64:
        return 0
    return params.initial_subsidy >> halvings


# ------------------------------------------------------------------------------- contextual

def contextual_check_block_header(header: BlockHeader, prev: PrevBlock, params: ChainParams, *,
                                  median_time_past: int,
                                  ancestor_time: Callable[[int], int],
                                  now: int | None = None) -> None:
    """Header rules that need the parent (Bitcoin's ContextualCheckBlockHeader).

    `prev` is the parent; `median_time_past` the median of the times of the parent and its
    ten predecessors (pow.median_time_past); `ancestor_time(h)` the time of the ancestor at
    height h (needed at retarget boundaries only).
    """
    height = prev.height + 1
    if header.bits != next_work_required(prev, params, ancestor_time):
        raise ValidationError(Failure.INVALID_HEADER, "bad-diffbits", "incorrect proof of work")
    if header.time <= median_time_past:
        raise ValidationError(Failure.INVALID_HEADER, "time-too-old", "block's timestamp is too early")
    if (params.enforce_bip94 and height % params.retarget_interval == 0
            and header.time < prev.time - MAX_TIMEWARP):
        raise ValidationError(Failure.INVALID_HEADER, "time-timewarp-attack",
                              "block's timestamp is too early on diff adjustment block")
    _check_not_future(header, params, now)


def is_final_tx(tx: Transaction, height: int, lock_time_cutoff: int) -> bool:
    """Whether `tx` may be in a block at `height` whose locktime cutoff (the parent's median
    time past, BIP113) is `lock_time_cutoff`. Locktime 0 is always final; below 500,000,000
    it is a height, else a Unix time, and the block must be past it. There is no nSequence
    opt-out: a locktime is always enforced."""
    if tx.locktime == 0:
        return True
    limit = height if tx.locktime < LOCKTIME_THRESHOLD else lock_time_cutoff
    return tx.locktime < limit


def contextual_check_block(block: Block, height: int, lock_time_cutoff: int) -> None:
    """Block rules that need the height: every transaction final ("bad-txns-nonfinal"), and
    the coinbase script starting with the height ("bad-cb-height"), which makes every
    coinbase, and so every transaction, unique. Not applied to the genesis block."""
    for tx in block.txs:
        if not is_final_tx(tx, height, lock_time_cutoff):
            raise _consensus("bad-txns-nonfinal", f"non-final transaction {tx.txid_hex}")
    if not block.txs[0].vin[0].script_sig.startswith(coinbase_height_prefix(height)):
        raise _consensus("bad-cb-height", "block height mismatch in coinbase")


def check_tx_inputs(tx: Transaction, view: UtxoView, spend_height: int, params: ChainParams, *,
                    verify_signatures: bool = True,
                    signature_checks: CheckSink | None = None) -> int:
    """Check a non-coinbase transaction's inputs against `view`; return its fee.

    `spend_height` is the height of the block the transaction would be in (tip + 1 for the
    mempool). Cheap checks first, signatures last: every input exists
    (MISSING_INPUTS, "bad-txns-inputs-missingorspent"); no coinbase output is spent before
    `coinbase_maturity` blocks have passed (PREMATURE_SPEND); input values and their sum in
    range; inputs >= outputs ("bad-txns-in-belowout"); every signature valid
    ("mandatory-script-verify-flag-failed"). Assumes check_transaction passed.

    With `signature_checks`, every check of the signatures but the elliptic-curve
    verification itself runs here and the verifications are appended to that list instead
    (keys.prepare_input_check): the caller must run them (check_signature) before it trusts
    the transaction.
    """
    if tx.is_coinbase:
        raise _consensus("coinbase", "coinbase transaction has no inputs to check")
    coins: list[Coin] = []
    for txin in tx.vin:
        coin = view.get(txin.prevout)
        if coin is None:
            raise ValidationError(Failure.MISSING_INPUTS, "bad-txns-inputs-missingorspent",
                                  f"{txin.prevout} is unknown or spent")
        coins.append(coin)
    value_in = 0
    for coin in coins:
        if coin.is_coinbase and spend_height - coin.height < params.coinbase_maturity:
            raise ValidationError(Failure.PREMATURE_SPEND, "bad-txns-premature-spend-of-coinbase",
                                  f"tried to spend coinbase at depth {spend_height - coin.height}")
        value_in += coin.value
        if not money_range(coin.value) or not money_range(value_in):
            raise _consensus("bad-txns-inputvalues-outofrange")
    value_out = tx.value_out
    if value_in < value_out:
        raise _consensus("bad-txns-in-belowout", f"value in ({value_in}) < value out ({value_out})")
    fee = value_in - value_out
    if not money_range(fee):
        raise _consensus("bad-txns-fee-outofrange")
    if verify_signatures:
        if signature_checks is None:
            for i, coin in enumerate(coins):
                verify_input(tx, i, coin.pkh)
        else:
            for i, coin in enumerate(coins):
                signature_checks.append(prepare_input_check(tx, i, coin.pkh))
    return fee


@dataclass(frozen=True)
class BlockConnection:
    """What connecting a block does to the UTXO set, for storage to apply in one transaction.

    `spent` lists the coins taken from the view, in block order, with their full data: this
    is the undo data. `created` lists the new coins still unspent at the end of the block
    (an output created and spent inside the same block appears in neither).
    """

    fees: int
    tx_fees: tuple[int, ...]       # per transaction, coinbase first (0)
    spent: tuple[tuple[OutPoint, Coin], ...]
    created: tuple[tuple[OutPoint, Coin], ...]


class _BlockView:
    """`base` plus the outputs created, minus the outputs spent, so far in this block.

    Coins read from `base` are remembered, so each is fetched once even though it is read
    when checked and again when spent (`base` may be a database). Keyed by (txid, n) tuples:
    hashing an OutPoint runs the dataclass's Python-level __hash__, a tuple of bytes and int
    hashes in C, and a block looks each outpoint up several times.
    """

    def __init__(self, base: UtxoView) -> None:
        self.base = base
        self.created: dict[tuple[bytes, int], Coin] = {}
        self.fetched: dict[tuple[bytes, int], tuple[OutPoint, Coin]] = {}
        # (txid, n) -> what the base held there; in spending order (dicts keep insertion order).
        self.spent_from_base: dict[tuple[bytes, int], tuple[OutPoint, Coin]] = {}

    def get(self, outpoint: OutPoint) -> Coin | None:
        key = (outpoint.txid, outpoint.n)
        coin = self.created.get(key)
        if coin is not None:
            return coin
        found = self.fetched.get(key)
        if found is not None:
            return found[1]
        if key in self.spent_from_base:
            return None
        coin = self.base.get(outpoint)
        if coin is not None:
            self.fetched[key] = (outpoint, coin)
        return coin

    def spend(self, outpoint: OutPoint) -> None:
        # Only called for outpoints get() just returned, so one of the two dicts holds it.
        key = (outpoint.txid, outpoint.n)
        if self.created.pop(key, None) is None:
            self.spent_from_base[key] = self.fetched.pop(key)

    def add(self, tx: Transaction, height: int) -> None:
        is_cb = tx.is_coinbase
        txid = tx.txid
        created = self.created
        for n, out in enumerate(tx.vout):
            created[(txid, n)] = Coin(out.value, out.pkh, height, is_cb)

    def created_coins(self) -> tuple[tuple[OutPoint, Coin], ...]:
        """The coins created and still unspent, in creation order."""
        return tuple((OutPoint(txid, n), coin) for (txid, n), coin in self.created.items())


def connect_block_checks(block: Block, height: int, view: UtxoView, params: ChainParams, *,
                         verify_signatures: bool = True) -> BlockConnection:
    """Check a block's transactions against the UTXO state of its parent (`view`).

    Transactions may spend outputs of earlier transactions in the same block, never of later
    ones, and no output twice: a second spend finds the coin gone
    ("bad-txns-inputs-missingorspent"). The coinbase may claim at most subsidy + fees
    ("bad-cb-amount"). Signatures are verified last, on this thread, in block order.
    Assumes check_block and contextual_check_block passed; does not modify `view`.
    """
    conn, checks = connect_block_inputs(block, height, view, params,
                                        verify_signatures=verify_signatures)
    for check in checks:
        if not check_signature(check.pubkey, check.der, check.digest):
            raise block_signature_failure(check)
    return conn


def block_signature_failure(check: SignatureCheck) -> ValidationError:
    """The block's error for a signature check that failed (names the transaction)."""
    return _in_block(signature_failure(), check.tx)


def _in_block(e: ValidationError, tx: Transaction) -> ValidationError:
    """A transaction's failure as its block's: a consensus failure that names the transaction
    (in a block, missing or premature inputs are final verdicts: the parent state is fixed)."""
    return ValidationError(Failure.CONSENSUS, e.reason, f"{e.debug} (tx {tx.txid_hex})".strip())


def connect_block_inputs(block: Block, height: int, view: UtxoView, params: ChainParams, *,
                         verify_signatures: bool = True, signature_checks: CheckSink | None = None
                         ) -> tuple[BlockConnection, list[SignatureCheck]]:
    """connect_block_checks without the elliptic-curve verifications: every other rule is
    checked (ValidationError as there) and the verifications still to run are returned, in
    block order. The block is valid only if check_signature accepts every one of them
    (block_signature_failure makes the error for the first that fails).

    `signature_checks`: where to append each verification as it is prepared instead (an
    object with `append`, such as sigcheck.SignatureSession, whose helper threads start on
    them before the block's last input is checked); the list returned is then empty."""
    bview = _BlockView(view)
    fees = 0
    tx_fees = [0]
    checks: list[SignatureCheck] = []
    sink: CheckSink = checks if signature_checks is None else signature_checks
    bview.add(block.txs[0], height)
    for tx in block.txs[1:]:
        try:
            fee = check_tx_inputs(tx, bview, height, params, verify_signatures=verify_signatures,
                                  signature_checks=sink)
        except ValidationError as e:
            raise _in_block(e, tx) from None
        fees += fee
        if not money_range(fees):
            raise _consensus("bad-txns-accumulated-fee-outofrange")
        tx_fees.append(fee)
        for txin in tx.vin:
            bview.spend(txin.prevout)
        bview.add(tx, height)
    limit = fees + block_subsidy(height, params)
    if block.txs[0].value_out > limit:
        raise _consensus("bad-cb-amount",
                         f"coinbase pays too much (actual={block.txs[0].value_out} vs limit={limit})")
    return (BlockConnection(fees, tuple(tx_fees), tuple(bview.spent_from_base.values()),
                            bview.created_coins()), checks)
