"""Functional: a compromised node cannot show its wallet process a payment in a block without
proof of work (CleanCoin-node only: the wallet is a separate, sandboxed process there; in
CleanCoind the node and the wallet are one process, with nothing to defend between them).

The attack runs inside the real confined node (chain_attacks.NODE_FAKES_PAYMENT): it shows the
wallet a well-formed block on top of its real tip paying one of the wallet's addresses 1000
coins out of nothing, either with a hash above its target (`high-hash`) or with a hash that
meets bits other than those the difficulty rule demands (`bad-diffbits`). Before the wallet
checked headers it counted that payment (getbalance, listtransactions, gettransaction).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import chain_attacks
from cleancoin.components.rpc.errors import RpcError
from framework import TEST_ADDRESS, TestNode, is_multiprocess, wait_until
from test_sandbox_attacks import AttackedNode, home_base  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")


#: How far below the tip the rewind's fork lies (test_a_rewind_then_a_branch_of_less_work).
DEPTH = 50


def _wallet_height(node: TestNode) -> int:
    return int(node.rpc.getwalletinfo()["lastprocessedblock"]["height"])


def test_a_compromised_node_cannot_show_a_payment_without_proof_of_work(home_base: Path) -> None:
    a = AttackedNode(home_base, node=chain_attacks.NODE_FAKES_PAYMENT)
    a.start()
    assert a.result("node", timeout=60)["fake-chain"]["escaped"] is False    # the fake is armed
    node = a.node
    try:
        node.rpc.createwallet("w")
        address = node.rpc.getnewaddress()
        node.rpc.generatetoaddress(101, address)            # honest: one mature coinbase
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount(), what="wallet sync")
        assert node.rpc.getbalance() == 50
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        for mode in ("high-hash", "bad-diffbits"):
            (node.netdatadir / "attack_payee.txt").write_text(f"{mode} {address}\n")
            # An honest block to the wallet too: its notification makes the wallet read the
            # chain, where the node now shows its fake block right after it.
            honest = node.rpc.generatetoaddress(1, address)[0]
            real_height = node.rpc.getblockcount()
            wait_until(lambda: f"fake-{mode}" in a.result("node"), what="the fake block")
            fake_txid = a.result("node")[f"fake-{mode}"]["detail"]
            wait_until(lambda m=mode: f"refused block {real_height + 1}" in wallet_log.read_text()
                       and m in wallet_log.read_text(), what=f"the wallet's refusal ({mode})")
            # The fake payment is nowhere; the honest block is there, and the wallet is alive.
            assert _wallet_height(node) == real_height
            txids = {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
            assert fake_txid not in txids
            with pytest.raises(RpcError) as unknown:
                node.rpc.gettransaction(fake_txid)
            assert unknown.value.code == -5
            assert node.rpc.getbalance() < 1000
            coinbase = node.rpc.getblock(honest)["tx"][0]
            assert coinbase in txids
            assert node.rpc.gettransaction(coinbase)["blockhash"] == honest
        # Once the node stops lying the wallet follows the chain again.
        (node.netdatadir / "attack_payee.txt").unlink()
        node.rpc.generatetoaddress(1, TEST_ADDRESS)
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount(), what="wallet sync")
        assert node.rpc.getbalance() == Decimal(50 * 4)     # 104 blocks: four mature coinbases
    finally:
        node.stop()


def test_a_compromised_node_cannot_pass_off_a_spend_the_wallet_never_signed(home_base: Path) -> None:
    """The node announces, as a mempool transaction, a spend of the wallet's first coinbase
    with a made-up signature that pays the wallet 1000 coins (chain_attacks.NODE_FAKES_OWN_SPEND).
    The wallet took it for its own, so its output counted as trusted: getbalance showed the
    1000 coins at once, without any block. Now the wallet refuses a transaction spending its
    coins that its key did not sign (logged); its own sends still count their change."""
    a = AttackedNode(home_base, node=chain_attacks.NODE_FAKES_OWN_SPEND)
    a.start()
    assert a.result("node", timeout=60)["armed"]["escaped"] is False
    node = a.node
    try:
        node.rpc.createwallet("w")
        address = node.rpc.getnewaddress()
        node.rpc.generatetoaddress(101, address)
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount(), what="wallet sync")
        (node.netdatadir / "attack_payee.txt").write_text(f"spend {address}\n")
        node.rpc.generatetoaddress(1, TEST_ADDRESS)        # the wallet reads the chain: the fake comes
        wait_until(lambda: "fake-own-spend" in a.result("node"), what="the fake spend")
        fake_txid = a.result("node")["fake-own-spend"]["detail"]
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        wait_until(lambda: f"refused transaction {fake_txid}" in wallet_log.read_text(),
                   what="the wallet's refusal")
        wait_until(lambda: _wallet_height(node) == node.rpc.getblockcount(), what="wallet sync")
        assert node.rpc.getbalance() == 100                 # coinbases 1 and 2, neither spent
        assert node.rpc.getbalances()["mine"]["untrusted_pending"] == 0
        assert fake_txid not in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        with pytest.raises(RpcError) as unknown:
            node.rpc.gettransaction(fake_txid)
        assert unknown.value.code == -5
        # The wallet's own send: signed by its key, its change trusted at once.
        txid = node.rpc.sendtoaddress(TEST_ADDRESS, 1)
        wait_until(lambda: txid in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}, what="the send")
        assert 98 < node.rpc.getbalance() < 99
    finally:
        node.stop()


def _synced_wallet(node: TestNode) -> str:
    """Wallet "w" paid by 102 blocks and caught up with them; its address."""
    node.rpc.createwallet("w")
    address = node.rpc.getnewaddress()
    node.rpc.generatetoaddress(102, address)
    wait_until(lambda: _wallet_height(node) == 102, what="wallet sync")
    (node.netdatadir / "attack_payee.txt").write_text(f"reorg {address}\n")
    return str(address)


def _fake_branch_shown(a: AttackedNode, node: TestNode) -> str:
    """Arm NODE_REORGS_TO_LESS_WORK (attack_payee.txt, written by _synced_wallet) by a new
    block, which makes the wallet read the chain again; the fake payment's txid."""
    node.rpc.generatetoaddress(1, TEST_ADDRESS)
    wait_until(lambda: "fake-branch" in a.result("node"), what="the fake branch")
    return str(a.result("node")["fake-branch"]["detail"])


