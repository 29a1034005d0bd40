"""Functional: the wallet through the node's RPCs (bitcoind's names and codes).

The same tests for CleanCoind (wallet inside the node) and CleanCoin-node (wallet in a
sandboxed CleanCoin-wallet process): see framework.NODE_EXECUTABLE.

Sending and receiving between two nodes over P2P, several wallets in one node, encryption
(with a grep of every file for the secrets), restart persistence, a reorg that undoes a
confirmation, backup and restore.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from framework import (
    TEST_ADDRESS, TestNode, connect_nodes, is_multiprocess, sync_blocks, wait_until,
)
from cleancoin.components.rpc.errors import RpcError

SUBSIDY = Decimal(50)


@pytest.fixture
def nodes(tmp_path: Path):
    made: list[TestNode] = []

    def make(n: int) -> list[TestNode]:
        for _ in range(n):
            made.append(TestNode(len(made), tmp_path))
        return made

    yield make
    for node in made:
        node.cleanup()


def rpc_error(fn, *args, **kwargs) -> RpcError:
    """The RpcError a call raises (fails the test when it succeeds)."""
    with pytest.raises(RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def mine(node: TestNode, n: int, address: str = TEST_ADDRESS) -> None:
    node.rpc.generatetoaddress(n, address)


def balances(node: TestNode, wallet: str | None = None) -> dict:
    return node.client.call("getbalances", wallet=wallet)["mine"]


def funded_wallet(node: TestNode, name: str = "w", args: tuple[str, ...] = ()) -> str:
    """Start `node`, create wallet `name`, mine 101 blocks to a new address of it (one mature
    coinbase) and wait until the wallet has them; returns that address."""
    node.start(list(args))
    node.rpc.createwallet(name)
    addr = node.rpc.getnewaddress()
    mine(node, 101, addr)
    wait_synced(node)
    return addr


def wait_synced(node: TestNode, wallet: str | None = None) -> None:
    """Until the wallet has processed the node's tip (notifications are asynchronous)."""
    wait_until(lambda: node.client.call("getwalletinfo", wallet=wallet)["lastprocessedblock"]["height"]
               == node.rpc.getblockcount(), what="wallet sync")


def test_send_and_receive_between_two_nodes(nodes) -> None:
    a, b = nodes(2)
    a.start()
    b.start()
    connect_nodes(a, b)
    a.rpc.createwallet("w")
    b.rpc.createwallet("w")
    addr_a = a.rpc.getnewaddress()
    assert a.rpc.getaddressinfo(addr_a)["ismine"] is True
    assert b.rpc.getaddressinfo(addr_a)["ismine"] is False

    # Coinbase maturity: 100 blocks leave the first coinbase immature, the 101st matures it.
    mine(a, 100, addr_a)
    wait_synced(a)
    bal = balances(a)
    assert bal["trusted"] == 0 and bal["immature"] == 100 * SUBSIDY
    mine(a, 1, addr_a)
    wait_synced(a)
    bal = balances(a)
    assert bal["trusted"] == SUBSIDY and bal["immature"] == 100 * SUBSIDY
    assert a.rpc.getbalance() == SUBSIDY
    sync_blocks([a, b])

    # Send 10 to b: a's change is trusted at once, b sees it pending until it confirms.
    addr_b = b.rpc.getnewaddress()
    txid = a.rpc.sendtoaddress(addr_b, 10)
    tx = a.rpc.gettransaction(txid)
    fee = -tx["fee"]
    assert 0 < fee < Decimal("0.001") and tx["confirmations"] == 0 and tx["amount"] == -10
    assert balances(a)["trusted"] == SUBSIDY - 10 - fee
    wait_until(lambda: balances(b)["untrusted_pending"] == 10, what="relay to b's wallet")
    assert balances(b)["trusted"] == 0
    assert b.rpc.gettransaction(txid)["details"][0]["category"] == "receive"

    mine(a, 1)
    sync_blocks([a, b])
    wait_synced(b)
    assert balances(b) == {"trusted": Decimal(10), "untrusted_pending": 0, "immature": 0}
    assert b.rpc.gettransaction(txid)["confirmations"] == 1
    assert [u["amount"] for u in b.rpc.listunspent()] == [10]
    # The change went to a change address (not the one given out).
    change = [o for o in a.rpc.getrawtransaction(txid, 1)["vout"]
              if o["scriptPubKey"].get("address") != addr_b]
    assert len(change) == 1 and a.rpc.getaddressinfo(change[0]["scriptPubKey"]["address"])["ischange"]

    # b pays 4 back with the fee taken from the amount: a receives less than 4, b spends 4.
    b_txid = b.rpc.sendtoaddress(a.rpc.getnewaddress(), 4, None, None, True)
    b_fee = -b.rpc.gettransaction(b_txid)["fee"]
    mine(a, 1)
    sync_blocks([a, b])
    wait_synced(a)
    wait_synced(b)
    assert balances(b)["trusted"] == 6
    received = [d for d in a.rpc.gettransaction(b_txid)["details"] if d["category"] == "receive"]
    assert received[0]["amount"] == 4 - b_fee

    # sendmany and listtransactions; insufficient funds is -6, a bad address -5.
    b.rpc.sendmany("", {a.rpc.getnewaddress(): 1, a.rpc.getnewaddress(): 2})
    assert rpc_error(b.rpc.sendtoaddress, addr_a, 100).code == -6
    assert rpc_error(b.rpc.sendtoaddress, "notanaddress", 1).code == -5
    cats = [e["category"] for e in b.rpc.listtransactions()]
    assert "send" in cats and "receive" in cats


