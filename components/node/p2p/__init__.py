"""CleanCoin's peer-to-peer layer: wire messages, connections, relay and block download.

- `messages`: the wire format (framing, payloads, strict parsing into ProtocolError).
- `peer`: one connection (reader, writer task, statistics, per-peer state).
- `node`: `P2PNode`, the listener, outbound connections, handshake, relay, blocks-first
  download, bans, and the getpeerinfo/addnode/disconnectnode/listbanned views.
- `protocols`: what it needs from the chain manager and the mempool.
- `eviction`: which inbound peer to drop when the inbound slots are full.
- `bloom`: the rolling Bloom filter of inventory each peer is known to have.
- `log_limit`: the per-call-site cap on what peers can make us log.
"""

from .messages import ProtocolError
from .node import USER_AGENT, BanEntry, P2PError, P2PNode, parse_host_port
from .peer import Peer
from .protocols import ChainAccess, MempoolAccess

__all__ = [
    "BanEntry", "ChainAccess", "MempoolAccess", "P2PError", "P2PNode", "Peer", "ProtocolError",
    "USER_AGENT", "parse_host_port",
]
