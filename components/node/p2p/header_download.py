"""Headers-first block download: the blocks of a stored header chain, by height.

Below the minimum chain work the node asks for no block that a header chain of that much work
does not lead to (node.py, "Block download"): the header chain comes first (presync.py), and
its blocks are then asked for by hash, in height order, from every peer that has them
(block_window.py). The blocks to ask for lie between the branch's fork from our active chain
and its last stored header, the *target*; a walk down `prev` links finds them, since the
index keeps no list of a branch.

Walking from the target down to the download window each time would cost the branch's length
per request (quadratic in it); keeping every hash of the branch would cost 32 bytes (far more
as Python objects) per block. So one walk, when the target is set, records the hash at every
MARK_INTERVAL-th height (and the target's): the hashes of a MARK_INTERVAL stretch are then
found by one walk from the mark at its top, and the few stretches the window spans are kept.
A million-block branch costs 1000 marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Heights at which the branch's hash is recorded.
MARK_INTERVAL: int = 1000


def on_active_chain(chain: Any, idx: Any) -> bool:
    """Whether the index entry `idx` is on the chain's active chain."""
    tip = chain.tip
    return bool(idx.height <= tip.height and chain.ancestor(tip, idx.height).hash == idx.hash)


@dataclass
class HeaderDownload:
    """The blocks of one stored header chain, from its fork to `target` (an index entry):
    `hash_at` gives the branch's hash at a height, `low` is the lowest height whose block is
    not stored yet as far as block_window.advance_low has looked."""

    target: Any
    low: int
    marks: dict[int, bytes] = field(default_factory=dict)
    #: The branch's hashes of the stretches walked last (stretch number -> hashes, lowest
    #: first; stretch n covers heights (n - 1) * MARK_INTERVAL + 1 .. n * MARK_INTERVAL).
    _stretches: dict[int, list[bytes]] = field(default_factory=dict)

    @classmethod
    def start(cls, chain: Any, target: Any) -> HeaderDownload:
        """A download of `target`'s branch (one walk down to its fork from the active chain)."""
        plan = cls(target, 0)
        plan.low = plan._mark_down_from(chain, target, stop_height=-1)
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
        """Follow a new target: one that extends the current one adds the new part's marks;
        any other starts the plan again (its branch forks elsewhere)."""
        old = self.target
        if target.hash == old.hash:
            return
        if target.height > old.height and chain.ancestor(target, old.height).hash == old.hash:
            self.target = target
            self._mark_down_from(chain, target, stop_height=old.height)
            self._stretches.clear()             # (the top stretch's walk ended at the old target)
            return
        fresh = HeaderDownload.start(chain, target)
        self.target, self.low, self.marks, self._stretches = fresh.target, fresh.low, fresh.marks, {}

    def hash_at(self, chain: Any, height: int) -> bytes | None:
        """The branch's hash at `height` (below its fork: the active chain's there), or None
        above the target and in a stretch wholly below the fork (no mark there). Each
        MARK_INTERVAL stretch is walked once, from the mark at its top, and kept while it is
        among the four highest asked for: the download window (1024 heights) spans at
        most three."""
        if height > self.target.height or height < 1:
            return None
        number = (height + MARK_INTERVAL - 1) // MARK_INTERVAL
        stretch = self._stretches.get(number)
        if stretch is None:
            top = min(number * MARK_INTERVAL, self.target.height)
            bottom = (number - 1) * MARK_INTERVAL + 1
            mark = self.marks.get(top)
            if mark is None:
                return None                     # (below the fork: no mark was recorded there)
            walked: list[bytes] = []
            idx = chain.get_index(mark)
            while idx is not None and idx.height >= bottom:
                walked.append(idx.hash)
                idx = chain.get_index(idx.prev)
            stretch = walked[::-1]
            stretch = [b""] * (top - bottom + 1 - len(stretch)) + stretch   # (a walk cut short)
            self._stretches[number] = stretch
            while len(self._stretches) > 4:
                del self._stretches[min(self._stretches)]
        found = stretch[height - (number - 1) * MARK_INTERVAL - 1]
        return found or None
