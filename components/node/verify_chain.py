"""Checking the last blocks against the chain state: `verifychain` and the start-up check
(-checkblocks, -checklevel), as bitcoind's CVerifyDB.

Under CleanCoin-node the confined node writes the chain database, and what a compromised node
left there the next start believes (CleanCoind's too, with its wallet in the same process).
The index is checked at every load (chain.ChainManager._load_index) and a block is checked
again before it is connected; this checks what is already connected: the blocks' bytes, their
undo data and the UTXO set they produced. It walks down from the tip, at most `nblocks` blocks
(0: all), and stops at the first problem.

Levels, as bitcoind's -checklevel (each includes those below):

0. each block's bytes are there and hash to their header;
1. each passes the context-free block rules (merkle root, structure: consensus.check_block);
2. its undo data is there and names one coin for each input it spent outside the block;
3. the UTXO set holds what these blocks did: every output they created that no later checked
   block spent is there, as created (value, payee, height, coinbase flag), and none that a
   later checked block spent is;
4. the blocks are connected again, lowest first, on a view of the chain state rewound by
   their undo data, with every rule and signature; each must spend exactly the coins its undo
   data recorded.

A UTXO entry that no block created (a coin written straight into the table) is seen only
when every block is checked (nblocks 0) at level 3 or more: the set's count and value must be
what the whole chain leaves. -reindex rebuilds the table from the blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..common.consensus import Coin, block_signature_failure, check_block, connect_block_inputs
from ..common.errors import ValidationError
from ..common.primitives import Block, OutPoint
from .storage import StorageError

if TYPE_CHECKING:
    from .chain import BlockIndex, ChainManager

log = logging.getLogger("cleancoin.chain")

#: bitcoind's defaults for -checkblocks and -checklevel.
DEFAULT_CHECK_BLOCKS: int = 6
DEFAULT_CHECK_LEVEL: int = 3
MAX_CHECK_LEVEL: int = 4


@dataclass(frozen=True)
class VerifyResult:
    """What a verification found: `problem` is None when every checked block passed."""

    level: int
    checked: int
    transactions: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every checked block passed."""
        return self.problem is None


@dataclass
class _RewoundView:
    """The chain state below the lowest checked block: the UTXO set without the outputs the
    checked blocks created, with the coins they spent from below, then updated as each block
    is connected again (level 4)."""

    chain: ChainManager
    removed: set[OutPoint] = field(default_factory=set)
    added: dict[OutPoint, Coin] = field(default_factory=dict)

    def get(self, outpoint: OutPoint) -> Coin | None:
        coin = self.added.get(outpoint)
        if coin is not None or outpoint in self.removed:
            return coin
        return self.chain.utxo(outpoint)


def _outputs(block: Block) -> Iterable[tuple[OutPoint, Coin]]:
    for i, tx in enumerate(block.txs):
        for n, out in enumerate(tx.vout):
            yield OutPoint(tx.txid, n), Coin(out.value, out.pkh, 0, i == 0)