def test_a_compromised_node_cannot_reorganise_the_wallet_to_less_work(home_base: Path) -> None:
    """The node says the wallet's newest block left the active chain for a one-block branch
    (valid proof of work, right bits: free on regtest) paying the wallet 1000 coins
    (chain_attacks.NODE_REORGS_TO_LESS_WORK): no more work than the block it replaces. The wallet
    undid its block and showed the payment; now it refuses (logged) and stays."""
    a = AttackedNode(home_base, node=chain_attacks.NODE_REORGS_TO_LESS_WORK)
    a.start()
    assert a.result("node", timeout=60)["armed"]["escaped"] is False
    node = a.node
    try:
        _synced_wallet(node)
        best = node.rpc.getwalletinfo()["lastprocessedblock"]["hash"]
        fake_txid = _fake_branch_shown(a, node)
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        wait_until(lambda: "less-work" in wallet_log.read_text(), what="the wallet's refusal")
        info = node.rpc.getwalletinfo()["lastprocessedblock"]
        assert (info["height"], info["hash"]) == (102, best)
        assert fake_txid not in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        assert node.rpc.getbalance() == 100
    finally:
        node.stop()


def test_a_rewind_then_a_branch_of_less_work(home_base: Path) -> None:
    """The branch of the test above, 50 blocks deep, shown after a rewind
    (chain_attacks.NODE_REORGS_TO_LESS_WORK with rewind_first): the node first says its chain
    ends at the fork (as invalidateblock would: followed, docs/wallet.md), then shows the
    one-block branch paying the wallet 1000 coins. Before 12-07 (second version) the wallet
    undid its 50 blocks without a check, then anchored the branch (the check resumed at the
    fork, work up to the fork + one block) and showed the fake payment: balance 1000 coins
    above the real one, on a chain of work 2 * 55 against the 2 * 103 it had checked. Now the
    rewind keeps the undone blocks' header rows (without their blocks) as the bar: the branch
    is refused (`less-work`), the wallet waits at the fork and shows no payment."""
    a = AttackedNode(home_base, node=chain_attacks.NODE_REORGS_TO_LESS_WORK,
                     variables={"rewind_first": True, "depth": DEPTH})
    a.start()
    assert a.result("node", timeout=60)["armed"]["escaped"] is False
    node = a.node
    try:
        _synced_wallet(node)
        real_balance = node.rpc.getbalance()
        fake_txid = _fake_branch_shown(a, node)
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        wait_until(lambda: "less-work" in wallet_log.read_text() or fake_txid in {
            t["txid"] for t in node.rpc.listtransactions("*", 1000)}, what="the wallet's decision")
        info = node.rpc.getwalletinfo()
        seen = fake_txid in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        print(f"wallet at height {info['lastprocessedblock']['height']}; fake payment seen: {seen}; "
              f"balance {node.rpc.getbalance()} (real {real_balance}); anchor {info['anchor']}")
        assert not seen
        # It followed the rewind (the node's chain ended at the fork: confirmations gone)
        # and waits there for a chain that is its old one or outweighs it. (The fork lies
        # DEPTH below the node's tip when the attack read it: 102 or 103.)
        assert info["lastprocessedblock"]["height"] in (102 - DEPTH, 103 - DEPTH)
        assert (info["anchor"]["status"], info["anchor"]["reason"]) == ("waiting", "less-work")
        assert node.rpc.getbalance() < real_balance
        with pytest.raises(RpcError) as unknown:
            node.rpc.gettransaction(fake_txid)
        assert unknown.value.code == -5
    finally:
        node.stop()


