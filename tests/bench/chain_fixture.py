"""A regtest chain for the wallet benchmarks (bench_wallet.py, bench_multiprocess.py).

`build_chain` mines `blocks` solved blocks on a fresh ChainManager (SQLite, as the node keeps
it) with a mempool kept on the tip by the node's own listener; every 10th coinbase pays
`pay_to` (a wallet's key), the others a key nobody owns, so a catch-up records coins too.
Not a `bench_*.py` file: never collected, only imported.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from cleancoin.components.node.chain import ChainManager
from cleancoin.components.common.chainparams import REGTEST as PARAMS
from cleancoin.components.common.keys import PrivateKey
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import mine_block
from cleancoin.components.node.node import ChainViewAdapter, MempoolUpdater

NOW = 2_100_000_000
BLOCKS = int(os.environ.get("WALLET_BENCH_BLOCKS", "5000"))
OTHER = PrivateKey(hashlib.sha256(b"bench other").digest()).public_key.pkh


@dataclass
class BenchChain:
    chain: ChainManager
    mempool: Mempool
    build_seconds: float

    def close(self) -> None:
        self.chain.close()


def open_chain(directory: str) -> tuple[ChainManager, Mempool]:
    chain = ChainManager(PARAMS, os.path.join(directory, "chain.sqlite"), now=lambda: NOW,
                         synchronous="NORMAL")
    mempool = Mempool(PARAMS, ChainViewAdapter(chain))
    chain.add_listener(MempoolUpdater(mempool))     # first, as node.py does
    return chain, mempool


def mine(chain: ChainManager, count: int, pay_to: bytes) -> None:
    """`count` blocks on the tip; a block at a height divisible by 10 pays `pay_to`. One
    second apart: the wallet refuses a block more than two hours ahead of its (real) clock,
    and 5,000 blocks ten minutes apart from regtest's genesis would end weeks ahead of it."""
    for _ in range(count):
        tip = chain.tip
        height = tip.height + 1
        chain.accept_block(mine_block(tip.header, height, pay_to if height % 10 == 0 else OTHER,
                                      PARAMS, tip.time + 1, tip.bits))


def build_chain(directory: str, blocks: int, pay_to: bytes) -> BenchChain:
    chain, mempool = open_chain(directory)
    t0 = time.perf_counter()
    mine(chain, blocks, pay_to)
    return BenchChain(chain, mempool, time.perf_counter() - t0)
