"""The P2P port under attack from remote, unauthenticated peers: what they can make the node
hold (memory), spend (CPU), or withhold from honest peers.

Each test performs an attack from the peer's side, over real TCP on 127.0.0.1, against a real
P2PNode (the in-memory chain and mempool of tests/test_p2p.py), and measures what the node
holds or spends. Attackers connect from their own loopback addresses (127.0.x.y) since bans
are per IP. Memory is measured with tracemalloc around the attack (the attacker's own buffers
are sent and freed before the measurement); peer-internal figures (queue lengths, bytes
waiting to be sent) are read from the node's Peer objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import socket
import struct
import threading
import time
import tracemalloc
from typing import Any

from cleancoin.components.common.chainparams import MAX_BLOCK_SIZE
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.node.p2p import P2PNode
from cleancoin.components.node.p2p import messages as m
from cleancoin.components.node.p2p import node as p2p_node
from cleancoin.components.node.p2p import peer as p2p_peer
from cleancoin.components.node.p2p.bloom import RollingBloomFilter
from cleancoin.components.node.p2p.log_limit import LogRateLimit
from cleancoin.components.node.p2p.peer import Peer

from test_p2p import GENESIS, P, PKH, MemChain, MemPool, Net, RawPeer, banned, chain_200, frame, make_tx, run, wait_until


def peers(node: P2PNode) -> list[Peer]:
    """The node's live Peer objects (for measuring what it holds per peer)."""
    return list(node._peers.values())                 # noqa: SLF001 (measurement only)


async def drain_forever(raw: RawPeer) -> None:
    """Read and discard whatever the node sends (an attacker that keeps its socket moving)."""
    while await raw.reader.read(1 << 16):
        pass


def random_hashes(n: int, seed: bytes) -> list[bytes]:
    return [hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(n)]


# ================================================================================ tx requests

def test_inv_flood_cannot_starve_honest_transaction_requests() -> None:
    """Attack: one handshaken peer announces 2 x 50000 made-up txids (two max-size invs) and
    never delivers them. Before: every one went into the node's single, global table of
    requested transactions (capped at 100000 for all peers together), so for the next 60 s
    the node requested no transaction from anyone: an honest peer's announcement was
    dropped. Now each peer has at most MAX_PEER_TX_REQUEST_IN_FLIGHT (100, bitcoind's
    figure) requests outstanding, and the rest of a flood is not requested."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            attacker = await RawPeer.connect(a, "127.0.1.1")
            await attacker.handshake()
            reader = asyncio.create_task(drain_forever(attacker))
            hashes = random_hashes(2 * m.MAX_INV, b"flood")
            for i in range(0, len(hashes), m.MAX_INV):
                await attacker.send(m.Inv(m.inv_items(m.MSG_TX, hashes[i:i + m.MAX_INV])))
            (peer,) = peers(a)
            await wait_until(lambda: peer.bytes_recv_per_msg.get("inv", 0) >= 2 * 36 * m.MAX_INV,
                             what="both invs processed")
            held = len(a._txs_requested)                # noqa: SLF001 (measurement)
            print(f"tx requests held after the flood: {held}")

            honest = await RawPeer.connect(a, "127.0.1.2")
            await honest.handshake()
            tx = make_tx("honest tx")
            await honest.send(m.Inv(m.inv_items(m.MSG_TX, [tx.txid])))
            getdata = await honest.recv_until(m.GetData, timeout=3.0)
            assert getdata.items == (m.InvItem(m.MSG_TX, tx.txid),)
            await honest.send(m.TxMessage(tx))
            await wait_until(lambda: tx.txid in a.mempool, what="honest tx accepted")
            assert held <= p2p_node.MAX_PEER_TX_REQUEST_IN_FLIGHT == 100, held
            reader.cancel()
    run(main())


def test_tx_requests_are_released_by_answers_notfound_and_disconnect() -> None:
    """The per-peer budget frees up as the peer answers (tx or notfound), so an honest peer
    that announces more than 100 transactions in a burst gets them all fetched as it
    delivers, and a departing peer's outstanding requests are released for others."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            raw = await RawPeer.connect(a, "127.0.1.3")
            await raw.handshake()
            txs = [make_tx(f"burst {i}") for i in range(150)]
            for tx in txs:
                await raw.send(m.Inv(m.inv_items(m.MSG_TX, [tx.txid])))
            asked: list[bytes] = []
            by_id = {tx.txid: tx for tx in txs}
            while len(asked) < 150:
                gd = await raw.recv_until(m.GetData, timeout=3.0)
                for item in gd.items:
                    asked.append(item.hash)
                    await raw.send(m.TxMessage(by_id[item.hash]))
            assert sorted(asked) == sorted(by_id)
            await wait_until(lambda: all(t in a.mempool for t in by_id), what="all 150 accepted")

            # Requests outstanding at a disconnect are released: another peer is asked.
            late = make_tx("withheld")
            await raw.send(m.Inv(m.inv_items(m.MSG_TX, [late.txid])))
            await raw.recv_until(m.GetData, timeout=3.0)
            raw.close()
            await wait_until(lambda: not peers(a), what="peer gone")
            other = await RawPeer.connect(a, "127.0.1.4")
            await other.handshake()
            await other.send(m.Inv(m.inv_items(m.MSG_TX, [late.txid])))
            gd = await other.recv_until(m.GetData, timeout=3.0)
            assert gd.items == (m.InvItem(m.MSG_TX, late.txid),)
    run(main())


