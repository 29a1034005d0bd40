"""What must never be on disk once a wallet is encrypted, and a scan for it.

Shared by the kill -9 tests of `encryptwallet` (tests/test_wallet_encrypt_crash.py, which
imports it as `functional.wallet_secrets`) and the functional ones (`wallet_secrets`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from cleancoin.components.wallet import hd


def secrets_of(seed: bytes) -> list[bytes]:
    """Byte strings no file of an encrypted wallet may hold: the seed (raw and as hex), the
    master key and the first derived private keys of both chains."""
    master = hd.master_key(seed)
    found = [seed, seed.hex().encode(), seed.hex().upper().encode(), master.secret]
    for internal in (False, True):
        for i in range(5):
            found.append(hd.derive_path(master, hd.wallet_key_path(i, internal)).secret)
    return found


def files_holding(directory: Path, needles: list[bytes]) -> list[str]:
    """Names (relative to `directory`) of every file below it, whatever its name, holding
    one of `needles`."""
    hits = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:       # a file the wallet removed while we walked
                continue
            if any(needle in data for needle in needles):
                hits.append(str(path.relative_to(directory)))
    return sorted(hits)


def read_seed(wallet_dir: Path) -> bytes:
    """The plaintext seed of an unencrypted wallet, read without disturbing its owner."""
    db = sqlite3.connect(f"file:{wallet_dir / 'wallet.sqlite'}?mode=ro", uri=True)
    try:
        (seed,) = db.execute("SELECT plaintext FROM secrets WHERE name = 'seed'").fetchone()
    finally:
        db.close()
    assert isinstance(seed, bytes) and len(seed) == 32
    return seed


def committed_state(wallet_dir: Path, scratch: Path) -> tuple[bool, bytes | None]:
    """(encrypted, encrypted seed blob) as a reader finds them in the files as they are: read
    from a copy, so that opening (WAL recovery) cannot change what a scan of the originals
    sees."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(wallet_dir, scratch)
    db = sqlite3.connect(scratch / "wallet.sqlite")
    try:
        (encrypted,) = db.execute("SELECT value FROM meta WHERE key = 'encrypted'").fetchone()
        (blob,) = db.execute("SELECT encrypted FROM secrets WHERE name = 'seed'").fetchone()
    finally:
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return bool(encrypted), blob
