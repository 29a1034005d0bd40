"""The parallel block download of a header chain: which blocks to ask a peer for, who stalls
it, and for how long a stall is tolerated (bitcoind's FindNextBlocksToDownload and its
stalling detection, net_processing.cpp).

The blocks of the header chain being downloaded (a HeaderDownload plan) are asked for from
every peer whose headers lead along that chain, in height order, inside a *window* of
BLOCK_DOWNLOAD_WINDOW heights above the lowest block not stored yet, at most
MAX_BLOCKS_IN_TRANSIT_PER_PEER at a time from one peer and each from one peer only. A slow
peer so holds at most 16 blocks, not the download: the others fetch the rest of the window.
When a peer could fetch something if only the window were one larger (every block in it is
stored or in flight) while another peer holds the window's first missing block, that other
peer is *stalling* the download; it is disconnected when it has delivered nothing for the
stalling timeout (BLOCK_STALLING_TIMEOUT_DEFAULT, doubled after each such disconnect up to
BLOCK_STALLING_TIMEOUT_MAX, so that our own slow link does not cost us one peer after
another, and shrunk by 15 % for each block that moves our tip; while it is above the default, a
block held past the default is asked of the idle peers too, node.py's _race_stalled_block, so
that connections taking turns at stalling cannot drive it up). Before 12-07 one sync peer
at a time was asked for every block (node.py, "Block download"): one block every 119 s from
it held a node below the minimum chain work for days while a peer with every block waited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .header_download import HeaderDownload

#: Heights above the lowest missing block the download reaches (bitcoind's).
BLOCK_DOWNLOAD_WINDOW: int = 1024
#: Blocks requested from one peer at a time (bitcoind's MAX_BLOCKS_IN_TRANSIT_PER_PEER).
MAX_BLOCKS_IN_TRANSIT_PER_PEER: int = 16
#: Seconds a peer that stalls the window has before it is disconnected, and the most that
#: doubling makes of it (bitcoind's BLOCK_STALLING_TIMEOUT_DEFAULT and _MAX).
BLOCK_STALLING_TIMEOUT_DEFAULT: float = 2.0
BLOCK_STALLING_TIMEOUT_MAX: float = 64.0
#: The block download timeout grows by this share of its base for every other peer blocks
#: are being downloaded from (bitcoind's BLOCK_DOWNLOAD_TIMEOUT_PER_PEER).
BLOCK_DOWNLOAD_TIMEOUT_PER_PEER: float = 0.5
#: A block a peer answered notfound for this often is not asked of it again.
MAX_REFUSALS: int = 2


@dataclass
class StallTimeout:
    """The stalling timeout now in force (one per node: bitcoind's m_block_stalling_timeout)."""

    seconds: float = BLOCK_STALLING_TIMEOUT_DEFAULT

    def after_stall(self) -> None:
        """A peer was disconnected for stalling: the next one gets twice as long, so that a
        link of our own too slow for the window does not disconnect every peer in turn."""
        self.seconds = min(2 * self.seconds, BLOCK_STALLING_TIMEOUT_MAX)

    def after_blocks(self, connected: int) -> None:
        """Our tip moved by `connected` blocks: back towards the default, 15 % a block
        (bitcoind's, in BlockConnected)."""
        self.seconds = max(self.seconds * 0.85 ** max(0, min(connected, 64)), BLOCK_STALLING_TIMEOUT_DEFAULT)


def download_timeout(base: float, other_peers_downloading: int) -> float:
    """Seconds a peer's oldest requested block may take (bitcoind's block download
    timeout): `base`, plus half of it for each other peer blocks are coming from, since
    they share our bandwidth."""
    return base * (1 + BLOCK_DOWNLOAD_TIMEOUT_PER_PEER * max(0, other_peers_downloading))


@dataclass(frozen=True)
class Stall:
    """Peer `peer_id` holds `block` (at `height`), the first block the window waits for."""

    peer_id: int
    block: bytes
    height: int


def _usable(idx: Any) -> bool:
    return idx is not None and not getattr(idx, "have_data", True) and not getattr(idx, "failed", False)


def advance_low(chain: Any, plan: HeaderDownload) -> None:
    """Move the plan's `low` past the blocks stored since (each height is passed once)."""
    while plan.low <= plan.target.height:
        h = plan.hash_at(chain, plan.low)
        idx = chain.get_index(h) if h is not None else None
        if idx is not None and not getattr(idx, "have_data", True):
            return
        plan.low += 1


def next_blocks(chain: Any, plan: HeaderDownload, *, peer_id: int, serve_height: int, count: int,
                requested: Mapping[bytes, int], refused: Mapping[bytes, int],
                ) -> tuple[list[bytes], Stall | None]:
    """Up to `count` hashes of the plan's blocks, lowest first, that peer `peer_id` (whose
    headers lead along the plan up to `serve_height`) may be asked for: inside the window,
    not stored, not in flight from anyone (`requested`: hash -> peer id), not refused by it
    MAX_REFUSALS times before (`refused`: hash -> notfound answers). Second: the stall, when
    this peer would get a block only from a larger window, every block of the window being
    stored or in flight, and another peer holds the first block in flight of the window
    (None otherwise). A block this peer refused leaves the window not full (bitcoind's
    condition): another peer may fetch it. Before 12-07 (later that day) refused blocks counted as
    taken, so a peer that showed the headers and answered notfound for every block made
    the only peer with the blocks a "staller" once it had refused the window's, and it was
    disconnected (test_p2p_min_chain_work_stall.py, variant 6)."""
    advance_low(chain, plan)
    window_end = plan.low + BLOCK_DOWNLOAD_WINDOW - 1
    top = min(serve_height, plan.target.height, window_end + 1)
    out: list[bytes] = []
    waiting_for: Stall | None = None
    window_full = True
    for height in range(plan.low, top + 1):
        h = plan.hash_at(chain, height)
        if h is None:
            continue
        idx = chain.get_index(h)
        if idx is not None and getattr(idx, "failed", False):
            break                               # (the branch is invalid from here on)
        if not _usable(idx):
            continue
        holder = requested.get(h)
        if holder is not None:
            if waiting_for is None:
                waiting_for = Stall(holder, h, height)
            continue
        if refused.get(h, 0) >= MAX_REFUSALS:
            window_full = window_full and height > window_end
            continue
        if height > window_end:
            if not out and window_full and waiting_for is not None and waiting_for.peer_id != peer_id:
                return out, waiting_for
            break
        out.append(h)
        if len(out) >= count:
            break
    else:
        # Every block up to the end of the chain is stored or in flight: the window is not
        # the limit, but the peer is left idle just the same. bitcoind names no staller
        # here, leaving the block download timeout (minutes): before 12-07 (later that day) neither
        # did we, and connections that each kept a block of the chain's last 1024 heights,
        # reconnecting when dropped, held the download that long (variant 12 of
        # test_p2p_min_chain_work_stall.py).
        if not out and window_full and waiting_for is not None and waiting_for.peer_id != peer_id:
            return out, waiting_for
    return out, None


def serve_height(chain: Any, plan: HeaderDownload, best: Any,
                 ancestor: Callable[[Any, int], Any]) -> int:
    """How far up the plan's branch a peer whose best header is `best` can serve blocks:
    its height when it lies on the branch, the target's when it extends it, else -1."""
    if best is None:
        return -1
    target = plan.target
    if best.height <= target.height:
        return best.height if plan.hash_at(chain, best.height) == best.hash else -1
    return target.height if ancestor(best, target.height).hash == target.hash else -1
