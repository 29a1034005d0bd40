"""Headers pre-sync: a branch's headers are stored only once they lead to more work than our tip
(and than the minimum chain work).

bitcoind 24's remedy (HeadersSyncState), sized to this code base. A header costs its sender
only proof of work at its era's difficulty (on main here, about a million hashes; on regtest,
two), and a stored header is kept for good: in the chain database, in the in-memory block
index, and loaded again at every start. So headers that do not (yet) lead to more work than
our tip are not stored. Per peer, one `HeaderSync` follows the branch the peer is showing:

presync
    each header is checked against the previous one exactly as the chain would store it
    (chain.check_header_link: proof of work, difficulty, median time past, time) and its
    work counted; nothing of it is kept but the last header's link and, every
    CHECKPOINT_INTERVAL headers, its hash (32 bytes). When the branch's work exceeds our
    tip's, the peer is asked for the same headers again;
redownload
    each answer must follow the last header stored, and the hashes at the recorded heights
    must match: since a header commits to its parent, a match proves that every header
    before it is the one counted. Those are stored (chain.accept_headers, one transaction);
    the rest of an answer is asked for again from there. Past the last counted header the
    branch already has more work than our tip, so what follows is stored as it comes.

Why hashes kept, not headers: a peer may show up to MAX_PRESYNC_HEADERS headers before its
branch overtakes ours (a branch at low difficulty against a tip of high work); keeping them
would cost 80 bytes each (more as Python objects) per peer; keeping one hash per thousand
costs 32 bytes per thousand, and no header is buffered between two messages. The price is an
honest branch's headers sent twice. (bitcoind keeps one salted bit per ~600 headers and
buffers 14,000 in redownload; this is the same idea without the salt, at 256 times the bits.)

The bound on a session: no valid branch can have more headers above its base than
(our tip's work above the base) / (the least work a header can carry) before it has more work
than our tip, so the session's length is bounded by that plus a margin (on regtest about the
tip's height) and by MAX_PRESYNC_HEADERS (on main the work bound is far larger). A session
past its bound, or whose redownload does not match what was counted, is dropped; the peer is
not punished for either (an honest peer's chain may change between two answers; bitcoind
does not punish these either). A header that breaks a rule costs the peer its connection as
an invalid block does; that is the caller's (node.py).

The threshold: "our tip's work" above is `work_threshold`, the larger of the tip's work and
the minimum chain work (chainparams.py, -minimumchainwork), as bitcoind's
GetAntiDoSWorkThreshold (which also lowers the tip's part by 144 blocks' work, so that a
branch forking near the tip is stored before it overtakes; blocks-first download makes that
unnecessary here: such a branch's blocks come as blocks). A node whose tip is below the
minimum chain work (a fresh node in initial block download) therefore stores no branch of
headers that does not reach it: a peer cannot make it believe a cheap header chain, forked
anywhere, before the real one arrives. Such a node downloads blocks headers-first (node.py,
"Block download"), so it asks for no block until a header chain stored here leads to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...common.primitives import BlockHeader

#: Heights (above the session's base) at which the presync phase records the header's hash.
CHECKPOINT_INTERVAL: int = 1000
#: Most headers one peer may show above its base before they overtake our tip: about 76 years
#: of ten-minute blocks; 128 KiB of recorded hashes at most.
MAX_PRESYNC_HEADERS: int = 4_000_000
#: Slack on the work-derived bound (rounding of the compact difficulty encoding).
WORK_BOUND_MARGIN: int = 2


class PresyncAbort(Exception):
    """The session is dropped (bound exceeded, redownload mismatch): not the peer's fault
    for sure, so not punished."""


def work_threshold(tip_work: int, minimum_chain_work: int) -> int:
    """The work a branch's headers must exceed before they are stored (module docstring)."""
    return max(tip_work, minimum_chain_work)


def min_header_work(pow_limit: int) -> int:
    """The least work a header can carry: one at the network's easiest target."""
    return (1 << 256) // (pow_limit + 1)


