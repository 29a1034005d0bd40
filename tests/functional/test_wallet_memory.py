"""Functional, both executables: an unlocked wallet's seed lies in memory the kernel never
writes to swap, in the process that really holds it (CleanCoind itself, or CleanCoin-node's
sandboxed wallet process), and is gone once the wallet is locked again.

Read from outside, as the kernel reports it (/proc/PID/smaps: "Locked", and VmFlags "dd", left
out of core dumps): a mapping of one page that appears with walletpassphrase and disappears
with walletlock. Before components/wallet/locked_memory.py the wallet process had no locked
memory at all: its seed lay in the heap, where the kernel may swap it out. Reading another
process's smaps needs root for the sandboxed wallet process (it is not dumpable).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from framework import TestNode, is_multiprocess, memory_holds, wait_until

PASSPHRASE = "locked memory test"


def _holder(node: TestNode) -> int:
    if not is_multiprocess():
        assert node.process is not None
        return node.process.pid
    procs = [p for p in node.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"]
    assert len(procs) == 1 and procs[0]["pid"], procs
    return int(procs[0]["pid"])


def _locked_pages(pid: int) -> list[str]:
    """The one-page mappings of `pid` that are locked and left out of core dumps."""
    found, current, fields = [], "", {}
    with open(f"/proc/{pid}/smaps") as handle:
        lines = handle.read().splitlines()
    for line in [*lines, "end-of-file x"]:
        head = line.split()[0] if line.split() else ""
        if "-" in head and ":" not in head:
            if current and fields.get("Size") == "4 kB" and fields.get("Locked") == "4 kB" \
                    and "dd" in fields.get("VmFlags", "").split():
                found.append(current)
            current, fields = head, {}
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return found


def test_an_unlocked_seed_is_in_locked_memory_and_gone_after_walletlock(node: Callable[..., TestNode]) -> None:
    if is_multiprocess() and os.geteuid() != 0:
        pytest.skip("reads the smaps of the sandboxed wallet process, which is not dumpable (needs root)")
    n = node()
    n.start()
    n.rpc.createwallet("w", False, False, PASSPHRASE)
    pid = _holder(n)
    # createwallet keeps the new seed unlocked for a second (it fills the keypool); then
    # nothing of the process is a locked page.
    wait_until(lambda: not _locked_pages(pid), 10, what="the new wallet to lock itself")
    n.client.call("walletpassphrase", PASSPHRASE, 600, wallet="w")
    assert len(_locked_pages(pid)) == 1, _locked_pages(pid)
    n.client.call("walletlock", wallet="w")
    assert not _locked_pages(pid), "the seed's page outlived walletlock"
    assert n.stop() == 0


def _outside_locked_pages(pid: int, needles: dict[str, bytes], *, skip_locked: bool = True) -> list[str]:
    """The names of `needles` found in `pid`'s readable memory outside its locked one-page
    mappings (the seed's own page is where the seed belongs), or anywhere."""
    names = {needle: name for name, needle in needles.items()}
    held = memory_holds(pid, list(needles.values()), _locked_pages(pid) if skip_locked else ())
    return sorted(names[needle] for needle in held)


def test_after_walletpassphrase_no_copy_of_the_seed_or_its_master_key_is_left_in_ordinary_memory(
        node: Callable[..., TestNode]) -> None:
    """Read from outside: walletpassphrase decrypts the seed and derives the keypool from it;
    the seed and the master key derived from it must then be only in the locked page, not in
    freed heap blocks the kernel may swap out."""
    if os.geteuid() != 0:
        pytest.skip("reads the memory of the wallet process (needs root)")
    import sqlite3

    from cleancoin.components.wallet.hd import master_key
    n = node()
    n.start()
    n.rpc.createwallet("w")
    path = n.netdatadir / "wallets" / "w" / "wallet.sqlite"
    n.client.call("encryptwallet", PASSPHRASE, wallet="w")
    assert n.stop() == 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (blob,) = conn.execute("SELECT encrypted FROM secrets WHERE name = 'seed'").fetchone()
    finally:
        conn.close()
    from cleancoin.components.wallet.crypto import SEED_PURPOSE, EncryptedBlob, decrypt
    seed = decrypt(EncryptedBlob.from_bytes(blob), PASSPHRASE, purpose=SEED_PURPOSE)
    master = master_key(seed)
    needles = {"seed": seed, "master key": master.secret, "master chain code": master.chain_code}
    n.start()
    n.rpc.loadwallet("w")
    pid = _holder(n)
    assert _outside_locked_pages(pid, needles) == []
    n.client.call("walletpassphrase", PASSPHRASE, 600, wallet="w")
    n.client.call("getnewaddress", wallet="w")
    assert len(_locked_pages(pid)) == 1
    # The scan does find the seed, in its page.
    assert _outside_locked_pages(pid, needles, skip_locked=False) == ["seed"]
    assert _outside_locked_pages(pid, needles) == []
    # Keys derived as blocks pay the wallet (keypool), a payment signed, the passphrase
    # changed, a message signed: each derives from the master key. On main the master key's
    # secret stayed in the heap after the first (coincurve.PrivateKey's x-only keypair and
    # the freed digests and concatenations of the derivation).
    n.rpc.generatetoaddress(101, n.client.call("getnewaddress", wallet="w"))
    assert _outside_locked_pages(pid, needles) == [], "after deriving keys"
    n.client.call("sendtoaddress", n.client.call("getnewaddress", wallet="w"), 1, wallet="w")
    assert _outside_locked_pages(pid, needles) == [], "after signing a payment"
    n.client.call("walletpassphrasechange", PASSPHRASE, PASSPHRASE + "2", wallet="w")
    n.client.call("walletpassphrase", PASSPHRASE + "2", 600, wallet="w")
    n.client.call("signmessage", n.client.call("getnewaddress", "", "legacy", wallet="w"), "m", wallet="w")
    assert _outside_locked_pages(pid, needles) == [], "after a passphrase change and signmessage"
    assert n.stop() == 0
