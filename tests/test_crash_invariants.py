"""The crash campaign's storage invariants (tests/functional/crash_invariants.py) hold on sound
files and name each fault planted in a copy: a block_sums row that is not its block's CRC-32 or
is missing, a wallet header row that does not build on the one below, a checked_work that is
not the node's chainwork at the best block, a header row above the node's tip."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from cleancoin.components.wallet.store import WalletStore
from cleancoin.components.wallet.wallet import Wallet
from functional.crash_invariants import chain_files, read_wallet, synced_wallet, wallet_headers
from test_wallet_reorg_crash import P, _open_chain, _template


def _synced(path: Path) -> None:
    """The template's wallet caught up with the node's branch (as after a restart)."""
    cm, chain = _open_chain(path)

    async def go() -> None:
        w = Wallet("w", WalletStore.open(path, "w", P.name), chain)
        await w.sync()
        await w.close()

    try:
        asyncio.run(go())
    finally:
        cm.close()


def _edit(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            assert conn.execute(sql, params).rowcount == 1, sql
    finally:
        conn.close()


def test_the_invariants_hold_on_sound_files_and_name_each_planted_fault(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _template(good)
    _synced(good)
    scratch = tmp_path / "scratch"
    wallet_db = Path("wallets") / "w" / "wallet.sqlite"
    problems, work = chain_files(good / "chain.sqlite", scratch)
    assert problems == []
    files = read_wallet(good / wallet_db, scratch)
    assert wallet_headers("w", files, work) == []
    cm, _ = _open_chain(good)
    tip = cm.tip
    active = {h: cm.block_at_height(h).hash[::-1].hex() for h in range(tip.height + 1)}  # type: ignore[union-attr]
    cm.close()
    assert synced_wallet("w", files, tip.height, active.__getitem__, tip.chainwork) == []

    def planted(name: str, db: Path, sql: str, *params: object) -> Path:
        bad = tmp_path / name
        shutil.copytree(good, bad)
        _edit(bad / db, sql, *params)
        return bad

    bad = planted("crc", Path("chain.sqlite"), "UPDATE block_sums SET crc32 = crc32 + 1 WHERE hash = ?", tip.hash)
    assert "is not the CRC-32 of its stored bytes" in " ".join(chain_files(bad / "chain.sqlite", scratch)[0])
    bad = planted("nosum", Path("chain.sqlite"), "DELETE FROM block_sums WHERE hash = ?", tip.hash)
    assert "stored without its block_sums row" in " ".join(chain_files(bad / "chain.sqlite", scratch)[0])
    bad = planted("link", wallet_db, "UPDATE headers SET hash = ? WHERE height = ?", bytes(32), tip.height - 1)
    found = wallet_headers("w", read_wallet(bad / wallet_db, scratch), work)
    assert any("does not hash to its hash" in p for p in found), found
    bad = planted("work", wallet_db, "UPDATE meta SET value = ? WHERE key = 'checked_work'",
                  f"{tip.height} {tip.hash.hex()} {tip.chainwork + 2:x}")
    found = wallet_headers("w", read_wallet(bad / wallet_db, scratch), work)
    assert any("the node's chain has" in p for p in found), found
    bad = planted("above", wallet_db, "INSERT INTO headers SELECT height + 1, hash, header, 1 FROM headers "
                  "WHERE height = ?", tip.height)
    found = synced_wallet("w", read_wallet(bad / wallet_db, scratch), tip.height, active.__getitem__, tip.chainwork)
    assert any("above the node's tip" in p for p in found), found
