"""The crash campaign's invariants of the chain and the wallets' header chains (since 12-07).

Read from copies of the files as a kill -9 left them (`chain_files`, `wallet_headers`), and
after recovery against the running node (`synced_wallet`; `make_fresh` builds the wallet of
the fresh rescan the campaign compares with):

- block_sums: every stored block has its CRC-32 row and it matches the stored bytes; no sum
  without its block; every index entry that says it has data has its block; the tip has its
  index entry (and undo data, above genesis);
- a wallet's header rows hash to their hashes, and those stored with their block (trusted 0)
  up to the best block run linked, ending at the best block;
- `checked_work`, when present, names the wallet's best block and holds the node's chainwork
  of that block (a wallet that says it checked more than the node's chain holds, or another
  chain, would skip a check it never finished);
- after recovery and catch-up: the wallet's best block is the node's tip, every header row up
  to it is the node's active block at that height, none lies above it (a stale row there
  makes the next block need more work than it), and a fresh rescan of the same keys finds
  the same confirmed transactions and balances.

Each check returns the problems it found (empty: the invariant holds), so the campaign can
name them all with the seed and kill point.
"""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path

from cleancoin.components.common.hashes import sha256d

BLOCK_HAVE_DATA = 1         # components/node/chain.py's status flag (read from the file here)


def copy_db(db: Path, scratch: Path) -> Path:
    """A copy of `db` with its -wal in `scratch` (a reader's WAL recovery must not change the
    original the kill left)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for suffix in ("", "-wal"):
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copyfile(src, scratch / (db.name + suffix))
    return scratch / db.name


def chain_files(db: Path, scratch: Path) -> tuple[list[str], dict[bytes, int]]:
    """Problems of the chain database's blocks, sums and index, and every index entry's
    chainwork (hash -> work) for the wallet checks."""
    problems: list[str] = []
    conn = sqlite3.connect(copy_db(db, scratch))
    try:
        sums = {bytes(h): int(c) for h, c in conn.execute("SELECT hash, crc32 FROM block_sums")}
        index = {bytes(h): (int(s), int.from_bytes(bytes(w), "big"))
                 for h, s, w in conn.execute("SELECT hash, status, chainwork FROM block_index")}
        stored = set()
        for h, data in conn.execute("SELECT hash, data FROM blocks"):
            h = bytes(h)
            stored.add(h)
            if h not in sums:
                problems.append(f"block {h[::-1].hex()[:16]} stored without its block_sums row")
            elif sums[h] != zlib.crc32(bytes(data)):
                problems.append(f"block {h[::-1].hex()[:16]}: block_sums {sums[h]:#x} is not the "
                                f"CRC-32 of its stored bytes")
            if h not in index:
                problems.append(f"block {h[::-1].hex()[:16]} stored without an index entry")
        for h in sums.keys() - stored:
            problems.append(f"block_sums row for {h[::-1].hex()[:16]} without its block")
        for h, (status, _) in index.items():
            if status & BLOCK_HAVE_DATA and h not in stored:
                problems.append(f"index entry {h[::-1].hex()[:16]} says it has data, no block stored")
        tip = conn.execute("SELECT value FROM meta WHERE key = 'tip'").fetchone()
        if tip is None or bytes(tip[0]) not in index:
            problems.append("the tip has no index entry")
        else:
            height = conn.execute("SELECT height FROM block_index WHERE hash = ?", (tip[0],)).fetchone()[0]
            undo = conn.execute("SELECT 1 FROM undo WHERE hash = ?", (tip[0],)).fetchone()
            if height > 0 and undo is None:
                problems.append(f"the tip at {height} has no undo data")
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return problems, {h: work for h, (_, work) in index.items()}


def read_wallet(db: Path, scratch: Path) -> dict[str, object]:
    """What the header invariants read from a wallet file (a copy of it): meta, header rows
    (height -> (hash, header, trusted)), confirmed transactions (txid -> block hash) and
    unconfirmed ones that still count (neither abandoned nor conflicted)."""
    conn = sqlite3.connect(copy_db(db, scratch))
    try:
        meta = {k: v for k, v in conn.execute("SELECT key, value FROM meta")}
        rows = {int(h): (bytes(hh), bytes(raw), bool(t))
                for h, hh, raw, t in conn.execute("SELECT height, hash, header, trusted FROM headers")}
        confirmed = {bytes(t): bytes(b) for t, b in conn.execute(
            "SELECT txid, block_hash FROM txs WHERE block_hash IS NOT NULL")}
        pending = {bytes(t) for (t,) in conn.execute(
            "SELECT txid FROM txs WHERE block_hash IS NULL AND abandoned = 0 AND conflicted = 0")}
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"meta": meta, "rows": rows, "confirmed": confirmed, "pending": pending}


def _checked_work(meta: dict[str, object]) -> tuple[int, bytes, int] | None:
    value = meta.get("checked_work")
    if value is None:
        return None
    height, block_hash, work = str(value).split()
    return int(height), bytes.fromhex(block_hash), int(work, 16)


def wallet_headers(name: str, wallet: dict[str, object], chainwork: dict[bytes, int]) -> list[str]:
    """Problems of one wallet's header rows and check state, as the files are (offline)."""
    meta: dict[str, object] = wallet["meta"]          # type: ignore[assignment]
    rows: dict[int, tuple[bytes, bytes, bool]] = wallet["rows"]   # type: ignore[assignment]
    problems = []
    best_hash = meta.get("best_hash")
    best = int(meta.get("best_height", -1))           # type: ignore[arg-type]
    for h, (hh, raw, _) in rows.items():
        if sha256d(raw) != hh:
            problems.append(f"{name}: header row {h} does not hash to its hash")
    # The rows stored with their block, down from the best block, are the chain the wallet
    # took: each one the parent the row above names.
    h = best
    while h > 0 and h in rows and h - 1 in rows and not rows[h - 1][2]:
        if rows[h][1][4:36] != rows[h - 1][0]:
            problems.append(f"{name}: header row {h} does not build on row {h - 1}")
            break
        h -= 1
    if best >= 0 and best in rows and rows[best][0] != best_hash:
        problems.append(f"{name}: the header row at the best height {best} is not the best block")
    work = _checked_work(meta)
    if work is not None:
        height, block_hash, value = work
        if best >= 0 and (height, block_hash) != (best, best_hash):
            problems.append(f"{name}: checked_work names block {height} {block_hash[::-1].hex()[:16]}, "
                            f"the best block is {best}")
        elif block_hash in chainwork and chainwork[block_hash] != value:
            problems.append(f"{name}: checked_work says work {value:#x} up to {height}, the node's "
                            f"chain has {chainwork[block_hash]:#x} there")
    return problems


