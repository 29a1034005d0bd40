"""Functional, both executables: transaction announcements to a peer that reads slowly."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from framework import TEST_ADDRESS, TEST_KEY, TestNode, spend_coinbase, wait_until
from raw_peer import MAGIC, RawPeer

from cleancoin.components.node.p2p.messages import MSG_TX, GetHeaders, Inv, serialize_message


def _wait_stalled(n: TestNode) -> int:
    """Until the node has handed no more headers to the slow peer's socket for a second
    (the kernel's buffers full, the rest queued); the bytes of headers it handed."""
    def sent() -> int:
        (info,) = n.rpc.getpeerinfo()
        return int(info["bytessent_per_msg"].get("headers", 0))
    wait_until(sent, 20, what="headers handed to the socket")
    last, stable_since = sent(), time.monotonic()
    while time.monotonic() - stable_since < 1.0:
        time.sleep(0.2)
        now = sent()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def _announced(peer: RawPeer, txid: bytes, timeout: float) -> bool:
    """Read everything `peer` is sent until an inv of `txid`; whether one came in time."""
    return any(isinstance(msg, Inv) and any(i.type == MSG_TX and i.hash == txid for i in msg.items)
               for msg in peer.messages(timeout))


#: getheaders the slow peer sends at once: each answered with the chain's 103 headers
#: (8.4 KB), 8.4 MB in all, more than the kernel's buffers and the 1 MB send limit hold.
GETHEADERS = 1000


def test_a_tx_accepted_while_a_peers_send_queue_is_full_is_announced_once_it_drains(
        node: Callable[..., TestNode]) -> None:
    """A peer that reads slowly while over 1 MB (SEND_BUFFER_LIMIT) waits to be sent to it:
    here it asked for the headers of the chain 1000 times; a transaction enters the pool
    meanwhile. On the code before, that transaction was skipped for the peer for good:
    once it had read everything, no inv came within 20 s (nor ever: the announcement was
    never queued; both executables). Now it waits in the peer's pending announcements and
    goes out once the queue is under the limit again (bitcoind keeps a peer's
    m_tx_inventory_to_send while its send buffer is full)."""
    n = node()
    n.start()
    n.rpc.generatetoaddress(102, TEST_ADDRESS)
    genesis = bytes.fromhex(n.rpc.getblockhash(0))[::-1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)      # the kernel takes less
    sock.bind(("127.0.0.11", 0))
    sock.connect(("127.0.0.1", n.p2p_port))
    slow = RawPeer(n.p2p_port, "127.0.0.11", sock=sock)
    try:
        slow.handshake()
        slow.sync(1)
        slow.send(serialize_message(MAGIC, GetHeaders((genesis,))) * GETHEADERS)
        handed = _wait_stalled(n)
        assert handed < GETHEADERS * 8_000 - 2_000_000, f"{handed} bytes of headers taken: not stalled"
        tx = spend_coinbase(n, 2, TEST_KEY.public_key.pkh)
        n.rpc.sendrawtransaction(tx.serialized.hex())
        assert _announced(slow, tx.txid, 20), "the transaction was never announced to the slow peer"
    finally:
        slow.close()
    assert n.stop() == 0
