"""Building and solving blocks: coinbase, block assembly, nonce search.

Used by generatetoaddress/generateblock on regtest (where a solution takes ~2 tries) and by
tests; a main-network miner would use the same pieces with more patience.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from ..common.chainparams import ChainParams
from ..common.consensus import block_subsidy
from ..common.pow import derive_target
from ..common.primitives import (
    Block, BlockHeader, OutPoint, Transaction, TxIn, TxOut, coinbase_height_prefix,
    merkle_root, push_data,
)

_MAX_NONCE = 0xFFFFFFFF


def create_coinbase(height: int, pkh: bytes, value: int, extra_nonce: int = 0,
                    tag: bytes = b"") -> Transaction:
    """A coinbase paying `value` units to `pkh`.

    Its script is: height push (required by consensus, and what makes coinbase txids unique),
    an 8-byte extra nonce (a miner changes it when the 32-bit header nonce runs out), then
    an optional `tag` of up to 75 bytes (the script must stay within 2..100 bytes).
    """
    if not 0 <= extra_nonce < 1 << 64:
        raise ValueError("extra_nonce must fit 8 bytes")
    script = coinbase_height_prefix(height) + push_data(extra_nonce.to_bytes(8, "little"))
    if tag:
        script += push_data(tag)
    if len(script) > 100:
        raise ValueError("coinbase script longer than 100 bytes")
    return Transaction(1, (TxIn(OutPoint.null(), script),), (TxOut(value, pkh),), 0)


def assemble_block(prev: BlockHeader | bytes, txs: Sequence[Transaction], time: int, bits: int,
                   version: int = 1) -> Block:
    """An unsolved block (nonce 0) on top of `prev` (its header, or its hash) with `txs`,
    coinbase first, and their merkle root."""
    prev_hash = prev.hash if isinstance(prev, BlockHeader) else prev
    root, _ = merkle_root([tx.txid for tx in txs])
    return Block(BlockHeader(version, prev_hash, root, time, bits, 0), tuple(txs))


def solve(block: Block, params: ChainParams, max_tries: int = 1 << 32) -> Block | None:
    """The block with the first nonce from its current one that meets its target, trying at
    most `max_tries` nonces; None if none does (the caller then changes the extra nonce or
    the time). Hashes the 76 fixed header bytes once and only the nonce per try."""
    target = derive_target(block.header.bits, params.pow_limit)
    if target is None:
        raise ValueError("block bits are not a valid target for this network")
    prefix = hashlib.sha256(block.header.serialized[:76])
    start = block.header.nonce
    end = min(_MAX_NONCE + 1, start + max_tries)
    sha256 = hashlib.sha256
    for nonce in range(start, end):
        h = prefix.copy()
        h.update(nonce.to_bytes(4, "little"))
        if int.from_bytes(sha256(h.digest()).digest(), "little") <= target:
            return replace(block, header=replace(block.header, nonce=nonce))
    return None


def mine_block(prev: BlockHeader | bytes, height: int, pkh: bytes, params: ChainParams, time: int,
               bits: int, txs: Sequence[Transaction] = (), fees: int = 0,
               max_tries: int = 1 << 32) -> Block:
    """Build and solve a block paying subsidy + `fees` to `pkh` (fees: the caller's sum over
    `txs`). Rolls the extra nonce when the header nonce space is exhausted."""
    value = block_subsidy(height, params) + fees
    extra_nonce = 0
    while True:
        coinbase = create_coinbase(height, pkh, value, extra_nonce)
        block = solve(assemble_block(prev, [coinbase, *txs], time, bits), params, max_tries)
        if block is not None:
            return block
        extra_nonce += 1