def test_several_wallets_in_one_node(nodes) -> None:
    (n,) = nodes(1)
    n.start()
    assert rpc_error(n.rpc.getbalance).code == -18       # none loaded
    n.rpc.createwallet("alice")
    n.rpc.createwallet("bob")
    assert sorted(n.rpc.listwallets()) == ["alice", "bob"]
    assert rpc_error(n.rpc.getbalance).code == -19       # several loaded, none named
    assert rpc_error(n.client.call, "getbalance", wallet="carol").code == -18
    assert rpc_error(n.rpc.createwallet, "alice").code == -35
    alice = n.client.call("getnewaddress", wallet="alice")
    mine(n, 101, alice)
    wait_synced(n, "alice")
    wait_synced(n, "bob")
    assert n.client.call("getbalance", wallet="alice") == SUBSIDY
    assert n.client.call("getbalance", wallet="bob") == 0
    bob = n.client.call("getnewaddress", wallet="bob")
    n.client.call("sendtoaddress", bob, 3, wallet="alice")
    wait_until(lambda: balances(n, "bob")["untrusted_pending"] == 3, what="bob sees the payment")
    n.rpc.unloadwallet("bob")
    assert n.rpc.listwallets() == ["alice"]
    assert n.rpc.getbalance() < SUBSIDY - 3 + 1        # alice is now the default wallet
    n.rpc.loadwallet("bob")
    assert balances(n, "bob")["untrusted_pending"] == 3
    assert rpc_error(n.rpc.loadwallet, "nosuch").code == -18


