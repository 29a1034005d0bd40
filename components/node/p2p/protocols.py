"""What the P2P layer needs from the chain manager and the mempool.

Written as Protocols so the P2P code depends on behaviour, not on the concrete classes in
chain.py and mempool.py (built separately); tests plug in small in-memory versions.
All calls are synchronous: the node runs them on its event loop between messages, so chain
and mempool never see two P2P calls at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...common.chainparams import ChainParams
from ...common.primitives import Block, Transaction


class ChainAccess(Protocol):
    """The block chain: lookups, the locator, and block acceptance."""

    params: ChainParams
    #: Optional (read with a default of 0): -minimumchainwork (presync.work_threshold).
    minimum_chain_work: int

    @property
    def tip(self) -> Any:
        """The best block's index entry: has `.hash` (bytes) and `.height` (int)."""
        ...

    def get_index(self, h: bytes) -> Any | None:
        """The index entry (with `.height`) of a block we know, or None. Optional attributes
        the P2P code reads when present: `.have_data` (False for a header whose block is not
        stored: it is still downloaded) and `.failed` (known invalid: never requested)."""
        ...

    def get_block_raw(self, h: bytes) -> bytes | None:
        """The stored block with hash `h`, serialized (served to peers as it is), or None."""
        ...

    def accept_block(self, block: Block) -> Any:
        """Validate and store `block`, moving the tip if it is now the best.

        Returns an object with `.new_tip: bool` and `.already_have: bool`; raises
        ValidationError (reason "prev-blk-not-found" when the parent is unknown).
        """
        ...

    def accept_header(self, header: Any) -> Any:
        """Check and store a header without its block; returns its entry (with `.hash` and
        `.chainwork`); raises ValidationError as accept_block does."""
        ...

    def header_link(self, h: bytes) -> Any | None:
        """The link (chain.HeaderLink) of a known, not-failed entry, or None."""
        ...

    def check_header_link(self, header: Any, prev: Any) -> Any:
        """Check `header` against the link of its parent (stored or not) without storing
        it; returns its link (`.hash`, `.height`, `.chainwork`). Raises ValidationError."""
        ...

    def accept_headers(self, headers: Any, *, min_work_checked: bool = False) -> Any:
        """Check and store a continuous run of headers in one go; unless `min_work_checked`
        it must end with more work than the tip ("too-little-chainwork"). Returns the last
        one's entry; raises ValidationError."""
        ...

    @property
    def best_header(self) -> Any:
        """The known, not-failed header with the most work (`.hash`, `.height`, `.chainwork`)."""
        ...

    def ancestor(self, index: Any, height: int) -> Any:
        """The entry at `height` on the branch that leads to `index` (ValueError above it)."""
        ...

    def locator(self) -> list[bytes]:
        """Block locator of the best chain: tip first, then exponentially sparser, genesis last."""
        ...

    def hashes_after(self, locator: list[bytes], stop: bytes | None, limit: int) -> list[bytes]:
        """Hashes of the best chain after the first locator hash on it (genesis if none), up
        to and including `stop`, at most `limit`."""
        ...


class MempoolAccess(Protocol):
    """The transaction memory pool."""

    def accept(self, tx: Transaction) -> Any:
        """Validate and add `tx`; raises ValidationError or a policy rejection with `.reason`."""
        ...

    def get(self, txid: bytes) -> Any | None:
        """The entry (with `.tx`) for `txid`, or None."""
        ...

    def __contains__(self, txid: bytes) -> bool:
        ...
