"""Block connect with signatures verified last, on several threads (sigcheck.py, chain.py):
the verdict and the stored state must be exactly those of the serial path.

Real signatures (coincurve), real solved regtest blocks, a real SQLite file per test. The bad
signatures here are *well-formed* (right pubkey, canonical DER, low S): they pass every check
before the elliptic-curve verification, so they fail only there, possibly on a helper thread,
after every other rule of the block passed; nothing of the block may then reach the UTXO set
or the tx index (a write made before the verdict would be committed with the failed block).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cleancoin.components.common.amount import COIN
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.consensus import connect_block_inputs
from cleancoin.components.common.errors import ValidationError
from cleancoin.components.common.keys import (
    CURVE_ORDER, PrivateKey, SignatureCheck, check_signature, prepare_input_check, sign_transaction,
    signature_hash,
)
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.common.sigbatch import NATIVE, NativeLibrary, packable
from cleancoin.components.common.sigcheck import CHUNK, MAX_THREADS, SignatureChecker, _Batch, default_threads
from cleancoin.components.node.chain import BLOCK_FAILED, ChainManager
from cleancoin.components.node.mining import mine_block

P = REGTEST
NOW = 2_100_000_000
KEY = PrivateKey(hashlib.sha256(b"block connect key").digest())
OTHER = PrivateKey(hashlib.sha256(b"block connect other").digest())
PKH = KEY.public_key.pkh
FAN = 3 * CHUNK + 5            # coins to spend: several chunks, the last one partial


def _spend(op: OutPoint, value: int, key: PrivateKey = KEY) -> Transaction:
    return sign_transaction(Transaction(1, (TxIn(op),), (TxOut(value, PKH),)), [key])


def _tamper(tx: Transaction) -> Transaction:
    """The same signature over other outputs: every pre-check passes, the curve check fails."""
    return dataclasses.replace(tx, vout=(TxOut(tx.vout[0].value - 1, PKH),))


class _Setup:
    """A chain whose tip holds FAN coins of one transaction, spendable by KEY."""

    def __init__(self, path: Path, threads: int) -> None:
        self.cm = ChainManager(P, str(path / "chain.sqlite"), now=lambda: NOW, sig_threads=threads)
        for _ in range(101):
            self.mine()
        coinbase = self.cm.get_block(self.cm.block_at_height(1).hash).txs[0]  # type: ignore[union-attr]
        each = coinbase.vout[0].value // FAN - 1000
        self.fan = sign_transaction(Transaction(1, (TxIn(OutPoint(coinbase.txid, 0)),),
                                                tuple(TxOut(each, PKH) for _ in range(FAN))), [KEY])
        self.each = each
        self.mine([self.fan], coinbase.vout[0].value - self.fan.value_out)

    def block(self, txs: list[Transaction], parent_hash: bytes | None = None, dt: int = 600) -> Block:
        parent = self.cm.tip if parent_hash is None else self.cm.get_index(parent_hash)
        assert parent is not None
        fees = sum(1000 for _ in txs)
        return mine_block(parent.header, parent.height + 1, OTHER.public_key.pkh, P,
                          parent.header.time + dt, self.cm.next_bits(parent), txs, fees)

    def mine(self, txs: list[Transaction] | None = None, fees: int = 0) -> Block:
        tip = self.cm.tip
        b = mine_block(tip.header, tip.height + 1, PKH, P, tip.header.time + 600,
                       self.cm.next_bits(tip), txs or [], fees)
        assert self.cm.accept_block(b).new_tip
        return b

    def spends(self) -> list[Transaction]:
        return [_spend(OutPoint(self.fan.txid, n), self.each - 1000) for n in range(FAN)]

    def state(self) -> tuple[object, ...]:
        store = self.cm._store
        return (self.cm.tip.hash, self.cm.utxo_stats(), store.tx_index_size())


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n}-threads")
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Setup]:
    s = _Setup(tmp_path, request.param)
    yield s
    s.cm.close()


# ------------------------------------------------------------------------------- sigcheck

def _checks(count: int) -> list[SignatureCheck]:
    out = []
    for n in range(count):
        tx = _spend(OutPoint(hashlib.sha256(b"%d" % n).digest(), n), COIN)
        out.append(prepare_input_check(tx, 0, PKH))
    return out


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_the_first_failing_signature_in_order_is_reported(threads: int) -> None:
    checks = _checks(FAN)
    checker = SignatureChecker(threads)
    try:
        assert checker.verify(checks) is None
        assert checker.verify([]) is None
        for bad in ([0], [CHUNK], [FAN - 1], [FAN - 1, 5, 2 * CHUNK + 1]):
            broken = list(checks)
            for i in bad:
                c = broken[i]
                broken[i] = c._replace(digest=hashlib.sha256(c.digest).digest())
            assert checker.verify(broken) == min(bad)
        # A pubkey that is no curve point is a failed check, never an exception.
        not_a_point = checks[3]._replace(pubkey=b"\x02" + b"\x00" * 31 + b"\x07")
        assert checker.verify([*checks[:3], not_a_point]) == 3
    finally:
        checker.close()
    with pytest.raises(ValueError):
        SignatureChecker(0)


def test_the_threads_verify_every_signature_exactly_once() -> None:
    """The threads take signatures one at a time from a shared counter (since 12-07; chunks
    of CHUNK before): none may be skipped or taken twice. Every check here fails, so the
    failures recorded are the checks verified, one entry each. (The coincurve path; the
    compiled pool's is below.)"""
    bad = [c._replace(digest=hashlib.sha256(c.digest).digest()) for c in _checks(FAN)]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            batch = _Batch(bad, pool, 3)
            assert batch.wait() == 0
            assert sorted(batch._failed) == list(range(FAN))


def _native() -> NativeLibrary:
    assert NATIVE is not None, "the compiled signature pool (sigbatch.c) was not built"
    return NATIVE


@pytest.mark.parametrize("helpers", [0, 1, 3])
def test_the_compiled_pool_verifies_every_signature_exactly_once(helpers: int) -> None:
    """The compiled pool's threads claim records one at a time as they are published: each
    is claimed by exactly one thread (the count is exact), the first invalid one in the
    order added is reported, and jobs follow one another on the same threads."""
    checks = _checks(FAN)
    bad = [c._replace(digest=hashlib.sha256(c.digest).digest()) for c in checks]
    pool = _native().pool(helpers)
    try:
        for round_ in range(4):
            for given, first in ((checks, None), (bad, 0), ([*checks[:-1], bad[-1]], FAN - 1)):
                job = pool.begin(FAN + round_)          # room to spare is fine
                for check in given:
                    job.add(check)
                assert job.finish() == first
                assert job.claimed == FAN
        job = pool.begin(2)
        job.add(checks[0])
        job.add(checks[1])
        with pytest.raises(ValueError):
            job.add(checks[2])                          # more than it was begun for
        assert job.finish() is None
    finally:
        pool.close()
    pool.close()                                        # idempotent


def test_the_compiled_pool_under_churn_gives_every_jobs_own_verdict() -> None:
    """Jobs of every size, ended with a verdict or aborted at any point, one after another on
    the same helpers (which may still be finishing the last job's signature when the next
    begins: they hold a reference to it): each verdict is that job's own."""
    import random
    rng = random.Random(16)
    checks = _checks(FAN)
    bad = [c._replace(digest=hashlib.sha256(c.digest).digest()) for c in checks]
    pool = _native().pool(3)
    try:
        for _ in range(150):
            size = rng.randrange(1, FAN + 1)
            wrong = {i for i in range(size) if rng.random() < 0.05}
            job = pool.begin(size)
            cut = rng.randrange(0, size + 1) if rng.random() < 0.3 else None
            for i in range(size if cut is None else cut):
                job.add(bad[i] if i in wrong else checks[i])
            if cut is not None:
                assert job.finish(verify=False) is None
            else:
                assert job.finish() == (min(wrong) if wrong else None)
    finally:
        pool.close()


def test_an_aborted_session_leaves_the_pool_usable() -> None:
    """A block that fails another rule after some of its signatures went to the helpers
    ends its session without a verdict: the helpers take nothing more, and the next block
    is verified in full."""
    checks = _checks(FAN)
    checker = SignatureChecker(3)
    try:
        assert checker.compiled
        for cut in (0, 1, FAN // 2, FAN):
            session = checker.begin(FAN)
            for check in checks[:cut]:
                session.append(check)
            session.abort()
            assert checker.verify([*checks[:5], checks[6]._replace(digest=bytes(32))]) == 5
            assert checker.verify(checks) is None
    finally:
        checker.close()


def test_closing_the_checker_stops_the_compiled_pools_threads() -> None:
    """The helpers start with the first block (not before: a confined component must be
    single-threaded when it restricts itself) and leave C and end when the checker closes."""
    import threading

    def helpers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("sigcheck_")]
    before = len(helpers())
    checker = SignatureChecker(3)
    assert len(helpers()) == before                      # nothing started yet
    assert checker.verify(_checks(CHUNK)) is None
    assert len(helpers()) == before + 2
    checker.close()
    assert len(helpers()) == before
    checker.close()


def _der_with_s(der: bytes, s: int) -> bytes:
    """`der` (r, s) with another s, minimally encoded."""
    r = der[4:4 + der[3]]
    s_bytes = s.to_bytes(33, "big").lstrip(b"\x00")
    s_bytes = b"\x00" + s_bytes if s_bytes[0] & 0x80 else s_bytes
    body = b"\x02" + bytes((len(r),)) + r + b"\x02" + bytes((len(s_bytes),)) + s_bytes
    return b"\x30" + bytes((len(body),)) + body


def _edge_checks() -> list[SignatureCheck]:
    """Checks libsecp256k1 must refuse in every way it can, around valid ones: what the
    compiled verifier and coincurve must agree on."""
    good = _checks(4)
    c = good[0]
    high_s = _der_with_s(c.der, CURVE_ORDER - int.from_bytes(c.der[6 + c.der[3]:], "big"))
    return [
        good[1],
        c._replace(digest=hashlib.sha256(c.digest).digest()),             # another message
        c._replace(pubkey=b"\x02" + b"\x00" * 31 + b"\x07"),               # no curve point
        c._replace(pubkey=b"\x05" + c.pubkey[1:]),                          # no key prefix
        c._replace(pubkey=good[2].pubkey[:1] + bytes(32)),                  # x = 0
        c._replace(der=b"\x30\x06\x02\x01\x01\x02\x01"),                    # truncated DER
        c._replace(der=b""),                                                # no DER
        c._replace(der=c.der[:-1] + bytes(((c.der[-1] + 1) % 256,))),        # S changed
        c._replace(der=high_s),                                             # the high-S twin
        good[2],
        c._replace(der=b"\x30" + bytes((70,)) + b"\x02\x21\x00" + b"\xff" * 32 + b"\x02\x21\x00" + b"\xff" * 32),
        good[3],
    ]


def test_the_compiled_pool_agrees_with_coincurve() -> None:
    """sigbatch.c is the same libsecp256k1 calls as keys.check_signature: the same verdict
    for valid signatures and for each way one can be refused, with and without helpers."""
    checks = _edge_checks()
    assert all(packable(c) for c in checks)
    expected = [check_signature(c.pubkey, c.der, c.digest) for c in checks]
    assert expected.count(True) == 3 and expected[0]          # the valid ones, and only those
    for helpers in (0, 2):
        pool = _native().pool(helpers)
        try:
            verdicts = []
            for check in checks:
                job = pool.begin(1)
                job.add(check)
                verdicts.append(job.finish() is None)
            assert verdicts == expected
            job = pool.begin(len(checks))
            for check in checks:
                job.add(check)
            assert job.finish() == 1
        finally:
            pool.close()
    # A check that does not fit a record (an uncompressed key) is verified through coincurve,
    # in its place in block order.
    odd = checks[0]._replace(pubkey=b"\x04" + bytes(64))
    assert not packable(odd)
    checker = SignatureChecker(2)
    try:
        assert checker.verify([checks[0], odd, checks[1]]) == 1
        assert checker.verify([checks[0], checks[9], odd, checks[1]]) == 2
    finally:
        checker.close()


def test_signature_digest_cache_follows_the_transaction() -> None:
    """The per-transaction digest parts are cached on the immutable Transaction: a changed
    copy (dataclasses.replace, as signing does) must never see the old ones."""
    tx = _spend(OutPoint(b"\x01" * 32, 0), COIN)
    first = signature_hash(tx, 0, PKH)
    assert "sighash_parts" in tx.__dict__                         # cached now
    for changed in (dataclasses.replace(tx, locktime=7), dataclasses.replace(tx, version=2),
                    _tamper(tx), dataclasses.replace(tx, vin=(TxIn(OutPoint(b"\x02" * 32, 0)),))):
        fresh = Transaction.from_bytes(changed.to_bytes())        # nothing cached
        assert signature_hash(changed, 0, PKH) == signature_hash(fresh, 0, PKH) != first
    assert signature_hash(tx, 0, PKH) == first == signature_hash(Transaction.from_bytes(tx.to_bytes()), 0, PKH)


@pytest.mark.parametrize("outputs", [0, 1, 3])
@pytest.mark.parametrize("inputs", [0, 1, 4])
def test_digest_parts_equal_their_definition(inputs: int, outputs: int) -> None:
    """hash_outputs is computed from a slice of the serialization, hash_prevouts from the
    encoded prevouts: they must equal SHA-256d over the encoded prevouts and outputs, for
    built and parsed transactions alike (and for the empty lists a parsed, invalid transaction may have)."""
    from cleancoin.components.common.hashes import sha256d
    vin = tuple(TxIn(OutPoint(hashlib.sha256(b"%d" % i).digest(), i * 70000), b"\x01" * (i * 30))
                for i in range(inputs))
    vout = tuple(TxOut(i * COIN - 7, PKH) for i in range(outputs))
    built = Transaction(2, vin, vout, 99)
    for tx in (built, Transaction.from_bytes(built.to_bytes())):
        assert tx.hash_prevouts == sha256d(b"".join(i.prevout.to_bytes() for i in vin))
        assert tx.hash_outputs == sha256d(b"".join(o.to_bytes() for o in vout))


def test_digest_parts_are_cached_once_and_need_no_serialization() -> None:
    """Only sighash_parts is kept on the transaction (the two hashes are read nowhere else),
    and a transaction built in memory (a wallet signing) is not serialized whole to hash its
    outputs: they are fixed-size and encoded on their own. A parsed one slices its bytes."""
    from cleancoin.components.common.hashes import sha256d
    vout = (TxOut(COIN, PKH), TxOut(2 * COIN, PKH))
    built = Transaction(2, (TxIn(OutPoint(b"\x05" * 32, 1)),), vout, 7)
    head, tail = built.sighash_parts
    assert tail == sha256d(b"".join(o.to_bytes() for o in vout)) + (7).to_bytes(4, "little")
    assert head[4:] == sha256d(b"\x05" * 32 + (1).to_bytes(4, "little"))
    assert not {"serialized", "hash_prevouts", "hash_outputs"} & built.__dict__.keys(), built.__dict__.keys()
    parsed = Transaction.from_bytes(built.to_bytes())
    assert parsed.sighash_parts == (head, tail)
    assert not {"hash_prevouts", "hash_outputs"} & parsed.__dict__.keys()


def _cgroup_tree(root: Path, own: str, limits: dict[str, str]) -> tuple[str, str]:
    """A cgroup v2 file tree as the kernel shows it: /proc/self/cgroup's line and cpu.max files."""
    fs = root / "sys-fs-cgroup"
    for directory, content in limits.items():
        (fs / directory).mkdir(parents=True, exist_ok=True)
        (fs / directory / "cpu.max").write_text(content + "\n")
    (fs / own.strip("/")).mkdir(parents=True, exist_ok=True)
    self_cgroup = root / "self-cgroup"
    self_cgroup.write_text(f"0::{own}\n")
    return str(fs), str(self_cgroup)


def test_signature_threads_respect_the_containers_cpu_quota(tmp_path: Path) -> None:
    """A container limited to half a CPU (cpu.max "50000 100000") may see every core in its
    affinity mask; its signature threads follow the quota, rounded up, at least 1, and the
    smallest quota on the way up the hierarchy."""
    import os
    affinity = min(len(os.sched_getaffinity(0)), MAX_THREADS)

    def threads(name: str, own: str, limits: dict[str, str]) -> int:
        return default_threads(*_cgroup_tree(tmp_path / name, own, limits))

    assert threads("half", "/pod", {"pod": "50000 100000"}) == 1
    assert threads("parent", "/slice/service", {"slice": "100000 100000", "slice/service": "max 100000"}) == 1
    assert threads("many", "/pod", {"pod": "3200000 100000"}) == affinity
    assert threads("none", "/pod", {"pod": "max 100000"}) == affinity
    assert threads("no-file", "/pod", {}) == affinity
    assert threads("garbage", "/pod", {"pod": "lots"}) == affinity
    if affinity >= 2:
        assert threads("one-and-a-half", "/pod", {"pod": "150000 100000"}) == 2
    # cgroup v1 only (no "0::" line): nothing to read.
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "self-cgroup").write_text("4:cpu,cpuacct:/pod\n")
    assert default_threads(str(v1), str(v1 / "self-cgroup")) == affinity


