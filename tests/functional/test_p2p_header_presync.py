"""Functional, CleanCoind only (since 12-07: the node's P2P logic, the same code in
CleanCoin-node's node process; framework.node_logic_only): a remote peer cannot make the node store headers of a branch
that does not lead to more work than its tip (headers pre-sync, as bitcoind 24's).

Since the node asks the sender of a block that lags far behind its tip for that branch's
headers (test_p2p_side_branches.py), a peer could answer with headers of its own: each costs
only proof of work at its era's difficulty (on regtest, two hashes), and each was stored in
the chain database and in the in-memory block index, and loaded again at every start. h34
measured 40,000 such entries: 48 MiB of RSS and 8.8 MB of database. Now a branch's headers
are checked and their work counted per peer, without storing them, until they show more work
than the tip; then the peer is asked for them again and they are stored (each one matching
what was counted), and the download of the branch's blocks goes on as before.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from framework import TEST_ADDRESS, TestNode, connect_nodes, node_logic_only, wait_until
from raw_peer import MAGIC, RawPeer
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.hashes import hash_to_hex
from cleancoin.components.common.primitives import BlockHeader
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.messages import BlockMessage, GetHeaders, Headers, serialize_message

JUNK_PKH = hashlib.sha256(b"attacker").digest()[:20]
pytestmark = node_logic_only()

#: Rounds of the attack in CI (each: one lagging block, one getheaders, one answer).
ROUNDS = int(os.environ.get("PRESYNC_ATTACK_ROUNDS", "8"))
#: Headers per answer: each answer's branch forks at genesis and stays below the tip's work.
PER_ROUND = 250


def _header_chain(parent: BlockHeader, n: int, tag: bytes) -> list[BlockHeader]:
    """`n` headers on top of `parent`, each with valid regtest proof of work (about two
    hashes each) and a merkle root of its own, so that every chain is new to the node."""
    out: list[BlockHeader] = []
    prev = parent
    for i in range(n):
        root = hashlib.sha256(tag + b"/%d" % i).digest()
        nonce = 0
        while True:
            h = BlockHeader(prev.version, prev.hash, root, prev.time + 60, prev.bits, nonce)
            if int.from_bytes(h.hash, "little") <= REGTEST.pow_limit:
                break
            nonce += 1
        out.append(h)
        prev = h
    return out


def _db_bytes(node: TestNode) -> int:
    return sum(os.path.getsize(node.netdatadir / name) for name in ("chainstate.sqlite", "chainstate.sqlite-wal")
               if (node.netdatadir / name).exists())


def _rss_kib(node: TestNode) -> int:
    """The node process's resident set (CleanCoind; for CleanCoin-node the node process, which
    holds the block index)."""
    assert node.process is not None
    with open(f"/proc/{node.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _wait_for(peer: RawPeer, command: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = peer.read_message()
        if msg is not None and msg.command == command:
            return msg
    raise AssertionError(f"no {command} from the node")


def _known(n: TestNode, header: BlockHeader) -> bool:
    try:
        n.rpc.getblockheader(hash_to_hex(header.hash))
    except Exception:  # noqa: BLE001 - the node's "Block not found"
        return False
    return True


def test_headers_of_a_branch_with_less_work_than_the_tip_are_not_stored(
        node: Callable[..., TestNode]) -> None:
    """The attack: the node at height 300; a peer sends a block forked at genesis (it lags:
    not stored, and the node asks for the branch's headers), then answers the getheaders
    with 250 headers of a fresh branch forked at genesis (less work than the tip), and again,
    ROUNDS times. Then the same peer shows the headers of a branch with more work than the
    tip: those are stored (the node asks for them a second time), so the refusal is about
    work, not about the peer or the path."""
    n = node()
    n.start()
    n.rpc.generatetoaddress(300, TEST_ADDRESS)
    tip = n.rpc.getbestblockhash()
    genesis = REGTEST.genesis_block.header
    trigger = mine_block(genesis, 1, JUNK_PKH, REGTEST, genesis.time + 600, genesis.bits)
    db_before, rss_before = _db_bytes(n), _rss_kib(n)
    better = _header_chain(genesis, 302, b"more-work")
    peer = RawPeer(n.p2p_port, "127.0.0.9")
    sent: list[BlockHeader] = []
    try:
        peer.handshake()
        # Unsolicited (no getheaders outstanding): read by nobody, even with more work.
        peer.send(serialize_message(MAGIC, Headers(tuple(better))))
        peer.sync(0)
        assert not _known(n, better[0]) and not _known(n, better[-1])
        for r in range(ROUNDS):
            chain = _header_chain(genesis, PER_ROUND, b"low-work-%d" % r)
            peer.send(serialize_message(MAGIC, BlockMessage(trigger)))
            asked = _wait_for(peer, "getheaders")
            assert isinstance(asked, GetHeaders)
            peer.send(serialize_message(MAGIC, Headers(tuple(chain))))
            sent.extend(chain)
        peer.sync(1)
        db_grown, rss_grown = _db_bytes(n) - db_before, _rss_kib(n) - rss_before
        print(f"after {len(sent)} low-work headers: database +{db_grown} bytes, RSS +{rss_grown} KiB")
        stored = [h for h in sent[PER_ROUND - 1::PER_ROUND] if _known(n, h)]   # each branch's last
        tips = [t for t in n.rpc.getchaintips() if t["status"] == "headers-only"]
        assert not stored, f"{len(stored)} of {ROUNDS} low-work branches stored ({len(tips)} headers-only tips)"
        assert not tips, tips
        assert db_grown < 50_000, db_grown

        # Allowed: a branch with more work than the tip (302 headers from genesis against
        # 301 blocks) is stored; all in one answer, at once.
        peer.send(serialize_message(MAGIC, BlockMessage(trigger)))
        _wait_for(peer, "getheaders")
        peer.send(serialize_message(MAGIC, Headers(tuple(better))))
        peer.sync(2)
        assert _known(n, better[-1]) and _known(n, better[0])
        assert any(t["hash"] == hash_to_hex(better[-1].hash) and t["status"] == "headers-only"
                   for t in n.rpc.getchaintips())
    finally:
        peer.close()
    assert n.rpc.getbestblockhash() == tip               # headers alone never move the tip
    # Nothing of the low-work branches comes back at the next start either.
    assert n.stop() == 0
    n.start()
    assert not [h for h in sent[PER_ROUND - 1::PER_ROUND] if _known(n, h)]
    assert _known(n, better[-1])
    assert n.stop() == 0


def _ask(peer: RawPeer) -> GetHeaders:
    msg = _wait_for(peer, "getheaders")
    assert isinstance(msg, GetHeaders)
    return msg


def test_a_long_branch_is_counted_then_asked_again_and_stored_only_as_counted(
        node: Callable[..., TestNode]) -> None:
    """A branch that needs more than one answer to show more work than the tip (2102 headers
    from genesis against 2101 blocks): the node counts the first 2000 without storing them,
    asks for more, and once the work is there asks for the branch again from its start. A
    peer that answers the second round with other headers (here: a branch of the same length
    but other headers, as a peer would to get low-work headers stored after showing work
    once) gets nothing stored and its session dropped; answered with the headers counted,
    the branch is stored, and the node goes on to download its blocks from that peer."""
    n = node()
    n.start()
    n.rpc.generatetoaddress(2100, TEST_ADDRESS)
    genesis = REGTEST.genesis_block.header
    trigger = mine_block(genesis, 1, JUNK_PKH, REGTEST, genesis.time + 600, genesis.bits)
    branch = _header_chain(genesis, 2102, b"long")
    decoy = _header_chain(genesis, 2000, b"decoy")
    peer = RawPeer(n.p2p_port, "127.0.0.9")
    try:
        peer.handshake()
        for liar in (True, False):
            started = time.monotonic()
            peer.send(serialize_message(MAGIC, BlockMessage(trigger)))
            assert _ask(peer).locator[0] == genesis.hash
            peer.send(serialize_message(MAGIC, Headers(tuple(branch[:2000]))))
            assert _ask(peer).locator[0] == branch[1999].hash          # full answer: more?
            peer.send(serialize_message(MAGIC, Headers(tuple(branch[2000:]))))
            assert _ask(peer).locator[0] == genesis.hash               # again, from the start
            assert not _known(n, branch[0]) and not _known(n, branch[-1])
            if liar:
                peer.send(serialize_message(MAGIC, Headers(tuple(decoy))))
                peer.sync(3)
                assert not _known(n, decoy[0]) and not _known(n, decoy[-1]) and not _known(n, branch[0])
                continue
            peer.send(serialize_message(MAGIC, Headers(tuple(branch[:2000]))))
            assert _ask(peer).locator[0] == branch[1999].hash
            peer.send(serialize_message(MAGIC, Headers(tuple(branch[2000:]))))
            assert _wait_for(peer, "getblocks") is not None          # the branch's blocks next
            print(f"honest branch of {len(branch)} headers: stored after 4 answers in "
                  f"{time.monotonic() - started:.2f} s")
        assert _known(n, branch[0]) and _known(n, branch[1999]) and _known(n, branch[-1])
        assert not _known(n, decoy[0])
        assert any(t["hash"] == hash_to_hex(branch[-1].hash) and t["status"] == "headers-only"
                   for t in n.rpc.getchaintips())
    finally:
        peer.close()
    assert n.stop() == 0


def test_a_branch_whose_headers_had_to_be_counted_first_is_downloaded(
        node: Callable[..., TestNode]) -> None:
    """Between two real nodes: the victim's own chain (2100 blocks) and the other node's
    (2200, forked at genesis, mined an hour later: other blocks). The other node's first
    headers answer (2000) has less work than the victim's tip, so it is counted, not stored;
    the rest shows more work, the headers are asked for again and stored, and the victim
    downloads and stores that branch's blocks, which lag far behind its tip until the last
    (the reorganisation that follows is the one test_p2p_side_branches's cheap-chain test
    waits for; 2100 blocks deep it takes 15-40 s here, too long for CI)."""
    victim, honest = node(), node()
    victim.start()
    honest.start()
    victim.rpc.generatetoaddress(2100, TEST_ADDRESS)
    honest.rpc.setmocktime(int(time.time()) + 3600)
    honest.rpc.generatetoaddress(2200, TEST_ADDRESS)
    honest.rpc.setmocktime(0)
    far = honest.rpc.getblockhash(300)
    assert victim.rpc.getblockhash(1) != honest.rpc.getblockhash(1)
    connect_nodes(victim, honest)
    wait_until(lambda: _known(victim, BlockHeader.from_bytes(bytes.fromhex(
        honest.rpc.getblockheader(honest.rpc.getbestblockhash(), False)))), 30,
               what="the other chain's headers on the victim")
    log = victim.debug_log()
    assert "asking for them again to store them" in log, "the branch was not counted first"
    wait_until(lambda: _has_block(victim, far), 60, what="a block 1800 behind the victim's tip stored")
    assert victim.stop() == 0


def _has_block(n: TestNode, block_hash: str) -> bool:
    try:
        n.rpc.getblock(block_hash)
    except Exception:  # noqa: BLE001 - "Block not available" / "Block not found"
        return False
    return True
