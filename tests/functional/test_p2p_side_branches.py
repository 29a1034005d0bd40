"""Functional, CleanCoind only (since 12-07: the node's P2P logic, the same code in
CleanCoin-node's node process; framework.node_logic_only): a remote peer cannot fill the node's disk with blocks of a
branch forked deep in the past.

A side branch is stored block by block, so that it can overtake the tip (blocks-first
download). A branch forked far back costs an attacker only that era's difficulty (on main, a
million hashes a block at the start), and each of its blocks may carry up to a megabyte of
transactions that no context-free check refuses; a full disk stops the node (docs/node.md, "A
full or failing disk"). On the old code every such block was stored: the branch showed in
getchaintips and the database grew by its size. Now a branch more than 288 blocks' work behind
the tip is not stored at all (bitcoind's AcceptBlock keeps no less-work block it did not ask
for), the peer is not punished (an honest node on a long-lost branch sends the same), and a
recent fork is still stored. The node asks such a sender for the branch's headers, and stores
its blocks only once they show more work than the tip: so the real chain still overtakes a
cheap one that reached a syncing node first (the last two tests).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable

import pytest

from framework import TEST_ADDRESS, TestNode, connect_nodes, node_logic_only, wait_until
from raw_peer import MAGIC, RawPeer
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import BlockHeader, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.messages import (
    MSG_BLOCK, BlockMessage, GetBlocks, GetData, GetHeaders, Headers, Inv, InvItem, Ping, Pong, Verack, Version, serialize_message,
)

pytestmark = node_logic_only()

JUNK_PKH = hashlib.sha256(b"attacker").digest()[:20]


def _junk(n: int, tag: bytes) -> list[Transaction]:
    return [Transaction(1, (TxIn(OutPoint(hashlib.sha256(tag + b"%d" % i).digest(), 0)),),
                        (TxOut(1, JUNK_PKH),)) for i in range(n)]


def _branch(parent: BlockHeader, height: int, n: int, tag: bytes, txs: int = 2000) -> list:
    blocks, header = [], parent
    for i in range(n):
        height += 1
        block = mine_block(header, height, JUNK_PKH, REGTEST, header.time + 600, header.bits,
                           _junk(txs, tag + b"%d" % i))
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


def test_a_cheap_chain_fed_first_cannot_keep_a_syncing_node_from_the_real_one(node: Callable[..., TestNode]) -> None:
    """Attack on a node that is still syncing: the first peer it meets feeds it a cheap chain
    of its own, forked at genesis, longer than what the node has (on main, a million hashes a
    block before the first retarget), so that this chain becomes its tip. Every block of the
    real chain then starts a branch that lags more than 288 blocks behind that tip, and was not
    stored: the node stayed on the attacker's chain for good, however long the real one. Now
    the node learns the real chain's headers first and stores the blocks of a branch whose
    headers show more work than its tip, as bitcoind's headers-first download does; junk pushed
    without headers of more work is still not stored."""
    honest, victim = node(), node()
    honest.start()
    honest.rpc.generatetoaddress(600, TEST_ADDRESS)
    victim.start()
    peer = RawPeer(victim.p2p_port, "127.0.0.9")
    try:
        peer.handshake()
        cheap = _branch(REGTEST.genesis_block.header, 0, 300, b"cheap", txs=0)
        for block in cheap:
            peer.send(serialize_message(MAGIC, BlockMessage(block)))
        wait_until(lambda: victim.rpc.getbestblockhash() == cheap[-1].hash_hex, 60,
                   what="the attacker's chain as the victim's tip")
    finally:
        peer.close()
    connect_nodes(victim, honest)
    wait_until(lambda: victim.rpc.getbestblockhash() == honest.rpc.getbestblockhash(), 60,
               what="the victim on the real chain")
    assert victim.rpc.getblockcount() == 600
    assert victim.stop() == 0


class _DrippingSyncPeer:
    """An attacker that becomes a syncing node's block-download peer (it claims a far higher
    chain) and keeps that role by answering each getblocks, a few seconds later, with one more
    block of its own cheap chain (on main, a million hashes each): the node's tip moves, so
    the session never stalls nor ends."""

    def __init__(self, port: int, cheap: list, delay: float) -> None:
        self.peer = RawPeer(port, "127.0.0.9")
        self.blocks = {b.hash: b for b in cheap}
        self.last = cheap[-1]
        self.height = len(cheap)
        self.delay = delay
        self.stop = threading.Event()
        nonce = int.from_bytes(os.urandom(8), "little")
        self.peer.send(serialize_message(MAGIC, Version(1, 1, int(time.time()), nonce, "/drip/", 1_000_000, True)))
        seen: set[str] = set()
        while not {"version", "verack"} <= seen:
            msg = self.peer.read_message()
            if msg is not None:
                seen.add(msg.command)
        self.peer.send(serialize_message(MAGIC, Verack()))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        first = True
        while not self.stop.is_set():
            try:
                msg = self.peer.read_message()
            except (ConnectionError, OSError):
                return
            if isinstance(msg, Ping):
                self.peer.send(serialize_message(MAGIC, Pong(msg.nonce)))
            elif isinstance(msg, GetHeaders):
                continue         # (a GetBlocks too) it shows no headers: they would show little work
            elif isinstance(msg, GetBlocks):
                if first:        # the whole cheap chain at once, then one block at a time
                    hashes, first = list(self.blocks), False
                else:
                    if self.stop.wait(self.delay):
                        return
                    self.height += 1
                    block = mine_block(self.last.header, self.height, JUNK_PKH, REGTEST,
                                       self.last.header.time + 600, self.last.header.bits)
                    self.blocks[block.hash], self.last = block, block
                    hashes = [block.hash]
                self.peer.send(serialize_message(MAGIC, Inv(tuple(InvItem(MSG_BLOCK, h) for h in hashes))))
            elif isinstance(msg, GetData):
                for item in msg.items:
                    if item.hash in self.blocks:
                        self.peer.send(serialize_message(MAGIC, BlockMessage(self.blocks[item.hash])))

    def close(self) -> None:
        self.stop.set()
        self.peer.close()
        self.thread.join(10)


@pytest.mark.parametrize("honest_dials", [False, True], ids=["honest-outbound", "honest-inbound"])
def test_a_sync_peer_feeding_a_cheap_chain_slowly_cannot_keep_the_node_from_the_real_one(
        node: Callable[..., TestNode], honest_dials: bool) -> None:
    """The test above, with the attacker keeping the node's block download for itself: it
    claims a far higher chain, so a fresh node syncs from it, and it answers every getblocks
    with one more block of its cheap chain, well within the stall timeout. The node's tip
    kept moving, so the session never ended, and on the old code a block the real chain's
    node announced was fetched, found an orphan, and nothing more: the node was still on the
    attacker's chain 30 s later, and would be for as long as the attacker went on. Now an
    orphan from a peer other than the sync peer makes the node ask that peer for headers;
    they show more work than the tip, and the node takes its download from that peer."""
    honest, victim = node(), node()
    honest.start()
    honest.rpc.generatetoaddress(600, TEST_ADDRESS)
    victim.start()
    cheap = _branch(REGTEST.genesis_block.header, 0, 300, b"cheap", txs=0)
    attacker = _DrippingSyncPeer(victim.p2p_port, cheap, delay=3.0)
    try:
        # The cheap chain is the tip, and the attacker keeps feeding it: the session lives on.
        wait_until(lambda: victim.rpc.getblockcount() > 300, 60, what="the attacker's chain as the victim's tip")
        if honest_dials:
            connect_nodes(honest, victim)        # inbound: it does not take the download over
        else:
            connect_nodes(victim, honest)        # outbound: preferred, it takes the download
        honest.rpc.generatetoaddress(1, TEST_ADDRESS)            # a relay inv: an orphan here
        wait_until(lambda: victim.rpc.getbestblockhash() == honest.rpc.getbestblockhash(), 30,
                   what="the victim on the real chain")
    finally:
        attacker.close()
    assert victim.rpc.getblockcount() == 601
    assert victim.stop() == 0


def _wait_for(peer: RawPeer, command: str) -> object:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = peer.read_message()
        if msg is not None and msg.command == command:
            return msg
    raise AssertionError(f"no {command} from the node")


def test_the_headers_a_lagging_branch_shows_are_checked_and_cost_its_blocks_nothing(
        node: Callable[..., TestNode]) -> None:
    """The other side of the fix above: the node now asks the sender of a block that lags too
    far for its branch's headers. An attacker answering with the headers of its own cheap
    branch (less work than the tip) gets none of its blocks stored, and since headers
    pre-sync (test_p2p_header_presync.py) none of its headers either; a header of bad proof
    of work in an answer costs the connection, as an invalid block does, even one that does
    not connect to anything the node knows (bitcoind's CheckHeadersPoW)."""
    n = node()
    n.start()
    n.rpc.generatetoaddress(300, TEST_ADDRESS)
    tip = n.rpc.getbestblockhash()
    before = _db_bytes(n)
    peer = RawPeer(n.p2p_port, "127.0.0.9")
    try:
        peer.handshake()
        deep = _branch(REGTEST.genesis_block.header, 0, 3, b"deep")
        peer.send(serialize_message(MAGIC, BlockMessage(deep[0])))
        asked = _wait_for(peer, "getheaders")
        assert asked.locator[0] == REGTEST.genesis_block.hash      # from the block's parent
        peer.send(serialize_message(MAGIC, Headers(tuple(b.header for b in deep))))
        for block in deep:
            peer.send(serialize_message(MAGIC, BlockMessage(block)))
        _wait_for(peer, "getheaders")                               # asked again: answered once
        last = deep[2].header
        bad_child = BlockHeader(last.version, last.hash, last.merkle_root, last.time + 1, last.bits, 0)
        while int.from_bytes(bad_child.hash, "little") <= (1 << 255):  # above regtest's target
            bad_child = BlockHeader(bad_child.version, bad_child.prev_hash, bad_child.merkle_root,
                                    bad_child.time, bad_child.bits, bad_child.nonce + 1)
        peer.send(serialize_message(MAGIC, Headers((bad_child,))))
        wait_until(lambda: _closed(peer), 20, what="the node dropping the peer")
    finally:
        peer.close()
    assert n.rpc.getbestblockhash() == tip
    for block in deep:
        assert not _header_known(n, block.hash_hex), "a header of the cheap branch was kept"
        assert not _block_stored(n, block.hash_hex), "a block of the cheap branch was stored"
    assert _db_bytes(n) - before < 100_000
    assert any(b["address"].startswith("127.0.0.9") for b in n.rpc.listbanned())
    assert n.stop() == 0


def _closed(peer: RawPeer) -> bool:
    try:
        peer.read_message()
    except (ConnectionError, OSError):
        return True
    return False


def _block_stored(n: TestNode, block_hash: str) -> bool:
    try:
        n.rpc.getblock(block_hash)
    except Exception:  # noqa: BLE001 - the node's "Block not available" / "not found"
        return False
    return True


def _header_known(n: TestNode, block_hash: str) -> bool:
    try:
        n.rpc.getblockheader(block_hash)
    except Exception:  # noqa: BLE001 - the node's "Block not found"
        return False
    return True
