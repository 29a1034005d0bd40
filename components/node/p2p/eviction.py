"""Which inbound peer to drop when the inbound slots are full: bitcoind's SelectNodeToEvict.

A new inbound connection that finds every inbound slot taken does not simply bounce: the node
looks for a peer it can spare. Peers that are useful, or hard for an attacker to imitate,
are protected first, in bitcoind's order:

1. 4 peers whose network groups sort highest under a key only this node knows (an attacker
   cannot choose addresses that win);
2. the 8 with the lowest minimum ping time (a peer that never answered a ping has none);
3. the 4 that most recently sent us a transaction we did not have;
4. up to 8 peers that do not relay transactions and most recently sent us a new block;
5. the 4 that most recently sent us a new block;
6. half of those left, the longest connected.

Of the rest, the network group with the most peers loses its youngest peer. If nothing is
left, no one is evicted and the newcomer is refused. Idle peers (no pings answered, no
blocks, no transactions, connected last) are therefore the ones that go; a flood of them
cannot keep every newcomer out.

Simplifications against bitcoind: no permission flags (noban), no extra protection for onion,
I2P or CJDNS peers, and network groups are IPv4 /16, IPv6 /32, and one group for loopback.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """What eviction looks at for one inbound peer (times are loop time in seconds; 0: never)."""

    peer_id: int
    connected_at: float
    min_ping: float | None
    last_block_time: float
    last_tx_time: float
    relays_txs: bool
    netgroup: str


def netgroup(host: str) -> str:
    """The network group of an address: who is likely run by the same party."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"other:{host}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "local"
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((ip, 16), strict=False))
    return str(ipaddress.IPv6Network((ip, 32), strict=False))


def keyed_netgroup(key: bytes) -> Callable[[Candidate], int]:
    """A sort key for network groups that depends on a secret `key`."""
    def value(candidate: Candidate) -> int:
        digest = hashlib.blake2b(candidate.netgroup.encode(), key=key, digest_size=8).digest()
        return int.from_bytes(digest, "big")
    return value


def _protect(candidates: list[Candidate], keep_key: Callable[[Candidate], object], count: int,
             only: Callable[[Candidate], bool] = lambda _: True) -> list[Candidate]:
    """The candidates minus the `count` that sort last by `keep_key` among those `only` admits."""
    eligible = sorted((c for c in candidates if only(c)), key=keep_key)
    protected = {c.peer_id for c in eligible[len(eligible) - count:]} if count > 0 else set()
    return [c for c in candidates if c.peer_id not in protected]


def select_peer_to_evict(candidates: Sequence[Candidate], key: bytes) -> int | None:
    """The id of the inbound peer to drop, or None when every candidate is protected.

    Each protection keeps the candidates that sort last by its criterion; between equals the
    longer connected one is kept (bitcoind does so for the transaction and block criteria).
    """
    group_rank = keyed_netgroup(key)
    rest = list(candidates)
    rest = _protect(rest, lambda c: (group_rank(c), -c.connected_at), 4)
    # Lower ping is better; a peer without a ping time sorts as the worst.
    rest = _protect(rest, lambda c: (-(c.min_ping if c.min_ping is not None else float("inf")), -c.connected_at), 8)
    rest = _protect(rest, lambda c: (c.last_tx_time, -c.connected_at), 4)
    rest = _protect(rest, lambda c: (c.last_block_time, -c.connected_at), 8,
                    only=lambda c: not c.relays_txs and c.last_block_time > 0)
    rest = _protect(rest, lambda c: (c.last_block_time, -c.connected_at), 4)
    # Half of what is left, the longest connected.
    rest = _protect(rest, lambda c: -c.connected_at, len(rest) // 2)
    if not rest:
        return None
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in rest:
        groups[candidate.netgroup].append(candidate)
    # The most crowded group; between equals, the one whose newest peer is the youngest.
    crowded = max(groups.values(), key=lambda g: (len(g), max(c.connected_at for c in g)))
    return max(crowded, key=lambda c: (c.connected_at, c.peer_id)).peer_id
