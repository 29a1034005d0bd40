"""Functional: a wallet never signs a transaction whose fee is above -maxtxfee, as bitcoind's
wallet; and under CleanCoin-node neither the cap nor the default fee rate is the confined
node's word.

The attack: the confined node, compromised, tells its wallet process a minimum relay fee rate
of its own (attacks.node_inflates_fee, run inside the real confined node). The wallet paid
that rate when no settxfee was set: at 200 coins per 1000 bytes an ordinary `sendtoaddress`
of one coin gave 42 coins of a 50-coin input to the miners (before the cap, 12-05); with the
cap, a rate that keeps the fee just under it still went through (before 12-07: 0.315 coin of
fee for a one-coin payment under a 0.5 cap, about 150,000 times the relay minimum). It
matters where the operator has kept the node from spending (-forwardrpc=read): with the
default, a compromised node can call sendtoaddress itself.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import attacks
from cleancoin.components.rpc.client import RpcClient
from cleancoin.components.rpc.errors import RpcError
from framework import TestNode, end_process, free_port, is_multiprocess, wait_until
from test_node_wallet import funded_wallet, nodes, rpc_error  # noqa: F401 - a fixture
from test_sandbox_attacks import AttackedNode, home_base  # noqa: F401 - a fixture

MAX_FEE_MESSAGE = "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"


#: The node's answer: 1.5 coins per 1000 bytes, a one-coin payment's fee (about 225 bytes)
#: under the test's cap of 0.5 coin.
INFLATED_RATE = 150_000_000


@pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")
def test_a_compromised_node_cannot_make_a_forwardrpc_read_wallet_pay_a_huge_fee(home_base: Path) -> None:
    """The operator keeps the node from spending (a CleanCoin-wallet of its own with
    -forwardrpc=read, docs/multiprocess.md) and sends on the wallet's own RPC port, with a cap
    of 0.5 coin. The node, compromised, names 1.5 coins per 1000 bytes as its relay minimum:
    before 12-07 the send paid 0.315 coin of fee, under the cap. Now the wallet's default
    rate is its own (the network's relay minimum, 0.00001 coin per 1000 bytes): a few hundred
    units. An explicit rate under the cap still pays what it asks; one above it is refused
    (-6, bitcoind's text) and spends nothing."""
    a = AttackedNode(home_base, node=attacks.node_inflates_fee(INFLATED_RATE),
                     extra=("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1"))
    a.config["node_delay"] = 0.5
    datadir = a.node.datadir
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    subprocess.run([str(wallet_bin), "-regtest", f"-datadir={datadir}", "-wallet=w", "create"],
                   check=True, capture_output=True, timeout=60)
    a.start()
    results = a.result("node", timeout=60)
    assert results["inflate-relay-fee"]["escaped"] is False, results     # the lie is in place
    rpc_port = free_port()
    wallet = subprocess.Popen([str(wallet_bin), "-regtest", f"-datadir={datadir}", "-ipcconnect=unix",
                               "-wallet=w", "-forwardrpc=read", "-server", f"-rpcport={rpc_port}",
                               "-maxtxfee=0.5"], stderr=subprocess.PIPE)
    node = a.node
    try:
        wait_until(lambda: _answers(node), 60, what="the wallet through the node")
        address = node.rpc.getnewaddress()
        node.rpc.generatetoaddress(101, address)
        wait_until(lambda: node.rpc.getbalance() == 50, what="a mature coinbase")
        own = RpcClient("127.0.0.1", rpc_port, cookie_path=str(node.netdatadir / "wallets" / ".cookie"))
        txid = own.call("sendtoaddress", address, 1)
        fee = -node.rpc.gettransaction(txid)["fee"]
        print(f"\nthe node naming {INFLATED_RATE} units per 1000 bytes: a one-coin payment paid {fee} in fees")
        assert 0 < fee < Decimal("0.00001"), fee
        # The wallet's own cap: 0.5 coin, not the default 0.1. A rate the operator names
        # (units per byte) still sends: 0.21 coin of fee passes, 0.63 does not.
        txid = own.call("sendtoaddress", address, 1, "", "", False, None, None, None, None, 100_000)
        assert -Decimal("0.5") < node.rpc.gettransaction(txid)["fee"] < -Decimal("0.1")
        with pytest.raises(RpcError) as refused:
            own.call("sendtoaddress", address, 1, "", "", False, None, None, None, None, 300_000)
        assert (refused.value.code, refused.value.message) == (-6, MAX_FEE_MESSAGE), refused.value
    finally:
        end_process(wallet)
        node.stop()


def _answers(node: TestNode) -> bool:
    try:
        return node.rpc.listwallets() == ["w"]
    except RpcError:
        return False


def test_the_fee_cap_is_the_operators(nodes) -> None:  # noqa: F811 - a fixture
    """-maxtxfee, as bitcoind: the total fee a wallet transaction may pay, whoever asked for
    the rate (settxfee, fee_rate); the default is 0.10 coin."""
    node = nodes(1)[0]
    destination = funded_wallet(node, args=("-maxtxfee=0.001",))
    error = rpc_error(node.rpc.sendtoaddress, destination, 1, "", "", False, None, None, None, None, 1000)
    assert (error.code, error.message) == (-6, MAX_FEE_MESSAGE)
    error = rpc_error(node.rpc.settxfee, Decimal("0.1"))
    assert error.code == -8 and "txfee cannot be more than wallet max tx fee" in error.message, error.message
    assert node.rpc.settxfee(Decimal("0.0001")) is True
    txid = node.rpc.sendtoaddress(destination, 1)
    assert -Decimal("0.001") < node.rpc.gettransaction(txid)["fee"] < 0
    node.stop()
    for bad, says in (("-maxtxfee=x", "Invalid amount for -maxtxfee=<amount>: 'x'"),
                      ("-maxtxfee=0.000001", "must be at least the minrelay fee")):
        node.start([bad], wait=False)
        assert node.process is not None and node.process.wait(60) == 1
        node.process = None
        assert says in (node.datadir / "stderr.txt").read_text(), bad