def test_a_branch_weighed_by_the_real_blocks_then_switched(home_base: Path) -> None:
    """The bait and switch (chain_attacks.NODE_BAIT_AND_SWITCH), inside the real confined
    node: it rewinds the wallet DEPTH blocks (followed; the undone blocks' rows kept as the
    bar), shows its real header chain, and at the fork's next height its own block paying the
    wallet 1000 coins. The wallet refuses it (not the checked header there) and, before 12-07,
    weighed the node's blocks from the fork against its rows: the node showed the real ones,
    one more than the rows, the rows were dropped, and the catch-up after it took the fake:
    the 1000 coins confirmed, for one block at the fork's era difficulty, past a checked chain
    of DEPTH blocks. Now the rows give way only to the node's header chain, which is them: the
    fake is refused again and the wallet waits at the fork."""
    a = AttackedNode(home_base, node=chain_attacks.NODE_BAIT_AND_SWITCH, variables={"depth": DEPTH})
    a.start()
    assert a.result("node", timeout=60)["armed"]["escaped"] is False
    node = a.node
    try:
        node.rpc.createwallet("w")
        address = node.rpc.getnewaddress()
        node.rpc.generatetoaddress(102, address)
        wait_until(lambda: _wallet_height(node) == 102, what="wallet sync")
        real_balance = node.rpc.getbalance()
        (node.netdatadir / "attack_payee.txt").write_text(f"bait {address}\n")
        node.rpc.generatetoaddress(1, TEST_ADDRESS)         # the wallet reads the chain: the attack
        wait_until(lambda: "fake-branch" in a.result("node"), what="the fake branch")
        fake_txid = a.result("node")["fake-branch"]["detail"]
        wallet_log = node.netdatadir / "wallets" / "debug.log"
        # Decided: the fake taken (before), or the node's header chain checked again after
        # the fake was refused, a second anchor at the fork (the first came after the rewind).
        anchored = f"header chain anchored at block {103 - DEPTH} "
        wait_until(lambda: fake_txid in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
                   or wallet_log.read_text().count(anchored) >= 2, what="the wallet's decision")
        seen = fake_txid in {t["txid"] for t in node.rpc.listtransactions("*", 1000)}
        info = node.rpc.getwalletinfo()
        print(f"wallet at height {info['lastprocessedblock']['height']}; fake payment seen: {seen}; "
              f"balance {node.rpc.getbalance()} (real {real_balance}); real blocks shown for the weighing: "
              f"{a.result('node').get('weighed', {}).get('detail', 0)}")
        assert not seen
        assert "not-in-header-chain" in wallet_log.read_text()
        assert (info["anchor"]["status"], info["anchor"]["reason"]) == ("waiting", "not-in-header-chain")
        assert info["lastprocessedblock"]["height"] == 103 - DEPTH
        assert node.rpc.getbalance() < real_balance
        with pytest.raises(RpcError) as unknown:
            node.rpc.gettransaction(fake_txid)
        assert unknown.value.code == -5
    finally:
        node.stop()