def work_bound(tip_work: int, base_work: int, pow_limit: int) -> int:
    """Most headers above a base of `base_work` that a valid branch can have while its work
    is still at most `tip_work`, plus WORK_BOUND_MARGIN, capped at MAX_PRESYNC_HEADERS."""
    by_work = max(tip_work - base_work, 0) // min_header_work(pow_limit) + WORK_BOUND_MARGIN
    return min(by_work, MAX_PRESYNC_HEADERS)


@dataclass
class RedownloadBatch:
    """What one redownload answer gave: `verified` headers to store (their branch was counted
    to more work than our tip), `beyond` headers past the last counted one (store as they
    come: they extend a branch of more work), `done` whether the counted branch is stored."""

    verified: list[BlockHeader]
    beyond: list[BlockHeader]
    done: bool


@dataclass
class HeaderSync:
    """One peer's header session (see the module docstring). `base` is the index entry the
    branch leaves from; `last` the link (chain.HeaderLink) of the last header counted."""

    base_hash: bytes
    base_height: int
    base_work: int
    last: Any
    checkpoints: bytearray = field(default_factory=bytearray)
    #: Redownload phase: the last counted header (the target) and the last header stored.
    final: Any = None
    stored_hash: bytes = b""
    stored_height: int = 0

    @classmethod
    def start(cls, base_link: Any) -> HeaderSync:
        """A session from a stored entry's link (chain.header_link)."""
        return cls(base_link.hash, base_link.height, base_link.chainwork, base_link)

    @property
    def redownloading(self) -> bool:
        return self.final is not None

    @property
    def counted(self) -> int:
        """Headers counted above the base."""
        return self.last.height - self.base_height

    def expects(self, first: BlockHeader) -> bool:
        """Whether an answer starting with `first` continues this session."""
        if self.redownloading:
            return first.prev_hash == self.stored_hash
        return first.prev_hash == self.last.hash

    def presync(self, chain: Any, headers: Sequence[BlockHeader], tip_work: int) -> None:
        """Check and count `headers` (continuing `last`); raises ValidationError for a header
        that breaks a rule, PresyncAbort past the session's bound."""
        bound = work_bound(tip_work, self.base_work, chain.params.pow_limit)
        for header in headers:
            self.last = chain.check_header_link(header, self.last)
            counted = self.counted
            if counted > bound and self.last.chainwork <= tip_work:
                raise PresyncAbort(f"more than {bound} headers above height {self.base_height} "
                                   "without more work than our tip")
            if counted % CHECKPOINT_INTERVAL == 0:
                self.checkpoints += self.last.hash

    def start_redownload(self) -> None:
        """The counted branch has more work than our tip: ask for it again from the base."""
        self.final = self.last
        self.stored_hash, self.stored_height = self.base_hash, self.base_height

    def redownload(self, headers: Sequence[BlockHeader]) -> RedownloadBatch:
        """Match a redownload answer (continuous, following `stored_hash`) against what was
        counted; returns what may be stored. Raises PresyncAbort on a mismatch or an answer
        that proves nothing (it ends before the next recorded height)."""
        verified_upto = 0
        height = self.stored_height
        for i, header in enumerate(headers):
            height += 1
            if height > self.final.height:
                break
            rel = height - self.base_height
            expected: bytes | None = None
            if height == self.final.height:
                expected = self.final.hash
            elif rel % CHECKPOINT_INTERVAL == 0:
                k = rel // CHECKPOINT_INTERVAL - 1
                expected = bytes(self.checkpoints[32 * k:32 * k + 32])
            if expected is not None:
                if header.hash != expected:
                    raise PresyncAbort(f"redownloaded header at height {height} is not the one counted")
                verified_upto = i + 1
        if not verified_upto:
            raise PresyncAbort("redownload answer ends before the next recorded height")
        verified = list(headers[:verified_upto])
        self.stored_hash, self.stored_height = verified[-1].hash, self.stored_height + verified_upto
        done = self.stored_height == self.final.height
        beyond = list(headers[verified_upto:]) if done else []
        return RedownloadBatch(verified, beyond, done)
