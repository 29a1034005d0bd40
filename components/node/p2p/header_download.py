"""Headers-first block download: which blocks of a stored header chain to ask for next.

Below the minimum chain work the node asks for no block that a header chain of that much work
does not lead to (node.py, "Block download"): the header chain comes first (presync.py), and
its blocks are then asked for by hash, in height order, a batch at a time. The blocks to ask
for lie between the branch's fork from our active chain and its last stored header, the
*target*; a walk down `prev` links finds them, since the index keeps no list of a branch.

Walking from the target down to the next batch each time would cost the branch's length per
batch (quadratic in it); keeping every hash of the branch would cost 32 bytes (far more as
Python objects) per block. So one walk, when the target is set, records the hash at every
MARK_INTERVAL-th height (and the target's): a batch then starts from the first mark above it
and walks at most MARK_INTERVAL plus the batch. A million-block branch costs 1000 marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Heights at which the branch's hash is recorded.
MARK_INTERVAL: int = 1000


def _has_data(idx: Any) -> bool:
    return bool(getattr(idx, "have_data", True))


def on_active_chain(chain: Any, idx: Any) -> bool:
    """Whether the index entry `idx` is on the chain's active chain."""
    tip = chain.tip
    return bool(idx.height <= tip.height and chain.ancestor(tip, idx.height).hash == idx.hash)


@dataclass
class HeaderDownload:
    """The blocks of one stored header chain, from its fork to `target` (an index entry),
    handed out a batch at a time (`next_blocks`); `next_height` is the lowest height not
    handed out yet."""

    target: Any
    next_height: int
    marks: dict[int, bytes] = field(default_factory=dict)
    #: Times the plan was walked from the fork (the caller starts it again, once, when its
    #: blocks did not all come).
    rounds: int = 1

    @classmethod
    def start(cls, chain: Any, target: Any) -> HeaderDownload:
        """A download of `target`'s branch (one walk down to its fork from the active chain)."""
        plan = cls(target, 0)
        plan.next_height = plan._mark_down_from(chain, target, stop_height=-1)
        return plan

    def _mark_down_from(self, chain: Any, idx: Any, stop_height: int) -> int:
        """Record the marks from `idx` down to `stop_height` (exclusive) or to the fork from
        the active chain, whichever comes first; returns the lowest height walked (above the
        fork: the first block to download)."""
        self.marks[idx.height] = idx.hash
        lowest = idx.height + 1
        while idx.height > stop_height and not on_active_chain(chain, idx):
            if idx.height % MARK_INTERVAL == 0:
                self.marks[idx.height] = idx.hash
            lowest = idx.height
            idx = chain.get_index(idx.prev)
            if idx is None:                    # (not in the index: nothing below to fetch)
                break
        return lowest

    def retarget(self, chain: Any, target: Any) -> None:
        """Follow a new target: one that extends the current one adds the new part's marks
        (what was handed out stays handed out); any other starts the plan again (its branch
        forks elsewhere)."""
        old = self.target
        if target.hash == old.hash:
            return
        if target.height > old.height and chain.ancestor(target, old.height).hash == old.hash:
            self.target = target
            self._mark_down_from(chain, target, stop_height=old.height)
            return
        fresh = HeaderDownload.start(chain, target)
        self.target, self.next_height, self.marks = fresh.target, fresh.next_height, fresh.marks

    @property
    def done(self) -> bool:
        """Every block up to the target has been handed out."""
        return self.next_height > self.target.height

    def next_blocks(self, chain: Any, limit: int) -> list[bytes]:
        """The hashes of the branch's blocks not stored yet in the next `limit` heights from
        `next_height` that hold any, lowest first; advances `next_height` past those heights.
        Stored stretches are passed over; empty only when the plan is done."""
        out: list[bytes] = []
        while not out and not self.done:
            end = min(self.target.height, self.next_height + limit - 1)
            mark = min(h for h in self.marks if h >= end)
            idx = chain.get_index(self.marks[mark])
            while idx is not None and idx.height > end:
                idx = chain.get_index(idx.prev)
            stretch: list[Any] = []
            while idx is not None and idx.height >= self.next_height:
                stretch.append(idx)
                idx = chain.get_index(idx.prev)
            self.next_height = end + 1
            out = [e.hash for e in reversed(stretch)
                   if not _has_data(e) and not getattr(e, "failed", False)]
        return out
