"""Wallet benchmark (issue 5): catch-up over 5,000 blocks through the in-process `Chain`
binding (NodeChain), in blocks per second. The baseline the multiprocess issue compares the
IPC binding against. Every 10th coinbase pays the wallet, so the catch-up records coins too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time

from cleancoin.components.node.chain import ChainManager
from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.node.chainparams import REGTEST as PARAMS
from cleancoin.components.node.keys import PrivateKey
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.node import ChainViewAdapter, MempoolUpdater
from cleancoin.components.wallet.store import WalletStore
from cleancoin.components.wallet.wallet import Wallet

NOW = 2_100_000_000
BLOCKS = int(os.environ.get("WALLET_BENCH_BLOCKS", "5000"))
OTHER = PrivateKey(hashlib.sha256(b"bench other").digest()).public_key.pkh


def test_wallet_catch_up_rate() -> None:
    with tempfile.TemporaryDirectory() as d:
        chain = ChainManager(PARAMS, os.path.join(d, "chain.sqlite"), now=lambda: NOW,
                             synchronous="NORMAL")
        mempool = Mempool(PARAMS, ChainViewAdapter(chain))
        chain.add_listener(MempoolUpdater(mempool))
        store = WalletStore.create(d, "bench", PARAMS.name)
        wallet = Wallet("bench", store, NodeChain(chain, mempool))
        wallet.top_up_keypool(10)
        mine_to = wallet.new_key(False).pkh
        t0 = time.perf_counter()
        for height in range(1, BLOCKS + 1):
            tip = chain.tip
            chain.accept_block(mine_block(tip.header, height, mine_to if height % 10 == 0 else OTHER,
                                          PARAMS, tip.time + 600, tip.bits))
        build = time.perf_counter() - t0

        async def catch_up() -> float:
            start = time.perf_counter()
            await wallet.load()
            elapsed = time.perf_counter() - start
            await wallet.close()
            return elapsed

        elapsed = asyncio.run(catch_up())
        chain.close()
        print(f"\nwallet catch-up, in-process Chain: {BLOCKS} blocks in {elapsed:.2f} s = "
              f"{BLOCKS / elapsed:,.0f} blocks/s (chain built in {build:.1f} s)")
        assert BLOCKS / elapsed > 100
