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


def test_wallet_header_check_cost() -> None:
    """What the header chain (components/wallet/headers.py) adds: the checks of one block
    (proof of work, difficulty, times, merkle root, linkage) and its stored header row, in
    microseconds per block; and a rescan of the whole chain (every block matched against the
    stored headers and its merkle root checked)."""
    from cleancoin.components.wallet.headers import HeaderChain
    from cleancoin.components.common.primitives import Block

    with tempfile.TemporaryDirectory() as d:
        store = WalletStore.create(d, "bench", PARAMS.name)
        mine_to = Wallet("bench", store, None).new_key(False).pkh  # type: ignore[arg-type]
        bench = build_chain(d, BLOCKS, mine_to)
        node = NodeChain(bench.chain, bench.mempool)
        wallet = Wallet("bench", store, node)

        async def run() -> tuple[float, float, float]:
            start = time.perf_counter()
            await wallet.load()
            catch_up = time.perf_counter() - start
            # The checks alone, again over every block, against the headers now stored (each
            # block checked as the next one on top of its parent's stored row).
            blocks = [Block.from_bytes(raw) for raw in await node.get_blocks(1, BLOCKS)]
            checks = HeaderChain(store, PARAMS)
            start = time.perf_counter()
            for height, block in enumerate(blocks, 1):
                checks.check(block, height)
            check = time.perf_counter() - start
            start = time.perf_counter()
            await wallet.rescan(0)
            rescan = time.perf_counter() - start
            await wallet.close()
            return catch_up, check, rescan

        catch_up, check, rescan = asyncio.run(run())
        bench.close()
        print(f"\nwallet header checks: {check / BLOCKS * 1e6:.0f} us per block "
              f"(catch-up {catch_up / BLOCKS * 1e6:.0f} us per block in all); rescan of "
              f"{BLOCKS} blocks {rescan:.2f} s = {rescan / BLOCKS * 1e6:.0f} us per block")
        assert check / BLOCKS < 0.005
