"""A full disk, for real: the chain and a wallet store on a small tmpfs (16 MiB) filled to the last
byte (or below bitcoind's 50 MiB reserve), real SQLite.

- A chain write the disk refuses is ChainWriteFailure naming the cause and the file, never a
  ValidationError; the block is not marked invalid, memory stays on the last commit, the
  chain latches the failure (nothing more is written, the owner hears it once), and after
  the space is back the same block is accepted.
- Below the reserve (bitcoind's CheckDiskSpace, MIN_DISK_SPACE) the block is refused before
  anything is written: "Disk space is too low!".
- A wallet write the disk refuses is WalletWriteFailure (RPC_WALLET_ERROR), rolled back
  whole; after the space is back the same write succeeds and nothing was lost.

Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.diskfail import MIN_DISK_SPACE, free_bytes, write_failure_cause
from cleancoin.components.common.errors import ValidationError
from cleancoin.components.common.keys import PrivateKey
from cleancoin.components.node.chain import BLOCK_FAILED_MASK, ChainManager, ChainWriteFailure
from cleancoin.components.node.mining import mine_block
from cleancoin.components.common.primitives import Block
from cleancoin.components.wallet.store import WalletStore, WalletWriteFailure

P = REGTEST
NOW = 2_100_000_000
PKH = PrivateKey(hashlib.sha256(b"disk full key").digest()).public_key.pkh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (needs root)")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own (room for SQLite's WAL, up to 1000 pages of 4 KiB before a
    checkpoint, once the filler is gone)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "cleancoin-diskfull", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Write a filler file until the kernel says ENOSPC; returns it (delete it to free)."""
    filler = fs / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[:len(chunk) // 2]
                if len(chunk) < 512:
                    break
    finally:
        os.close(fd)
    assert free_bytes(str(fs)) < 8192
    return filler


def next_block(cm: ChainManager) -> Block:
    tip = cm.tip
    return mine_block(tip.header, tip.height + 1, PKH, P, tip.header.time + 600, cm.next_bits(tip), (), 0)


def test_a_chain_write_the_disk_refuses_is_a_write_failure_not_an_invalid_block(small_fs: Path) -> None:
    db = small_fs / "chain.sqlite"
    heard: list[ChainWriteFailure] = []
    cm = ChainManager(P, str(db), now=lambda: NOW, min_free_space=None, on_fatal=heard.append)
    for _ in range(3):
        cm.accept_block(next_block(cm))
    filler = fill(small_fs)
    failed: Block | None = None
    cause = ""
    height_before = 0
    for _ in range(300):            # the WAL grows within a few blocks
        block = next_block(cm)
        height_before = cm.height
        try:
            cm.accept_block(block)
        except ChainWriteFailure as exc:
            failed, cause = block, exc.cause
            assert exc.cause in ("disk full", "I/O error"), exc
            assert exc.path == str(db), exc
            break
    assert failed is not None, "the full tmpfs never refused a block"
    # Memory is the last commit; the block is not known as invalid (nor known at all).
    assert cm.height == height_before
    idx = cm.get_index(failed.hash)
    assert idx is None or not idx.status & BLOCK_FAILED_MASK
    assert len(heard) == 1 and heard[0].cause == cause
    # Latched: nothing more is attempted, the owner is not told twice.
    with pytest.raises(ChainWriteFailure):
        cm.accept_block(failed)
    assert len(heard) == 1
    cm.close()
    filler.unlink()
    cm = ChainManager(P, str(db), now=lambda: NOW, min_free_space=None)
    try:
        assert cm.height == height_before
        result = cm.accept_block(failed)
        assert result.new_tip and cm.tip.hash == failed.hash
        assert cm._store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        cm.close()


def test_below_the_reserve_a_block_is_refused_before_any_write(small_fs: Path) -> None:
    db = small_fs / "chain.sqlite"
    heard: list[ChainWriteFailure] = []
    # A 16 MiB filesystem is always below bitcoind's 50 MiB reserve: the node's default.
    cm = ChainManager(P, str(db), now=lambda: NOW, on_fatal=heard.append)
    try:
        assert free_bytes(str(small_fs)) < MIN_DISK_SPACE
        block = next_block(cm)
        with pytest.raises(ChainWriteFailure) as info:
            cm.accept_block(block)
        assert info.value.cause == "Disk space is too low!"
        assert info.value.path == str(small_fs)
        assert not isinstance(info.value, ValidationError)
        assert cm.get_index(block.hash) is None and cm.height == 0
        assert [h.cause for h in heard] == ["Disk space is too low!"]
    finally:
        cm.close()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == 1      # genesis only
    finally:
        raw.close()


def test_write_failure_cause_tells_the_disk_from_the_rest(tmp_path: Path) -> None:
    assert write_failure_cause(OSError(errno.ENOSPC, "No space left on device")) == "disk full"
    assert write_failure_cause(OSError(errno.EIO, "Input/output error")) == "I/O error"
    assert write_failure_cause(OSError(errno.ENOENT, "No such file")) is None
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("CREATE TABLE t (k PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as info:
        conn.execute("INSERT INTO t VALUES (1)")
    assert write_failure_cause(info.value) is None          # a constraint is not the disk
    conn.close()


def test_a_wallet_write_the_disk_refuses_is_a_wallet_error_and_loses_nothing(small_fs: Path) -> None:
    netdir = small_fs / "regtest"
    store = WalletStore.create(netdir, "w", "regtest")
    keys_before = len(store.keys())
    filler = fill(small_fs)
    # Compressed-key shaped bytes: the store checks the shape only, deriving 2000 keys is slow.
    pubkeys = [b"\x02" + hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2000)]
    first = store.next_index(False)
    failure: WalletWriteFailure | None = None
    try:
        # Fresh pages for 2000 rows: more than a filled tmpfs can give.
        store.add_keys(False, first, pubkeys)
    except WalletWriteFailure as exc:
        failure = exc
    assert failure is not None, "the full tmpfs took 2000 keys"
    assert failure.rpc_code == -4 and failure.cause in ("disk full", "I/O error")
    assert str(failure.path).endswith("wallet.sqlite")
    assert "nothing was changed" in failure.rpc_message
    assert len(store.keys()) == keys_before and store.next_index(False) == first
    filler.unlink()
    with contextlib.closing(store):
        added = store.add_keys(False, first, pubkeys)
        assert len(added) == 2000 and store.next_index(False) == first + 2000
    reopened = WalletStore.open(netdir, "w", "regtest")
    with contextlib.closing(reopened):
        assert len(reopened.keys()) == keys_before + 2000


def test_encrypting_a_wallet_on_a_full_disk_changes_nothing(small_fs: Path) -> None:
    """encryptwallet rewrites the database into a fresh file: on a full disk that file cannot
    be made, the wallet error says so, and the wallet stays unencrypted and whole."""
    netdir = small_fs / "regtest"
    store = WalletStore.create(netdir, "w", "regtest")
    with store.seed() as seed:
        plain = bytes(seed.get())
    filler = fill(small_fs)
    with pytest.raises(WalletWriteFailure) as info:
        store.encrypt_wallet("pass", scrypt_n=1 << 10)
    assert info.value.cause in ("disk full", "I/O error"), info.value
    assert not store.encrypted
    with store.seed() as seed:
        assert bytes(seed.get()) == plain
    assert not list(netdir.glob("wallets/w/*.rewrite*"))
    filler.unlink()
    with contextlib.closing(store):
        store.encrypt_wallet("pass", scrypt_n=1 << 10)
        assert store.encrypted
        with store.unlock("pass") as seed:
            assert bytes(seed.get()) == plain


def test_creating_a_wallet_on_a_full_disk_is_a_wallet_error_and_leaves_nothing(small_fs: Path) -> None:
    netdir = small_fs / "regtest"
    WalletStore.create(netdir, "first", "regtest").close()     # wallets/ exists
    filler = fill(small_fs)
    with pytest.raises(WalletWriteFailure) as info:
        WalletStore.create(netdir, "w", "regtest")
    assert info.value.cause in ("disk full", "I/O error"), info.value
    assert not (netdir / "wallets" / "w" / "wallet.sqlite").exists()
    filler.unlink()
    WalletStore.create(netdir, "w", "regtest").close()          # the name is free, it works


def test_a_peer_whose_block_meets_a_full_disk_is_neither_dropped_nor_banned(small_fs: Path,
                                                                            tmp_path: Path) -> None:
    """Two real P2P nodes over TCP; the receiver's chain is on a full tmpfs and has no reserve
    check, so the disk itself refuses a block (SQLITE_FULL). The old code disconnected the
    sender ("internal error on block") and would do so with every peer. Now the sender stays
    connected and unbanned, the chain latches the failure, and once the space is back the
    same blocks arrive from the same peer and are accepted."""
    from cleancoin.components.node.mempool import Mempool
    from cleancoin.components.node.node import ChainViewAdapter
    from cleancoin.components.node.p2p import P2PNode

    fast = {"ping_interval": 30.0, "ping_timeout": 30.0, "handshake_timeout": 5.0,
            "block_download_timeout": 5.0, "reconnect_interval": 0.2, "connect_timeout": 2.0}
    src = ChainManager(P, str(tmp_path / "src.sqlite"), now=lambda: NOW)
    for _ in range(150):
        src.accept_block(next_block(src))

    def p2p(chain: ChainManager, **kw: object) -> P2PNode:
        return P2PNode(chain, Mempool(P, ChainViewAdapter(chain)), bind="127.0.0.1", **fast, **kw)  # type: ignore[arg-type]

    async def until(pred: object, what: str, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():        # type: ignore[operator]
            assert loop.time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def main() -> None:
        sender = p2p(src, listen=True, port=0)
        await sender.start()
        heard: list[ChainWriteFailure] = []
        dst = ChainManager(P, str(small_fs / "dst.sqlite"), now=lambda: NOW, min_free_space=None,
                           on_fatal=heard.append)
        filler = fill(small_fs)
        receiver = p2p(dst, listen=False, connect=[f"127.0.0.1:{sender.port}"])
        await receiver.start()
        try:
            await until(lambda: heard, "the full disk to refuse a block")
            await asyncio.sleep(0.5)           # time for a wrong disconnect or ban to happen
            assert receiver.ban_list() == [] and sender.ban_list() == []
            assert [p for p in receiver.peer_info() if p["version"]], "the sender was dropped"
            assert dst.height < src.height
            known = [dst.get_index(src.block_at_height(h).hash) for h in range(1, src.height + 1)]  # type: ignore[union-attr]
            assert not [i for i in known if i is not None and i.status & BLOCK_FAILED_MASK]
        finally:
            await receiver.stop()
            dst.close()
        filler.unlink()
        again = ChainManager(P, str(small_fs / "dst.sqlite"), now=lambda: NOW, min_free_space=None)
        receiver = p2p(again, listen=False, connect=[f"127.0.0.1:{sender.port}"])
        await receiver.start()
        try:
            await until(lambda: again.tip.hash == src.tip.hash, "the blocks to be accepted")
        finally:
            await receiver.stop()
            await sender.stop()
            again.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        src.close()
