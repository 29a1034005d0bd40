"""Functional, both executables: a block whose stored bytes a disk fault changed is not served
to peers. The node serves a block's stored bytes as they are (a parse per copy cost 24 ms of
CPU, test_p2p_serve_cost.py), and checked only that the header hashes to the entry asked for:
a body changed under an intact header went out as it was, every peer that asked found its
merkle root wrong and banned the node. Since 12-07 each block is stored with a CRC-32 of its
bytes (checked at each serve) and the node answers notfound for a block whose bytes fail it,
logging why once.
"""

from __future__ import annotations

from collections.abc import Callable

from framework import TEST_ADDRESS, TestNode
from raw_peer import MAGIC, RawPeer

from cleancoin.components.node.p2p.messages import (
    MSG_BLOCK, GetData, InvItem, serialize_message,
)


def _fetch(peer: RawPeer, block_hash: str) -> bytes | None:
    """getdata for one block: its bytes as they came, or None for notfound."""
    want = InvItem(MSG_BLOCK, bytes.fromhex(block_hash)[::-1])
    peer.send(serialize_message(MAGIC, GetData((want,))))
    while True:
        command, payload = peer.read_frame()
        if command == "block":
            return payload
        if command == "notfound":
            return None


def test_a_block_corrupted_on_disk_is_not_served(node: Callable[..., TestNode]) -> None:
    """Twelve blocks; with the node stopped one byte of block 2's coinbase output is flipped in
    the database file, as a disk fault would (its header intact; below the blocks the start-up
    check reads). Before 12-07 a peer's
    getdata got those bytes (whose merkle root is wrong: peers ban the sender). Now it gets
    notfound, the node says why in its log (once), stays connected, and block 3 is served
    byte for byte."""
    n = node()
    n.start()
    n.rpc.generatetoaddress(12, TEST_ADDRESS)        # block 2 below the start-up check's 6
    hashes = [n.rpc.getblockhash(h) for h in (2, 3)]
    good = [bytes.fromhex(n.rpc.getblock(h, 0)) for h in hashes]
    assert n.stop() == 0
    db = n.netdatadir / "chainstate.sqlite"
    data = bytearray(db.read_bytes())
    at = data.find(good[0])
    assert at > 0 and data.find(good[0], at + 1) < 0
    data[at + len(good[0]) - 10] ^= 0x01              # in the coinbase's output script
    db.write_bytes(bytes(data))
    n.start()
    peer = RawPeer(n.p2p_port, "127.64.0.1")
    try:
        peer.handshake()
        served = _fetch(peer, hashes[0])
        assert served is None, f"the corrupt block was served ({served == good[0] and 'intact' or 'changed'})"
        assert _fetch(peer, hashes[0]) is None
        assert _fetch(peer, hashes[1]) == good[1]
        peer.sync(7)
    finally:
        peer.close()
    log = n.debug_log()
    assert log.count(f"stored block {hashes[0]}") == 1, log[-2000:]
    assert n.stop() == 0