def test_a_peer_withholding_an_announced_transaction_only_delays_it() -> None:
    """Attack: a peer announces the txid of a transaction it has heard of (first, so it is
    asked), then never delivers it. Other peers' announcements of the same txid were
    dropped ("already requested"), so when the request timed out no one was asked again:
    the node never got the transaction (unless someone announced it afresh), and leaving
    did not help either. Now, as bitcoind's TxRequestTracker, the other announcers are
    remembered and the next is asked when the request times out (`tx_request_timeout`,
    60 s by default, 1 s here), is answered notfound, or its peer leaves."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(tx_request_timeout=1.0)
            assert P2PNode.__init__.__kwdefaults__["tx_request_timeout"] == 60.0
            for case in ("timeout", "disconnect"):
                tx = make_tx(f"withheld {case}")
                attacker = await RawPeer.connect(a, "127.0.1.70" if case == "timeout" else "127.0.1.71")
                await attacker.handshake()
                await attacker.send(m.Inv(m.inv_items(m.MSG_TX, [tx.txid])))
                await attacker.recv_until(m.GetData)
                honest = await RawPeer.connect(a, "127.0.1.72" if case == "timeout" else "127.0.1.73")
                await honest.handshake()
                await honest.send(m.Inv(m.inv_items(m.MSG_TX, [tx.txid])))
                t0 = asyncio.get_running_loop().time()
                if case == "disconnect":
                    await asyncio.sleep(0.1)
                    attacker.close()
                gd = await honest.recv_until(m.GetData, timeout=4.0)
                waited = asyncio.get_running_loop().time() - t0
                assert gd.items == (m.InvItem(m.MSG_TX, tx.txid),)
                assert waited < (1.5 if case == "disconnect" else 3.5), (case, waited)
                await honest.send(m.TxMessage(tx))
                await wait_until(lambda: tx.txid in a.mempool, what=f"{case}: tx accepted")
                honest.close()
                attacker.close()
                await wait_until(lambda: not peers(a), what="peers gone")
    run(main())


def test_announcers_of_a_transaction_obtained_otherwise_are_forgotten() -> None:
    """The fallback list cannot leak: a transaction that reaches the mempool another way (RPC)
    while it is requested and announced by three peers leaves no alternates behind once the
    request fails and the next announcer finds it no longer needed, and a departing
    alternate is removed (each alternate's entry counts against its 5000 announcements)."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(tx_request_timeout=0.5)
            tx = make_tx("obtained otherwise")
            raws = []
            for i in range(4):
                raw = await RawPeer.connect(a, f"127.0.1.{90 + i}")
                await raw.handshake()
                await raw.send(m.Inv(m.inv_items(m.MSG_TX, [tx.txid])))
                raws.append(raw)
            await raws[0].recv_until(m.GetData)
            await wait_until(lambda: sum(len(p.tx_waiting) for p in peers(a)) == 3, what="3 alternates")
            raws[3].close()                                    # an alternate leaves
            await wait_until(lambda: len(peers(a)) == 3, what="alternate gone")
            assert a._tx_alternates[tx.txid] == [p.id for p in peers(a)][1:]   # noqa: SLF001
            a.mempool.accept(tx)                               # as sendrawtransaction would
            await wait_until(lambda: not a._tx_alternates, timeout=3.0, what="alternates forgotten")  # noqa: SLF001
            assert all(not p.tx_waiting and not p.txs_in_flight for p in peers(a))
    run(main())


# ================================================================================ getdata

def test_non_reading_peer_with_max_getdata_holds_little() -> None:
    """Attack: a peer asks for 50000 blocks (one max-size getdata) and stops reading.
    The node serves getdata lazily, one block at a time once its outbox is empty, and reads
    nothing more from that peer until it is served (item 2: the send queue stays at most
    SEND_BUFFER_LIMIT plus one message). What it held was the request itself: 50000 parsed
    InvItems, 6.9 MB of Python objects for 1.8 MB on the wire, for as long as the peer
    stays (up to the 20 min ping timeout); x115 inbound peers, 790 MB. Now the queue keeps
    the 36-byte wire entries, as bitcoind does."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:3])))
            attacker = await RawPeer.connect(a, "127.0.1.10")
            await attacker.handshake()
            request = m.serialize_message(a.params.magic, m.GetData(
                m.inv_items(m.MSG_BLOCK, [chain_200()[2].hash] * m.MAX_INV)))
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                await attacker.send_bytes(request)
                del request
                (peer,) = peers(a)
                # Stuck: the kernel buffers are full and the writer waits on the socket.
                last = -1
                while last != len(peer.getdata_queue):
                    last = len(peer.getdata_queue)
                    await asyncio.sleep(0.3)
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            print(f"held for a non-reading peer's getdata: {held} bytes, queue {len(peer.getdata_queue)}")
            assert len(peer.getdata_queue) > 0, "served lazily, not all queued"
            assert peer.outbox_bytes <= p2p_peer.SEND_BUFFER_LIMIT + m.MAX_PAYLOAD
            assert held < 3_000_000, f"node holds {held} bytes for one non-reading peer"

            # The node still serves an honest peer meanwhile.
            honest = await RawPeer.connect(a, "127.0.1.11")
            await honest.handshake()
            await honest.send(m.GetData(m.inv_items(m.MSG_BLOCK, [chain_200()[1].hash])))
            got = await honest.recv_until(m.BlockMessage)
            assert got.block.hash == chain_200()[1].hash
    run(main())


def test_inventory_known_to_a_peer_is_held_compactly() -> None:
    """Attack: announce 2 x 50000 made-up hashes (of a type the node ignores) and stay
    connected. The node remembers what each peer knows (so as not to announce it back):
    an OrderedDict of up to 50000 hashes, 8.5 MB per peer for as long as the peer stays
    (x115 inbound: ~1 GB), for 3.6 MB on the wire. Now a rolling Bloom filter of the same
    capacity, as bitcoind's m_tx_inventory_known_filter: 0.3 MB per peer. (The CPU budget,
    which would read the second inv only seconds later, is raised out of the way: the
    memory is what is measured here.)"""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(cpu_shared_rate=1000.0)
            attacker = await RawPeer.connect(a, "127.0.1.40")
            await attacker.handshake()
            reader = asyncio.create_task(drain_forever(attacker))
            frames = [m.serialize_message(a.params.magic, m.Inv(m.inv_items(7, random_hashes(m.MAX_INV, bytes([i])))))
                      for i in range(2)]
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                (peer,) = peers(a)
                for f in frames:
                    await attacker.send_bytes(f)
                del frames, f
                # Up to 60 s: about 3 s alone under tracemalloc, over 10 s in a loaded CI run
                # (12-07); the memory is what is measured here, not the time.
                await wait_until(lambda: peer.bytes_recv_per_msg.get("inv", 0) >= 2 * 36 * m.MAX_INV,
                                 timeout=60, what="both invs processed")
                await asyncio.sleep(0.1)
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            print(f"known inventory after 100000 announcements: {held} bytes held")
            assert held < 1_000_000, held
            reader.cancel()
    run(main())


def test_rolling_bloom_filter_remembers_recent_items_and_forgets_old_ones() -> None:
    """The filter behind known_inventory: no false negatives for the last capacity/2 items,
    few false positives, old generations dropped, fixed size, allocated on first use."""
    f = RollingBloomFilter(1000)
    assert f.nbytes == 0 and b"\x00" * 32 not in f
    first = random_hashes(500, b"first")
    for h in first:
        f.add(h)
    assert all(h in f for h in first)
    second = random_hashes(499, b"second")
    for h in second:
        f.add(h)
    assert all(h in f for h in first + second)        # first is the previous generation now
    f.add(b"\x01" * 32)                                 # second's generation is full: rotate
    assert sum(h in f for h in first) <= 2               # dropped (up to false positives)
    assert all(h in f for h in second)
    strangers = random_hashes(20000, b"never added")
    assert sum(h in f for h in strangers) <= 3           # expected ~0.2 at 9.4e-6 per generation
    f.add(b"\x02" * 32)
    assert f.nbytes == 2 * 500 * 48 // 8                 # two generations, whatever is added
    assert p2p_peer.KNOWN_INVENTORY_SIZE == 50_000


def test_announcements_to_a_peer_that_does_not_read_are_bounded() -> None:
    """Attack: a peer completes the handshake and then never reads. The node stops reading
    from it once 1 MB waits to be sent (so the peer's own requests cannot grow the queue),
    but announcements of new transactions kept being queued for it, every one, until the
    ping timeout (20 min): the queue grows with the network's transaction rate (here 200000
    announcements: the queue held 7.3 MB beyond what the kernel took). Now transaction
    announcements are skipped for a peer whose send queue is over SEND_BUFFER_LIMIT (it is
    not reading; it learns transactions from others), as bitcoind stops sending a peer
    with a full send buffer; blocks are still announced."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            # A small receive buffer, so that the kernel cannot take the whole attack.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind(("127.0.1.50", 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", a.port))
            attacker = RawPeer(*await asyncio.open_connection(sock=sock), P.magic)
            await attacker.handshake()
            (peer,) = peers(a)
            for i, txid in enumerate(random_hashes(200_000, b"relay")):
                a.announce_tx(txid)
                if i % 1000 == 0:
                    await asyncio.sleep(0)            # let the writer hand bytes to the kernel
            await asyncio.sleep(0.2)
            print(f"queued for a non-reading peer: {peer.outbox_bytes} bytes")
            assert peer.outbox_bytes <= p2p_peer.SEND_BUFFER_LIMIT + 1000, peer.outbox_bytes
            # Those skipped wait for it, bounded (since 12-07: announced once it is under the limit).
            assert len(peer.tx_to_announce) <= p2p_peer.MAX_PENDING_TX_ANNOUNCEMENTS
            # A block is still announced to it.
            before = peer.outbox_bytes
            a.announce_block(hashlib.sha256(b"a block").digest())
            assert peer.outbox_bytes > before
    run(main())


