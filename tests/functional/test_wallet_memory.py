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

from framework import TestNode, is_multiprocess, wait_until

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