def verify(chain: ChainManager, level: int = DEFAULT_CHECK_LEVEL, nblocks: int = DEFAULT_CHECK_BLOCKS,
           progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Check the last `nblocks` blocks of the active chain (0 or more than the chain: all but
    genesis) at `level` (0-4; clamped, as bitcoind clamps it). `progress(done, total)` hears
    about each block. The caller holds the chain still (ChainManager.verify_chain)."""
    level = max(0, min(level, MAX_CHECK_LEVEL))
    tip = chain.tip
    if nblocks <= 0 or nblocks > tip.height:
        nblocks = tip.height
    checked: list[tuple[BlockIndex, Block, tuple[tuple[OutPoint, Coin], ...]]] = []
    spent_above: set[OutPoint] = set()
    transactions = 0
    # Level 3 over every block: the coins and value the whole chain leaves, against the set.
    left_coins = left_value = 0

    def result(problem: str | None = None) -> VerifyResult:
        return VerifyResult(level, len(checked), transactions, problem)

    for height in range(tip.height, tip.height - nblocks, -1):
        idx = chain.block_at_height(height)
        if idx is None:
            return result(f"no block at height {height}")
        where = f"block {idx.hash_hex} at height {height}"
        try:
            block = chain.get_block(idx.hash)
        except StorageError as e:
            return result(f"{where}: {e}")
        if block is None:
            return result(f"{where}: its bytes are missing")
        if level >= 1:
            try:
                check_block(block, chain.params, check_pow=False)
            except ValidationError as e:
                return result(f"{where} breaks a block rule: {e}")
        undo: tuple[tuple[OutPoint, Coin], ...] = ()
        if level >= 2:
            try:
                found = chain.get_undo(idx.hash, block)
            except (StorageError, ValueError) as e:
                return result(f"{where}: its undo data does not parse: {e}")
            if found is None:
                return result(f"{where}: its undo data is missing")
            undo = found
        if level >= 3:
            inside = {txin.prevout for tx in block.txs[1:] for txin in tx.vin}
            problem = _check_coins(chain, block, height, spent_above, inside)
            if problem is not None:
                return result(f"{where}: {problem}")
            spent_above.update(op for op, _ in undo)
            kept = [coin.value for outpoint, coin in _outputs(block) if outpoint not in inside]
            # What connecting the block added to the set: its outputs not spent inside it,
            # less the coins it spent from before.
            left_coins += len(kept) - len(undo)
            left_value += sum(kept) - sum(coin.value for _, coin in undo)
        checked.append((idx, block, undo))
        transactions += len(block.txs)
        if progress is not None:
            progress(len(checked), nblocks)
    if level >= 3 and nblocks == tip.height:
        stats = chain.utxo_stats()
        if (stats["txouts"], stats["total_amount"]) != (left_coins, left_value):
            return result(f"the UTXO set holds {stats['txouts']} coins worth {stats['total_amount']} units, "
                          f"the blocks leave {left_coins} worth {left_value}: coins no block created "
                          "were written into it, or some were taken out")
    if level >= 4 and checked:
        problem = _reconnect(chain, checked)
        if problem is not None:
            return result(problem)
    return result()


def _check_coins(chain: ChainManager, block: Block, height: int, spent_above: set[OutPoint],
                 inside: set[OutPoint]) -> str | None:
    """Level 3 for one block: its outputs in the UTXO set as created, unless spent (by a
    checked block above, or inside the block itself: then absent). One lookup for them all."""
    outputs = list(_outputs(block))
    found = chain.utxos([outpoint for outpoint, _ in outputs])
    for outpoint, made in outputs:
        coin = found.get((outpoint.txid, outpoint.n))
        if outpoint in spent_above or outpoint in inside:
            if coin is not None:
                return f"the UTXO set still holds {outpoint.txid[::-1].hex()}:{outpoint.n}, which a later block spent"
            continue
        expected = Coin(made.value, made.pkh, height, made.is_coinbase)
        if coin != expected:
            what = "lacks" if coin is None else "holds another coin at"
            return f"the UTXO set {what} output {outpoint.txid[::-1].hex()}:{outpoint.n} it created"
    return None


def _reconnect(chain: ChainManager,
               checked: list[tuple[BlockIndex, Block, tuple[tuple[OutPoint, Coin], ...]]]) -> str | None:
    """Level 4: rewind the chain state below the lowest checked block, then connect each block
    again in order with every rule and signature."""
    lowest = checked[-1][0].height
    view = _RewoundView(chain)
    for _, block, undo in checked:
        view.removed.update(op for op, _ in _outputs(block))
        for outpoint, coin in undo:
            if coin.height < lowest:
                view.added[outpoint] = coin
    for idx, block, undo in reversed(checked):
        where = f"block {idx.hash_hex} at height {idx.height}"
        try:
            conn, checks = connect_block_inputs(block, idx.height, view, chain.params)
        except ValidationError as e:
            return f"{where} does not connect again: {e}"
        bad = chain.signatures.verify(checks)
        if bad is not None:
            return f"{where} does not connect again: {block_signature_failure(checks[bad])}"
        if tuple(conn.spent) != undo:
            return f"{where} spends other coins than its undo data records"
        for outpoint, _ in conn.spent:
            view.added.pop(outpoint, None)
            view.removed.add(outpoint)
        for outpoint, coin in conn.created:
            view.added[outpoint] = coin
    return None
