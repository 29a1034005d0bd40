"""Functional, CleanCoin-node: what a reorganisation a remote peer causes costs the wallet
process, as a function of the chain's height.

After any block is disconnected the wallet checks the node's header chain again before its
next block (components/wallet/headers.py). Until 12-07 it read and checked that chain from
genesis each time (80 bytes over IPC and about 6 us of the wallet's CPU per header): any peer
able to make the node reorganise (a branch of one block more work, again and again) made every
wallet behind it pay for the whole chain. Now the check resumes at the fork, from the wallet's
own checked headers: it costs the reorganisation's depth.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import BlockHeader
from cleancoin.components.node.mining import mine_block
from framework import TEST_ADDRESS, TestNode, cpu_seconds, is_multiprocess, wait_until
from raw_peer import push_blocks
from test_p2p_header_presync import JUNK_PKH

#: Heights at which the peer reorganises the node by one block.
LOW, HIGH = 200, 3000


def _wallet_height(n: TestNode) -> int:
    return int(n.rpc.getwalletinfo()["lastprocessedblock"]["height"])


def _reorg_by_one(n: TestNode, wallet_pid: int, tag: int) -> float:
    """A raw peer sends a branch of two blocks on the tip's parent (one block more work):
    the node reorganises, the wallet follows. The wallet process's CPU seconds meanwhile."""
    tip = n.rpc.getblockcount()
    parent = BlockHeader.from_bytes(bytes.fromhex(n.rpc.getblockheader(n.rpc.getblockhash(tip - 1), False)))
    branch = []
    for i in range(2):
        block = mine_block(parent, tip + i, JUNK_PKH, REGTEST, parent.time + 1 + tag, parent.bits)
        branch.append(block)
        parent = block.header
    wait_until(lambda: _wallet_height(n) == tip, what="the wallet at the tip")
    cpu = cpu_seconds(wallet_pid)
    push_blocks(n.p2p_port, "127.63.0.1", branch)
    wait_until(lambda: n.rpc.getwalletinfo()["lastprocessedblock"]["hash"] == branch[-1].hash_hex,
               what="the wallet on the peer's branch")
    return cpu_seconds(wallet_pid) - cpu


@pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node): "
                    "the cost measured is the wallet process's")
def test_a_peers_one_block_reorganisation_costs_the_wallet_its_depth_not_the_chain(
        node: Callable[..., TestNode]) -> None:
    """A one-block reorganisation by a raw peer at height LOW and again at HIGH. Before
    12-07 the wallet checked the node's chain from genesis after each (its log: "checked
    from genesis to its tip"): 10 and 40 ms of the wallet process's CPU, 25 KB and
    249 KB received over IPC at 200 and 3000 (strace), 280 ms and 1.6 MB at 20,000. Now the
    check resumes at the fork (the wallet's block below the tip): the same cost at both
    heights."""
    n = node()
    n.start()
    n.rpc.createwallet("w")
    wallet_pid = next(p["pid"] for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet")
    wallet_log = n.netdatadir / "wallets" / "debug.log"
    n.rpc.generatetoaddress(LOW, TEST_ADDRESS)
    low = _reorg_by_one(n, wallet_pid, 1)
    n.rpc.generatetoaddress(HIGH - n.rpc.getblockcount(), TEST_ADDRESS)
    high = _reorg_by_one(n, wallet_pid, 2)
    print(f"\none-block reorganisation, wallet process CPU: {low * 1e3:.0f} ms at {LOW}, "
          f"{high * 1e3:.0f} ms at {HIGH}")
    checks = re.findall(r"anchored at block (\d+) .*checked from (genesis|its block \d+)", wallet_log.read_text())
    assert checks[-1] == (str(HIGH - 1), f"its block {HIGH - 1}"), checks[-3:]
    assert n.stop() == 0
