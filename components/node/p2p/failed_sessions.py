"""Which addresses had a blocks-first sync session and wasted it (node.py, "Block download").

Blocks-first, one peer at a time has the sync session, and the stall races hand it on: a sync
peer that holds the block our tip waits for (or our getblocks) past the stalling timeout has
it asked of an idle peer that is ahead, and that peer can take the session over. Which idle
peer is asked, and which peer a new session goes to, was decided by the chain height each
claims in its version message, a number that costs nothing: two connections of one attacker
claiming a higher chain than an honest peer took the session from each other (each answering
the other's race with notfound) for as long as they liked, the honest peer never asked.

A session is *wasted* when its peer lost it to a race (it held a block or a getblocks past the
stalling timeout while another peer answered), or when it ended (the peer left, or had nothing
more) without moving our tip; and so is a race's (since 12-07, night) when the peer asked in it
has not answered within the stalling timeout, or leaves first: before, connections claiming a
higher chain than an honest idle peer, each holding the raced block silently and coming back
from the same address once asked, were raced before that peer for as long as they went on.
Headers-first (below the minimum chain work, before a chain of that work is known) the sync
peer's getheaders is raced the same way (node.py, _race_getheaders): a sync peer that left it
unanswered while another answered, or left owing it, and a racer that did not answer in time,
are charged too. Peers whose address wasted fewer sessions are asked first: each
attacker address holds the download for one round, not for ever. Counted per IP address, not
per connection: a connection that reconnected would otherwise start with a clean record.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: Addresses remembered at most (the least recently charged is forgotten first).
MAX_ADDRESSES: int = 4096


@dataclass
class FailedSessions:
    """Wasted sync sessions per IP address, the `limit` most recently charged kept."""

    limit: int = MAX_ADDRESSES
    _counts: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def charge(self, address: str) -> None:
        """`address` wasted a session."""
        self._counts[address] = self._counts.pop(address, 0) + 1
        while len(self._counts) > self.limit:
            self._counts.popitem(last=False)

    def count(self, address: str) -> int:
        """How many sessions `address` wasted (as far as remembered)."""
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        return len(self._counts)
