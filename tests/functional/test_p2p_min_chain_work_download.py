"""Functional, both executables: a node whose tip is below the minimum chain work
(-minimumchainwork) downloads no block of a chain whose headers do not show that work.

Regtest blocks carry work 2 each, so the chain up to height h has work 2 * (h + 1); the
victim here is started with a minimum of 0x1000 (4096: height 2047). The attacker, a remote
peer (raw_peer.ChainPeer), has a cheap chain of full blocks forked at genesis: 101 coinbase
blocks, one that splits a coinbase into 6000 outputs, and blocks that spend 2000 of them each,
2000 signatures a block. It offers it as a syncing peer would (it claims the chain's height;
getblocks, getheaders and getdata answered) and pushes its blocks unasked.

On the old code the node downloaded blocks first from whoever offered them: it asked for,
stored, validated (every signature) and connected the whole cheap chain (106 blocks: +5.1 MB
of database, 0.9-1.0 s of the node's CPU, 6001 signatures verified), and it took the pushed
blocks the same way (105 blocks, +5.1 MB, about 1 s). Now, below the minimum, it syncs headers first: it asks for headers,
counts their work without storing them (presync.py), and asks for the blocks of a header
chain only once that chain shows the minimum work; a block nobody asked for whose chain would
be below the minimum is dropped unread, as bitcoind's AcceptBlock drops it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework import TEST_ADDRESS, TestNode, connect_nodes, cpu_seconds, wait_until
from raw_peer import MAGIC, ChainPeer, RawPeer
from test_p2p_header_presync import _header_chain, _known, _wait_for
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.messages import MSG_BLOCK, BlockMessage, GetHeaders, Headers, Inv, InvItem, serialize_message

#: The victim's -minimumchainwork: the work of the regtest chain up to height 2047.
MIN_WORK = 0x1000
#: Outputs of the fan-out transaction; spent SPEND_PER_BLOCK a block, each with a signature.
FAN_OUT = 6000
SPEND_PER_BLOCK = 2000


def _cheap_chain(tag: bytes, extra: int = 0) -> list[Block]:
    """The attacker's chain (module docstring): 101 + 1 + FAN_OUT / SPEND_PER_BLOCK blocks
    from genesis and `extra` coinbase blocks on top, its coinbases and outputs a key of `tag`'s
    (other signatures for each tag: no signature cache helps), times from genesis on."""
    key = PrivateKey(hashlib.sha256(tag).digest())
    pkh = key.public_key.pkh
    blocks: list[Block] = []
    header = REGTEST.genesis_block.header

    def add(txs: list[Transaction], fees: int = 0) -> None:
        nonlocal header
        blocks.append(mine_block(header, len(blocks) + 1, pkh, REGTEST, header.time + 600,
                                 header.bits, txs, fees))
        header = blocks[-1].header

    for _ in range(101):
        add([])
    first = blocks[0].txs[0]
    each = (first.vout[0].value - 100_000) // FAN_OUT
    fan = sign_transaction(Transaction(2, (TxIn(OutPoint(first.txid, 0)),),
                                       tuple(TxOut(each, pkh) for _ in range(FAN_OUT)), 0), [key])
    add([fan], 100_000)
    for start in range(0, FAN_OUT, SPEND_PER_BLOCK):
        spend = Transaction(2, tuple(TxIn(OutPoint(fan.txid, i)) for i in range(start, start + SPEND_PER_BLOCK)),
                            (TxOut(each * SPEND_PER_BLOCK - 100_000, pkh),), 0)
        add([sign_transaction(spend, [key] * SPEND_PER_BLOCK)], 100_000)
    for _ in range(extra):
        add([])
    return blocks


def _work(height: int) -> int:
    return 2 * (height + 1)


def _db_bytes(n: TestNode) -> int:
    return sum(os.path.getsize(n.netdatadir / name) for name in ("chainstate.sqlite", "chainstate.sqlite-wal")
               if (n.netdatadir / name).exists())


def _signatures(blocks: list[Block]) -> int:
    return sum(len(tx.vin) for b in blocks for tx in b.txs[1:])


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    """One fresh node for the module, its minimum chain work MIN_WORK."""
    n = TestNode(0, tmp_path_factory.mktemp("victim"), [f"-minimumchainwork={MIN_WORK:x}"])
    n.start()
    try:
        yield n
    finally:
        n.cleanup()


def _stored(n: TestNode, block: Block) -> bool:
    try:
        n.rpc.getblock(block.hash_hex)
    except Exception:  # noqa: BLE001 - "Block not found" / "Block not available"
        return False
    return True


def _spent(n: TestNode, before: tuple[int, float], what: str, chain: list[Block]) -> dict[str, float]:
    """What the node spent on `chain` since `before` (blocks stored and connected, database
    bytes, node-process CPU, the signatures of the connected blocks, each verified to connect
    them), printed."""
    assert n.process is not None
    height = n.rpc.getblockcount()
    connected = [b for i, b in enumerate(chain[:height]) if n.rpc.getblockhash(i + 1) == b.hash_hex]
    anything = any(t["height"] > 0 for t in n.rpc.getchaintips())      # (else no block to look up)
    spent = {"stored": sum(1 for b in chain if anything and _stored(n, b)), "connected": len(connected),
             "db": _db_bytes(n) - before[0], "cpu": cpu_seconds(n.process.pid) - before[1],
             "signatures": _signatures(connected)}
    print(f"{what}: {spent['stored']} of {len(chain)} blocks stored, {spent['connected']} connected, "
          f"database +{spent['db']} bytes, node CPU {spent['cpu']:.2f} s, "
          f"{spent['signatures']} signatures verified")
    return spent


def test_blocks_pushed_unasked_below_the_minimum_chain_work_are_dropped(victim: TestNode) -> None:
    """The attacker pushes its whole chain as `block` messages nobody asked for (it claims
    height 0, so it is not the node's sync peer). Before: every block stored, validated and
    connected. Now: none stored; the node is still at genesis and in IBD."""
    chain = _cheap_chain(b"pushed")
    assert _work(len(chain)) < MIN_WORK
    assert victim.process is not None
    before = (_db_bytes(victim), cpu_seconds(victim.process.pid))
    attacker = ChainPeer(victim.p2p_port, "127.0.0.9", chain, start_height=0)
    try:
        for block in chain:
            attacker.push(BlockMessage(block))
        attacker.settle()
        spent = _spent(victim, before, "pushed unasked", chain)
        assert attacker.blocks_asked == 0 and not attacker.asked["getblocks"]
    finally:
        attacker.close()
    assert spent["stored"] == spent["connected"] == 0, spent
    assert not [t for t in victim.rpc.getchaintips() if t["height"] > 0]
    assert spent["db"] < 50_000, spent
    assert not _known(victim, chain[0].header)
    info = victim.rpc.getblockchaininfo()
    assert info["blocks"] == info["headers"] == 0 and info["initialblockdownload"] is True


def test_a_chain_offered_below_the_minimum_chain_work_is_not_downloaded(victim: TestNode) -> None:
    """The attacker claims its chain's height and answers every request with it, and
    announces its tip by inv. Before: getblocks, getdata of all its blocks, all stored and
    connected. Now: the node asks for headers instead, counts the chain's work (below the
    minimum), stores nothing and asks for no block."""
    chain = _cheap_chain(b"offered", extra=1)      # (one block more: the old code took it)
    assert victim.process is not None
    before = (_db_bytes(victim), cpu_seconds(victim.process.pid))
    attacker = ChainPeer(victim.p2p_port, "127.0.0.10", chain)
    try:
        attacker.push(Inv((InvItem(MSG_BLOCK, chain[-1].hash),)))
        attacker.settle()
        spent = _spent(victim, before, "offered as a sync peer", chain)
        asked = dict(attacker.asked)
        print(f"the node asked: {asked}, {attacker.blocks_asked} blocks")
        assert attacker.blocks_asked == 0 and not asked.get("getblocks"), asked
        assert asked.get("getheaders"), asked
    finally:
        attacker.close()
    assert spent["stored"] == spent["connected"] == 0, spent
    assert not [t for t in victim.rpc.getchaintips() if t["height"] > 0]
    assert spent["db"] < 50_000, spent
    assert not _known(victim, chain[0].header) and not _known(victim, chain[-1].header)
    info = victim.rpc.getblockchaininfo()
    assert info["headers"] == 0 and info["initialblockdownload"] is True
    assert "Pre-synchronizing blockheaders" in victim.debug_log()


def test_header_presync_shows_its_progress(victim: TestNode) -> None:
    """While headers are counted (not stored), getpeerinfo's `presynced_headers` (bitcoind's
    field) gives the height reached with that peer, getblockchaininfo's `headers` stays at
    what is stored (0) with `initialblockdownload` true, and the log says "Pre-synchronizing
    blockheaders". A peer shows 2000 headers (work 4000, below the minimum) and stalls."""
    genesis = REGTEST.genesis_block.header
    headers = _header_chain(genesis, 2000, b"presync-progress")
    peer = RawPeer(victim.p2p_port, "127.0.0.11")
    try:
        peer.handshake(start_height=5000)
        asked = _wait_for(peer, "getheaders")
        assert isinstance(asked, GetHeaders) and asked.locator[0] == genesis.hash
        peer.send(serialize_message(MAGIC, Headers(tuple(headers))))
        more = _wait_for(peer, "getheaders")
        assert isinstance(more, GetHeaders) and more.locator[0] == headers[-1].hash
        mine = [p for p in victim.rpc.getpeerinfo() if p["addr"].startswith("127.0.0.11:")]
        assert [p["presynced_headers"] for p in mine] == [2000], mine
        info = victim.rpc.getblockchaininfo()
        assert info["headers"] == 0 and info["initialblockdownload"] is True, info
        wait_until(lambda: "Pre-synchronizing blockheaders from peer=" in victim.debug_log()
                   and ", height: 2000 " in victim.debug_log(), what="the presync log line")
    finally:
        peer.close()
    assert not _known(victim, headers[-1])
    others = [p["presynced_headers"] for p in victim.rpc.getpeerinfo()]
    assert all(h == -1 for h in others), others


