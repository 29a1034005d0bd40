"""Functional: blockchain, mempool and mining RPCs on one real regtest node.

One node for the module (starting a node and mining 101 blocks is the costly part); the
tests run in file order and each leaves the chain as the next expects it.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import pytest

from cleancoin.components.common.primitives import Block, BlockHeader, Transaction
from cleancoin.components.rpc.errors import RpcError

from framework import OTHER_KEY, TEST_ADDRESS, TestNode, spend_coinbase


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    n = TestNode(0, tmp_path_factory.mktemp("chain"))
    n.start()
    n.rpc.generatetoaddress(101, TEST_ADDRESS)
    yield n
    n.cleanup()


def test_counts_and_hashes(node: TestNode) -> None:
    assert node.rpc.getblockcount() == 101
    best = node.rpc.getbestblockhash()
    assert node.rpc.getblockhash(101) == best
    info = node.rpc.getblockchaininfo()
    assert info["chain"] == "regtest" and info["blocks"] == 101 and info["bestblockhash"] == best
    assert node.rpc.getdifficulty() == 1.0
    with pytest.raises(RpcError) as e:
        node.rpc.getblockhash(102)
    assert e.value.code == -8 and e.value.message == "Block height out of range"


def test_getblock_verbosities_and_header(node: TestNode) -> None:
    h1 = node.rpc.getblockhash(1)
    raw = node.rpc.getblock(h1, 0)
    block = Block.from_bytes(bytes.fromhex(raw))
    assert block.hash_hex == h1
    v1 = node.rpc.getblock(h1, 1)
    assert v1["height"] == 1 and v1["confirmations"] == 101 and v1["nTx"] == 1
    assert v1["tx"] == [block.txs[0].txid_hex]
    assert v1["nextblockhash"] == node.rpc.getblockhash(2)
    assert v1["previousblockhash"] == node.rpc.getblockhash(0)
    v2 = node.rpc.getblock(h1, 2)
    assert v2["tx"][0]["txid"] == block.txs[0].txid_hex
    assert v2["tx"][0]["vout"][0]["scriptPubKey"]["address"] == TEST_ADDRESS
    hdr = node.rpc.getblockheader(h1)
    assert hdr["hash"] == h1 and hdr["height"] == 1 and hdr["nTx"] == 1
    assert BlockHeader.from_bytes(bytes.fromhex(node.rpc.getblockheader(h1, False))).hash_hex == h1
    with pytest.raises(RpcError) as e:
        node.rpc.getblock("00" * 32)
    assert e.value.code == -5 and e.value.message == "Block not found"


def test_chaintips_and_utxo_set(node: TestNode) -> None:
    tips = node.rpc.getchaintips()
    assert tips == [{"height": 101, "hash": node.rpc.getbestblockhash(), "branchlen": 0,
                     "status": "active"}]
    cb_txid = node.rpc.getblock(node.rpc.getblockhash(1))["tx"][0]
    out = node.rpc.gettxout(cb_txid, 0)
    assert out["confirmations"] == 101 and out["coinbase"] is True
    assert out["value"] == Decimal("50") and out["scriptPubKey"]["address"] == TEST_ADDRESS
    assert node.rpc.gettxout(cb_txid, 1) is None
    stats = node.rpc.gettxoutsetinfo()
    assert stats["height"] == 101 and stats["txouts"] == 101
    assert stats["total_amount"] == Decimal("5050")


def test_spend_mature_coinbase_through_mempool_into_a_block(node: TestNode) -> None:
    tx = spend_coinbase(node, 1, OTHER_KEY.public_key.pkh)
    decoded = node.rpc.decoderawtransaction(tx.serialized.hex())
    assert decoded["txid"] == tx.txid_hex
    txid = node.rpc.sendrawtransaction(tx.serialized.hex())
    assert txid == tx.txid_hex
    # Sending again is not an error (bitcoind returns the txid).
    assert node.rpc.sendrawtransaction(tx.serialized.hex()) == txid
    assert node.rpc.getrawmempool() == [txid]
    verbose = node.rpc.getrawmempool(True)
    assert verbose[txid]["fees"]["base"] == Decimal("0.0001")
    assert node.rpc.getmempoolentry(txid)["vsize"] == tx.size
    assert node.rpc.getmempoolinfo()["size"] == 1
    assert node.rpc.getrawtransaction(txid) == tx.serialized.hex()
    # The coinbase output is spent in the pool: gettxout hides it unless asked not to.
    prev = tx.vin[0].prevout.txid_hex
    assert node.rpc.gettxout(prev, 0) is None
    assert node.rpc.gettxout(prev, 0, False) is not None
    # A double spend is refused with bitcoind's reason and code.
    double = spend_coinbase(node, 1, OTHER_KEY.public_key.pkh, fee=20_000)
    with pytest.raises(RpcError) as e:
        node.rpc.sendrawtransaction(double.serialized.hex())
    assert e.value.code == -26 and "txn-mempool-conflict" in e.value.message
    [h] = node.rpc.generatetoaddress(1, TEST_ADDRESS)
    block = node.rpc.getblock(h)
    assert txid in block["tx"] and node.rpc.getrawmempool() == []
    # The coinbase claimed subsidy + fee.
    cb = node.rpc.getrawtransaction(block["tx"][0], True)
    assert cb["vout"][0]["value"] == Decimal("50.0001") and cb["confirmations"] == 1
    confirmed = node.rpc.getrawtransaction(txid, 1)
    assert confirmed["blockhash"] == h and confirmed["confirmations"] == 1


def test_createrawtransaction_and_generateblock(node: TestNode) -> None:
    prev = node.rpc.getblock(node.rpc.getblockhash(2))["tx"][0]
    raw = node.rpc.createrawtransaction([{"txid": prev, "vout": 0}], {TEST_ADDRESS: 49.99})
    tx = Transaction.from_hex(raw)
    assert tx.vin[0].prevout.txid_hex == prev and tx.vout[0].value == 4_999_000_000
    from cleancoin.components.common.keys import sign_transaction
    from framework import TEST_KEY
    signed = sign_transaction(tx, [TEST_KEY])
    out = node.rpc.generateblock(TEST_ADDRESS, [signed.serialized.hex()])
    block = node.rpc.getblock(out["hash"])
    assert block["tx"][1] == signed.txid_hex and node.rpc.getbestblockhash() == out["hash"]
    with pytest.raises(RpcError) as e:
        node.rpc.generateblock(TEST_ADDRESS, ["11" * 32])
    assert e.value.code == -5
    with pytest.raises(RpcError) as e:
        node.rpc.createrawtransaction([], {"notanaddress": 1})
    assert e.value.code == -5 and "Invalid CleanCoin address" in e.value.message


def test_validateaddress_and_network_info(node: TestNode) -> None:
    good = node.rpc.validateaddress(TEST_ADDRESS)
    assert good["isvalid"] is True and good["address"] == TEST_ADDRESS
    assert node.rpc.validateaddress("cc1qqqqq")["isvalid"] is False
    info = node.rpc.getnetworkinfo()
    assert info["connections"] == 0 and info["subversion"].startswith("/CleanCoin")
    assert node.rpc.getpeerinfo() == [] and node.rpc.getconnectioncount() == 0
    assert node.rpc.uptime() >= 0


def test_rpc_errors_and_authentication(node: TestNode) -> None:
    import base64
    import urllib.error
    import urllib.request
    with pytest.raises(RpcError) as e:
        node.rpc.nosuchmethod()
    assert e.value.code == -32601
    with pytest.raises(RpcError) as e:
        node.rpc.getblockhash("one")
    assert e.value.code == -3
    with pytest.raises(RpcError) as e:
        node.rpc.getblockcount(1)
    assert e.value.code == -1                      # wrong argument count: the help text
    with pytest.raises(RpcError) as e:
        node.rpc.sendrawtransaction("zz")
    assert e.value.code == -22
    assert "getblockcount" in node.rpc.help() and node.rpc.help("getblock").startswith("getblock ")
    url = f"http://127.0.0.1:{node.rpc_port}/"
    body = b'{"method": "getblockcount", "params": [], "id": 1}'
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(urllib.request.Request(url, body), timeout=10)
    assert http.value.code == 401
    bad = base64.b64encode(b"__cookie__:wrong").decode()
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(urllib.request.Request(url, body, {"Authorization": f"Basic {bad}"}), timeout=10)
    assert http.value.code == 401


def test_restart_keeps_the_chain(node: TestNode) -> None:
    tip, height = node.rpc.getbestblockhash(), node.rpc.getblockcount()
    pid_file = node.netdatadir / "CleanCoind.pid"
    assert pid_file.exists()
    assert node.stop() == 0
    assert not node.cookie_path.exists() and not pid_file.exists()
    node.start()
    assert node.rpc.getbestblockhash() == tip and node.rpc.getblockcount() == height
    assert node.stop() == 0
    node.start(["-reindex"])
    assert node.rpc.getbestblockhash() == tip
    assert node.rpc.gettxoutsetinfo()["height"] == height
    assert "reindex" in node.debug_log()


def test_verifychain_and_the_start_up_check(node: TestNode) -> None:
    """bitcoind's verifychain and its start-up check of the last -checkblocks blocks. A coin
    taken out of the UTXO set under a stopped node (as a compromised CleanCoin-node can write
    its chain database) stops the next start with bitcoind's message; -reindex rebuilds."""
    # A start of its own: the module's node began on an empty chain, and the check runs at start.
    assert node.stop() == 0
    node.start()
    assert node.rpc.verifychain() is True
    assert node.rpc.verifychain(4, 0) is True
    assert "Verification: no coin database inconsistencies in last 6 blocks" in node.debug_log()
    tip = node.rpc.getbestblockhash()
    coinbase = node.rpc.getblock(tip)["tx"][0]
    assert node.stop() == 0
    db = sqlite3.connect(node.netdatadir / "chainstate.sqlite", isolation_level=None)
    assert db.execute("DELETE FROM utxo WHERE txid = ?", (bytes.fromhex(coinbase)[::-1],)).rowcount == 1
    db.close()
    node.start(wait=False)
    assert node.process is not None and node.process.wait(60) == 1
    node.process = None
    stderr = (node.datadir / "stderr.txt").read_text()
    assert "Corrupted block database detected: block " + tip in stderr
    assert f"lacks output {coinbase}:0 it created. Please restart with -reindex to recover." in stderr
    node.start(["-checkblocks=1", "-checklevel=2"])       # not thorough enough to see it
    assert node.stop() == 0
    node.start(["-reindex"])
    assert node.rpc.getbestblockhash() == tip and node.rpc.gettxout(coinbase, 0) is not None
    assert node.rpc.verifychain(3, 0) is True
    assert node.stop() == 0
    node.start(["-checklevel=5"], wait=False)
    assert node.process is not None and node.process.wait(60) == 1
    node.process = None
    assert "Invalid value for -checklevel: '5' (0 to 4)" in (node.datadir / "stderr.txt").read_text()
    node.start()
