"""Functional: several real nodes over P2P: sync, relay, reorganisation, bad bytes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from framework import (
    OTHER_ADDRESS, OTHER_KEY, TEST_ADDRESS, TestNode, connect_nodes, spend_coinbase, sync_blocks, wait_until,
)
from cleancoin.components.common.chainparams import REGTEST


@pytest.fixture
def nodes(tmp_path: Path):
    made: list[TestNode] = []

    def make(n: int, *extra: list[str]) -> list[TestNode]:
        for i in range(n):
            made.append(TestNode(len(made), tmp_path, extra[i] if i < len(extra) else ()))
        return made

    yield make
    for node in made:
        node.cleanup()


def test_three_nodes_sync_over_a_connect_chain_and_relay(nodes) -> None:
    a, b, c = nodes(3)
    a.start()
    a.rpc.generatetoaddress(110, TEST_ADDRESS)
    b.start([f"-connect={a.p2p_addr}", "-listen=1"])
    c.start([f"-connect={b.p2p_addr}"])
    tip = sync_blocks([a, b, c])
    assert tip == a.rpc.getbestblockhash() and c.rpc.getblockcount() == 110
    assert b.rpc.getconnectioncount() == 2
    peers = c.rpc.getpeerinfo()
    assert len(peers) == 1 and peers[0]["addr"] == b.p2p_addr and peers[0]["inbound"] is False
    # A transaction sent to the last node reaches the first one's mempool, and a block mined
    # there propagates back with it.
    tx = spend_coinbase(c, 3, OTHER_KEY.public_key.pkh)
    txid = c.rpc.sendrawtransaction(tx.serialized.hex())
    wait_until(lambda: txid in a.rpc.getrawmempool(), what="tx relay")
    [h] = a.rpc.generatetoaddress(1, OTHER_ADDRESS)
    assert sync_blocks([a, b, c]) == h
    wait_until(lambda: c.rpc.getrawmempool() == [], what="mempool cleared on c")
    assert txid in c.rpc.getblock(h)["tx"]


def test_reorg_to_the_longer_chain_and_invalidate_reconsider(nodes) -> None:
    a, b = nodes(2)
    a.start()
    b.start()
    a.rpc.generatetoaddress(5, TEST_ADDRESS)
    b.rpc.generatetoaddress(8, OTHER_ADDRESS)
    b_tip = b.rpc.getbestblockhash()
    connect_nodes(a, b)
    assert sync_blocks([a, b]) == b_tip
    assert a.rpc.getblockcount() == 8
    tips = {t["status"]: t for t in a.rpc.getchaintips()}
    assert tips["active"]["hash"] == b_tip
    assert tips["valid-fork"]["height"] == 5 and tips["valid-fork"]["branchlen"] == 5
    # invalidateblock on a: back to its own branch (5 blocks), which is the best valid one.
    a.rpc.invalidateblock(a.rpc.getblockhash(1))
    assert a.rpc.getblockcount() == 5 and a.rpc.getbestblockhash() == tips["valid-fork"]["hash"]
    assert any(t["status"] == "invalid" for t in a.rpc.getchaintips())
    a.rpc.reconsiderblock(b.rpc.getblockhash(1))
    assert a.rpc.getbestblockhash() == b_tip
    # A heavier branch mined on a while disconnected from b replaces b's tip too.
    a.rpc.disconnectnode(b.p2p_addr)
    wait_until(lambda: a.rpc.getconnectioncount() == 0 and b.rpc.getconnectioncount() == 0,
               what="disconnect")
    a.rpc.invalidateblock(b.rpc.getblockhash(1))
    new = a.rpc.generatetoaddress(6, TEST_ADDRESS)          # 5 + 6 = 11 > 8
    connect_nodes(b, a)
    assert sync_blocks([a, b]) == new[-1]
    assert b.rpc.getblockcount() == 11


def test_malformed_p2p_bytes_leave_the_node_running(nodes) -> None:
    [a] = nodes(1)
    a.start()
    payloads = [b"\x00" * 24, b"GET / HTTP/1.1\r\n\r\n", REGTEST.magic + b"version\x00\x00\x00\x00\x00"
                + (10**6).to_bytes(4, "little") + b"\x00" * 4, bytes(range(256)) * 40]
    for data in payloads:
        with socket.create_connection(("127.0.0.1", a.p2p_port), timeout=5) as s:
            try:
                s.sendall(data)
                s.settimeout(2)
                s.recv(100)
            except OSError:
                pass
    time.sleep(0.2)
    assert a.process is not None and a.process.poll() is None
    assert a.rpc.getblockcount() == 0
    a.rpc.generatetoaddress(1, TEST_ADDRESS)
    assert a.rpc.getblockcount() == 1


def test_idle_inbound_flood_cannot_eclipse_the_node(nodes) -> None:
    """The eclipse attempt (issue 11, item 7) against a real node: 125 peers connect in,
    complete the handshake and then do nothing. They get the inbound slots only (115 of
    -maxconnections=125); the node still makes an outbound connection, and an honest node that
    connects in afterwards gets in by eviction of an idle one."""
    import asyncio
    import random

    from cleancoin.components.node.p2p import messages as m

    a, out_peer, newcomer = nodes(3)
    a.start()
    out_peer.start()

    async def idle_peer(index: int, held: list[asyncio.StreamWriter]) -> bool:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", a.p2p_port, local_addr=(f"127.0.{1 + index // 100}.{1 + index % 100}", 0))
        except OSError:
            return False
        held.append(writer)
        try:
            writer.write(m.serialize_message(REGTEST.magic, m.Version(
                m.PROTOCOL_VERSION, m.NODE_NETWORK, int(time.time()), random.getrandbits(64), "/idle/", 0, True)))
            seen: set[str] = set()
            while not {"version", "verack"} <= seen:
                header = await asyncio.wait_for(reader.readexactly(m.HEADER_SIZE), 10)
                body = await reader.readexactly(m.parse_header(header, REGTEST.magic).length)
                seen.add(m.decode_message(REGTEST.magic, header + body).command)
            writer.write(m.serialize_message(REGTEST.magic, m.Verack()))
            await writer.drain()
            return True
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return False                       # refused, or evicted by a later one of the flood

    async def flood() -> tuple[int, int, int]:
        held: list[asyncio.StreamWriter] = []
        handshaken = [await idle_peer(i, held) for i in range(125)]
        await asyncio.sleep(0.5)
        info = await asyncio.to_thread(a.rpc.getnetworkinfo)
        # While the idle peers hold their slots: an outbound connection and an inbound newcomer.
        await asyncio.to_thread(a.rpc.addnode, out_peer.p2p_addr, "onetry")
        await asyncio.to_thread(newcomer.start, [f"-connect={a.p2p_addr}"])
        await asyncio.to_thread(wait_until, lambda: any(p["version"] for p in newcomer.rpc.getpeerinfo()),
                                20, 0.05, "the newcomer's handshake")
        await asyncio.to_thread(wait_until, lambda: any(not p["inbound"] and p["version"]
                                                        for p in a.rpc.getpeerinfo()), 20, 0.05, "outbound")
        after = await asyncio.to_thread(a.rpc.getnetworkinfo)
        for w in held:
            w.transport.abort()
        return sum(handshaken), info["connections_in"], after["connections_in"]

    handshaken, inbound_during, inbound_after = asyncio.run(flood())
    assert handshaken >= 115
    assert inbound_during == 115 and inbound_after <= 115
    assert a.rpc.getnetworkinfo()["connections_out"] == 1
    assert "evicting peer=" in a.debug_log()