def synced_wallet(name: str, wallet: dict[str, object], tip_height: int,
                  block_hash: Callable[[int], str], tip_chainwork: int) -> list[str]:
    """Problems of a wallet that caught up with the node (online): its header chain is the
    node's active chain up to the tip and holds nothing above; its checked work, if any, is
    the node's up to the tip."""
    meta: dict[str, object] = wallet["meta"]          # type: ignore[assignment]
    rows: dict[int, tuple[bytes, bytes, bool]] = wallet["rows"]   # type: ignore[assignment]
    problems = []
    best = int(meta.get("best_height", -1))           # type: ignore[arg-type]
    if best != tip_height:
        problems.append(f"{name}: best block {best}, the node's tip {tip_height}")
    for h in sorted(rows):
        hh = rows[h][0]
        if h > tip_height:
            problems.append(f"{name}: header row {h} above the node's tip {tip_height} (the next "
                            f"block must show more work than it)")
            break
        if hh[::-1].hex() != block_hash(h):
            problems.append(f"{name}: header row {h} ({'trusted' if rows[h][2] else 'with its block'}) "
                            f"is not the node's active block there")
            break
    work = _checked_work(meta)
    if work is not None and (work[0] != tip_height or work[2] != tip_chainwork):
        problems.append(f"{name}: checked_work {work[0]} {work[2]:#x}, the node's tip {tip_height} "
                        f"{tip_chainwork:#x}")
    return problems


def make_fresh(backup: Path, dest_dir: Path) -> None:
    """A wallet file for a fresh rescan: `backup` (a copy of a wallet) without any record of
    the chain: no transactions, coins or headers, best block none. Loaded, it catches up from
    its birth height with the same keys."""
    dest_dir.mkdir(mode=0o700, parents=True)
    dest = dest_dir / "wallet.sqlite"
    shutil.copyfile(backup, dest)
    conn = sqlite3.connect(dest)
    try:
        with conn:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # left_headers: the replaced rows (since 12-07; absent from a file older code wrote).
            for table in ("txs", "coins", "block_txs", "headers", "left_headers"):
                if table in present:
                    conn.execute(f"DELETE FROM {table}")
            conn.execute("UPDATE meta SET value = NULL WHERE key = 'best_hash'")
            conn.execute("UPDATE meta SET value = -1 WHERE key = 'best_height'")
            conn.execute("UPDATE meta SET value = 0 WHERE key = 'chain_recheck'")
            conn.execute("DELETE FROM meta WHERE key = 'checked_work'")
    finally:
        conn.close()
