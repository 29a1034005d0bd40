"""Mempool rules, each shown by a rejected transaction beside an accepted one.

Everything is real: transactions signed with secp256k1 (keys.py), spending outputs of regtest
coinbases (mining.create_coinbase); blocks are solved on regtest and applied to the chain
view with consensus.connect_block_checks. Only the chain state is a stand-in: `DictChainView`,
a dict of coins with a tip height, implementing the mempool's ChainView protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest

from cleancoin.components.common.amount import COIN
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.consensus import (
    BlockConnection, Coin, block_subsidy, connect_block_checks,
)
from cleancoin.components.common.errors import Failure
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.node import mempool as mempool_module
from cleancoin.components.node.mempool import (
    BLOCK_FULL_ENOUGH_BYTES, DEFAULT_ANCESTOR_LIMIT, MAX_STANDARD_TX_SIZE, RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED, ChainView, Mempool, MempoolReject, fee_for_size,
)
from cleancoin.components.node.mining import create_coinbase, mine_block
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut

P = REGTEST
GENESIS = P.genesis_block
T0 = GENESIS.header.time
BITS = GENESIS.header.bits
NOW = T0 + 1_000_000

KEY_A = PrivateKey(hashlib.sha256(b"mempool key A").digest())
KEY_B = PrivateKey(hashlib.sha256(b"mempool key B").digest())
KEY_C = PrivateKey(hashlib.sha256(b"mempool key C").digest())
PKH_A = KEY_A.public_key.pkh
PKH_B = KEY_B.public_key.pkh
PKH_C = KEY_C.public_key.pkh


class DictChainView:
    """The mempool's ChainView over a dict of coins: a chain state without storage.

    `connect`/`disconnect` apply real blocks through consensus.connect_block_checks (so the
    blocks in these tests are valid) and keep the undo data in memory.
    """

    def __init__(self, tip_height: int, mtp: int = T0) -> None:
        self.coins: dict[OutPoint, Coin] = {}
        self.height = tip_height
        self.mtp = mtp
        self._undo: dict[bytes, BlockConnection] = {}

    @property
    def tip_height(self) -> int:
        return self.height

    def utxo(self, outpoint: OutPoint) -> Coin | None:
        return self.coins.get(outpoint)

    def has_coins_of(self, txid: bytes) -> bool:
        return any(op.txid == txid for op in self.coins)

    def get(self, outpoint: OutPoint) -> Coin | None:
        """consensus.UtxoView, for connect_block_checks."""
        return self.coins.get(outpoint)

    def median_time_past_tip(self) -> int:
        return self.mtp

    def add_coinbase(self, height: int, pkh: bytes = PKH_A) -> OutPoint:
        """Record the output of a real regtest coinbase mined at `height` as unspent."""
        value = block_subsidy(height, P)
        cb = create_coinbase(height, pkh, value)
        op = OutPoint(cb.txid, 0)
        self.coins[op] = Coin(value, pkh, height, True)
        return op

    def mine(self, txs: Sequence[Transaction] = (), pkh: bytes = PKH_A) -> Block:
        """A solved block for height tip + 1 (not connected). Its coinbase claims only the
        subsidy, which is valid whatever the fees."""
        h = self.height + 1
        return mine_block(GENESIS.header, h, pkh, P, T0 + 600 * h, BITS, txs)

    def connect(self, block: Block) -> None:
        conn = connect_block_checks(block, self.height + 1, self, P)
        for op, _ in conn.spent:
            del self.coins[op]
        self.coins.update(conn.created)
        self._undo[block.hash] = conn
        self.height += 1

    def disconnect(self, block: Block) -> None:
        conn = self._undo.pop(block.hash)
        for op, _ in conn.created:
            del self.coins[op]
        self.coins.update(conn.spent)
        self.height -= 1


def _is_chain_view(view: ChainView) -> ChainView:
    return view      # mypy checks DictChainView against the protocol here


def spend(prevouts: Sequence[OutPoint], outputs: Sequence[tuple[int, bytes]],
          keys: Sequence[PrivateKey], locktime: int = 0, version: int = 1) -> Transaction:
    """A signed transaction spending `prevouts` with keys[i] for input i."""
    tx = Transaction(version, tuple(TxIn(op) for op in prevouts),
                     tuple(TxOut(v, pkh) for v, pkh in outputs), locktime)
    return sign_transaction(tx, keys)


def pay(op: OutPoint, value: int, fee: int, key: PrivateKey = KEY_A,
        to: bytes = PKH_B) -> Transaction:
    """Spend one output worth `value` to `to`, paying `fee`."""
    return spend([op], [(value - fee, to)], [key])


def pay_exact_fee(op: OutPoint, value: int, fee_of_size: int) -> Transaction:
    """A transaction whose fee is exactly its size + `fee_of_size` units.

    The fee changes the signed outputs, hence the signature, whose DER encoding is 70-72
    bytes: guess the size, sign, keep the guess that comes true (trying other payees, each
    an independent signature, until one does).
    """
    for i in range(100):
        to = hashlib.sha256(b"payee %d" % i).digest()[:20]
        size_guess = pay(op, value, 0, to=to).size
        for size in (size_guess, size_guess - 1, size_guess + 1):
            tx = pay(op, value, size + fee_of_size, to=to)
            if tx.size == size:
                return tx
    raise AssertionError("no size guess came true")


@contextlib.contextmanager
def rejected(reason: str, code: int = RPC_VERIFY_REJECTED) -> Iterator[pytest.ExceptionInfo[MempoolReject]]:
    """pytest.raises for a MempoolReject with this reason and RPC code."""
    with pytest.raises(MempoolReject) as info:
        yield info
    assert info.value.reason == reason, info.value.message
    assert info.value.code == code, (info.value.code, info.value.message)


@pytest.fixture
def view() -> DictChainView:
    """Tip at 200 with mature coinbase outputs from heights 1..20 (50 coins each)."""
    v = DictChainView(200)
    for h in range(1, 21):
        v.add_coinbase(h)
    return v


def coins(view: DictChainView) -> list[OutPoint]:
    return sorted(view.coins, key=lambda op: view.coins[op].height)


@pytest.fixture
def pool(view: DictChainView) -> Mempool:
    return Mempool(P, _is_chain_view(view))


V = 50 * COIN      # value of each fixture coin (regtest subsidy below height 150)


# ------------------------------------------------------------------------------- acceptance

def test_valid_spend_is_accepted_with_its_entry(view: DictChainView, pool: Mempool) -> None:
    op = coins(view)[0]
    tx = pay(op, V, 10_000)
    entry = pool.accept(tx, now=NOW)
    assert entry.tx == tx and entry.txid == tx.txid
    assert (entry.fee, entry.size, entry.vsize, entry.time, entry.height) == \
        (10_000, tx.size, tx.size, NOW, 200)
    assert entry.fee_rate == 10_000 * 1000 // tx.size
    assert (entry.ancestor_count, entry.descendant_count) == (1, 1)
    assert (entry.ancestor_size, entry.ancestor_fees) == (tx.size, 10_000)
    assert tx.txid in pool and pool.get(tx.txid) is entry and len(pool) == 1
    assert pool.txids() == [tx.txid]
    assert pool.spends(op) == tx.txid and pool.spends(OutPoint(tx.txid, 0)) is None


def test_duplicate_submission(view: DictChainView, pool: Mempool) -> None:
    tx = pay(coins(view)[0], V, 10_000)
    pool.accept(tx, now=NOW)
    with rejected("txn-already-in-mempool"):
        pool.accept(tx, now=NOW)
    assert len(pool) == 1


def test_double_spend_of_a_mempool_input_is_refused_without_rbf(view: DictChainView,
                                                                pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    first = pay(c0, V, 1_000)
    pool.accept(first, now=NOW)
    # Same coin, other payee, 1000x the fee: still refused (no replace-by-fee).
    with rejected("txn-mempool-conflict") as info:
        pool.accept(pay(c0, V, 1_000_000, to=PKH_C), now=NOW)
    assert first.txid_hex in info.value.debug and info.value.failure is None
    # A transaction spending the conflicting coin *and* another one is refused too...
    with rejected("txn-mempool-conflict"):
        pool.accept(spend([c1, c0], [(2 * V - 5_000, PKH_C)], [KEY_A, KEY_A]), now=NOW)
    # ...and left no trace: the other coin is still free.
    assert pool.spends(c1) is None
    pool.accept(pay(c1, V, 1_000, to=PKH_C), now=NOW)
    assert pool.spends(c0) == first.txid and len(pool) == 2


def test_missing_inputs(view: DictChainView, pool: Mempool) -> None:
    good = pay(coins(view)[0], V, 10_000)
    unknown = OutPoint(hashlib.sha256(b"no such tx").digest(), 0)
    with rejected("bad-txns-inputs-missingorspent", RPC_VERIFY_ERROR) as info:
        pool.accept(pay(unknown, V, 10_000), now=NOW)
    assert info.value.missing_inputs and info.value.failure is Failure.MISSING_INPUTS
    pool.accept(good, now=NOW)
    # An output index the (unconfirmed) parent does not have is missing too.
    with rejected("bad-txns-inputs-missingorspent", RPC_VERIFY_ERROR):
        pool.accept(pay(OutPoint(good.txid, 1), V - 10_000, 1_000, key=KEY_B), now=NOW)
    pool.accept(pay(OutPoint(good.txid, 0), V - 10_000, 1_000, key=KEY_B), now=NOW)


def test_confirmed_transaction_is_already_known(view: DictChainView, pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    confirmed = pay(c0, V, 10_000)
    view.connect(view.mine([confirmed]))
    with rejected("txn-already-known", RPC_VERIFY_ALREADY_IN_CHAIN):
        pool.accept(confirmed, now=NOW)
    # Spending its (now confirmed) output is fine.
    pool.accept(pay(OutPoint(confirmed.txid, 0), V - 10_000, 1_000, key=KEY_B), now=NOW)
    pool.accept(pay(c1, V, 10_000), now=NOW)


def test_coinbase_maturity_at_the_boundary() -> None:
    """A coinbase mined at height 1 may be in block 101 (spend height - 1 >= 100): the pool,
    which validates for block tip + 1, refuses it at tip 99 and takes it at tip 100."""
    view = DictChainView(99)
    op = view.add_coinbase(1)
    pool = Mempool(P, view)
    tx = pay(op, V, 10_000)
    with rejected("bad-txns-premature-spend-of-coinbase") as info:
        pool.accept(tx, now=NOW)
    assert info.value.failure is Failure.PREMATURE_SPEND and "depth 99" in info.value.message
    view.height = 100
    assert pool.accept(tx, now=NOW).height == 100


def test_min_relay_fee(view: DictChainView, pool: Mempool) -> None:
    """Default 1000 units per 1000 bytes: a tx must pay at least its size in units."""
    c0, c1 = coins(view)[:2]
    below = pay_exact_fee(c0, V, -1)
    at = pay_exact_fee(c1, V, 0)
    with rejected("min relay fee not met") as info:
        pool.accept(below, now=NOW)
    assert info.value.message == f"min relay fee not met, {below.size - 1} < {below.size}"
    assert pool.accept(at, now=NOW).fee == at.size
    assert pool.info()["minrelaytxfee"] == Decimal("0.00001000")


def test_min_relay_fee_is_configurable(view: DictChainView) -> None:
    c0, c1 = coins(view)[:2]
    free = pay(c0, V, 0)
    with rejected("min relay fee not met"):
        Mempool(P, view).accept(free, now=NOW)
    assert Mempool(P, view, min_relay_fee_per_kb=0).accept(free, now=NOW).fee == 0
    strict = Mempool(P, view, min_relay_fee_per_kb=5_000)
    with rejected("min relay fee not met"):
        strict.accept(pay(c1, V, 4 * 200), now=NOW)
    strict.accept(pay(c1, V, 5 * 200), now=NOW)     # 5 units/byte over < 200 bytes


def test_fee_for_size_matches_cfeerate() -> None:
    assert fee_for_size(1000, 191) == 191
    assert fee_for_size(1500, 191) == 286          # truncates
    assert fee_for_size(1, 191) == 1               # but never 0 for a positive rate
    assert fee_for_size(0, 191) == 0


def test_outputs_exceeding_inputs(view: DictChainView, pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    with rejected("bad-txns-in-belowout") as info:
        pool.accept(spend([c0], [(V + 1, PKH_B)], [KEY_A]), now=NOW)
    assert info.value.failure is Failure.CONSENSUS
    pool.accept(spend([c1], [(V - 1_000, PKH_B)], [KEY_A]), now=NOW)


def test_bad_signatures(view: DictChainView, pool: Mempool) -> None:
    c0 = coins(view)[0]
    good = pay(c0, V, 10_000)
    # Signed by a key whose hash is not the coin's pkh.
    with rejected("mandatory-script-verify-flag-failed") as info:
        pool.accept(pay(c0, V, 10_000, key=KEY_B), now=NOW)
    assert info.value.failure is Failure.CONSENSUS
    assert info.value.message.startswith("mandatory-script-verify-flag-failed (Public key")
    # The right key, but the outputs were changed after signing.
    tampered = Transaction(good.version, good.vin, (TxOut(V - 1_000, PKH_C),), good.locktime)
    with rejected("mandatory-script-verify-flag-failed") as info:
        pool.accept(tampered, now=NOW)
    assert "Signature must be zero" in info.value.message
    assert len(pool) == 0 and pool.spends(c0) is None
    pool.accept(good, now=NOW)


def test_coinbase_and_context_free_failures(view: DictChainView, pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    with rejected("coinbase") as info:
        pool.accept(create_coinbase(201, PKH_A, V), now=NOW)
    assert info.value.failure is Failure.CONSENSUS
    with rejected("bad-txns-inputs-duplicate"):
        pool.accept(spend([c0, c0], [(V, PKH_B)], [KEY_A, KEY_A]), now=NOW)
    with rejected("bad-txns-vout-empty"):
        pool.accept(spend([c0], [], [KEY_A]), now=NOW)
    with rejected("version") as info:
        pool.accept(spend([c0], [(V - 1_000, PKH_B)], [KEY_A], version=3), now=NOW)
    assert info.value.failure is None          # policy, not consensus
    pool.accept(spend([c0], [(V - 1_000, PKH_B)], [KEY_A], version=2), now=NOW)
    pool.accept(pay(c1, V, 1_000), now=NOW)


def test_standard_size_limit(view: DictChainView, pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    n_big = (MAX_STANDARD_TX_SIZE - 150) // 28 + 10
    big = spend([c0], [(1_000, PKH_B)] * n_big, [KEY_A])
    assert big.size > MAX_STANDARD_TX_SIZE
    with rejected("tx-size"):
        pool.accept(big, now=NOW)
    ok = spend([c1], [(1_000, PKH_B)] * (n_big - 20), [KEY_A])
    assert ok.size <= MAX_STANDARD_TX_SIZE
    pool.accept(ok, now=NOW)


def test_non_final(view: DictChainView, pool: Mempool) -> None:
    c0, c1, c2, c3 = coins(view)[:4]
    # Height locktime: the next block (201) must be above it.
    with rejected("non-final"):
        pool.accept(spend([c0], [(V - 1_000, PKH_B)], [KEY_A], locktime=201), now=NOW)
    pool.accept(spend([c1], [(V - 1_000, PKH_B)], [KEY_A], locktime=200), now=NOW)
    # Time locktime: against the tip's median time past (BIP113), not the clock.
    view.mtp = 1_800_000_000
    with rejected("non-final"):
        pool.accept(spend([c2], [(V - 1_000, PKH_B)], [KEY_A], locktime=view.mtp), now=NOW)
    pool.accept(spend([c3], [(V - 1_000, PKH_B)], [KEY_A], locktime=view.mtp - 1), now=NOW)


# ------------------------------------------------------------------------------- packages

def test_chain_of_three_unconfirmed(view: DictChainView, pool: Mempool) -> None:
    a = pay(coins(view)[0], V, 1_000, to=PKH_B)
    b = pay(OutPoint(a.txid, 0), V - 1_000, 1_000, key=KEY_B, to=PKH_C)
    c = pay(OutPoint(b.txid, 0), V - 2_000, 1_000, key=KEY_C, to=PKH_A)
    pool.accept(a, now=NOW)
    # The grandchild before its parent: an orphan, missing inputs.
    with rejected("bad-txns-inputs-missingorspent", RPC_VERIFY_ERROR):
        pool.accept(c, now=NOW)
    pool.accept(b, now=NOW)
    pool.accept(c, now=NOW + 1)
    ea, eb, ec = (pool.get(t.txid) for t in (a, b, c))
    assert ea and eb and ec
    assert (ea.ancestor_count, ea.descendant_count) == (1, 3)
    assert (eb.ancestor_count, eb.descendant_count) == (2, 2)
    assert (ec.ancestor_count, ec.descendant_count) == (3, 1)
    assert ec.ancestor_fees == 3_000 and ec.ancestor_size == a.size + b.size + c.size
    assert ea.descendant_fees == 3_000
    assert pool.select_for_block(1_000_000) == [a, b, c]
    assert pool.txids() == [a.txid, b.txid, c.txid]
    assert pool.spends(OutPoint(a.txid, 0)) == b.txid
    d = pool.entry_dict(b.txid)
    assert d["depends"] == [a.txid_hex] and d["spentby"] == [c.txid_hex]
    # A block with room for one package only takes what fits, parents first.
    assert pool.select_for_block(a.size + b.size) == [a, b]
    assert pool.select_for_block(a.size - 1) == []


def test_select_prefers_higher_ancestor_fee_rate(view: DictChainView, pool: Mempool) -> None:
    c0, c1, c2 = coins(view)[:3]
    low_parent = pay(c0, V, 200, to=PKH_B)                 # ~1 unit/byte
    rich_child = pay(OutPoint(low_parent.txid, 0), V - 200, 100_000, key=KEY_B)
    medium = pay(c1, V, 10_000)                            # ~50 units/byte
    small = pay(c2, V, 2_000)                              # ~10 units/byte
    for tx in (low_parent, medium, small, rich_child):
        pool.accept(tx, now=NOW)
    # The child pays for its parent (CPFP): the package outranks `medium`.
    assert pool.select_for_block(1_000_000) == [low_parent, rich_child, medium, small]
    # Room for one single tx only: the package does not fit, the best single one does.
    assert pool.select_for_block(medium.size + 10) == [medium]


def test_selection_stops_after_consecutive_failures_only_once_the_block_is_nearly_full(
        view: DictChainView, monkeypatch: pytest.MonkeyPatch) -> None:
    """bitcoind's BlockAssembler rule (since 12-07): before, every pool entry was taken off
    the heap after the block was full (0.22 s CPU at 20,000 entries; 0.08 s now, the heap
    keyed on floats first too). The limit is lowered to 3 so that four failures show it."""
    monkeypatch.setattr(mempool_module, "MAX_CONSECUTIVE_FAILURES", 3)
    c = coins(view)
    best = pay(c[0], V, 100_000)                                   # ~520 units/byte
    cheap = pay(c[1], V, 1_000)                                    # ~5 units/byte: last in line
    # Four between the two in fee rate: each slightly too big for the room `cheap` fits in.
    between = [spend([c[2 + i]], [(V // 4, PKH_B)] * 3 + [(V - 3 * (V // 4) - 50_000, PKH_B)], [KEY_A])
               for i in range(4)]
    assert all(tx.size > cheap.size for tx in between)
    # Big ones of the same fee rate range, each more than BLOCK_FULL_ENOUGH_BYTES past the room.
    big = [spend([c[6 + i]], [(V // 80, PKH_B)] * 79 + [(V - 79 * (V // 80) - 500_000, PKH_B)], [KEY_A])
           for i in range(4)]
    assert all(tx.size > cheap.size + BLOCK_FULL_ENOUGH_BYTES for tx in big)
    for failing, room in ((between, 0), (big, BLOCK_FULL_ENOUGH_BYTES)):
        pool = Mempool(P, view)
        for tx in (best, cheap, *failing):
            pool.accept(tx, now=NOW)
        max_size = best.size + cheap.size + room
        selected = pool.select_for_block(max_size)
        if room == 0:
            # Within BLOCK_FULL_ENOUGH_BYTES of full after `best`, four failures in a row: done.
            assert selected == [best]
            monkeypatch.setattr(mempool_module, "MAX_CONSECUTIVE_FAILURES", 4)
            assert pool.select_for_block(max_size) == [best, cheap]     # four do not exceed 4
            monkeypatch.setattr(mempool_module, "MAX_CONSECUTIVE_FAILURES", 3)
        else:
            # Not nearly full: failures do not end the search.
            assert selected == [best, cheap]


def test_ancestor_limit(view: DictChainView, pool: Mempool) -> None:
    op, value = coins(view)[0], V
    for _ in range(DEFAULT_ANCESTOR_LIMIT):
        tx = pay(op, value, 1_000, to=PKH_A)
        pool.accept(tx, now=NOW)
        op, value = OutPoint(tx.txid, 0), value - 1_000
    with rejected("too-long-mempool-chain"):
        pool.accept(pay(op, value, 1_000, to=PKH_A), now=NOW)
    first = pool.get(pool.txids()[0])
    assert first and first.descendant_count == DEFAULT_ANCESTOR_LIMIT
    # An independent transaction is unaffected.
    pool.accept(pay(coins(view)[1], V, 1_000), now=NOW)


def test_too_many_pool_parents_are_refused_before_any_input_is_read(view: DictChainView) -> None:
    """A transaction spending outputs of more pool transactions than the ancestor limit
    allows is refused on their count alone: before its inputs are read (here one of them
    is made up, which reading would have reported), so a peer's 2,300-input transaction of
    such spends costs the pool no more than a glance at each input (see Mempool._accept)."""
    many = [OutPoint(hashlib.sha256(b"parent coin %d" % i).digest(), 0) for i in range(DEFAULT_ANCESTOR_LIMIT)]
    for op in many:
        view.coins[op] = Coin(V, PKH_A, 1, False)
    pool = Mempool(P, view)
    parents = [pay(op, V, 1_000, to=PKH_A) for op in many]
    for tx in parents:
        pool.accept(tx, now=NOW)
    made_up = OutPoint(hashlib.sha256(b"nobody's coin").digest(), 0)
    spends = [OutPoint(tx.txid, 0) for tx in parents]
    with rejected("too-long-mempool-chain") as info:
        pool.accept(spend(spends + [made_up], [(V, PKH_B)], [KEY_A] * (len(spends) + 1)), now=NOW)
    assert "too many unconfirmed parents [limit: 25]" in info.value.message
    # One parent fewer is within the limit: then the inputs are read (and the made-up one found).
    with rejected("bad-txns-inputs-missingorspent", RPC_VERIFY_ERROR):
        pool.accept(spend(spends[1:] + [made_up], [(V, PKH_B)], [KEY_A] * len(spends)), now=NOW)
    child = pool.accept(spend(spends[1:], [(V, PKH_B)], [KEY_A] * (len(spends) - 1)), now=NOW)
    assert child.ancestor_count == DEFAULT_ANCESTOR_LIMIT


def test_descendant_limit(view: DictChainView) -> None:
    pool = Mempool(P, view, descendant_limit=3)
    parent = spend([coins(view)[0]], [(COIN, PKH_B)] * 3, [KEY_A])
    pool.accept(parent, now=NOW)
    pool.accept(pay(OutPoint(parent.txid, 0), COIN, 1_000, key=KEY_B), now=NOW)
    pool.accept(pay(OutPoint(parent.txid, 1), COIN, 1_000, key=KEY_B), now=NOW)
    with rejected("too-long-mempool-chain") as info:
        pool.accept(pay(OutPoint(parent.txid, 2), COIN, 1_000, key=KEY_B), now=NOW)
    assert "too many descendants" in info.value.debug
    entry = pool.get(parent.txid)
    assert entry and entry.descendant_count == 3


# ------------------------------------------------------------------------------- blocks

def test_remove_for_block_removes_confirmed_and_conflicts(view: DictChainView,
                                                          pool: Mempool) -> None:
    c0, c1, c2 = coins(view)[:3]
    t1 = pay(c0, V, 1_000, to=PKH_B)
    t1_child = pay(OutPoint(t1.txid, 0), V - 1_000, 1_000, key=KEY_B)
    x = pay(c1, V, 1_000, to=PKH_B)
    x_child = pay(OutPoint(x.txid, 0), V - 1_000, 1_000, key=KEY_B, to=PKH_C)
    x_grandchild = pay(OutPoint(x_child.txid, 0), V - 2_000, 1_000, key=KEY_C)
    unrelated = pay(c2, V, 1_000)
    for tx in (t1, t1_child, x, x_child, x_grandchild, unrelated):
        pool.accept(tx, now=NOW)
    # The block confirms t1 and a double spend of x's input.
    x_rival = pay(c1, V, 5_000, to=PKH_C)
    block = view.mine([t1, x_rival])
    view.connect(block)
    conflicts = pool.remove_for_block(block)
    assert conflicts == [x.txid, x_child.txid, x_grandchild.txid]
    assert pool.txids() == [t1_child.txid, unrelated.txid]
    # t1's child stays, now spending a confirmed output: no more unconfirmed ancestors.
    d = pool.entry_dict(t1_child.txid)
    assert d["depends"] == [] and d["ancestorcount"] == 1 and d["ancestorsize"] == t1_child.size
    assert pool.spends(c0) is None and pool.spends(c1) is None
    assert pool.spends(OutPoint(t1.txid, 0)) == t1_child.txid
    info = pool.info()
    assert info["size"] == 2 and info["bytes"] == t1_child.size + unrelated.size
    assert info["total_fee"] == Decimal("0.00002000")
    assert set(pool.select_for_block(1_000_000)) == {t1_child, unrelated}


def test_readd_for_disconnect_then_conflict_in_new_chain(view: DictChainView,
                                                         pool: Mempool) -> None:
    c0, c1 = coins(view)[:2]
    t1 = pay(c0, V, 1_000, to=PKH_B)
    t2 = pay(OutPoint(t1.txid, 0), V - 1_000, 1_000, key=KEY_B, to=PKH_C)
    block = view.mine([t1, t2])
    view.connect(block)
    pool.remove_for_block(block)
    unrelated = pay(c1, V, 1_000)
    m = pay(OutPoint(t2.txid, 0), V - 2_000, 1_000, key=KEY_C)    # spends a confirmed coin
    pool.accept(unrelated, now=NOW)
    pool.accept(m, now=NOW + 5)
    assert pool.entry_dict(m.txid)["depends"] == []

    # The block is disconnected: its transactions come back, ahead of the pool's.
    view.disconnect(block)
    assert pool.readd_for_disconnect(block, now=NOW + 60) == []
    assert pool.txids() == [t1.txid, t2.txid, unrelated.txid, m.txid]
    em = pool.get(m.txid)
    assert em and em.time == NOW + 5 and em.ancestor_count == 3    # kept its time
    assert pool.entry_dict(m.txid)["depends"] == [t2.txid_hex]
    e1 = pool.get(t1.txid)
    assert e1 and e1.descendant_count == 3 and e1.time == NOW + 60 and e1.height == 200
    selected = pool.select_for_block(1_000_000)
    assert selected.index(t1) < selected.index(t2) < selected.index(m)

    # The new chain's block double-spends t1's input: t1 and its descendants go.
    t1_rival = pay(c0, V, 2_000, to=PKH_C)
    rival = view.mine([t1_rival], pkh=PKH_C)
    view.connect(rival)
    assert pool.remove_for_block(rival) == [t1.txid, t2.txid, m.txid]
    assert pool.txids() == [unrelated.txid]


def test_readd_after_the_new_chain_drops_what_no_longer_validates(view: DictChainView,
                                                                   pool: Mempool) -> None:
    """Re-adding against the new tip: a block tx whose input the new chain spent is dropped,
    so is one spending it, one already confirmed on the new chain, and an existing entry
    that spent a dropped tx; entries still valid stay."""
    c0, c1, c2 = coins(view)[:3]
    t1 = pay(c0, V, 1_000, to=PKH_B)
    t2 = pay(OutPoint(t1.txid, 0), V - 1_000, 1_000, key=KEY_B, to=PKH_C)
    shared = pay(c1, V, 1_000, to=PKH_C)            # in both branches
    old_block = view.mine([t1, t2, shared])
    view.connect(old_block)
    pool.remove_for_block(old_block)
    m = pay(OutPoint(t2.txid, 0), V - 2_000, 1_000, key=KEY_C)
    k = pay(OutPoint(shared.txid, 0), V - 1_000, 1_000, key=KEY_C)
    unrelated = pay(c2, V, 1_000)
    for tx in (m, k, unrelated):
        pool.accept(tx, now=NOW)

    view.disconnect(old_block)
    new_block = view.mine([pay(c0, V, 3_000, to=PKH_C), shared], pkh=PKH_C)
    view.connect(new_block)
    pool.remove_for_block(new_block)      # nothing in the pool spends c0 or c1 now
    dropped = pool.readd_for_disconnect(old_block, now=NOW + 60)
    assert dropped == [t1.txid, t2.txid, shared.txid, m.txid]
    assert pool.txids() == [k.txid, unrelated.txid]
    assert pool.entry_dict(k.txid)["depends"] == []


def test_readd_drops_entries_made_immature_by_the_disconnect() -> None:
    view = DictChainView(99)
    op = view.add_coinbase(1)
    block_100 = view.mine()
    view.connect(block_100)
    pool = Mempool(P, view)
    tx = pay(op, V, 10_000)
    pool.accept(tx, now=NOW)               # spend height 101: depth 100, mature
    view.disconnect(block_100)
    assert pool.readd_for_disconnect(block_100, now=NOW) == [tx.txid]
    assert len(pool) == 0


# ------------------------------------------------------------------------------- size limit

def test_full_pool_evicts_lowest_fee_rate_and_raises_min_fee(view: DictChainView) -> None:
    c = coins(view)
    probe = Mempool(P, view)
    probe.accept(pay(c[0], V, 1_000), now=NOW)
    per_entry = probe.info()["usage"]
    # Room for two 1-in-1-out transactions, not three.
    pool = Mempool(P, view, max_size_bytes=2 * per_entry + per_entry // 2)
    low = pay(c[1], V, 400)                # ~2 units/byte
    mid = pay(c[2], V, 1_000)              # ~5
    high = pay(c[3], V, 2_000)             # ~10
    pool.accept(low, now=NOW)
    pool.accept(mid, now=NOW)
    pool.accept(high, now=NOW)
    assert pool.txids() == [mid.txid, high.txid]      # `low` was evicted
    floor = pool.min_fee_per_kb(NOW)
    assert floor == 400 * 1000 // low.size + 1000       # its rate + incremental relay fee
    assert pool.info(NOW)["mempoolminfee"] == Decimal(floor) / COIN
    with rejected("mempool min fee not met"):
        pool.accept(pay(c[4], V, 500), now=NOW)
    # Pays the floor but less than everything in the pool: added, then evicted itself.
    with rejected("mempool full"):
        pool.accept(pay(c[5], V, 800), now=NOW)
    assert pool.txids() == [mid.txid, high.txid]
    # The floor only decays once a block has arrived, then halves every 12 hours.
    assert pool.min_fee_per_kb(NOW + 10 * 86_400) >= floor
    pool.remove_for_block(view.mine(), now=NOW)
    assert pool.min_fee_per_kb(NOW + 5) >= floor
    assert pool.min_fee_per_kb(NOW + 10 * 86_400) == 1000          # back to min relay fee


# ------------------------------------------------------------------------------- RPC shapes

def test_info_and_entry_dict_shapes(view: DictChainView, pool: Mempool) -> None:
    empty = pool.info(NOW)
    assert empty == {
        "loaded": True, "size": 0, "bytes": 0, "usage": 0, "total_fee": Decimal("0E-8"),
        "maxmempool": 300_000_000, "mempoolminfee": Decimal("0.00001000"),
        "minrelaytxfee": Decimal("0.00001000"), "incrementalrelayfee": Decimal("0.00001000"),
        "unbroadcastcount": 0, "fullrbf": False,
    }
    a = pay(coins(view)[0], V, 12_345, to=PKH_B)
    b = pay(OutPoint(a.txid, 0), V - 12_345, 1_000, key=KEY_B)
    pool.accept(a, now=NOW)
    pool.accept(b, now=NOW + 1)
    info = pool.info(NOW)
    assert info["size"] == 2 and info["bytes"] == a.size + b.size
    assert info["usage"] > info["bytes"] and info["total_fee"] == Decimal("0.00013345")
    d = pool.entry_dict(a.txid)
    assert set(d) == {
        "vsize", "weight", "time", "height", "descendantcount", "descendantsize",
        "ancestorcount", "ancestorsize", "wtxid", "fees", "depends", "spentby",
        "bip125-replaceable", "unbroadcast", "fee", "modifiedfee",
    }
    assert (d["vsize"], d["weight"], d["time"], d["height"]) == (a.size, 4 * a.size, NOW, 200)
    assert (d["ancestorcount"], d["descendantcount"]) == (1, 2)
    assert d["descendantsize"] == a.size + b.size and d["ancestorsize"] == a.size
    assert d["fees"] == {"base": Decimal("0.00012345"), "modified": Decimal("0.00012345"),
                         "ancestor": Decimal("0.00012345"), "descendant": Decimal("0.00013345")}
    assert d["fee"] == Decimal("0.00012345") and d["wtxid"] == a.txid_hex
    assert d["depends"] == [] and d["spentby"] == [b.txid_hex]
    assert d["bip125-replaceable"] is False
    with pytest.raises(KeyError):
        pool.entry_dict(b"\x00" * 32)


def test_reject_messages_and_clear(view: DictChainView, pool: Mempool) -> None:
    e = MempoolReject("min relay fee not met", RPC_VERIFY_REJECTED, "1 < 191")
    assert str(e) == e.message == "min relay fee not met, 1 < 191"
    assert MempoolReject("txn-mempool-conflict").message == "txn-mempool-conflict"
    pool.accept(pay(coins(view)[0], V, 1_000), now=NOW)
    pool.clear()
    assert len(pool) == 0 and pool.txids() == [] and pool.info()["usage"] == 0
    assert pool.select_for_block(1_000_000) == []


# ------------------------------------------------------------------------------- listeners

class Heard:
    """A mempool listener recording what it hears, and what the pool held at that moment."""

    def __init__(self, pool: Mempool) -> None:
        self.pool = pool
        self.events: list[tuple[object, ...]] = []

    def transaction_added(self, tx: Transaction) -> None:
        assert tx.txid in self.pool            # called after the pool was updated
        self.events.append(("added", tx.txid))

    def transaction_removed(self, txid: bytes, reason: str) -> None:
        assert txid not in self.pool
        self.events.append(("removed", txid, reason))

    def take(self) -> list[tuple[object, ...]]:
        out, self.events = self.events, []
        return out


class Broken:
    def transaction_added(self, tx: Transaction) -> None:
        raise RuntimeError("listener bug")

    def transaction_removed(self, txid: bytes, reason: str) -> None:
        raise RuntimeError("listener bug")


def test_listeners_hear_every_addition_and_removal_in_order(view: DictChainView, pool: Mempool,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    heard = Heard(pool)
    pool.add_listener(Broken())            # first: its exceptions are logged, not raised
    pool.add_listener(heard)
    pool.add_listener(heard)               # registering twice has no effect
    c0, c1, c2 = coins(view)[:3]
    t1 = pay(c0, V, 1_000, to=PKH_B)
    t1_child = pay(OutPoint(t1.txid, 0), V - 1_000, 1_000, key=KEY_B)
    x = pay(c1, V, 1_000, to=PKH_B)
    x_child = pay(OutPoint(x.txid, 0), V - 1_000, 1_000, key=KEY_B, to=PKH_C)
    for tx in (t1, t1_child, x, x_child):
        pool.accept(tx, now=NOW)
    assert heard.take() == [("added", t.txid) for t in (t1, t1_child, x, x_child)]
    assert "listener bug" in caplog.text

    # Refusals are not events.
    with rejected("txn-mempool-conflict"):
        pool.accept(pay(c0, V, 2_000), now=NOW)
    assert heard.take() == []

    # A block confirms t1 and double-spends x's input: "block", then "conflict" (parent first).
    x_rival = pay(c1, V, 5_000, to=PKH_C)
    block = view.mine([t1, x_rival])
    view.connect(block)
    pool.remove_for_block(block)
    assert heard.take() == [("removed", t1.txid, "block"), ("removed", x.txid, "conflict"),
                            ("removed", x_child.txid, "conflict")]

    # Disconnected: the block's txs come back ("added"); t1_child, re-checked, stays (no event).
    view.disconnect(block)
    pool.readd_for_disconnect(block, now=NOW)
    assert heard.take() == [("added", t1.txid), ("added", x_rival.txid)]
    assert pool.txids() == [t1.txid, x_rival.txid, t1_child.txid]

    # A disconnect that leaves an entry invalid: "reorg".
    view2 = DictChainView(99)
    op = view2.add_coinbase(1)
    block_100 = view2.mine()
    view2.connect(block_100)
    pool2 = Mempool(P, view2)
    heard2 = Heard(pool2)
    pool2.add_listener(heard2)
    tx = pay(op, V, 10_000)
    pool2.accept(tx, now=NOW)
    view2.disconnect(block_100)
    pool2.readd_for_disconnect(block_100, now=NOW)
    assert heard2.take() == [("added", tx.txid), ("removed", tx.txid, "reorg")]

    # Removed listeners hear nothing more.
    pool.remove_listener(heard)
    pool.remove_listener(heard)            # no error
    pool.accept(pay(c2, V, 1_000), now=NOW)
    assert heard.take() == []


def test_listeners_hear_evictions(view: DictChainView) -> None:
    c = coins(view)
    probe = Mempool(P, view)
    probe.accept(pay(c[0], V, 1_000), now=NOW)
    per_entry = probe.info()["usage"]
    pool = Mempool(P, view, max_size_bytes=2 * per_entry + per_entry // 2)
    heard = Heard(pool)
    pool.add_listener(heard)
    low, mid, high = pay(c[1], V, 400), pay(c[2], V, 1_000), pay(c[3], V, 2_000)
    for tx in (low, mid, high):
        pool.accept(tx, now=NOW)
    # `high` enters, then `low` is evicted to make room.
    assert heard.take() == [("added", low.txid), ("added", mid.txid), ("added", high.txid),
                            ("removed", low.txid, "eviction")]
    # Added then evicted itself ("mempool full"): never reported.
    with rejected("mempool full"):
        pool.accept(pay(c[5], V, 800), now=NOW)
    assert heard.take() == []
