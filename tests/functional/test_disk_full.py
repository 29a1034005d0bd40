"""Functional, both node executables: a full disk handled as bitcoind handles it.

The network datadir (or its wallets/) is a small tmpfs of its own, filled from outside with a
real file, as a full disk is. Measured on the old code (48 MiB tmpfs): generatetoaddress and
sendtoaddress answered -32603 "Internal error" (sqlite3.OperationalError in debug.log), the
node went on, and every peer that sent a block was disconnected as if it had sent garbage.
Now:

- below bitcoind's 50 MiB reserve a block is refused before anything is written, the RPC
  caller reads "Disk space is too low!" (-20), the node says so on stderr and in debug.log
  and stops with exit status 1; it refuses to start until the space is back, then goes on;
- a block from a peer meets the same stop, and the peer is neither disconnected for it nor
  banned; after the restart the block is fetched and accepted;
- a wallet write the disk refuses answers RPC_WALLET_ERROR naming the cause and the file; the
  node (and, for CleanCoin-node, the wallet process) goes on, nothing is lost.

Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cleancoin.components.common.diskfail import free_bytes
from cleancoin.components.rpc.errors import RpcError
from framework import (
    OTHER_ADDRESS, TEST_ADDRESS, TestNode, connect_nodes, is_multiprocess, sync_blocks, wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (needs root)")

MIB = 1 << 20


class SmallDisk:
    """A tmpfs mounted at a directory, and a filler file that makes it full."""

    def __init__(self, where: Path, size_mib: int) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "cleancoin-diskfull",
                        str(where)], check=True)
        self.filler = where / "filler"

    def free(self) -> int:
        return free_bytes(str(self.where))

    def fill(self, leave: int = 0) -> None:
        """Leave about `leave` bytes free (0: not one byte)."""
        size = self.filler.stat().st_size if self.filler.exists() else 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.posix_fallocate(fd, size, max(self.free() - leave, 4096))
            chunk = b"\0" * 4096 if not leave else b""
            while chunk:                     # down to the last byte
                try:
                    os.write(fd, chunk)
                except OSError:
                    chunk = chunk[:len(chunk) // 2]
        finally:
            os.close(fd)
        assert self.free() <= leave + 4096

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False)


@pytest.fixture
def disks() -> Iterator[Callable[[Path, int], SmallDisk]]:
    """Small tmpfs mounts, unmounted at the end. Ask for it before `node`, so that the nodes
    stop (teardown runs in reverse) while their datadirs are still mounted."""
    made: list[SmallDisk] = []

    def make(where: Path, size_mib: int) -> SmallDisk:
        disk = SmallDisk(where, size_mib)
        made.append(disk)
        return disk

    yield make
    for disk in made:
        disk.unmount()


def rpc_error(fn: Callable[..., object], *args: object) -> RpcError:
    try:
        fn(*args)
    except RpcError as exc:
        return exc
    raise AssertionError(f"{fn} succeeded")


def exit_status(node: TestNode, timeout: float = 30.0) -> int:
    assert node.process is not None
    code = node.process.wait(timeout)
    node.process = None
    return code


def stderr_of(node: TestNode) -> str:
    return (node.datadir / "stderr.txt").read_text(errors="replace")


def test_below_the_reserve_the_node_stops_cleanly_and_says_why(disks: Callable[[Path, int], SmallDisk],
                                                                 node: Callable[..., TestNode]) -> None:
    n = node()
    disk = disks(n.netdatadir, 80)        # the network datadir; stderr.txt stays outside
    n.start()
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    disk.fill(leave=10 * MIB)
    err = rpc_error(n.rpc.generatetoaddress, 1, TEST_ADDRESS)
    assert err.code == -20, err
    assert "Disk space is too low!" in err.message and str(n.netdatadir) in err.message, err
    assert "Traceback" not in err.message and "Internal error" not in err.message, err
    assert exit_status(n) == 1
    assert "Error: Disk space is too low!" in stderr_of(n)
    log = n.debug_log()
    assert "Disk space is too low!" in log and "Shutdown: done" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # Still full: bitcoind's start-up check refuses, with a message, exit status 1.
    n.start(wait=False)
    assert exit_status(n) == 1
    assert f"Disk space is low for '{n.netdatadir}'" in stderr_of(n)
    # Space back: nothing was lost, nothing is marked invalid, the node goes on.
    disk.empty()
    n.start()
    assert n.rpc.getblockcount() == 1
    assert all(t["status"] == "active" for t in n.rpc.getchaintips())
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    assert n.rpc.getblockcount() == 2


def test_a_block_from_a_peer_on_a_full_disk_is_not_held_against_the_peer(
        disks: Callable[[Path, int], SmallDisk], node: Callable[..., TestNode]) -> None:
    a, b = node(), node()
    disk = disks(b.netdatadir, 80)
    a.start()
    b.start()
    a.rpc.generatetoaddress(2, TEST_ADDRESS)
    connect_nodes(a, b)
    sync_blocks([a, b])
    disk.fill(leave=10 * MIB)
    tip = a.rpc.generatetoaddress(1, TEST_ADDRESS)[0]
    assert exit_status(b) == 1                      # it stopped itself, cleanly
    log = b.debug_log()
    assert "our disk failed" in log and "Disk space is too low!" in log, log[-3000:]
    for sign in ("Misbehaving", "misbehaving", "invalid block", "internal error on block", "Traceback"):
        assert sign not in log, (sign, log[-3000:])
    assert "Error: Disk space is too low!" in stderr_of(b)
    disk.empty()
    b.start()
    assert b.rpc.listbanned() == []
    assert all(t["status"] in ("active", "headers-only") for t in b.rpc.getchaintips()), b.rpc.getchaintips()
    connect_nodes(a, b)
    assert sync_blocks([a, b]) == tip               # the same block, accepted after the restart
    assert a.rpc.listbanned() == []


def test_a_wallet_write_on_a_full_disk_is_a_wallet_error_and_loses_nothing(
        disks: Callable[[Path, int], SmallDisk], node: Callable[..., TestNode]) -> None:
    """wallets/ on a filesystem of its own (what docs/sandbox.md advises), filled: the chain
    goes on, the wallet answers a clear error, and nothing it had is lost."""
    n = node()
    wallets = disks(n.netdatadir / "wallets", 16)
    n.start()
    n.rpc.createwallet("w")
    address = n.rpc.getnewaddress()
    n.rpc.generatetoaddress(101, address)
    wait_until(lambda: n.rpc.getbalance() == 50, what="the wallet to see its coinbase")
    wallet_pid = None
    if is_multiprocess():
        wallet_pid = [p["pid"] for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"]
    wallets.fill()
    err = rpc_error(n.rpc.sendtoaddress, OTHER_ADDRESS, 1)
    assert err.code == -4, err
    assert "wallet write failed" in err.message and "wallet.sqlite" in err.message, err
    assert "disk full" in err.message or "I/O error" in err.message, err
    assert "Internal error" not in err.message, err
    assert n.rpc.getmempoolinfo()["size"] == 0           # nothing broadcast that is not recorded
    # The node goes on: its chain is not on that filesystem, and the wallet's failure is
    # not the node's; the wallet's block sync fails too, and is retried later.
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    assert n.rpc.getblockcount() == 102
    if wallet_pid is not None:
        now = [p["pid"] for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"]
        assert now == wallet_pid, (wallet_pid, now)       # the wallet process did not crash
    wallets.empty()
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    # Tip 103: the coinbases of heights 1..3 are mature; the sync that failed is made up.
    wait_until(lambda: n.rpc.getbalance() == 150, what="the wallet to catch up")
    txid = n.rpc.sendtoaddress(OTHER_ADDRESS, 1)
    assert txid in n.rpc.getrawmempool()
    n.stop()
    n.start(["-wallet=w"])
    assert 148.99 < n.rpc.getbalance() < 149              # 150 - 1 - fee: nothing lost