def _all_file_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_encryption_locks_signing_and_leaves_no_secret_on_disk(nodes) -> None:
    (n,) = nodes(1)
    # -debug=1: every log category, so the grep below covers debug output too.
    addr = funded_wallet(n, "enc", ("-debug=1",))
    db = n.netdatadir / "wallets" / "enc" / "wallet.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (seed,) = conn.execute("SELECT plaintext FROM secrets WHERE name = 'seed'").fetchone()
    assert len(seed) == 32
    passphrase = "correct horse battery staple 8b1f"
    assert rpc_error(n.rpc.walletlock).code == -15            # not encrypted yet
    n.rpc.encryptwallet(passphrase)
    info = n.rpc.getwalletinfo()
    assert info["unlocked_until"] == 0

    # Locked: no signing (-13); a wrong passphrase is -14; the right one unlocks.
    assert rpc_error(n.rpc.sendtoaddress, TEST_ADDRESS, 1).code == -13
    assert rpc_error(n.rpc.signmessage, addr, "hi").code == -13
    err = rpc_error(n.rpc.walletpassphrase, "wrong passphrase", 60)
    assert err.code == -14 and "wrong passphrase" not in err.message
    n.rpc.walletpassphrase(passphrase, 60)
    assert n.rpc.getwalletinfo()["unlocked_until"] > time.time()
    n.rpc.sendtoaddress(TEST_ADDRESS, 1)
    sig = n.rpc.signmessage(addr, "hello")
    assert n.rpc.verifymessage(addr, sig, "hello") is True
    assert n.rpc.verifymessage(addr, sig, "hello!") is False
    n.rpc.walletlock()
    assert rpc_error(n.rpc.sendtoaddress, TEST_ADDRESS, 1).code == -13
    # The timeout locks again by itself.
    n.rpc.walletpassphrase(passphrase, 1)
    n.rpc.sendtoaddress(TEST_ADDRESS, 1)
    wait_until(lambda: n.rpc.getwalletinfo()["unlocked_until"] == 0, timeout=5, what="relock")
    assert rpc_error(n.rpc.sendtoaddress, TEST_ADDRESS, 1).code == -13
    # walletpassphrasechange: the old one stops working.
    new = "another passphrase 77aa"
    n.rpc.walletpassphrasechange(passphrase, new)
    assert rpc_error(n.rpc.walletpassphrase, passphrase, 10).code == -14
    n.rpc.walletpassphrase(new, 10)
    n.rpc.walletlock()

    # No file under the datadir (database, WAL, debug.log, stderr) holds a secret.
    n.stop()
    needles = [seed, seed.hex().encode(), seed.hex().upper().encode(), passphrase.encode(),
               new.encode()]
    files = _all_file_bytes(n.datadir)
    assert any(p.name == "debug.log" for p, _ in files)
    for path, data in files:
        for needle in needles:
            assert needle not in data, f"a secret appears in {path}"


def test_restart_persistence_and_catch_up(nodes) -> None:
    (n,) = nodes(1)
    addr = funded_wallet(n)
    txid = n.rpc.sendtoaddress(TEST_ADDRESS, 7)
    before = balances(n)
    n.stop()
    n.start()
    assert n.rpc.listwallets() == []          # not loaded without -wallet
    n.stop()
    n.start(["-wallet=w"])
    assert n.rpc.listwallets() == ["w"]
    assert balances(n) == before
    assert n.rpc.gettransaction(txid)["confirmations"] == 0
    # Blocks mined while the wallet is unloaded are caught up on load.
    n.rpc.unloadwallet("w")
    mine(n, 5, addr)
    n.rpc.loadwallet("w")
    assert n.rpc.gettransaction(txid)["confirmations"] == 5
    assert n.rpc.getwalletinfo()["lastprocessedblock"]["height"] == 106


def test_reorg_undoes_a_confirmation(nodes) -> None:
    (n,) = nodes(1)
    addr = funded_wallet(n)
    other = n.rpc.getnewaddress()
    txid = n.rpc.sendtoaddress(other, 5)
    mine(n, 1)
    wait_synced(n)
    assert n.rpc.gettransaction(txid)["confirmations"] == 1
    tip = n.rpc.getbestblockhash()
    n.rpc.invalidateblock(tip)
    wait_synced(n)
    tx = n.rpc.gettransaction(txid)
    assert tx["confirmations"] == 0 and "blockhash" not in tx
    assert n.rpc.getrawmempool() == [txid]
    n.rpc.reconsiderblock(tip)
    wait_synced(n)
    assert n.rpc.gettransaction(txid)["confirmations"] == 1
    assert n.rpc.gettransaction(txid)["blockhash"] == tip