# ------------------------------------------------------------------------------- the chain

@pytest.mark.parametrize("bad_at", [0, FAN // 2, FAN - 1])
def test_block_on_the_tip_with_one_bad_signature_changes_nothing(setup: _Setup, bad_at: int) -> None:
    before = setup.state()
    txs = setup.spends()
    txs[bad_at] = _tamper(txs[bad_at])
    bad = setup.block(txs)
    with pytest.raises(ValidationError) as info:
        setup.cm.accept_block(bad)
    assert info.value.reason == "mandatory-script-verify-flag-failed"
    assert txs[bad_at].txid_hex in info.value.debug
    assert setup.state() == before                         # nothing was written
    # The connect's writes, made while the signatures were verified (since 12-08), were
    # undone to the savepoint; the block itself is stored as failed.
    assert setup.cm._store.get_undo_raw(bad.hash) is None
    idx = setup.cm.get_index(bad.hash)
    assert idx is not None and idx.status & BLOCK_FAILED and idx.have_data
    for tx in txs:
        assert setup.cm.find_tx(tx.txid) is None
    # The honest block at the same height connects, and spends exactly these coins.
    good = setup.block(setup.spends())
    assert setup.cm.accept_block(good).new_tip
    assert all(setup.cm.utxo(OutPoint(setup.fan.txid, n)) is None for n in range(FAN))
    assert setup.cm.utxo_stats()["txouts"] == before[1]["txouts"] + 1  # type: ignore[index]


def test_double_spend_inside_a_block_is_still_refused(setup: _Setup) -> None:
    before = setup.state()
    txs = setup.spends()
    again = sign_transaction(Transaction(1, (TxIn(OutPoint(setup.fan.txid, 4)),),
                                         (TxOut(setup.each - 2000, PKH),)), [KEY])
    with pytest.raises(ValidationError, match="bad-txns-inputs-missingorspent"):
        setup.cm.accept_block(setup.block([*txs, again]))
    assert setup.state() == before


def test_reorg_onto_a_branch_with_a_bad_signature_restores_the_tip(setup: _Setup) -> None:
    """The branch's block is connected by _connect_tip (the reorganisation path): its bad
    signature refuses it before any write; the main chain comes back with the same UTXO set."""
    fork = setup.cm.tip
    setup.mine()
    main = setup.state()
    txs = setup.spends()
    txs[FAN // 3] = _tamper(txs[FAN // 3])
    b1 = setup.block(txs, fork.hash, dt=601)
    assert not setup.cm.accept_block(b1).new_tip
    b2 = mine_block(b1.header, b2_height := fork.height + 2, OTHER.public_key.pkh, P,
                    b1.header.time + 600, b1.header.bits)
    assert b2_height == setup.cm.tip.height + 1
    with pytest.raises(ValidationError, match="mandatory-script-verify-flag-failed"):
        setup.cm.accept_block(b2)
    assert setup.state() == main


def test_reorg_away_and_back_restores_the_utxo_set(setup: _Setup) -> None:
    fork = setup.cm.tip
    before = setup.state()
    good = setup.block(setup.spends())
    assert setup.cm.accept_block(good).new_tip
    with_block = setup.state()
    # A heavier branch without the spends: the block is disconnected, its coins come back.
    b1 = setup.block([], fork.hash, dt=601)
    b2 = mine_block(b1.header, fork.height + 2, OTHER.public_key.pkh, P, b1.header.time + 600, b1.header.bits)
    setup.cm.accept_block(b1)
    assert setup.cm.accept_block(b2).new_tip
    assert setup.cm.utxo_stats()["txouts"] == before[1]["txouts"] + 2   # type: ignore[index]
    assert all(setup.cm.utxo(OutPoint(setup.fan.txid, n)) is not None for n in range(FAN))
    # And back: the spends' branch grows heavier again; the same set as when it was the tip.
    c2 = mine_block(good.header, fork.height + 2, PKH, P, good.header.time + 602, good.header.bits)
    c3 = mine_block(c2.header, fork.height + 3, PKH, P, c2.header.time + 600, c2.header.bits)
    setup.cm.accept_block(c2)
    assert setup.cm.accept_block(c3).new_tip
    conn, _ = connect_block_inputs(c2, fork.height + 2, setup.cm, P)   # c2 spends nothing
    assert not conn.spent
    assert all(setup.cm.utxo(OutPoint(setup.fan.txid, n)) is None for n in range(FAN))  # spent again
    stats = setup.cm.utxo_stats()
    assert stats["txouts"] == with_block[1]["txouts"] + 2               # type: ignore[index]


# ------------------------------------------------------------------------- signature cache

def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The digests libsecp256k1 is asked to verify (the real verification still runs): one
    by one through coincurve (the mempool's), or a block's batch given to the compiled
    verifier."""
    from cleancoin.components.common import sigcheck
    seen: list[bytes] = []
    real = sigcheck.check_signature

    def counted(pubkey: bytes, der: bytes, digest: bytes) -> bool:
        seen.append(digest)
        return real(pubkey, der, digest)
    monkeypatch.setattr(sigcheck, "check_signature", counted)
    from cleancoin.components.common.sigbatch import NativeJob
    real_add = NativeJob.add

    def added(job: NativeJob, check: SignatureCheck) -> None:
        seen.append(check.digest)
        real_add(job, check)
    monkeypatch.setattr(NativeJob, "add", added)
    return seen


def test_a_mempool_transactions_signature_is_not_verified_again_in_its_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As Core's signature cache: what the mempool verified, the block's connect does not
    verify again; a signature the mempool never saw is verified as ever."""
    from cleancoin.components.common.sigcheck import SignatureCache
    from cleancoin.components.node.mempool import Mempool
    from cleancoin.components.node.node import ChainViewAdapter
    s = _Setup(tmp_path, 2)
    cache = SignatureCache()
    s.cm.close()
    s.cm = ChainManager(P, str(tmp_path / "chain.sqlite"), now=lambda: NOW, sig_threads=2, sig_cache=cache)
    try:
        pool = Mempool(P, ChainViewAdapter(s.cm), signatures=s.cm.signatures)
        txs = s.spends()
        seen = _counting(monkeypatch)
        for tx in txs[:-3]:
            pool.accept(tx)
        assert len(seen) == FAN - 3 and len(cache) == FAN - 3
        seen.clear()
        assert s.cm.accept_block(s.block(txs)).new_tip
        # Only the three the mempool never had were verified with the block.
        assert sorted(seen) == sorted(signature_hash(tx, 0, PKH) for tx in txs[-3:])
        assert len(cache) == FAN - 3          # a block adds nothing
    finally:
        s.cm.close()


def test_the_cache_lets_no_other_signature_through(tmp_path: Path) -> None:
    """An entry stands for one (digest, pubkey, signature) triple that verified: the same
    signature over other outputs, or another key's, is verified and refused as ever; the
    oldest entries go first; a cache of size 0 keeps nothing."""
    from cleancoin.components.common.sigcheck import ENTRY_BYTES, SignatureCache
    checks = _checks(5)
    cache = SignatureCache(3 * ENTRY_BYTES)
    checker = SignatureChecker(1, cache)
    try:
        assert all(checker.verify_one(c) for c in checks)
        assert len(cache) == 3 and [c in cache for c in checks] == [False, False, True, True, True]
        forged = checks[4]._replace(digest=hashlib.sha256(checks[4].digest).digest())
        other_key = checks[4]._replace(pubkey=OTHER.public_key.data)
        assert forged not in cache and not checker.verify_one(forged)
        assert other_key not in cache and not checker.verify_one(other_key)
        assert checker.verify([checks[4], forged]) == 1 and len(cache) == 3
        # A block whose tampered transaction carries a cached signature is still refused.
        s = _Setup(tmp_path, 1)
        s.cm.close()
        s.cm = ChainManager(P, str(tmp_path / "chain.sqlite"), now=lambda: NOW, sig_threads=1,
                            sig_cache=SignatureCache())
        txs = s.spends()
        assert s.cm.signatures.verify_one(prepare_input_check(txs[0], 0, PKH))
        with pytest.raises(ValidationError) as info:
            s.cm.accept_block(s.block([_tamper(txs[0]), *txs[1:]]))
        assert info.value.reason == "mandatory-script-verify-flag-failed"
        s.cm.close()
    finally:
        checker.close()
    off = SignatureChecker(1, SignatureCache(0))
    assert off.verify_one(checks[0]) and checks[0] not in off.cache and len(off.cache) == 0  # type: ignore[operator, arg-type]
    # Two processes' caches key the same signature differently (a salt of their own).
    assert SignatureCache()._key(checks[0]) != SignatureCache()._key(checks[0])
