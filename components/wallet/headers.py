"""The wallet's own header chain: every block the node hands the wallet is checked before it
counts.

Under CleanCoin-node the node is the confined process that faces the network and the wallet
a separate process; a compromised node could hand the wallet any block it liked (a payment
that never happened). So the wallet checks what a node would, as far as headers and the
block's own structure go, with the consensus code the node uses (common/consensus.py,
common/pow.py; nothing copied):

- `check_block`: proof of work against the header's own bits, a time at most two hours ahead
  of the wallet's clock, the merkle root (the transactions are the ones the header commits
  to), the coinbase and every transaction's context-free rules;
- `contextual_check_block_header`: bits equal to what the difficulty rule demands from the
  ancestors, time above the median of the eleven before, BIP94's time-warp rule;
- and the block extends the wallet's chain: its parent is the header the wallet holds at
  the height below.

Trust on first use: the wallet holds no header before its first block, so the first time it
needs one it takes from the node the block below its first block (its birth, or the best block
of a wallet from before this check) and the ten before it (for the median time), linked by
hash, and, on networks that retarget, the first header of the current difficulty period: the
anchor. Genesis needs no trust (its hash is in chainparams). Every header checked is stored
in the wallet file (store.py, `headers`) in the same transaction as the block's effects, so a
restart does not re-trust. A reorganisation the node reports must lead to a branch with more
work than the wallet's own from the fork on (`Wallet._unwind_to_active_chain`).

What this does not do: on regtest proof of work is free (every other nonce), so there it only
checks the bookkeeping; a node can still withhold blocks (the wallet then shows less, never
more); and a fake branch at the real difficulty costs real work, as it would to fool a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cleancoin.components.common.chainparams import ChainParams
from cleancoin.components.common.consensus import check_block, contextual_check_block_header
from cleancoin.components.common.errors import ValidationError
from cleancoin.components.common.pow import PrevBlock, block_proof, median_time_past
from cleancoin.components.common.primitives import Block, BlockHeader

from .store import WalletStore

__all__ = ["MTP_SPAN", "BlockRefused", "Branch", "HeaderChain"]

#: Headers before a block that the median-time-past rule reads.
MTP_SPAN: int = 11


class BlockRefused(Exception):
    """A block from the node that the wallet does not accept; `reason` is the consensus
    reject reason ("high-hash", "bad-diffbits", "bad-txnmrklroot", ...) or one of the
    wallet's ("bad-prevblk", "bad-genesis", "less-work", ...)."""

    def __init__(self, height: int, block_hash: bytes, reason: str, detail: str = "") -> None:
        super().__init__(f"block {height} ({block_hash[::-1].hex()}): {reason}"
                         + (f" ({detail})" if detail else ""))
        self.height = height
        self.block_hash = block_hash
        self.reason = reason
        self.detail = detail


@dataclass
class Branch:
    """Headers of a branch being checked before the wallet switches to it: above `base`
    they replace the wallet's own rows."""

    base: int
    headers: dict[int, BlockHeader] = field(default_factory=dict)


