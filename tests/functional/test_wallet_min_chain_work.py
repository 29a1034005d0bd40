"""Functional: the minimum chain work (h40; chainparams.py, -minimumchainwork, bitcoind's
nMinimumChainWork) for the wallet's anchor and the syncing node.

A wallet's first start took its anchor (wallet/headers.py) from its node on trust, and the
node had no minimum chain work: a node already compromised when the wallet was created, or an
honest node still syncing that a peer had fed a cheap chain, chose the branch the wallet
anchored on, however little work it had, and the wallet then counted payments on it. Now the
wallet checks the node's header chain from genesis itself (Chain.get_headers) and takes no
anchor from a chain below the minimum chain work: it waits and says so (getwalletinfo's
`anchor`, its log). The node stays in initial block download while its tip is below the
minimum, and its headers pre-sync stores no branch that does not reach it.

Regtest's minimum chain work is 0 (as bitcoind's); these tests set it with -minimumchainwork.
Every regtest block carries work 2 (bits 0x207fffff), so the chain up to height h has work
2 * (h + 1).
"""

from __future__ import annotations

import time
from decimal import Decimal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import chain_attacks
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.hashes import hash_to_hex
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.p2p.messages import MSG_BLOCK, Headers, Inv, InvItem, serialize_message
from cleancoin.components.rpc.errors import RpcError
from framework import TEST_ADDRESS, TestNode, connect_nodes, is_multiprocess, wait_until
from raw_peer import MAGIC, RawPeer, push_blocks
from test_p2p_header_presync import JUNK_PKH, _header_chain, _known, _wait_for
from test_sandbox_attacks import AttackedNode, home_base  # noqa: F401 - a fixture

#: Work of the regtest chain up to height 199.
MIN_WORK = 400


def _anchor(node: TestNode) -> dict[str, Any]:
    return dict(node.rpc.getwalletinfo().get("anchor") or {})


def _wallet_height(node: TestNode) -> int:
    return int(node.rpc.getwalletinfo()["lastprocessedblock"]["height"])


def _new_wallet_under_attack(home_base: Path, variables: dict[str, Any]) -> tuple[TestNode, Path, str, str]:
    """A CleanCoin-node compromised by chain_attacks.NODE_ANCHORS_ON_A_CHEAP_BRANCH (with
    `variables`), 300 real blocks, a wallet created while the node shows its branch, and the
    branch's payment to the wallet's first address made: the node, the attack's control file,
    that address and the fake payment's txid. The caller stops the node."""
    a = AttackedNode(home_base, node=chain_attacks.NODE_ANCHORS_ON_A_CHEAP_BRANCH,
                     extra=(f"-minimumchainwork={MIN_WORK:x}",), variables=variables)
    a.start()
    node = a.node
    try:
        assert a.result("node", timeout=60)["armed"]["escaped"] is False
        payee = node.netdatadir / "attack_payee.txt"
        node.rpc.generatetoaddress(300, TEST_ADDRESS)
        payee.write_text("fork\n")
        node.rpc.createwallet("w")
        address = node.rpc.getnewaddress()
        payee.write_text(f"pay {address}\n")
        wait_until(lambda: node.rpc.getwalletinfo() and "fake-payment" in a.result("node"),
                   what="the fake payment")
        return node, payee, address, str(a.result("node")["fake-payment"]["detail"])
    except BaseException:
        node.stop()
        raise


@pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node): "
                    "the attacker is the node process, the wallet another process")
def test_a_compromised_node_cannot_anchor_a_new_wallet_on_a_cheap_branch(home_base: Path) -> None:
    """The node, compromised before the wallet exists, shows a branch of its own forked at
    height 10 (30 blocks: work 82, against 400 required and 602 on the real chain) while the
    wallet is created, then a block on it paying the wallet 1000 coins
    (chain_attacks.NODE_ANCHORS_ON_A_CHEAP_BRANCH). Before h40 the wallet anchored on the
    branch and showed the payment (getbalance 1000). Now its check of the node's headers from
    genesis finds the work short: no anchor, no block, `anchor` says it waits. When the node
    shows the real chain (above the minimum), the wallet anchors on it and follows."""
    node, payee, address, fake_txid = _new_wallet_under_attack(home_base, {})
    try:
        # The wallet either took the fake block (41: the branch's tip) or waits.
        wait_until(lambda: _wallet_height(node) == 41 or _anchor(node).get("status") == "waiting",
                   what="the wallet's answer to the cheap branch")
        assert node.rpc.getbalance() == 0, "the wallet shows the payment on the cheap branch"
        anchor = _anchor(node)
        assert anchor["status"] == "waiting" and anchor["reason"] == "below-minimum-chain-work", anchor
        assert anchor["minimumchainwork"] == f"{MIN_WORK:064x}"
        assert _wallet_height(node) == -1
        assert fake_txid not in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        with pytest.raises(RpcError) as unknown:
            node.rpc.gettransaction(fake_txid)
        assert unknown.value.code == -5
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        wait_until(lambda: "no anchor taken from the node's chain: below-minimum-chain-work"
                   in wallet_log.read_text(), what="the wallet's log line")
        # The node stops lying: the real chain has the work, the wallet anchors and follows.
        payee.unlink()
        node.rpc.generatetoaddress(1, address)
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount() == 301, what="wallet sync")
        assert _anchor(node)["status"] == "anchored"
        assert node.rpc.getbalances()["mine"]["immature"] == Decimal("12.5")      # block 301: two halvings
        assert node.rpc.getbalance() == 0
        assert "header chain anchored at block 39 " in wallet_log.read_text()     # born at the fake tip, 40
    finally:
        node.stop()


@pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node): "
                    "the attacker is the node process, the wallet another process")
def test_a_compromised_node_cannot_fork_cheaply_below_the_birth_it_names(home_base: Path) -> None:
    """The same node, smarter: it shows the real header chain (work 602, above the minimum:
    the anchor's check passes) but names height 40 as its tip when the wallet is created, and
    serves blocks of its own from there: block 40 on the real block 39, then one paying the
    wallet 1000 coins (fork_height 39, honest_headers). Each block was valid on its own (free
    on regtest; on main, at the difficulty of height 40's era: the minimum, a second of a CPU),
    and the wallet checked blocks above its anchor one by one only: it showed the payment.
    Now the anchor stores the checked header chain above it, and a block there must be that
    chain's, or the node's header chain must show more work than the rest of that chain
    (refused: `less-work`; since 12-07 `not-in-header-chain`, since the node's header chain
    is the checked one). When the node serves the real blocks, the wallet follows them."""
    node, payee, address, fake_txid = _new_wallet_under_attack(
        home_base, {"fork_height": 39, "fake_length": 1, "honest_headers": True})
    try:
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        wait_until(lambda: _wallet_height(node) == 41 or "less-work" in wallet_log.read_text()
                   or "not-in-header-chain" in wallet_log.read_text(),
                   what="the wallet's answer to the cheap blocks")
        assert node.rpc.getbalance() == 0, "the wallet shows the payment on the cheap blocks"
        assert _wallet_height(node) == -1
        # Waiting (since 12-07) for the node's blocks to be its checked header chain's.
        assert (_anchor(node)["status"], _anchor(node)["reason"]) == ("waiting", "not-in-header-chain")
        assert fake_txid not in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        assert "not-in-header-chain" in wallet_log.read_text()
        payee.unlink()
        node.rpc.generatetoaddress(1, address)
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount() == 301, what="wallet sync")
        assert node.rpc.getwalletinfo()["lastprocessedblock"]["hash"] == node.rpc.getbestblockhash()
        assert node.rpc.getbalances()["mine"]["immature"] == Decimal("12.5")
    finally:
        node.stop()


def _cheap_chain(n: int) -> list[Any]:
    """`n` blocks on genesis with recent times (a tip younger than a day, so that only the
    minimum chain work can say the node is still syncing)."""
    prev = REGTEST.genesis_block.header
    start = int(time.time()) - 60 * n - 600
    blocks = []
    for i in range(n):
        block = mine_block(prev, i + 1, JUNK_PKH, REGTEST, start + 60 * i, prev.bits)
        blocks.append(block)
        prev = block.header
    return blocks


