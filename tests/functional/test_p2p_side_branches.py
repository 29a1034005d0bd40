"""Functional, both executables: a remote peer cannot fill the node's disk with blocks of a
branch forked deep in the past.

A side branch is stored block by block, so that it can overtake the tip (blocks-first
download). A branch forked far back costs an attacker only that era's difficulty (on main, a
million hashes a block at the start), and each of its blocks may carry up to a megabyte of
transactions that no context-free check refuses; a full disk stops the node (docs/node.md, "A
full or failing disk"). On the old code every such block was stored: the branch showed in
getchaintips and the database grew by its size. Now a branch more than 288 blocks' work behind
the tip is not stored at all (bitcoind's AcceptBlock keeps no less-work block it did not ask
for), the peer is not punished (an honest node on a long-lost branch sends the same), and a
recent fork is still stored.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from framework import TEST_ADDRESS, TestNode, wait_until
from raw_peer import MAGIC, RawPeer
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import BlockHeader, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.messages import BlockMessage, Ping, serialize_message

JUNK_PKH = hashlib.sha256(b"attacker").digest()[:20]


def _junk(n: int, tag: bytes) -> list[Transaction]:
    return [Transaction(1, (TxIn(OutPoint(hashlib.sha256(tag + b"%d" % i).digest(), 0)),),
                        (TxOut(1, JUNK_PKH),)) for i in range(n)]


def _branch(parent: BlockHeader, height: int, n: int, tag: bytes) -> list:
    blocks, header = [], parent
    for i in range(n):
        height += 1
        block = mine_block(header, height, JUNK_PKH, REGTEST, header.time + 600, header.bits,
                           _junk(2000, tag + b"%d" % i))
        blocks.append(block)
        header = block.header
    return blocks


def _db_bytes(node: TestNode) -> int:
    return sum(os.path.getsize(node.netdatadir / name) for name in ("chainstate.sqlite", "chainstate.sqlite-wal")
               if (node.netdatadir / name).exists())


def test_a_branch_forked_deep_in_the_past_is_not_stored(node: Callable[..., TestNode]) -> None:
    n = node()
    n.start()
    n.rpc.generatetoaddress(300, TEST_ADDRESS)
    tip = n.rpc.getbestblockhash()
    before = _db_bytes(n)
    peer = RawPeer(n.p2p_port, "127.0.0.9")
    try:
        peer.handshake()
        genesis = REGTEST.genesis_block.header
        deep = _branch(genesis, 0, 3, b"deep")              # about 130 kB of junk each
        for block in deep:
            peer.send(serialize_message(MAGIC, BlockMessage(block)))
        # A recent fork (10 blocks behind) is still stored: it could become the tip.
        fork = BlockHeader.from_bytes(bytes.fromhex(n.rpc.getblockheader(n.rpc.getblockhash(290), False)))
        recent = _branch(fork, 290, 1, b"recent")
        peer.send(serialize_message(MAGIC, BlockMessage(recent[0])))
        peer.send(serialize_message(MAGIC, Ping(7)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:                   # the node answers: not banned
            msg = peer.read_message()
            if msg is not None and msg.command == "pong":
                break
        else:
            raise AssertionError("no pong: the peer was dropped")
        wait_until(lambda: any(t["hash"] == recent[0].hash_hex for t in n.rpc.getchaintips()), 20,
                   what="the recent fork in getchaintips")
    finally:
        peer.close()
    tips = {t["hash"] for t in n.rpc.getchaintips()}
    assert not tips & {b.hash_hex for b in deep}, "the deep branch was stored"
    assert n.rpc.getbestblockhash() == tip
    grown = _db_bytes(n) - before
    assert grown < 200_000, grown                            # the recent block, not the deep ones
    assert n.stop() == 0
