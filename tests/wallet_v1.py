"""A wallet file of schema version 1 (CleanCoin before the wallet's header chain), made with
version 1's own schema definition, for the tests that a file from then still loads
(tests/test_wallet_headers.py, tests/functional/test_wallet_upgrade.py). Not a test file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

#: The wallet schema of version 1, as components/wallet/store.py defined it then.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE secrets (name TEXT PRIMARY KEY, plaintext BLOB, encrypted BLOB);
CREATE TABLE keys (
    internal INTEGER NOT NULL, idx INTEGER NOT NULL, pubkey BLOB NOT NULL,
    pkh BLOB NOT NULL UNIQUE, address TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal, idx));
CREATE TABLE txs (
    txid BLOB PRIMARY KEY, raw BLOB NOT NULL, block_hash BLOB, block_height INTEGER,
    block_pos INTEGER, time INTEGER NOT NULL, abandoned INTEGER NOT NULL DEFAULT 0,
    conflicted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX txs_height ON txs (block_height);
CREATE TABLE coins (
    txid BLOB NOT NULL REFERENCES txs (txid), n INTEGER NOT NULL, value INTEGER NOT NULL,
    pkh BLOB NOT NULL, is_coinbase INTEGER NOT NULL, spent_by BLOB REFERENCES txs (txid),
    locked INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (txid, n));
CREATE INDEX coins_spent_by ON coins (spent_by);
CREATE TABLE labels (address TEXT PRIMARY KEY, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS block_txs (
    block_hash BLOB NOT NULL, txid BLOB NOT NULL, height INTEGER NOT NULL,
    pos INTEGER NOT NULL, PRIMARY KEY (block_hash, txid)) WITHOUT ROWID;
"""


def make_v1_wallet(netdir: Path, name: str, network: str, best: tuple[bytes, int] | None) -> Path:
    """`<netdir>/wallets/<name>/wallet.sqlite` as version 1 code created it (0700/0600), at
    best block `best` (hash, height) or none; returns the file's path."""
    d = netdir / "wallets" / name
    d.mkdir(parents=True, mode=0o700)
    path = d / "wallet.sqlite"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    meta = {"version": 1, "network": network, "birth_height": 0,
            "best_hash": best[0] if best else None, "best_height": best[1] if best else -1,
            "encrypted": 0, "next_index_0": 0, "next_index_1": 0, "scrub_pending": 0}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.execute("INSERT INTO secrets VALUES ('seed', ?, NULL)", (os.urandom(32),))
    conn.commit()
    conn.close()
    return path