def test_after_a_rewind_the_wallet_waits_for_a_branch_that_outweighs_its_blocks(nodes) -> None:
    """invalidateblock two blocks below the tip: the wallet follows the rewind (its send
    unconfirmed again), and keeps the two blocks' headers as the bar (since 12-07; before,
    a compromised node could rewind the wallet and then show any cheaper branch,
    test_wallet_fake_chain.py). A new branch of two blocks has no more work than them: the
    wallet waits (getwalletinfo's anchor says why) and shows nothing of it; a third block
    outweighs them and is followed. bitcoind's wallet follows its node's chain at once; this
    one waits as it would for a reorganisation to a branch without more work."""
    (n,) = nodes(1)
    funded_wallet(n)
    txid = n.rpc.sendtoaddress(n.rpc.getnewaddress(), 2)
    mine(n, 2)
    wait_synced(n)
    fork = n.rpc.getblockcount() - 2
    n.rpc.invalidateblock(n.rpc.getblockhash(fork + 1))
    wait_synced(n)
    assert n.rpc.gettransaction(txid)["confirmations"] == 0
    branch = [n.rpc.generateblock(TEST_ADDRESS, [])["hash"] for _ in range(2)]
    wait_until(lambda: n.rpc.getwalletinfo()["anchor"].get("reason") == "less-work", what="the wallet waiting")
    info = n.rpc.getwalletinfo()
    assert info["lastprocessedblock"]["height"] == fork and info["anchor"]["status"] == "waiting"
    mine(n, 1)                                  # with the send, back from the mempool
    wait_synced(n)
    info = n.rpc.getwalletinfo()
    assert info["lastprocessedblock"]["hash"] == n.rpc.getbestblockhash() and info["anchor"]["status"] == "anchored"
    assert n.rpc.getblockheader(n.rpc.getbestblockhash())["previousblockhash"] == branch[-1]
    assert n.rpc.gettransaction(txid)["confirmations"] == 1


def test_backup_and_restore(nodes) -> None:
    (n,) = nodes(1)
    addr = funded_wallet(n)
    # Inside <netdatadir>/wallets/, not tmp_path: under CleanCoin-node the wallet runs in a
    # sandboxed process that may write only there, and the test must hold for both
    # executables. The directory exists once a wallet has been created (backupwallet makes
    # the file, not its parent); a plain file there is not listed as a wallet.
    backup = n.netdatadir / "wallets" / "w.backup"
    n.rpc.backupwallet(str(backup))
    assert backup.exists() and (backup.stat().st_mode & 0o777) == 0o600
    assert rpc_error(n.rpc.backupwallet, str(backup)).code == -4     # never overwrites
    n.rpc.restorewallet("restored", str(backup))
    assert balances(n, "restored") == balances(n, "w")
    assert n.client.call("getaddressinfo", addr, wallet="restored")["ismine"] is True
    # The restored wallet holds the keys: it can spend.
    n.client.call("sendtoaddress", TEST_ADDRESS, 1, wallet="restored")
    assert rpc_error(n.rpc.restorewallet, "restored", str(backup)).code == -36


def test_reorg_while_unloaded_is_found_on_load(nodes) -> None:
    """The wallet's best block left the active chain while it was not loaded: on load it
    finds the fork (find_fork with its locator), undoes its blocks above it, catches up."""
    (n,) = nodes(1)
    funded_wallet(n)
    txid = n.rpc.sendtoaddress(n.rpc.getnewaddress(), 2)
    mine(n, 1)
    wait_synced(n)
    stale = n.rpc.getbestblockhash()
    n.rpc.unloadwallet("w")
    n.rpc.invalidateblock(stale)
    # Without the transaction: the new branch is longer, and the tx stays unconfirmed.
    n.rpc.generateblock(TEST_ADDRESS, [])
    n.rpc.generateblock(TEST_ADDRESS, [])
    n.rpc.loadwallet("w")
    tx = n.rpc.gettransaction(txid)
    assert tx["confirmations"] == 0 and "blockhash" not in tx
    assert n.rpc.getwalletinfo()["lastprocessedblock"]["hash"] == n.rpc.getbestblockhash()


def test_kill_during_sends_then_reload(nodes) -> None:
    """kill -9 right after sends: the wallet loads, no coin counted twice, the sends known."""
    (n,) = nodes(1)
    n.start()
    n.rpc.createwallet("w")
    mine(n, 120, n.rpc.getnewaddress())
    wait_synced(n)
    sent = [n.rpc.sendtoaddress(TEST_ADDRESS, 1) for _ in range(5)]
    total = balances(n)
    n.kill()
    n.start(["-wallet=w"])
    assert balances(n) == total
    assert all(n.rpc.gettransaction(t)["confirmations"] == 0 for t in sent)
    unspent = n.rpc.listunspent(0)
    assert len({(u["txid"], u["vout"]) for u in unspent}) == len(unspent)
    assert sum(u["amount"] for u in unspent) == total["trusted"]
    mine(n, 1)
    wait_synced(n)
    assert all(n.rpc.gettransaction(t)["confirmations"] == 1 for t in sent)