def test_an_honest_peer_with_the_minimum_chain_work_syncs_the_node(victim: TestNode, tmp_path: Path) -> None:
    """A real node with 2050 blocks (work 4102, above the minimum): the victim counts its
    headers (2000, then 50: the work is there), asks for them again and stores them, then
    downloads their blocks (getdata in batches), reaches the honest tip, leaves IBD, and then
    follows a new block as before (blocks-first above the minimum)."""
    honest = TestNode(1, tmp_path)
    honest.start()
    try:
        honest.rpc.generatetoaddress(2050, TEST_ADDRESS)
        connect_nodes(victim, honest)
        wait_until(lambda: victim.rpc.getbestblockhash() == honest.rpc.getbestblockhash(), 120,
                   what="the victim at the honest tip")
        info = victim.rpc.getblockchaininfo()
        assert info["blocks"] == info["headers"] == 2050 and info["initialblockdownload"] is False, info
        log = victim.debug_log()
        assert "asking for them again to store them" in log
        assert "Synchronizing blockheaders" in log and "headers-first" in log
        honest.rpc.generatetoaddress(1, TEST_ADDRESS)
        wait_until(lambda: victim.rpc.getbestblockhash() == honest.rpc.getbestblockhash(), 30,
                   what="the victim following a new block")
        assert victim.rpc.getblockcount() == 2051
    finally:
        honest.cleanup()