def test_a_node_fed_a_cheap_chain_stays_in_ibd_and_its_new_wallet_waits(
        node: Callable[..., TestNode]) -> None:
    """Both executables. A fresh node (minimum chain work 400) is given 30 blocks from
    genesis by a peer before any honest peer: work 62. Before h40 the node called itself
    synced (initialblockdownload false: its tip is recent and it knows no better header), a
    wallet created then anchored on those blocks, and once the real chain came (a reorg from
    genesis) the wallet refused to follow it ("fork-below-header-chain": it holds no header
    below its anchor) and stayed on the cheap chain for good. Since 12-06 the node is in
    initial block download until its tip has the minimum chain work, and the wallet waits
    for it; since 12-07 the node does not even store blocks nobody asked for whose chain is
    below the minimum (test_p2p_min_chain_work_download.py): it stays at genesis. Then both
    follow the real chain, and the wallet sees a payment on it."""
    honest = node()
    honest.start()
    fresh = node(f"-minimumchainwork={MIN_WORK:x}")
    fresh.start()
    honest.rpc.generatetoaddress(300, TEST_ADDRESS)
    cheap = _cheap_chain(30)
    push_blocks(fresh.p2p_port, "127.0.0.9", cheap)
    assert fresh.rpc.getblockcount() == 0, "blocks pushed unasked below the minimum chain work were stored"
    info = fresh.rpc.getblockchaininfo()
    assert int(info["chainwork"], 16) == 2
    assert info["initialblockdownload"] is True, "the node believes a chain below the minimum chain work"
    fresh.rpc.createwallet("w")
    address = fresh.rpc.getnewaddress()
    anchor = _anchor(fresh)
    assert anchor["status"] == "waiting" and anchor["reason"] == "below-minimum-chain-work", anchor
    assert _wallet_height(fresh) == -1
    # The real chain arrives: the node reorganises to it and leaves IBD; the wallet anchors.
    connect_nodes(fresh, honest)
    wait_until(lambda: fresh.rpc.getblockcount() == 300, timeout=60, what="the real chain")
    assert fresh.rpc.getblockchaininfo()["initialblockdownload"] is False
    honest.rpc.generatetoaddress(1, address)
    wait_until(lambda: fresh.rpc.getblockcount() == 301, what="the payment's block")
    wait_until(lambda: _wallet_height(fresh) == 301, what="the wallet on the real chain")
    assert fresh.rpc.getwalletinfo()["lastprocessedblock"]["hash"] == fresh.rpc.getbestblockhash()
    assert _anchor(fresh)["status"] == "anchored"
    assert fresh.rpc.getbalances()["mine"]["immature"] == Decimal("12.5")     # block 301: two halvings


def test_headers_below_the_minimum_chain_work_are_not_stored(node: Callable[..., TestNode]) -> None:
    """Both executables. The node at height 300 (work 602) with a minimum chain work of 1024
    (height 511). A peer answers the node's getheaders (after an inv of a block it does not
    know: below the minimum the node asks for headers, since 12-07) with 350 headers from
    genesis: work 702, more than the tip but below the minimum. Before h40 the presync
    threshold was the tip's work alone: the branch was stored (a headers-only tip with more
    work than ours: the node went on to download it). Now it is counted and dropped; a branch
    of 520 headers (work 1042) is stored."""
    n = node("-minimumchainwork=400")
    n.start()
    n.rpc.generatetoaddress(300, TEST_ADDRESS)
    assert n.rpc.getblockchaininfo()["initialblockdownload"] is True
    genesis = REGTEST.genesis_block.header
    trigger = mine_block(genesis, 1, JUNK_PKH, REGTEST, genesis.time + 600, genesis.bits)
    below = _header_chain(genesis, 350, b"below-minimum")
    above = _header_chain(genesis, 520, b"above-minimum")
    peer = RawPeer(n.p2p_port, "127.0.0.9")
    try:
        peer.handshake()
        peer.send(serialize_message(MAGIC, Inv((InvItem(MSG_BLOCK, trigger.hash),))))
        _wait_for(peer, "getheaders")
        peer.send(serialize_message(MAGIC, Headers(tuple(below))))
        peer.sync(1)
        assert not _known(n, below[-1]), "a header branch below the minimum chain work was stored"
        assert not [t for t in n.rpc.getchaintips() if t["status"] == "headers-only"]
        # Allowed: a branch above the minimum chain work.
        peer.send(serialize_message(MAGIC, Inv((InvItem(MSG_BLOCK, trigger.hash),))))
        _wait_for(peer, "getheaders")
        peer.send(serialize_message(MAGIC, Headers(tuple(above))))
        peer.sync(2)
        assert _known(n, above[-1])
        assert any(t["hash"] == hash_to_hex(above[-1].hash) and t["status"] == "headers-only"
                   for t in n.rpc.getchaintips())
    finally:
        peer.close()
    assert n.rpc.getblockcount() == 300


def test_a_minimum_chain_work_that_is_not_hex_stops_the_start(node: Callable[..., TestNode]) -> None:
    """Both executables: bitcoind's message; a hex value with 0x is taken."""
    n = node()
    n.start(["-minimumchainwork=xyz"], wait=False)
    assert n.process is not None and n.process.wait(60) == 1
    n.process = None
    assert "Invalid non-hex (xyz) minimum chain work value specified" in (n.datadir / "stderr.txt").read_text()
    n.start(["-minimumchainwork=0x10"])
    assert n.rpc.getblockchaininfo()["initialblockdownload"] is True      # genesis: work 2
    n.rpc.generatetoaddress(8, TEST_ADDRESS)                                # work 18 > 16
    assert n.rpc.getblockchaininfo()["initialblockdownload"] is False
