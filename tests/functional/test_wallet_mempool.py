"""Functional, both executables: a pending payment never goes missing for its receiver
(issue 11, item 10). A wallet takes in the mempool's transactions that concern it when it
loads, and so after a restart of the process that holds it, as bitcoind's wallets do
(`requestMempoolTransactions`).
"""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from cleancoin.components.common.address import decode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.rpc.errors import RpcError
from cleancoin.components.rpc.errors import RpcError

from framework import TEST_ADDRESS, TestNode, is_multiprocess, spend_coinbase, wait_until


@pytest.fixture
def node(tmp_path: Path):
    made: list[TestNode] = []

    def make() -> TestNode:
        made.append(TestNode(len(made), tmp_path))
        return made[-1]

    yield make
    for n in made:
        n.cleanup()


def two_wallets(n: TestNode, extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """Start `n` with wallets a (one mature coinbase) and b; block 1 pays TEST_KEY (for
    spend_coinbase). Returns (a's address, b's address)."""
    n.start(list(extra))
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    n.rpc.createwallet("a")
    n.rpc.createwallet("b")
    a_addr = n.client.call("getnewaddress", wallet="a")
    b_addr = n.client.call("getnewaddress", wallet="b")
    n.rpc.generatetoaddress(101, a_addr)
    wait_until(lambda: n.client.call("getbalance", wallet="a") == 50, what="mature coinbase")
    return a_addr, b_addr


def pending(n: TestNode, txid: str) -> dict:
    """b's view of `txid`; fails when b does not know it."""
    tx = n.client.call("gettransaction", txid, wallet="b")
    assert tx["confirmations"] == 0
    return tx


def test_a_payment_made_while_the_wallet_was_unloaded_is_there_when_it_loads(node) -> None:
    n = node()
    _, b_addr = two_wallets(n)
    n.rpc.unloadwallet("b")
    txid = n.client.call("sendtoaddress", b_addr, 1, wallet="a")
    assert n.rpc.loadwallet("b")["name"] == "b"
    assert pending(n, txid)["amount"] == Decimal(1)
    assert n.client.call("getbalances", wallet="b")["mine"]["untrusted_pending"] == Decimal(1)
    # It confirms as usual.
    n.rpc.generatetoaddress(1, TEST_ADDRESS)
    wait_until(lambda: n.client.call("gettransaction", txid, wallet="b")["confirmations"] == 1,
               what="confirmation")


def test_a_pending_payment_survives_a_kill_of_the_process_holding_the_wallets(node) -> None:
    """sendtoaddress from a to b, then at once SIGKILL of the process that holds both
    wallets (CleanCoind itself; CleanCoin-node's wallet process). After the restart b
    knows the payment. With CleanCoin-node a second payment to b reaches the mempool
    while the wallet process is down (sendrawtransaction); b knows it too."""
    n = node()
    _, b_addr = two_wallets(n)
    txid = n.client.call("sendtoaddress", b_addr, 1, wallet="a")
    raw_txid = None
    if is_multiprocess():
        wpid = [p for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"][0]["pid"]
        os.kill(wpid, signal.SIGKILL)
        raw = spend_coinbase(n, 1, decode_address(b_addr, REGTEST))
        raw_txid = n.rpc.sendrawtransaction(raw.to_bytes().hex())
        wait_until(lambda: n.rpc.getprocessinfo()["processes"][1]["restarts"] == 1, what="wallet restart")
    else:
        n.kill()
        n.start(["-wallet=a", "-wallet=b"])
    wait_until(lambda: _loaded(n) == ["a", "b"], what="the wallets to be back")
    assert pending(n, txid)["amount"] == Decimal(1)
    if raw_txid is not None:
        assert pending(n, raw_txid)["amount"] > Decimal(49)
    assert txid in n.rpc.getrawmempool()


def _loaded(n: TestNode) -> list[str] | None:
    try:
        return sorted(n.rpc.listwallets())
    except RpcError:            # -28 while the wallet process restarts
        return None