def test_disablewallet(nodes) -> None:
    (n,) = nodes(1)
    n.start(["-disablewallet"])
    assert rpc_error(n.rpc.createwallet, "w").code == -32601      # method not found


def test_missing_startup_wallet_is_an_init_error(nodes) -> None:
    (n,) = nodes(1)
    n.start(["-wallet=missing"], wait=False)
    assert n.process is not None and n.process.wait(20) == 1
    n.process = None
    assert "Failed to load wallet 'missing'" in (n.datadir / "stderr.txt").read_text()


def test_coin_control_history_and_misc_rpcs(nodes) -> None:
    (n,) = nodes(1)
    n.start()
    n.rpc.createwallet("w")
    addr = n.rpc.getnewaddress("salary")
    assert n.rpc.getaddressinfo(addr)["labels"] == ["salary"]
    assert n.rpc.getaddressinfo(n.rpc.getrawchangeaddress())["ischange"] is True
    mine(n, 101, addr)
    wait_synced(n)
    mark = n.rpc.getbestblockhash()

    # lockunspent: the only mature coin locked, nothing to spend; unlocked, it spends.
    (coin,) = n.rpc.listunspent(101)
    n.rpc.lockunspent(False, [{"txid": coin["txid"], "vout": coin["vout"]}])
    assert n.rpc.listlockunspent() == [{"txid": coin["txid"], "vout": coin["vout"]}]
    assert rpc_error(n.rpc.sendtoaddress, TEST_ADDRESS, 1).code == -6
    n.rpc.lockunspent(True)
    assert n.rpc.listlockunspent() == []
    n.rpc.settxfee(Decimal("0.0002"))
    assert n.rpc.getwalletinfo()["paytxfee"] == Decimal("0.0002")
    txid = n.rpc.sendtoaddress(TEST_ADDRESS, 1)
    size = len(n.rpc.gettransaction(txid)["hex"]) // 2
    assert -n.rpc.gettransaction(txid)["fee"] >= Decimal("0.0002") * size / 1000

    # abandontransaction: not while the mempool holds it (-5, as bitcoind); unknown txids are -5.
    assert rpc_error(n.rpc.abandontransaction, txid).code == -5
    assert rpc_error(n.rpc.abandontransaction, "00" * 32).code == -5
    assert rpc_error(n.rpc.gettransaction, "00" * 32).code == -5

    mine(n, 1)
    wait_synced(n)
    since = n.rpc.listsinceblock(mark)
    assert {e["txid"] for e in since["transactions"]} == {txid}
    assert since["lastblock"] == n.rpc.getbestblockhash()
    assert n.rpc.rescanblockchain(50) == {"start_height": 50, "stop_height": 102}
    assert rpc_error(n.rpc.rescanblockchain, 500).code == -8
    assert n.rpc.gettransaction(txid)["confirmations"] == 1
    n.rpc.keypoolrefill(150)
    assert n.rpc.getwalletinfo()["keypoolsize"] == 150


WALLET_TOOL = Path(sys.executable).with_name("CleanCoin-wallet")
HOLDER = """
import sys
from cleancoin.components.wallet.store import WalletStore
store = WalletStore.open(sys.argv[1], sys.argv[2], "regtest")
print("open", flush=True)
sys.stdin.read()
store.close()
"""


