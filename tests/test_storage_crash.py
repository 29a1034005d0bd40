"""kill -9 at random moments loses nothing committed and never leaves a partial block.

A child process (python -c) opens the chain and keeps working: blocks with real signed spends,
three-block reorganisations, invalidateblock + reconsiderblock, and in two rounds a reindex.
After each block it accepts it prints the hash. The parent SIGKILLs it at a random moment,
then, before any chain code touches the file, reads the database with plain sqlite3 and checks
that it is self-consistent:

- every block with the have-data flag has its bytes stored and vice versa (no partial block);
- the active chain runs from the meta tip back to genesis through fully validated blocks;
- the UTXO set equals the one recomputed by replaying the stored blocks from genesis; each
  block's undo data equals the coins that replay says it spent; the tx index holds exactly the
  active chain's transactions.

Then it reopens the chain with ChainManager (which finishes an interrupted reorganisation or
reindex) and checks that every block the child reported is still there (nothing committed
was lost) and that the UTXO statistics match the replay.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cleancoin.components.node.chain import (
    BLOCK_FAILED_MASK, BLOCK_HAVE_DATA, BLOCK_VALID_SCRIPTS, ChainManager,
)
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.consensus import Coin, connect_block_checks
from cleancoin.components.common.hashes import hex_to_hash
from cleancoin.components.common.primitives import NULL_HASH, Block, OutPoint
from cleancoin.components.node.storage import encode_undo

P = REGTEST
NOW = 2_100_000_000
ROUNDS = 8
REINDEX_ROUNDS = (2, 5)
BASE_HEIGHT = 105                  # the first coinbases are mature from the start

CHILD = r'''
import hashlib, random, sys
from cleancoin.components.node.chain import ChainManager
from cleancoin.components.common.chainparams import REGTEST as P
from cleancoin.components.common.consensus import block_subsidy
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.node.mining import assemble_block, create_coinbase, solve
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut

db, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
KEY = PrivateKey(hashlib.sha256(b"crash test key").digest())
PKH = KEY.public_key.pkh
cm = ChainManager(P, db, now=lambda: 2_100_000_000)


def say(*words):
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def solved(parent, txs, fees):
    height = parent.height + 1
    cb = create_coinbase(height, PKH, block_subsidy(height, P) + fees, rng.getrandbits(64))
    return solve(assemble_block(parent.header, [cb, *txs], parent.time + 600,
                                cm.next_bits(parent)), P)


def spendable(tip):
    ops = []
    mature = cm.block_at_height(tip.height + 1 - 100)
    if mature is not None and mature.height > 0:
        ops.append(OutPoint(cm.get_block(mature.hash).txs[0].txid, 0))
    for back in range(3):
        idx = cm.block_at_height(tip.height - back)
        if idx is None or idx.height == 0:
            break
        for tx in cm.get_block(idx.hash).txs[1:]:
            ops += [OutPoint(tx.txid, n) for n in range(len(tx.vout))]
    return [(op, c) for op in ops if (c := cm.utxo(op)) is not None]


def next_block():
    tip = cm.tip
    coins = spendable(tip)
    rng.shuffle(coins)
    txs, fees = [], 0
    for op, coin in coins[:rng.randint(0, 12)]:
        n = rng.randint(1, 3)
        amount = coin.value - 1000
        if amount < n:
            continue
        outs = [TxOut(amount // n, PKH) for _ in range(n - 1)]
        outs.append(TxOut(amount - (amount // n) * (n - 1), PKH))
        txs.append(sign_transaction(Transaction(1, (TxIn(op),), tuple(outs)), [KEY]))
        fees += 1000
    return solved(tip, txs, fees)


def accept(block):
    res = cm.accept_block(block)
    say("B", block.hash_hex, res.index.height)
    return res.index


if mode == "build":
    while cm.tip.height < int(sys.argv[4]):
        accept(next_block())
    say("built", cm.tip.height)
    cm.close()
    sys.exit(0)
if mode == "reindex":
    say("tip", cm.tip.hash_hex, cm.tip.height)
    say("reindex-start")
    cm.reindex()
    say("reindexed", cm.tip.height)
say("ready", cm.tip.height)
while True:
    r = rng.random()
    tip = cm.tip
    if r < 0.08 and tip.height > 3:
        parent = cm.block_at_height(tip.height - 2)
        for _ in range(3):          # heavier than the two blocks it replaces: a reorg
            parent = accept(solved(parent, [], 0))
    elif r < 0.12 and tip.height > 3:
        victim = cm.block_at_height(tip.height - 2)
        say("invalidate", victim.hash_hex)
        cm.invalidate_block(victim.hash)
        cm.reconsider_block(victim.hash)
        say("reconsidered", victim.hash_hex)
    else:
        accept(next_block())
'''


class _Reader:
    """Line reader over a child's stdout pipe with a deadline (select + os.read)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.lines: list[str] = []

    def _fill(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        data = os.read(self.fd, 65536)
        if not data:
            return False
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [d.decode() for d in done]
        return True

    def wait_for(self, prefix: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            left = deadline - time.monotonic()
            assert left > 0, f"child did not print {prefix!r}: {self.lines[-5:]}"
            assert self._fill(left), f"child exited before {prefix!r}: {self.lines[-5:]}"

    def drain(self) -> None:
        while self._fill(1.0):
            pass


def _child(db: Path, seed: int, mode: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(seed), mode, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _reported_blocks(lines: list[str]) -> dict[bytes, int]:
    out = {}
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "B":
            out[hex_to_hash(parts[1])] = int(parts[2])
    return out


def check_raw_consistency(db_path: Path, *, settled: bool) -> tuple[int, dict[OutPoint, Coin]]:
    """Read the file with plain sqlite3 (no chain code) and check every invariant; returns the
    tip height and the replayed UTXO set.

    invalidateblock commits the failure flags first and then disconnects block by block, so a
    kill in between leaves failed blocks at the top of the active chain (start-up finishes the
    rewind). Unless `settled` (after a start-up), that is allowed, provided the flags are
    coherent: once a block is failed, every block above it is too.
    """
    db = sqlite3.connect(str(db_path))
    try:
        tip = bytes(db.execute("SELECT value FROM meta WHERE key = 'tip'").fetchone()[0])
        index = {bytes(h): (bytes(p), ht, st) for h, p, ht, st in
                 db.execute("SELECT hash, prev, height, status FROM block_index")}
        stored = {bytes(h) for (h,) in db.execute("SELECT hash FROM blocks")}
        have_data = {h for h, (_, _, st) in index.items() if st & BLOCK_HAVE_DATA}
        assert have_data == stored, "a block's bytes and its index entry were not committed together"
        chain = []
        h = tip
        while h != NULL_HASH:
            chain.append(h)
            h = index[h][0]
        chain.reverse()
        assert chain[0] == P.genesis_hash
        view: dict[OutPoint, Coin] = {}

        class View:
            def get(self, op: OutPoint) -> Coin | None:
                return view.get(op)

        expected_txindex: dict[bytes, bytes] = {}
        failed_below = False
        for height, bh in enumerate(chain[1:], 1):
            _, ht, status = index[bh]
            assert ht == height and status & BLOCK_VALID_SCRIPTS
            if status & BLOCK_FAILED_MASK:
                assert not settled, f"failed block at {height} in the active chain after start-up"
                failed_below = True
            else:
                assert not failed_below, f"valid block at {height} above a failed one"
            raw = db.execute("SELECT data FROM blocks WHERE hash = ?", (bh,)).fetchone()[0]
            block = Block.from_bytes(bytes(raw))
            assert block.hash == bh
            conn = connect_block_checks(block, height, View(), P, verify_signatures=False)
            undo = db.execute("SELECT data FROM undo WHERE hash = ?", (bh,)).fetchone()
            assert undo is not None and bytes(undo[0]) == encode_undo(conn.spent), f"undo of {height}"
            for op, _ in conn.spent:
                del view[op]
            view.update(conn.created)
            for tx in block.txs:
                expected_txindex[tx.txid] = bh
        table = {OutPoint(bytes(t), n): Coin(v, bytes(pkh), ht, bool(cb)) for t, n, v, pkh, ht, cb in
                 db.execute("SELECT txid, n, value, pkh, height, coinbase FROM utxo")}
        assert table == view, "UTXO table differs from the replay of the tip's chain"
        txindex = {bytes(t): bytes(b) for t, b in db.execute("SELECT txid, block FROM tx_index")}
        assert txindex == expected_txindex
        return len(chain) - 1, view
    finally:
        db.close()


def test_kill_9_at_random_moments(tmp_path: Path) -> None:
    db = tmp_path / "chain.sqlite"
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    where = f"(seed {seed})"
    build = _child(db, seed, "build", str(BASE_HEIGHT))
    out, err = build.communicate(timeout=60)
    assert build.returncode == 0, err.decode()
    reported = _reported_blocks(out.decode().splitlines())
    kills_mid_work = 0
    for round_ in range(ROUNDS):
        reindex = round_ in REINDEX_ROUNDS
        proc = _child(db, seed + round_ + 1, "reindex" if reindex else "run")
        reader = _Reader(proc)
        try:
            if reindex:
                reader.wait_for("reindex-start")
                time.sleep(rng.uniform(0.0, 0.15))
            else:
                reader.wait_for("ready")
                time.sleep(rng.uniform(0.1, 0.7))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.drain()
        assert proc.returncode == -signal.SIGKILL, \
            f"child ended on its own {where}: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        proc.stderr.close()                                                           # type: ignore[union-attr]
        proc.stdout.close()                                                           # type: ignore[union-attr]
        new = _reported_blocks(reader.lines)
        if not reindex and len(new) > 0:
            kills_mid_work += 1
        reported.update(new)
        check_raw_consistency(db, settled=False)
        with ChainManager(P, str(db), now=lambda: NOW) as cm:
            for h, ht in reported.items():
                idx = cm.get_index(h)
                assert idx is not None and idx.have_data and idx.height == ht, \
                    f"a committed block was lost {where}"
            if reindex:
                # Start-up finished the interrupted reindex: back to the full chain.
                tip_line = next(line for line in reader.lines if line.startswith("tip "))
                before = cm.get_index(hex_to_hash(tip_line.split()[1]))
                assert before is not None and cm.tip.chainwork >= before.chainwork, where
            stats, tip_height = cm.utxo_stats(), cm.tip.height
        # Whatever start-up did (finishing a rewind, a reorg or a reindex) is consistent too,
        # and the manager's view of the set is the replayed one.
        height, replayed = check_raw_consistency(db, settled=True)
        assert height == tip_height and stats["txouts"] == len(replayed), where
        assert stats["total_amount"] == sum(c.value for c in replayed.values()), where
    assert kills_mid_work >= ROUNDS - len(REINDEX_ROUNDS) - 1, where