class HeaderChain:
    """The checks of the module docstring over a wallet's stored header chain."""

    def __init__(self, store: WalletStore, params: ChainParams,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.params = params
        self._clock = clock

    def _lookup(self, low: int, high: int, branch: Branch | None) -> dict[int, BlockHeader]:
        rows = {h: BlockHeader.from_bytes(raw) for h, (_, raw, _) in self.store.headers(low, high).items()
                if branch is None or h <= branch.base}
        if branch is not None:
            rows.update((h, hdr) for h, hdr in branch.headers.items() if low <= h <= high)
        return rows

    def has_parent(self, height: int) -> bool:
        """Whether the wallet holds the header a block at `height` must build on."""
        return height == 0 or bool(self.store.headers(height - 1, height - 1))

    def parse(self, raw: bytes, height: int) -> Block:
        """The block the node sent, or BlockRefused when it does not parse."""
        try:
            return Block.from_bytes(raw)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the node's bad data
            raise BlockRefused(height, bytes(32), "bad-block-encoding", type(exc).__name__) from None

    def check(self, block: Block, height: int, branch: Branch | None = None) -> None:
        """Raise BlockRefused unless `block` may be the wallet's block at `height`: the
        module docstring's checks, against the stored chain (or `branch` above its base)."""
        now = int(self._clock())
        try:
            check_block(block, self.params, now)
        except ValidationError as exc:
            raise BlockRefused(height, block.hash, exc.reason, exc.debug) from None
        if height == 0:
            if block.hash != self.params.genesis_hash:
                raise BlockRefused(height, block.hash, "bad-genesis", "not this network's genesis block")
            return
        window = self._lookup(max(0, height - MTP_SPAN), height - 1, branch)
        prev = window.get(height - 1)
        if prev is None:
            raise BlockRefused(height, block.hash, "no-parent-header",
                               f"the wallet holds no header at {height - 1}")
        if block.header.prev_hash != prev.hash:
            raise BlockRefused(height, block.hash, "bad-prevblk",
                               f"does not build on the wallet's block {height - 1}")

        def ancestor_time(h: int) -> int:
            found = window.get(h) or self._lookup(h, h, branch).get(h)
            if found is None:
                raise BlockRefused(height, block.hash, "no-ancestor-header",
                                   f"the difficulty rule needs the header at {h}")
            return found.time

        times = [window[h].time for h in sorted(window)]
        try:
            contextual_check_block_header(block.header, PrevBlock(height - 1, prev.bits, prev.time),
                                          self.params, median_time_past=median_time_past(times),
                                          ancestor_time=ancestor_time, now=now)
        except ValidationError as exc:
            raise BlockRefused(height, block.hash, exc.reason, exc.debug) from None

    def check_known(self, block: Block, height: int, row: tuple[bytes, bytes, bool] | None) -> None:
        """For a rescan: `block` is the one of the wallet's header chain at `height` (`row`,
        its stored row) and its transactions are the ones its header commits to."""
        if row is None or row[0] != block.hash:
            raise BlockRefused(height, block.hash, "not-in-header-chain",
                               f"not the wallet's block at {height}")
        try:
            check_block(block, self.params)
        except ValidationError as exc:
            raise BlockRefused(height, block.hash, exc.reason, exc.debug) from None

    def work(self, low: int, high: int) -> int | None:
        """Work of the wallet's blocks low..high (None when a header is missing)."""
        rows = self.store.headers(low, high)
        if len(rows) != high - low + 1:
            return None
        return sum(block_proof(BlockHeader.from_bytes(raw).bits) for _, raw, _ in rows.values())

    def anchor_rows(self, blocks: list[Block], low: int, expect: bytes | None) -> list[tuple[int, bytes, bytes, bool]]:
        """The anchor (module docstring): `blocks` are the node's blocks low.., the last one
        the parent of the wallet's first block (`expect`, the wallet's best block, when it
        has one). They must link by hash, start at genesis when low is 0, and end at
        `expect`; then they are the rows to store, taken on trust."""
        top = low + len(blocks) - 1
        for i, block in enumerate(blocks):
            height = low + i
            if height == 0 and block.hash != self.params.genesis_hash:
                raise BlockRefused(0, block.hash, "bad-genesis", "not this network's genesis block")
            if i and block.header.prev_hash != blocks[i - 1].hash:
                raise BlockRefused(height, block.hash, "bad-prevblk", "the anchor's headers do not link")
        if expect is not None and (not blocks or blocks[-1].hash != expect):
            raise BlockRefused(top, blocks[-1].hash if blocks else bytes(32), "bad-anchor",
                               "the node's block there is not the wallet's best block")
        return [(low + i, b.hash, b.header.serialized, low + i != 0) for i, b in enumerate(blocks)]

    def period_start(self, parent_height: int) -> int | None:
        """The height of the header the difficulty rule will ask for at the next retarget
        after `parent_height` (None on a network that never retargets)."""
        if self.params.pow_no_retargeting:
            return None
        interval = self.params.retarget_interval
        next_retarget = (parent_height // interval + 1) * interval
        return next_retarget - interval