async def max_loop_stall(until: asyncio.Event) -> float:
    """The most CPU time the event loop's thread spent between two turns of this task
    (polling every 5 ms): how long one stretch of work kept every other task waiting.
    Thread CPU time, not wall time, so that other processes on a busy machine do not count."""
    worst, last = 0.0, time.thread_time()
    while not until.is_set():
        await asyncio.sleep(0.005)
        now = time.thread_time()
        worst, last = max(worst, now - last), now
    return worst


class ThreadPeer:
    """A blocking socket read by a thread of its own: a remote peer that drains what the node
    sends as fast as the kernel delivers it, concurrently with the node's event loop."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.received = 0
        self.magic = P.magic

    def handshake(self) -> None:
        self.sock.sendall(m.serialize_message(self.magic, m.Version(
            m.PROTOCOL_VERSION, m.NODE_NETWORK, 0, 77, "/thread/", 0, True)))
        got = b""
        while got.count(b"verack") < 1:
            got += self.sock.recv(1 << 16)
        self.sock.sendall(m.serialize_message(self.magic, m.Verack()))

    def drain(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 20):
                self.received += len(chunk)
        except OSError:
            pass


def test_serving_a_big_getdata_or_a_burst_of_messages_does_not_stall_the_node() -> None:
    """Attack: a peer that reads as fast as it can asks for 50000 (small) blocks in one
    getdata, then sends 16000 pings in one burst. The writer handed frame after frame to the
    socket and only yielded when the kernel stopped taking them, which a fast reader never
    lets happen, and the reader decoded message after message while bytes were buffered:
    every other peer, RPC and timer on the node's event loop waited meanwhile. Measured
    before (CPU time of the loop's thread in one stretch): 0.43 to 0.57 s for the getdata
    (all 50000 blocks), 0.14 s for the pings; against a real node, with 12 such peers, an
    honest peer's handshake and ping took 4 s. Now each peer's reader and writer yield to
    the loop after every message, as bitcoind's message handler serves peers in turn: what
    is left is decoding one message (the 1.8 MB getdata, ~0.055 s; a ping, 0.005 s)."""
    async def main() -> None:
        async with Net() as net:
            # (Serving is charged to the asker's CPU budget since 12-08: 50000 blocks would take
            # it 30 s; what is measured here is the loop's longest stall, not the budget.)
            a = await net.node(MemChain(list(chain_200()[:3])), cpu_shared_rate=1000.0)
            attacker = await asyncio.to_thread(ThreadPeer, a.port, "127.0.1.60")
            await asyncio.to_thread(attacker.handshake)
            reader = threading.Thread(target=attacker.drain, daemon=True)
            reader.start()
            getdata = m.serialize_message(a.params.magic, m.GetData(
                m.inv_items(m.MSG_BLOCK, [chain_200()[2].hash] * m.MAX_INV)))
            pings = m.serialize_message(a.params.magic, m.Ping(5)) * 16000
            block_frame_size = len(m.serialize_message(a.params.magic, m.BlockMessage(chain_200()[2])))
            (peer,) = peers(a)
            stalls = []
            for data, done_when in (
                    (getdata, lambda: peer.bytes_sent_per_msg.get("block", 0) >= m.MAX_INV * block_frame_size),
                    (pings, lambda: peer.bytes_recv_per_msg.get("ping", 0) >= 16000 * 32)):
                done = asyncio.Event()
                watch = asyncio.create_task(max_loop_stall(done))
                await asyncio.sleep(0.05)
                await asyncio.to_thread(attacker.sock.sendall, data)
                await wait_until(done_when, timeout=15.0, what="attack served")
                done.set()
                stalls.append(await watch)
            print(f"longest event loop stall: getdata {stalls[0]:.3f} s, ping burst {stalls[1]:.3f} s")
            assert stalls[0] < 0.3 and stalls[1] < 0.05, stalls
            attacker.sock.close()
    run(main())


# ================================================================================ handshake

def _big_parseable_block(n_txs: int) -> bytes:
    """A block payload that parses (it is not valid: no coinbase, no PoW, no merkle root)."""
    txs = tuple(Transaction(1, (TxIn(OutPoint(os.urandom(32), 0), b"\x01" * 100),),
                            (TxOut(5000, PKH),), 0) for _ in range(n_txs))
    return Block(GENESIS.header, txs).to_bytes()


def test_messages_before_the_handshake_are_not_parsed() -> None:
    """Attack: before sending a version, a peer sends 1 MB block messages. Before, each was
    parsed in full (~60 ms of CPU per MB) and only then refused (+1 ban score), so one
    connection bought ~100 parses before its ban. Now, as bitcoind, nothing but version and
    verack is decoded before the handshake: the CPU per frame is the checksum's."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            payload = _big_parseable_block(6000)
            blocks = frame(b"block", payload) * 10
            unknown = frame(b"zzz", payload) * 10          # never parsed: the baseline
            cost: dict[str, float] = {}
            for label, data, ip in (("unknown", unknown, "127.0.1.20"), ("block", blocks, "127.0.1.21")):
                raw = await RawPeer.connect(a, ip)
                await wait_until(lambda: len(peers(a)) == 1, what="connected")
                (peer,) = peers(a)
                reader = asyncio.create_task(drain_forever(raw))
                t0 = time.process_time()
                await raw.send_bytes(data)
                await wait_until(lambda: peer.bytes_recv >= len(data), what="frames consumed")
                cost[label] = time.process_time() - t0
                raw.close()
                reader.cancel()
                await wait_until(lambda: not peers(a), what="closed")
            print(f"CPU for 10 x 1 MB frames before the handshake: {cost}")
            assert cost["block"] < 2 * cost["unknown"] + 0.15, cost
            # Still scored (+1 each, as before), never parsed, never banned for it.
            assert not banned(a)
    run(main())


def test_unknown_commands_are_counted_under_one_key() -> None:
    """Attack: after the handshake, 20000 empty messages, each with a different made-up
    command (24 bytes each on the wire). getpeerinfo's per-message byte counts took every
    command as a key of its own, for as long as the peer stayed, without limit (100000 of
    them: 2.4 MB on the wire, 9.8 MB held). Now, as bitcoind, unknown commands are counted
    under "*other*". (The CPU budget, which would make them come in over many seconds and
    ban the sender, is raised out of the way: the memory is what is measured here.)"""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(cpu_shared_rate=1000.0)
            raw = await RawPeer.connect(a, "127.0.1.80")
            await raw.handshake()
            data = b"".join(frame(f"x{i:010d}".encode(), b"") for i in range(20_000))
            (peer,) = peers(a)
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                await raw.send_bytes(data)
                del data
                await wait_until(lambda: peer.bytes_recv >= 20_000 * 24, what="all read")
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            print(f"20000 made-up commands: {held} bytes held")
            assert held < 300_000, held
            # The bytes are counted as read, each message's kind once it is handled: the last
            # ones may still be on their way from one to the other (seen in CI: 479952).
            await wait_until(lambda: a.peer_info()[0]["bytesrecv_per_msg"].get("*other*", 0) >= 20_000 * 24,
                             what="all counted")
            (info,) = a.peer_info()
            assert info["bytesrecv_per_msg"]["*other*"] == 20_000 * 24
            assert set(info["bytesrecv_per_msg"]) <= {*m.MESSAGE_TYPES, "*other*"}
    run(main())


# ================================================================================ bans

def test_misbehaviour_bans_are_bounded() -> None:
    """Attack: misbehave once from each of many addresses (an IPv6 /64 has 2^64; here
    127.0.x.y). Before, every automatic ban was kept for 24 h: an entry per address with no
    limit (measured: ~600 B of memory per ban, and the maintenance tick scans all of them
    every second). Now automatic bans are capped (`max_misbehaviour_bans`, default 50000,
    bitcoind's discouragement filter size): past the cap the oldest automatic ban is
    forgotten. Manual bans (setban) are never dropped by the cap."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(max_misbehaviour_bans=5)
            assert P2PNode.__init__.__kwdefaults__["max_misbehaviour_bans"] == 50_000
            a.ban("10.9.9.9", reason="manual")
            ips = [f"127.0.2.{i}" for i in range(1, 9)]
            for ip in ips:
                raw = await RawPeer.connect(a, ip)
                await raw.send_bytes(b"garbage!" * 4)
                assert await raw.closed_by_peer()
            now = banned(a)
            assert "10.9.9.9/32" in now
            assert now - {"10.9.9.9/32"} == {f"{ip}/32" for ip in ips[-5:]}, now
            # The newest offender is still refused.
            again = await RawPeer.connect(a, ips[-1])
            assert await again.closed_by_peer(2.0)
    run(main())


def test_partial_frames_hold_at_most_what_was_sent_and_time_out() -> None:
    """Attack (item 1, holds): 20 connections announce a MAX_PAYLOAD payload, send 256 kB of it
    and then trickle. The node buffers what was actually sent (no more: the announced length
    is not allocated up front), at most MAX_PAYLOAD per peer, and drops every one of them
    at the handshake timeout (after the handshake, the ping timeout: a peer stuck in a frame
    cannot answer a ping). An honest peer is served meanwhile. (Since 12-07 a large message
    nobody asked for is read only as the CPU budget allows, one at a time; raised here so
    that all 20 are read, the most the node can hold.)"""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(handshake_timeout=1.5, cpu_shared_rate=1000.0)
            part = b"\x00" * 256_000
            head = frame(b"block", b"", length=m.MAX_PAYLOAD)[:m.HEADER_SIZE]
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                raws = []
                for i in range(20):
                    raw = await RawPeer.connect(a, f"127.0.3.{i + 1}")
                    await raw.send_bytes(head + part)
                    raws.append(raw)
                await wait_until(lambda: sum(p.reader._buffer.__len__() for p in peers(a)) >= 20 * 250_000,
                                 what="partial payloads buffered")
                held = tracemalloc.get_traced_memory()[0] - base
                honest = await RawPeer.connect(a, "127.0.3.100")
                await honest.handshake()
                await honest.send(m.Ping(7))
                assert (await honest.recv_until(m.Pong)).nonce == 7
                honest.close()
                for raw in raws:
                    await raw.send_bytes(b"\x00")          # trickle: keeps the frame open
                for raw in raws:
                    assert await raw.closed_by_peer(3.0), "partial frame held past the timeout"
                await wait_until(lambda: not peers(a), what="all dropped")
                gc.collect()
                after = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            print(f"partial frames: held {held}, after drop {after}")
            assert held < 20 * (256_000 + 200_000), held
            assert after < 1_000_000, after
            assert not banned(a)
    run(main())


# ================================================================================ block download

def test_inbound_peer_claiming_a_longer_chain_cannot_stall_block_relay() -> None:
    """Attack: an inbound peer handshakes claiming a start height of 10^6 and then answers
    nothing. It becomes the sync peer, and while a sync peer is active, blocks announced by
    anyone else were not requested ("they would only be orphans"): an honest peer's new
    block waited for the attacker's block download timeout (120 s by default; 5 s here), and
    an attacker with two connections, reconnecting, could keep that up for good. Now a
    single-block announcement from another peer is fetched at once, and announced on."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:20])))
            b = await net.node(MemChain(list(chain_200()[:20])), connect=[addr_of(a)])
            c = await net.node(MemChain(list(chain_200()[:20])), connect=[addr_of(a)])
            await wait_until(lambda: a.connection_count == 2 and all(p["version"] for p in a.peer_info()),
                             what="honest peers connected")
            attacker = await RawPeer.connect(a, "127.0.1.30")
            await attacker.handshake(start_height=10**6)
            await attacker.recv_until(m.GetBlocks)           # it is the sync peer now; silent
            new = chain_200()[20]
            b.chain.accept_block(new)
            b.announce_block(new.hash)
            await wait_until(lambda: a.chain.height == 21, timeout=2.0, what="relayed block fetched")
            await wait_until(lambda: c.chain.height == 21, timeout=2.0, what="relayed on to c")
    run(main())


def test_outbound_peer_takes_the_download_from_an_inbound_one() -> None:
    """Attack (initial download): the same silent inbound peer with a claimed height of 10^6
    is the sync peer when the node dials an honest peer that is ahead. Before, the download
    waited for the inbound peer's timeout. Now, as bitcoind prefers outbound peers for
    download (an inbound connection can be anyone's), an outbound peer that is ahead takes
    the download over from an inbound sync peer, and inbound peers are chosen only when no
    outbound one is ahead."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:20])))
            attacker = await RawPeer.connect(a, "127.0.1.31")
            await attacker.handshake(start_height=10**6)
            await attacker.recv_until(m.GetBlocks)
            b = await net.node(MemChain(list(chain_200()[:60])))
            a.add_node(addr_of(b), "onetry")
            await wait_until(lambda: a.chain.height == 60, timeout=3.0, what="download from b")
    run(main())


def addr_of(node: P2PNode) -> str:
    return f"127.0.0.1:{node.port}"


def test_message_size_limit_fits_the_protocol_not_four_times_it() -> None:
    """Attack: 5 connections each announce a 3 MB message and send 2.5 MB of it. With
    MAX_PAYLOAD at 4 MB (bitcoind's figure for its 4M-weight blocks) the node buffered all of
    it although no message of this protocol can exceed 1.8 MB (a 50000-entry inv; blocks
    are at most 1 MB): 14 MB held here, 4 MB per peer possible. Now MAX_PAYLOAD is 2 MiB,
    what bitcoind used while its blocks were 1 MB: such a header is refused (and banned)
    before a byte of its payload is buffered."""
    assert m.MAX_PAYLOAD == 2 * 1024 * 1024
    assert len(m.Inv(m.inv_items(m.MSG_TX, [b"\x00" * 32] * m.MAX_INV)).serialize()) <= m.MAX_PAYLOAD
    assert MAX_BLOCK_SIZE <= m.MAX_PAYLOAD

    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                raws = []
                for i in range(5):
                    raw = await RawPeer.connect(a, f"127.0.9.{i + 1}")
                    await raw.handshake()
                    raws.append(raw)
                    head = frame(b"block", b"", length=3_000_000)[:m.HEADER_SIZE]
                    with contextlib.suppress(ConnectionError):
                        await raw.send_bytes(head + b"\x00" * 2_500_000)
                await asyncio.sleep(0.3)
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            print(f"5 x 2.5 MB of announced 3 MB messages: {held} bytes held")
            assert held < 2_000_000, held
            for i, raw in enumerate(raws):
                assert await raw.closed_by_peer(2.0)
                assert f"127.0.9.{i + 1}/32" in banned(a)
    run(main())


# ================================================================================ connections

def test_connection_flood_resets_and_half_handshakes_leave_the_listener_serving() -> None:
    """Attack (items 5 and 6, holds): 200 connections reset at once (RST), 60 that never
    send anything (more than the inbound slots), and 20 that send a version and stop. The
    listener keeps accepting; inbound slots never exceed max_inbound; an honest peer gets
    in (by eviction of an idle one) and is served; every half-open connection is dropped
    at the handshake timeout, nothing is banned, and the node ends with only the honest
    peer."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(handshake_timeout=1.0, max_connections=40)
            assert a.max_inbound == 30
            loop = asyncio.get_running_loop()
            for i in range(200):
                s = socket.socket()
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.bind((f"127.0.5.{i + 1}", 0))
                await loop.sock_connect(s, ("127.0.0.1", a.port))
                s.close()                                # RST
                if i % 20 == 0:
                    await asyncio.sleep(0.01)            # let the listener accept
            silent = [await RawPeer.connect(a, f"127.0.6.{i + 1}") for i in range(60)]
            half = []
            for i in range(20):
                raw = await RawPeer.connect(a, f"127.0.7.{i + 1}")
                await raw.send(m.Version(m.PROTOCOL_VERSION, m.NODE_NETWORK, 0, i, "/half/", 0, True))
                half.append(raw)
            await asyncio.sleep(0.1)
            assert a.inbound_count <= a.max_inbound
            honest = await RawPeer.connect(a, "127.0.8.1")
            await honest.handshake()
            await honest.send(m.Ping(99))
            assert (await honest.recv_until(m.Pong)).nonce == 99
            for raw in silent + half:
                assert await raw.closed_by_peer(3.0)
            await wait_until(lambda: a.connection_count == 1, what="only the honest peer left")
            (info,) = a.peer_info()
            assert info["subver"] == "/raw/"
            assert not a.ban_list()
    run(main())


# ================================================================================ log

class LogBytes(logging.Handler):
    """Counts the bytes of messages that reach it, and keeps the warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bytes = 0
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.bytes += len(record.getMessage())
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage())


def test_misbehaving_connections_cannot_flood_the_log() -> None:
    """Attack: 150 connections from as many addresses, each sending 8 bytes of garbage. Each
    wrote a "misbehaving" (INFO) and a "banning" (WARNING) line to the log, which the node
    writes at INFO to debug.log: ~200 bytes a connection, as fast as an attacker connects
    (1000 connections a second: ~0.7 GB an hour, until the disk is full). Now, as bitcoind's
    LogRateLimiter, each source location may log 1 MiB an hour (the default, checked here;
    2 kB in this test), then one warning says it is suppressed."""
    async def main() -> tuple[int, LogBytes]:
        async with Net() as net:
            a = await net.node()
            for i in range(150):
                raw = await RawPeer.connect(a, f"127.0.10.{i + 1}")
                await raw.send_bytes(b"garbage!")
                assert await raw.closed_by_peer()
                raw.close()
            RawPeer.opened.clear()
            return len(a.ban_list()), counter

    net_log = logging.getLogger("cleancoin.net")
    installed = [f for f in net_log.filters if isinstance(f, LogRateLimit)]
    counter = LogBytes()
    level = net_log.level
    net_log.setLevel(logging.INFO)
    net_log.addHandler(counter)
    small = LogRateLimit(budget=2000, window=3600.0)
    for f in installed:
        net_log.removeFilter(f)
    net_log.addFilter(small)
    try:
        bans, counter = run(main())
    finally:
        net_log.removeFilter(small)
        for f in installed:
            net_log.addFilter(f)
        net_log.removeHandler(counter)
        net_log.setLevel(level)
    print(f"log bytes from 150 misbehaving connections: {counter.bytes}")
    assert bans == 150                                   # the bans themselves all happened
    # Two sites (misbehaving, banning), 2000 bytes each, and their two notices.
    assert counter.bytes < 2 * 2000 + 2 * 300, counter.bytes
    assert sum("Excessive logging detected from node.py:" in w for w in counter.warnings) == 2
    # A node installs the default limit on its logger (once, however many nodes).
    P2PNode(MemChain(), MemPool())
    P2PNode(MemChain(), MemPool())
    (default,) = [f for f in net_log.filters if isinstance(f, LogRateLimit)]
    assert (default.budget, default.window) == (1024 * 1024, 3600.0)


def test_log_rate_limit_window_and_levels() -> None:
    """Per call site; DEBUG never limited; the window's end logs how many were dropped."""
    now = [0.0]
    limit = LogRateLimit(budget=100, window=60.0, clock=lambda: now[0])
    logger = logging.getLogger("cleancoin.net.test-limit")
    counter = LogBytes()
    logger.addHandler(counter)
    logger.addFilter(limit)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    def site_x() -> None:
        logger.info("x" * 30)

    try:
        for _ in range(10):
            site_x()                               # 3 fit, 7 dropped, one notice
        for _ in range(10):
            logger.info("y" * 30)                  # another site: its own budget
        for _ in range(10):
            logger.debug("z" * 30)                 # not limited
        assert counter.bytes == 3 * 30 + 3 * 30 + 10 * 30 + sum(len(w) for w in counter.warnings)
        assert len(counter.warnings) == 2 and "suppressing" in counter.warnings[0]
        now[0] = 61.0
        site_x()
        assert counter.warnings[-1].endswith("7 lines were suppressed")
        assert counter.bytes == 4 * 30 + 3 * 30 + 10 * 30 + sum(len(w) for w in counter.warnings)
    finally:
        logger.removeHandler(counter)
        logger.removeFilter(limit)
