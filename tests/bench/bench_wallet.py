"""Wallet benchmark (issue 5): catch-up over 5,000 blocks through the in-process `Chain`
binding (NodeChain), in blocks per second. The baseline the multiprocess issue compares the
IPC binding against (bench_multiprocess.py measures both in one run). Every 10th coinbase
pays the wallet, so the catch-up records coins too. The chain: chain_fixture.py.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from chain_fixture import BLOCKS, PARAMS, build_chain

from cleancoin.components.node.chain_binding import NodeChain
from cleancoin.components.wallet.store import WalletStore
from cleancoin.components.wallet.wallet import Wallet


def test_wallet_catch_up_rate() -> None:
    with tempfile.TemporaryDirectory() as d:
        store = WalletStore.create(d, "bench", PARAMS.name)
        mine_to = Wallet("bench", store, None).new_key(False).pkh  # type: ignore[arg-type]
        bench = build_chain(d, BLOCKS, mine_to)
        wallet = Wallet("bench", store, NodeChain(bench.chain, bench.mempool))

        async def catch_up() -> float:
            start = time.perf_counter()
            await wallet.load()
            elapsed = time.perf_counter() - start
            await wallet.close()
            return elapsed

        elapsed = asyncio.run(catch_up())
        bench.close()
        print(f"\nwallet catch-up, in-process Chain: {BLOCKS} blocks in {elapsed:.2f} s = "
              f"{BLOCKS / elapsed:,.0f} blocks/s (chain built in {bench.build_seconds:.1f} s)")
        assert BLOCKS / elapsed > 100
