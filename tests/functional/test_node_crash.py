"""Functional: kill -9 while blocks are being connected; the restart finds the chain intact."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

from framework import TEST_ADDRESS, TestNode, wait_until
from cleancoin.components.rpc.client import RpcTransportError
from cleancoin.components.rpc.errors import RpcError


def test_kill_9_during_block_connect(tmp_path: Path) -> None:
    node = TestNode(0, tmp_path)
    node.start()
    stop = threading.Event()

    def mine() -> None:
        while not stop.is_set():
            try:
                node.rpc.generatetoaddress(5, TEST_ADDRESS)
            except (RpcTransportError, RpcError, OSError):
                return

    try:
        miner = threading.Thread(target=mine, daemon=True)
        miner.start()
        wait_until(lambda: node.rpc.getblockcount() >= 40, what="mining")
        node.kill()                          # in the middle of a generatetoaddress call
        stop.set()
        miner.join(10)
        node.start()
        height = node.rpc.getblockcount()
        assert 40 <= height < 150            # below the first halving: 50 per block
        assert node.rpc.getblockhash(height) == node.rpc.getbestblockhash()
        stats = node.rpc.gettxoutsetinfo()
        assert stats["height"] == height and stats["txouts"] == height
        assert stats["total_amount"] == Decimal(50 * height)
        # The chain goes on from there.
        node.rpc.generatetoaddress(1, TEST_ADDRESS)
        assert node.rpc.getblockcount() == height + 1
        assert node.stop() == 0
    finally:
        stop.set()
        node.cleanup()
