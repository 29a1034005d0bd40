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

The anchor: the wallet holds no header before its first block, so the first time it needs
one it takes the block below its first block (its birth, or the best block of a wallet from
before this check), the ten before it (for the median time) and, on networks that retarget,
the first header of the current difficulty period. Those come from a header chain the wallet
checks itself from genesis (`GenesisCheck`: the node's active headers, 80 bytes each, asked
for with `Chain.get_headers`; every header's proof of work, difficulty, median time and
link, as above), and only when that chain's work reaches the minimum chain work
(chainparams.py, -minimumchainwork, bitcoind's nMinimumChainWork): a chain with less is
refused ("below-minimum-chain-work"), the wallet takes no block and says it is waiting
(getwalletinfo's `anchor`, its log) until the node's chain has the work. The checked headers
above the anchor are stored too (as rows without their block; since 12-07 read again from the
node for that, one answer at a time from the tip down, and proven by hash to be the ones
checked, `prove_down`, so the check holds none of them): a block the node then hands
the wallet at one of those heights must be that header's, or the node's header chain, checked
again from there, must show more work than those rows and then replaces them (since 12-07:
`Wallet._overtaken`, as a reorganisation must; before, its blocks were weighed and the rows
dropped, and the blocks served next taken unchecked against any), since the node
names the wallet's birth height itself: a block just above it is valid at the difficulty of
that height's era, which may be the minimum. A wallet born at genesis checks the chain the
same way before its first block, and every wallet again after a block is disconnected
(store.py's `chain_recheck`): blocks above a fork likewise need only their era's difficulty.
Since 12-07 that check resumes at the fork (`HeaderChain.resumed_check`): the node's header
at the wallet's best block must be the wallet's (by hash, which names the chain below it),
the chain's work up to there is the store's `checked_work`, and only the branch above is read
and checked; a node whose header there is another is refused at once (bad-anchor).
Before 12-06 the
anchor was the node's word, taken on trust (bitcoind's wallet trusts its node's chain the
same way): a node already compromised when a wallet was created could anchor it on a cheap
branch forked anywhere and pay it there (tests/functional/test_wallet_min_chain_work.py).
Genesis needs no trust (its hash is in chainparams). Every header checked is stored in the
wallet file (store.py, `headers`) in the same transaction as the block's effects, so a
restart does not check again. A reorganisation the node reports must lead to a branch with
more work than the wallet's own from the fork on (`Wallet._unwind_to_active_chain`); a
rewind (the node's chain ends below the wallet's best block) is followed, and since 12-07
keeps the undone blocks' rows, without their blocks, as the bar the node's next chain must be
or outweigh (`HeaderChain.replaces_rows`).

What this does not do: on regtest proof of work is free (every other nonce) and the minimum
chain work 0, so there it only checks the bookkeeping unless -minimumchainwork is given; on
main and test the minimum is the genesis block's work until a release pins a real block
(chainparams.py); above the minimum, a fake branch costs real work, as it would to fool a
node; a node can still withhold blocks (the wallet then shows less, never more); and what a
wallet anchored before this check took on trust stays (it checks the chain once before its
next block: store.py's `chain_recheck`, absent in its file).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cleancoin.components.common.chainparams import ChainParams
from cleancoin.components.common.consensus import (
    check_block, check_block_header, contextual_check_block_header,
)
from cleancoin.components.common.errors import ValidationError
from cleancoin.components.common.hashes import sha256d
from cleancoin.components.common.pow import PrevBlock, block_proof, median_time_past
from cleancoin.components.common.primitives import Block, BlockHeader

from .store import WalletStore

__all__ = ["MTP_SPAN", "BlockRefused", "Branch", "GenesisCheck", "HeaderChain", "prove_down"]

#: Headers before a block that the median-time-past rule reads.
MTP_SPAN: int = 11
#: Serialized size of a block header.
HEADER_SIZE: int = 80


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
                 clock: Callable[[], float] = time.time, minimum_chain_work: int | None = None) -> None:
        self.store = store
        self.params = params
        self._clock = clock
        #: -minimumchainwork, the wallet's own (None: the network's); never the node's word.
        self.minimum_chain_work = params.minimum_chain_work if minimum_chain_work is None else minimum_chain_work

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
        if branch is None:
            # A row stored without its block (the chain checked at the anchor) names the
            # block that belongs here: another one must first show more work than those rows
            # (Wallet._sync_round).
            row = self.store.headers(height, height).get(height)
            if row is not None and row[2] and row[0] != block.hash:
                raise BlockRefused(height, block.hash, "not-in-header-chain",
                                   f"not the block of the wallet's checked header chain at {height}")
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

    def anchor_keep(self, parent: int) -> frozenset[int]:
        """The heights of the check's headers to keep for an anchor at `parent` (a first
        block at `parent` + 1): the parent and the ten below it, on retargeting networks the
        current period's first header, and the wallet's top row when it lies above the
        parent (`replaces_rows` compares there). The headers above the parent are stored too,
        read again (`prove_down`)."""
        heights = set(range(max(0, parent - MTP_SPAN + 1), parent + 1))
        first = self.period_start(parent) if parent >= 0 else None
        if first is not None:
            heights.add(first)
        # The top row above the parent, which replaces_rows compares the node's chain with.
        top = self.store.top_header()
        if top > parent:
            heights.add(top)
        return frozenset(heights)

    def anchor_rows(self, checked: GenesisCheck, parent: int,
                    expect: bytes | None) -> list[tuple[int, bytes, bytes, bool]]:
        """The anchor (module docstring) for a first block at `parent` + 1, from `checked`,
        the node's chain checked from genesis to its tip: that chain must have the minimum
        chain work, reach `parent`, and hold there `expect` (the wallet's best block, when
        it has one). The rows to store at or below the parent, `trusted` (stored without
        their block) set except for genesis; every checked header above it is stored too
        (the blocks the wallet takes there must be these, `check`), read again from the node
        and proven against the checked tip (`prove_down`)."""
        tip_hash = checked.last.hash if checked.last is not None else bytes(32)
        if checked.work < self.minimum_chain_work:
            raise BlockRefused(checked.height, tip_hash, "below-minimum-chain-work",
                               f"the node's chain (height {checked.height}) has work {checked.work:#x}, "
                               f"less than the minimum chain work {self.minimum_chain_work:#x}")
        if checked.height < parent or (parent >= 0 and parent not in checked.kept):
            raise BlockRefused(max(parent, 0), tip_hash, "bad-anchor",
                               f"the node's header chain ends at {checked.height}, below the "
                               f"wallet's anchor at {parent}")
        if expect is not None and checked.kept[parent].hash != expect:
            raise BlockRefused(parent, checked.kept[parent].hash, "bad-anchor",
                               "the node's block there is not the wallet's best block")
        return [(h, hdr.hash, hdr.serialized, h != 0) for h, hdr in sorted(checked.kept.items()) if h <= parent]

    def replaces_rows(self, checked: GenesisCheck, parent: int) -> bool:
        """Whether the node's chain, `checked` up to its tip (it agrees with the wallet's
        rows up to `parent`: anchor_rows), replaces the wallet's rows above `parent` (the
        checked chain stored at an anchor, or kept by a rewind). False when it agrees with
        them (it is them, a prefix of them, or extends them: compared at the highest height
        both have, whose hash names the chain below it); True when it differs and has more
        work than them, as a reorganisation must; BlockRefused ("less-work") when it differs
        with no more. Before 12-07 the node's chain simply replaced them: a node that first
        rewound the wallet could then show any branch that cost its own blocks' work."""
        top = self.store.top_header()
        at = min(top, checked.height)
        if at <= parent:
            return False
        theirs = checked.last if at == checked.height else checked.kept.get(at)
        row = self.store.headers(at, at).get(at)
        if theirs is not None and row is not None and row[0] == theirs.hash:
            return False
        # The rows present, from the parent up. A gap lowers the bar, never wedges the
        # wallet: a chain stored from the tip down and cut short (`headers-changed`) leaves
        # one, between the rows it replaced and those it did not, after that chain showed
        # more work than the rows it replaces (so the lowered bar is still more than the
        # node proved it has).
        ours = checked.work_below + sum(block_proof(BlockHeader.from_bytes(raw).bits)
                                        for _, raw, _ in self.store.headers(parent + 1, top).values())
        if checked.work > ours:
            return True
        tip_hash = checked.last.hash if checked.last is not None else bytes(32)
        raise BlockRefused(checked.height, tip_hash, "less-work",
                           f"the node's chain (height {checked.height}, work {checked.work:#x}) differs "
                           f"from the header chain the wallet checked above {parent} (up to {top}, work "
                           f"{ours:#x}) and has no more work")

    def resumed_check(self, parent: int, keep: frozenset[int]) -> GenesisCheck | None:
        """The check from genesis for an anchor at `parent` (the wallet's best block, after a
        disconnect), resumed at `parent` from the wallet's own rows instead of read again
        from genesis: the chain up to there is the one the wallet checked (its header at
        `parent` names it by hash), the chain's work up to there is the store's
        `checked_work`, and the rows give the median-time window and the difficulty period's
        first header. None when the wallet lacks any of that (the check starts at genesis).
        `parent` is the wallet's best block, or the anchor's parent of a wallet that has no
        block yet (its row there, checked from genesis, names the chain the same way: since
        12-07, else a node whose block there is refused, `Wallet._overtaken`, had the whole
        chain read again at every round)."""
        work = self.store.checked_work
        best_hash, best = self.store.best_block
        if parent < 0 or work is None or work[0] != parent or best not in (parent, -1) \
                or (best == parent and best_hash != work[1]):
            return None
        # The period's first header, as the check from genesis holds it (the last height
        # divisible by the retarget interval it passed); needed where the network retargets.
        period = parent // self.params.retarget_interval * self.params.retarget_interval
        window = range(max(0, parent - MTP_SPAN + 1), parent + 1)
        need = set(window) | {h for h in keep if h <= parent}
        if not self.params.pow_no_retargeting:
            need.add(period)
        rows = self.store.headers(window.start, parent) | self.store.headers(period, period)
        if not need <= rows.keys() or rows[parent][0] != work[1]:
            return None
        headers = {h: BlockHeader.from_bytes(rows[h][1]) for h in need | ({period} & rows.keys())}
        check = GenesisCheck(self.params, keep, parent + 1, height=parent, last=headers[parent], begin=parent,
                             work=work[2], work_below=work[2], times=[headers[h].time for h in window],
                             kept={h: headers[h] for h in keep if h <= parent})
        if period in headers:
            check.period_start = (period, headers[period].time)
        return check

    def period_start(self, parent_height: int) -> int | None:
        """The height of the header the difficulty rule will ask for at the next retarget
        after `parent_height` (None on a network that never retargets)."""
        if self.params.pow_no_retargeting:
            return None
        interval = self.params.retarget_interval
        next_retarget = (parent_height // interval + 1) * interval
        return next_retarget - interval


def prove_down(raw: bytes, low: int, need: bytes) -> tuple[list[tuple[int, bytes, bytes, bool]], bytes]:
    """The node's headers at `low`.. (`raw`, concatenated), read again to be stored above an
    anchor, proven to be the ones checked: the last must hash to `need` (the checked tip's
    hash, or the parent hash named by the lowest header proven before) and each one's
    parent hash names the one below it, so by the hash function they are that chain's. The
    rows (trusted) and the hash the header below `low` must have; BlockRefused
    ("headers-changed") when the node's chain is another one now."""
    if not raw or len(raw) % HEADER_SIZE:
        raise BlockRefused(low, need, "headers-changed", "the node's header chain got shorter under the check")
    rows = []
    for offset in range(len(raw) - HEADER_SIZE, -1, -HEADER_SIZE):
        header = raw[offset:offset + HEADER_SIZE]
        block_hash = sha256d(header)
        if block_hash != need:
            raise BlockRefused(low + offset // HEADER_SIZE, block_hash, "headers-changed",
                               "the node's header chain changed under the check")
        rows.append((low + offset // HEADER_SIZE, block_hash, header, True))
        need = header[4:36]
    return rows, need


@dataclass
class GenesisCheck:
    """The node's active header chain checked from genesis (module docstring, the anchor),
    one answer of `Chain.get_headers` at a time, keeping nothing but the last header's link,
    the headers at the heights in `keep` and the work up to `keep_from` - 1 (since 12-07 not
    the headers from `keep_from` on: 80 bytes each, unbounded for a node's fake chain; they
    are read again when the anchor is stored, `prove_down`). Resumable: a later `feed` goes on from the
    last header checked, so a wallet waiting for the minimum chain work does not read the
    chain again on every block. BlockRefused for a header that breaks a rule."""

    params: ChainParams
    keep: frozenset[int]
    #: The height above the anchor's parent (its work is recorded: work_below).
    keep_from: int = 1 << 62
    clock: Callable[[], float] = time.time
    height: int = -1
    last: BlockHeader | None = None
    work: int = 0
    times: list[int] = field(default_factory=list)
    period_start: tuple[int, int] | None = None
    kept: dict[int, BlockHeader] = field(default_factory=dict)
    #: The chain's work up to keep_from - 1 (the anchor's parent), once checked that far.
    work_below: int = 0
    #: The height the check started at: 0, or where it resumed (HeaderChain.resumed_check).
    begin: int = 0

    @property
    def next_height(self) -> int:
        """The height the next answer must start at."""
        return self.height + 1

    def feed(self, raw: bytes) -> int:
        """Check one answer (headers from `next_height` on, concatenated); returns how many."""
        if len(raw) % HEADER_SIZE:
            raise BlockRefused(self.next_height, bytes(32), "bad-headers",
                               f"an answer of {len(raw)} bytes is not a run of 80-byte headers")
        now = int(self.clock())
        for offset in range(0, len(raw), HEADER_SIZE):
            self._check(BlockHeader.from_bytes(raw[offset:offset + HEADER_SIZE]), now)
        return len(raw) // HEADER_SIZE

    def _check(self, header: BlockHeader, now: int) -> None:
        height = self.height + 1
        if height == 0:
            if header.hash != self.params.genesis_hash:
                raise BlockRefused(0, header.hash, "bad-genesis", "not this network's genesis block")
        else:
            prev = self.last
            assert prev is not None
            if header.prev_hash != prev.hash:
                raise BlockRefused(height, header.hash, "bad-prevblk",
                                   f"the node's header {height} does not build on its header {height - 1}")
            period = self.period_start

            def ancestor_time(h: int) -> int:
                if period is None or period[0] != h:
                    raise BlockRefused(height, header.hash, "no-ancestor-header",
                                       f"the difficulty rule needs the header at {h}")
                return period[1]

            try:
                check_block_header(header, self.params, now)
                contextual_check_block_header(header, PrevBlock(height - 1, prev.bits, prev.time),
                                              self.params, median_time_past=median_time_past(self.times),
                                              ancestor_time=ancestor_time, now=now)
            except ValidationError as exc:
                raise BlockRefused(height, header.hash, exc.reason, exc.debug) from None
        if height % self.params.retarget_interval == 0:
            self.period_start = (height, header.time)
        self.times = (self.times + [header.time])[-MTP_SPAN:]
        self.work += block_proof(header.bits)
        self.height, self.last = height, header
        if height == self.keep_from - 1:
            self.work_below = self.work
        if height in self.keep:
            self.kept[height] = header