def test_a_wallet_is_used_by_one_process_at_a_time(nodes) -> None:
    """<netdatadir>/wallets/<name>/.lock, flock'ed by whoever has the wallet open: the node
    (or its sandboxed wallet process), the offline tool, any other process."""
    (n,) = nodes(1)
    n.start()
    n.rpc.createwallet("w")
    tool = [str(WALLET_TOOL), f"-datadir={n.datadir}", "-regtest", "-wallet=w", "info"]
    r = subprocess.run(tool, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Wallet is already in use by another process" in r.stderr
    n.rpc.unloadwallet("w")
    r = subprocess.run(tool, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(n.netdatadir), "w"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        err = rpc_error(n.rpc.loadwallet, "w")
        assert err.code == -4 and "Wallet is already in use by another process" in err.message
        assert n.rpc.listwallets() == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    n.rpc.loadwallet("w")
    assert n.rpc.listwallets() == ["w"]


def test_load_on_startup(nodes) -> None:
    """bitcoind's load_on_startup, with the list in <netdatadir>/wallets/settings.json (where
    a sandboxed wallet process can write it): true adds, false removes, null leaves; at start
    the -wallet wallets load, then the listed ones; a listed wallet that is gone is skipped
    with a warning, the node starts."""
    (n,) = nodes(1)
    n.start()
    n.rpc.createwallet("a", False, False, "", False, None, True)
    n.rpc.createwallet("b")
    n.rpc.createwallet("c", False, False, "", False, None, True)
    settings = n.netdatadir / "wallets" / "settings.json"
    assert json.loads(settings.read_text()) == {"wallet": ["a", "c"]}
    n.rpc.unloadwallet("c", False)
    n.rpc.unloadwallet("b")
    assert json.loads(settings.read_text()) == {"wallet": ["a"]}
    n.stop()
    n.start()
    assert n.rpc.listwallets() == ["a"]
    n.rpc.loadwallet("b", True)
    n.stop()
    n.start(["-wallet=c"])
    assert n.rpc.listwallets() == ["c", "a", "b"]
    n.stop()
    shutil.rmtree(n.netdatadir / "wallets" / "b")
    n.start()
    assert n.rpc.listwallets() == ["a"]
    logs = n.debug_log() + ((n.netdatadir / "wallets" / "debug.log").read_text()
                            if is_multiprocess() else "")
    assert "Skipping -wallet path that doesn't exist" in logs


def test_listsinceblock_target_confirmations_and_removed_after_a_reorg(nodes) -> None:
    """bitcoind's listsinceblock: lastblock at depth target_confirmations; after a reorg,
    listing since a block that left the active chain reports the wallet transactions of the
    detached blocks in `removed` (include_removed, default true) and lists from the fork."""
    (n,) = nodes(1)
    funded_wallet(n)
    mark = n.rpc.getbestblockhash()                                   # height 101
    txid = n.rpc.sendtoaddress(TEST_ADDRESS, 3)
    mine(n, 1)
    wait_synced(n)
    stale = n.rpc.getbestblockhash()                                  # height 102, holds txid
    since = n.rpc.listsinceblock(mark)
    assert [(e["txid"], e["category"]) for e in since["transactions"]] == [(txid, "send")]
    assert since["removed"] == [] and since["lastblock"] == stale
    assert n.rpc.listsinceblock(mark, 2)["lastblock"] == mark
    assert n.rpc.listsinceblock(mark, 3)["lastblock"] == n.rpc.getblockhash(100)
    assert n.rpc.listsinceblock("", 1000)["lastblock"] == n.rpc.getblockhash(0)
    assert rpc_error(n.rpc.listsinceblock, mark, 0).code == -8
    assert rpc_error(n.rpc.listsinceblock, "00" * 32).code == -5
    assert rpc_error(n.rpc.listsinceblock, "zz").code == -8

    # Reorg: the block with the send leaves the active chain, a longer branch without it wins.
    n.rpc.invalidateblock(stale)
    n.rpc.generateblock(TEST_ADDRESS, [])
    n.rpc.generateblock(TEST_ADDRESS, [])
    wait_synced(n)
    tip = n.rpc.getbestblockhash()
    since = n.rpc.listsinceblock(stale)
    assert [(e["txid"], e["category"]) for e in since["removed"]] == [(txid, "send")]
    assert since["removed"][0]["confirmations"] == 0               # its state now: unconfirmed
    # Listed from the fork (101): the now unconfirmed send; nothing at or below 101.
    assert [e["txid"] for e in since["transactions"]] == [txid]
    assert since["lastblock"] == tip
    assert n.rpc.listsinceblock(stale, 1, False, False)["removed"] == []
    assert n.rpc.listsinceblock(stale, 2)["lastblock"] == n.rpc.getblockhash(102)

    # Mined again on the new branch: still removed from the old one, and now confirmed.
    mine(n, 1)
    wait_synced(n)
    since = n.rpc.listsinceblock(stale)
    assert [e["txid"] for e in since["removed"]] == [txid]
    assert [(e["txid"], e["confirmations"]) for e in since["transactions"]] == [(txid, 1)]
    assert n.rpc.listsinceblock(n.rpc.getbestblockhash())["transactions"] == []
