"""Functional, both executables: what serving blocks costs the node, per request a remote peer
sends. A `getdata` entry is 36 bytes; the block it asks for may be 1 MB, and a peer may ask
for the same one 50000 times in one message (bitcoind serves them all as well), or for 50000
blocks the node does not have.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from framework import TestNode, cpu_seconds, is_multiprocess, mine_big_block
from raw_peer import MAGIC, RawPeer

from cleancoin.components.common.primitives import Block
from cleancoin.components.node.p2p.messages import (
    MSG_BLOCK, GetData, InvItem, NotFound, parse_payload, serialize_message,
)

#: Outputs of the big block's transaction: the block is 672 KB.
OUTPUTS = 24_000
#: Times the peer asks for it in one getdata.
REQUESTS = 40


def test_serving_a_block_costs_its_bytes_not_a_parse_and_a_serialization(node: Callable[..., TestNode]) -> None:
    """A peer asks for the same 672 KB block REQUESTS times (1.4 KB of getdata) and reads
    what comes. Measured on the code before: each copy was read from the database, parsed
    into Python objects (24,000 outputs) and serialized again: 24 ms of the node's CPU per
    copy (36 bytes of request), 1 ms per 28 bytes the attacker sends; a max-size getdata
    (50000 entries, 1.8 MB) is 20 minutes of CPU. Now the stored bytes go out as they are
    (the header's hash checked against the entry): the block arrives byte for byte as
    getblock's hex says, an unknown hash still gets notfound."""
    n = node()
    n.start()
    assert n.process is not None
    if is_multiprocess():
        n.rpc.createwallet("w")
    block_hash = mine_big_block(n, OUTPUTS)
    raw = bytes.fromhex(n.rpc.getblock(block_hash, 0))
    want = InvItem(MSG_BLOCK, bytes.fromhex(block_hash)[::-1])
    peer = RawPeer(n.p2p_port, "127.62.0.1")
    try:
        peer.handshake()
        peer.sock.settimeout(60)
        before = cpu_seconds(n.process.pid)
        peer.send(serialize_message(MAGIC, GetData((want,) * REQUESTS)))
        served = 0
        while served < REQUESTS:
            command, payload = peer.read_frame()
            if command == "block":
                assert payload == raw
                served += 1
        per_block = (cpu_seconds(n.process.pid) - before) / REQUESTS
        print(f"{REQUESTS} copies of a {len(raw)}-byte block: {per_block * 1e3:.1f} ms of CPU each")
        assert per_block < 0.008, f"{per_block * 1e3:.1f} ms of CPU per block served"
        unknown = InvItem(MSG_BLOCK, b"\x01" * 32)
        peer.send(serialize_message(MAGIC, GetData((unknown,))))
        while True:
            msg = peer.read_message()
            if isinstance(msg, NotFound):
                assert msg.items == (unknown,)
                break
        assert Block.from_bytes(raw).hash_hex == block_hash
    finally:
        peer.close()
    assert n.stop() == 0


#: Max-size getdata messages of unknown block hashes the flooding peer sends.
UNKNOWN_GETDATAS = 3
#: Entries of one notfound at most (the node's _GETDATA_ITEMS_PER_CALL).
NOTFOUND_CHUNK = 1000


def test_a_getdata_of_blocks_the_node_does_not_have_is_answered_in_chunks_from_the_index(
        node: Callable[..., TestNode]) -> None:
    """A peer sends UNKNOWN_GETDATAS getdata of 50000 block hashes the node does not have
    (1.8 MB each) and reads what comes. Measured before 12-07 (CleanCoind, interleaved with
    the fix, 5 messages a run): 298 to 454 ms of the node's CPU per message, every entry
    looked up in the database in one call of the event loop, and getblockcount answered up
    to 1.17 s late while it ran (10 to 20 ms idle); each came back as one notfound of 50000.
    Now an entry whose block the index does not store costs no query, and one call looks at
    1000 entries at most (then the writer sends their notfound and yields): 128 to 156 ms per
    message, getblockcount at most 0.21 s late. Every entry still comes back as notfound."""
    n = node()
    n.start()
    assert n.process is not None
    peer = RawPeer(n.p2p_port, "127.62.0.2")
    try:
        peer.handshake()
        peer.sock.settimeout(60)
        asked = [tuple(InvItem(MSG_BLOCK, os.urandom(32)) for _ in range(50_000)) for _ in range(UNKNOWN_GETDATAS)]
        before = cpu_seconds(n.process.pid)
        for items in asked:
            peer.send(serialize_message(MAGIC, GetData(items)))
        answered: list[InvItem] = []
        largest = 0
        while len(answered) < 50_000 * UNKNOWN_GETDATAS:
            command, payload = peer.read_frame()
            if command == "notfound":
                msg = parse_payload(command, payload)
                assert isinstance(msg, NotFound)
                answered.extend(msg.items)
                largest = max(largest, len(msg.items))
        per_message = (cpu_seconds(n.process.pid) - before) / UNKNOWN_GETDATAS
        print(f"{UNKNOWN_GETDATAS} getdata of 50000 unknown blocks: {per_message * 1e3:.0f} ms of CPU each, "
              f"notfound of {largest} entries at most")
        assert answered == [item for items in asked for item in items]
        assert largest <= NOTFOUND_CHUNK
        # (Before: 298 to 454 ms; after, 128 to 156 ms when measured; on 12-08 on the CI
        # machine 167 to 237 ms at loads 1 to 5, the same for the code of 12-07 and of 12-08,
        # and 240 ms once under a load of 10, which failed the 0.24 s bound of then: the
        # bound sits between what the fix costs under load and what the code before it did.)
        assert per_message < 0.28, f"{per_message * 1e3:.0f} ms of CPU per getdata"
    finally:
        peer.close()
