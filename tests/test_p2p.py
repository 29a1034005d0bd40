"""P2P layer: wire format, handshake, blocks-first sync, relay, misbehaviour and bans.

Everything runs over real TCP on 127.0.0.1 with ephemeral ports, several P2PNode instances in
one asyncio loop. Blocks are real regtest blocks (mining.mine_block, proof of work checked by
consensus.check_block). The chain and mempool are small in-memory stand-ins written here
(the ChainAccess / MempoolAccess protocols): prev linkage, PoW and structure, best tip by
height; no UTXO validation, which is not what is under test.

Misbehaving raw peers connect from their own loopback addresses (127.0.0.10, .11, ...):
bans are per IP, so banning the attacker must not ban the honest nodes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import random
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from cleancoin.components.common.chainparams import MAIN, REGTEST
from cleancoin.components.common.consensus import check_block, check_transaction
from cleancoin.components.common.errors import Failure, ValidationError
from cleancoin.components.node.mining import assemble_block, mine_block, solve
from cleancoin.components.node.p2p import P2PError, P2PNode, ProtocolError, parse_host_port
from cleancoin.components.node.p2p import messages as m
from cleancoin.components.common.pow import check_proof_of_work
from cleancoin.components.common.primitives import Block, OutPoint, Transaction, TxIn, TxOut

P = REGTEST
GENESIS = P.genesis_block
BITS = GENESIS.header.bits
PKH = hashlib.sha256(b"p2p test miner").digest()[:20]
TEST_TIMEOUT = 20.0

# Timing knobs shortened so that timeouts and reconnects happen within a test.
FAST: dict[str, Any] = {"ping_interval": 30.0, "ping_timeout": 30.0, "handshake_timeout": 5.0,
                        "block_download_timeout": 5.0, "reconnect_interval": 0.2,
                        "connect_timeout": 2.0}


# ================================================================================ chain & pool

@dataclass(frozen=True)
class Index:
    """A block index entry: what ChainAccess.tip / get_index return."""

    hash: bytes
    height: int
    prev: bytes | None
    have_data: bool = True


@dataclass(frozen=True)
class AcceptResult:
    """What accept_block returns."""

    new_tip: bool
    already_have: bool


class MemChain:
    """A dict-based ChainAccess: checks PoW and structure (consensus.check_block) and prev
    linkage, keeps the highest chain as the best one."""

    def __init__(self, blocks: list[Block] = ()) -> None:  # type: ignore[assignment]
        self.params = P
        self.blocks: dict[bytes, Block] = {GENESIS.hash: GENESIS}
        self.index: dict[bytes, Index] = {GENESIS.hash: Index(GENESIS.hash, 0, None)}
        self.active: list[bytes] = [GENESIS.hash]
        self.invalid: set[bytes] = set()
        self.accept_calls = 0
        for b in blocks:
            self.accept_block(b)

    @property
    def tip(self) -> Index:
        return self.index[self.active[-1]]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def get_index(self, h: bytes) -> Index | None:
        return self.index.get(h)

    def get_block(self, h: bytes) -> Block | None:
        return self.blocks.get(h)

    def get_block_raw(self, h: bytes) -> bytes | None:
        block = self.blocks.get(h)
        return None if block is None else block.to_bytes()

    def accept_block(self, block: Block) -> AcceptResult:
        self.accept_calls += 1
        h = block.hash
        if h in self.index and self.index[h].have_data:
            return AcceptResult(False, True)
        if h in self.invalid:
            raise ValidationError(Failure.CONSENSUS, "duplicate-invalid")
        prev = self.index.get(block.header.prev_hash)
        try:
            check_block(block, self.params)
        except ValidationError as e:
            if e.marks_block_invalid:
                self.invalid.add(h)
            elif e.failure is Failure.MUTATED and prev is not None:
                # Like the real chain manager: the header is fine, remember it (no data).
                self.index[h] = Index(h, prev.height + 1, prev.hash, have_data=False)
            raise
        if prev is None:
            raise ValidationError(Failure.MISSING_INPUTS, "prev-blk-not-found")
        idx = Index(h, prev.height + 1, prev.hash)
        self.index[h] = idx
        self.blocks[h] = block
        if idx.height > self.tip.height:
            # Reorganise: walk back from the new tip to the active chain.
            branch = []
            cur: Index | None = idx
            while cur is not None and (cur.height >= len(self.active)
                                       or self.active[cur.height] != cur.hash):
                branch.append(cur.hash)
                cur = self.index[cur.prev] if cur.prev is not None else None
            fork_height = cur.height if cur is not None else -1
            del self.active[fork_height + 1:]
            self.active.extend(reversed(branch))
            return AcceptResult(True, False)
        return AcceptResult(False, False)

    def locator(self) -> list[bytes]:
        out: list[bytes] = []
        step, height = 1, self.height
        while height > 0:
            out.append(self.active[height])
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.active[0])
        return out

    def hashes_after(self, locator: list[bytes], stop: bytes | None, limit: int) -> list[bytes]:
        start = 0
        for h in locator:
            idx = self.index.get(h)
            if idx is not None and idx.height < len(self.active) and self.active[idx.height] == h:
                start = idx.height
                break
        out = []
        for h in self.active[start + 1:]:
            if len(out) >= limit:
                break
            out.append(h)
            if h == stop:
                break
        return out


class MempoolReject(Exception):
    """A policy rejection (the real mempool's exception has a `.reason` too)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Entry:
    """A mempool entry."""

    tx: Transaction


class MemPool:
    """A dict-based MempoolAccess: context-free checks, and a 'fee' policy (outputs of less
    than 1000 units are refused as dust)."""

    def __init__(self) -> None:
        self.txs: dict[bytes, Entry] = {}

    def accept(self, tx: Transaction) -> Entry:
        check_transaction(tx)
        if any(o.value < 1000 for o in tx.vout):
            raise MempoolReject("dust")
        entry = self.txs[tx.txid] = Entry(tx)
        return entry

    def get(self, txid: bytes) -> Entry | None:
        return self.txs.get(txid)

    def __contains__(self, txid: object) -> bool:
        return txid in self.txs


def make_tx(label: str, value: int = 5000) -> Transaction:
    """A structurally valid transaction spending a made-up outpoint (no UTXO checks here)."""
    prev = OutPoint(hashlib.sha256(label.encode()).digest(), 0)
    return Transaction(1, (TxIn(prev, b"\x01\x02"),), (TxOut(value, PKH),), 0)


def mine_chain(n: int, parent: Block = GENESIS, parent_height: int = 0, pkh: bytes = PKH) -> list[Block]:
    """`n` real regtest blocks on top of `parent`."""
    blocks, prev = [], parent.header
    for height in range(parent_height + 1, parent_height + n + 1):
        b = mine_block(prev, height, pkh, P, GENESIS.header.time + 600 * height, BITS)
        blocks.append(b)
        prev = b.header
    return blocks


@functools.cache
def chain_200() -> tuple[Block, ...]:
    """The shared 200-block chain (mined once per test session)."""
    return tuple(mine_chain(200))


# ================================================================================ helpers

def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `pred` until true; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Net:
    """Creates nodes on 127.0.0.1 and stops them all at the end."""

    def __init__(self) -> None:
        self.nodes: list[P2PNode] = []

    async def node(self, chain: MemChain | None = None, **kw: Any) -> P2PNode:
        opts = {**FAST, "bind": "127.0.0.1", "port": 0, **kw}
        node = P2PNode(chain if chain is not None else MemChain(), MemPool(), **opts)
        await node.start()
        self.nodes.append(node)
        return node

    async def __aenter__(self) -> Net:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for n in self.nodes:
            await n.stop()
        while RawPeer.opened:
            RawPeer.opened.pop().close()


def addr(node: P2PNode) -> str:
    return f"127.0.0.1:{node.port}"


def handshaken(node: P2PNode) -> list[dict[str, Any]]:
    """peer_info entries of peers that completed the handshake (they have a version)."""
    return [p for p in node.peer_info() if p["version"]]


class RawPeer:
    """A hand-driven connection for sending arbitrary bytes, from its own source address."""

    #: Every RawPeer made, so that Net can close them all at the end.
    opened: ClassVar[list[RawPeer]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, magic: bytes) -> None:
        self.reader, self.writer, self.magic = reader, writer, magic
        RawPeer.opened.append(self)

    @classmethod
    async def connect(cls, node: P2PNode, source_ip: str, magic: bytes = P.magic) -> RawPeer:
        r, w = await asyncio.open_connection("127.0.0.1", node.port, local_addr=(source_ip, 0))
        return cls(r, w, magic)

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, msg: m.Message) -> None:
        await self.send_bytes(m.serialize_message(self.magic, msg))

    async def recv(self, timeout: float = 5.0) -> m.Message | None:
        async def read() -> m.Message | None:
            header = await self.reader.readexactly(m.HEADER_SIZE)
            hdr = m.parse_header(header, self.magic)
            return m.decode_message(self.magic, header + await self.reader.readexactly(hdr.length))
        return await asyncio.wait_for(read(), timeout)

    async def recv_until(self, kind: type[m.Message], timeout: float = 5.0) -> m.Message:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if isinstance(msg, m.Ping):
                await self.send(m.Pong(msg.nonce))
            if isinstance(msg, kind):
                return msg

    async def handshake(self, start_height: int = 0) -> None:
        await self.send(m.Version(m.PROTOCOL_VERSION, m.NODE_NETWORK, 0, random.getrandbits(64),
                                  "/raw/", start_height, True))
        await self.recv_until(m.Version)
        await self.send(m.Verack())
        await self.recv_until(m.Verack)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the other side closes the connection within `timeout`."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass
        try:
            await asyncio.wait_for(drain(), timeout)
            return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.transport.abort()



def frame(command: bytes, payload: bytes, magic: bytes = P.magic, length: int | None = None,
          csum: bytes | None = None) -> bytes:
    """A hand-built frame with optionally wrong parts."""
    return (magic + command.ljust(12, b"\x00")
            + struct.pack("<I", len(payload) if length is None else length)
            + (m.checksum(payload) if csum is None else csum) + payload)


def block_frame(block: Block) -> bytes:
    """A correctly framed block message."""
    return m.serialize_message(P.magic, m.BlockMessage(block))


def banned(node: P2PNode) -> set[str]:
    return {b["address"] for b in node.ban_list()}


# ================================================================================ wire format

def _all_messages() -> list[m.Message]:
    blk = chain_200()[0]
    tx = make_tx("roundtrip")
    return [
        m.Version(m.PROTOCOL_VERSION, m.NODE_NETWORK, 1_800_000_000, 2**64 - 1,
                  "/CleanCoin:0.1.0/", 123, False),
        m.Verack(), m.Ping(7), m.Pong(2**63),
        m.Inv((m.InvItem(m.MSG_BLOCK, blk.hash), m.InvItem(m.MSG_TX, tx.txid))),
        m.GetData((m.InvItem(m.MSG_TX, tx.txid),)), m.NotFound(()),
        m.GetBlocks((blk.hash, GENESIS.hash), None), m.GetBlocks((GENESIS.hash,), blk.hash),
        m.GetHeaders((blk.hash, GENESIS.hash), None), m.Headers((GENESIS.header, blk.header)), m.Headers(()),
        m.BlockMessage(blk), m.TxMessage(tx),
    ]


def test_messages_round_trip() -> None:
    for msg in _all_messages():
        data = m.serialize_message(P.magic, msg)
        assert data[:4] == P.magic
        assert len(data) == m.HEADER_SIZE + len(msg.serialize())
        assert m.decode_message(P.magic, data) == msg, msg.command
    # The header layout is Bitcoin's: magic, NUL-padded command, LE length, sha256d[:4].
    data = m.serialize_message(P.magic, m.Ping(1))
    assert data[4:16] == b"ping" + b"\x00" * 8
    assert data[16:20] == (8).to_bytes(4, "little")
    assert data[20:24] == hashlib.sha256(hashlib.sha256(data[24:]).digest()).digest()[:4]
    # Unknown commands decode to None (ignored, not an error).
    assert m.decode_message(P.magic, frame(b"sendcmpct", b"\x00" * 9)) is None


@pytest.mark.parametrize("label,data,reason", [
    ("wrong magic", frame(b"ping", b"\x00" * 8, magic=MAIN.magic), "bad-magic"),
    ("bad checksum", frame(b"ping", b"\x00" * 8, csum=b"\x00\x00\x00\x00"), "bad-checksum"),
    ("oversized", frame(b"block", b"", length=m.MAX_PAYLOAD + 1), "oversized"),
    ("command with bytes after NUL", frame(b"ping\x00x", b"\x00" * 8), "bad-command"),
    ("non-printable command", frame(b"pi\x01ng", b"\x00" * 8), "bad-command"),
    ("empty command", frame(b"", b""), "bad-command"),
    ("verack with payload", frame(b"verack", b"\x00"), "malformed-payload"),
    ("short ping", frame(b"ping", b"\x00" * 7), "malformed-payload"),
    ("long pong", frame(b"pong", b"\x00" * 9), "malformed-payload"),
    ("relay flag 2", frame(b"version", m.Version(1, 1, 0, 0, "", 0).serialize()[:-1] + b"\x02"),
     "malformed-payload"),
    ("user agent too long", frame(b"version", struct.pack("<IQqQ", 1, 1, 0, 0) + b"\xfd\x2d\x01"
                                  + b"a" * 301 + b"\x00\x00\x00\x00\x01"), "malformed-payload"),
    ("inv over 50000", frame(b"inv", b"\xfe" + (50001).to_bytes(4, "little") + b"\x00" * 36 * 50001),
     "malformed-payload"),
    ("inv count beyond data", frame(b"inv", b"\x05" + b"\x00" * 36), "malformed-payload"),
    ("inv non-canonical count", frame(b"inv", b"\xfd\x01\x00" + b"\x00" * 36), "malformed-payload"),
    ("locator over 101", frame(b"getblocks", b"\x01\x00\x00\x00\x66" + b"\x11" * 32 * 103),
     "malformed-payload"),
    ("getblocks without stop", frame(b"getblocks", b"\x01\x00\x00\x00\x01" + b"\x11" * 32),
     "malformed-payload"),
    ("truncated block", frame(b"block", chain_200()[0].to_bytes()[:-5]), "malformed-payload"),
    ("block with trailing byte", frame(b"block", chain_200()[0].to_bytes() + b"\x00"),
     "malformed-payload"),
    ("truncated tx", frame(b"tx", make_tx("t").to_bytes()[:20]), "malformed-payload"),
    ("header only", frame(b"block", b"\x00" * 80), "malformed-payload"),
    ("headers over 2000", frame(b"headers", b"\xfd" + (2001).to_bytes(2, "little")
                                + (GENESIS.header.serialized + b"\x00") * 2001), "malformed-payload"),
    ("a header with transactions", frame(b"headers", b"\x01" + GENESIS.header.serialized + b"\x01"),
     "malformed-payload"),
    ("truncated header", frame(b"headers", b"\x01" + GENESIS.header.serialized[:79]), "malformed-payload"),
])
def test_malformed_frames_raise_protocol_error(label: str, data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        m.decode_message(P.magic, data)
    assert info.value.reason == reason, label


def test_fuzzed_payloads_raise_only_protocol_error() -> None:
    """Random corruption of every message type: a message or ProtocolError, nothing else."""
    rng = random.Random(4)
    samples = [(msg.command, msg.serialize()) for msg in _all_messages()]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        command, payload = rng.choice(samples)
        data = bytearray(payload)
        action = rng.randrange(4)
        if action == 0 and data:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == 1:
            del data[rng.randrange(len(data) + 1):]
        elif action == 2:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 120)))
        try:
            m.parse_payload(command, bytes(data))
            outcomes["ok"] += 1
        except ProtocolError:
            outcomes["error"] += 1
    assert outcomes["error"] > 1000 and outcomes["ok"] > 50


def test_parse_host_port() -> None:
    assert parse_host_port("1.2.3.4", 27691) == ("1.2.3.4", 27691)
    assert parse_host_port("1.2.3.4:8", 27691) == ("1.2.3.4", 8)
    assert parse_host_port("[::1]:9", 27691) == ("::1", 9)
    assert parse_host_port("::1", 27691) == ("::1", 27691)
    assert parse_host_port("example.org:10", 1) == ("example.org", 10)
    for bad in ("", "1.2.3.4:0", "1.2.3.4:x", "1.2.3.4:70000", "[::1", "[::1]x"):
        with pytest.raises(P2PError):
            parse_host_port(bad, 27691)


# ================================================================================ handshake

def test_a_node_serves_on_listeners_bound_before_it_starts() -> None:
    """CleanCoin-node binds its P2P listeners before it confines itself into a network
    namespace of its own (since 12-07) and serves on them after (`sockets=`): a peer connects
    to the pre-bound port, and a port taken already fails the binding with asyncio's message,
    before any node exists. -listen=0 closes pre-bound sockets it will not serve on."""
    from cleancoin.components.node.p2p.listen_sockets import bind_listeners
    sockets = bind_listeners("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    with pytest.raises(OSError, match=r"error while attempting to bind on address \('127.0.0.1', \d+\): address already in use"):
        bind_listeners("127.0.0.1", port)
    unused = bind_listeners("127.0.0.1", 0)

    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:3])), sockets=sockets)
            assert a.port == port
            b = await net.node(connect=[f"127.0.0.1:{port}"])
            await wait_until(lambda: b.chain.tip.hash == a.chain.tip.hash, what="sync over the pre-bound port")
            quiet = await net.node(listen=False, sockets=unused)
            assert quiet.port is None and unused[0].fileno() == -1
    run(main())
    assert sockets[0].fileno() == -1        # closed with the node


def test_handshake_peer_info_and_listen_default() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:5])))
            b = await net.node(connect=[addr(a)])
            assert b.port is None, "-connect implies no listening unless listen is set"
            await wait_until(lambda: len(handshaken(a)) == 1 and len(handshaken(b)) == 1,
                             what="handshake")
            await wait_until(lambda: b.chain.tip.hash == a.chain.tip.hash, what="sync of 5 blocks")
            await wait_until(lambda: "pingtime" in a.peer_info()[0] and "pingtime" in b.peer_info()[0],
                             what="ping round trip")
            (pa,) = a.peer_info()
            (pb,) = b.peer_info()
            assert pa["inbound"] is True and pb["inbound"] is False
            assert pa["connection_type"] == "inbound" and pb["connection_type"] == "manual"
            assert pa["version"] == pb["version"] == m.PROTOCOL_VERSION
            assert pa["subver"] == pb["subver"] == "/CleanCoin:0.1.0/"
            assert pa["startingheight"] == 0 and pb["startingheight"] == 5
            assert pb["synced_blocks"] == 5
            assert pb["addr"] == addr(a) and pa["addr"].startswith("127.0.0.1:")
            for p in (pa, pb):
                assert set(p) >= {"id", "addr", "inbound", "version", "subver", "startingheight",
                                  "synced_blocks", "bytessent", "bytesrecv", "conntime", "pingtime",
                                  "banscore"}
                assert p["bytessent"] > 0 and p["bytesrecv"] > 0 and p["banscore"] == 0
                assert p["conntime"] > 1_600_000_000 and 0 <= p["pingtime"] < 5
            assert 0 < pa["bytesrecv"] <= pb["bytessent"]      # (a ping may be in flight)
            assert a.connection_count == b.connection_count == 1
    run(main())


# ================================================================================ sync & relay

def test_three_nodes_sync_200_blocks_then_relay_block_and_tx(caplog: pytest.LogCaptureFixture) -> None:
    """A has 200 blocks; B connects to A; C connects to B. Small getblocks batches on A force
    several getblocks rounds; C connects before B has anything, so it learns of the chain
    from B's tip announcement (orphan -> getblocks)."""
    caplog.set_level(logging.INFO, logger="cleancoin.net")

    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200())), getblocks_limit=64)
            b = await net.node(connect=[addr(a)], listen=True)
            c = await net.node(connect=[addr(b)])
            target = a.chain.tip.hash
            await wait_until(lambda: b.chain.tip.hash == target and c.chain.tip.hash == target,
                             timeout=15, what="three nodes at A's tip")
            assert b.chain.height == c.chain.height == 200
            # Every block was downloaded once per node (no duplicate downloads).
            assert b.chain.accept_calls < 215 and c.chain.accept_calls < 215

            # A new block mined on A propagates A -> B -> C.
            (new,) = mine_chain(1, chain_200()[-1], 200)
            assert a.chain.accept_block(new).new_tip
            assert a.announce_block(new.hash) == 1
            await wait_until(lambda: c.chain.tip.hash == new.hash, what="new block at C")

            # A transaction relays A -> B -> C.
            tx = make_tx("relay me")
            a.mempool.accept(tx)
            assert a.announce_tx(tx.txid) == 1
            await wait_until(lambda: tx.txid in c.mempool, what="tx at C")
            assert tx.txid in b.mempool
            # Nobody announces it back to where it came from.
            assert a.announce_tx(tx.txid) == 0
    run(main())
    text = caplog.text
    assert "IBD progress: height=200 total=200" in text
    assert "Block download from peer=" in text and "blocks/s" in text


def test_sync_across_fork_and_catch_up_after_outage() -> None:
    """B has its own short branch; A's longer chain replaces it. Then B is offline while A
    grows, and catches up when it reconnects (addnode, with B dialling out)."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:40])), getblocks_limit=16)
            own = mine_chain(5, pkh=b"\x22" * 20)
            b = await net.node(MemChain(own))
            b.add_node(addr(a), "add")
            await wait_until(lambda: b.chain.tip.hash == a.chain.tip.hash, what="B on A's chain")
            assert own[-1].hash in b.chain.index          # the old branch is still known

            b.add_node(addr(a), "remove")
            b.disconnect_node(addr=addr(a))
            await wait_until(lambda: a.connection_count == 0, what="disconnect")
            more = chain_200()[40:90]
            for blk in more:
                a.chain.accept_block(blk)
            b.add_node(addr(a), "onetry")
            await wait_until(lambda: b.chain.tip.hash == more[-1].hash, what="catch-up")
            assert b.peer_info()[0]["connection_type"] == "manual"
    run(main())


# ================================================================================ misbehaviour

def _invalid_blocks() -> dict[str, Block]:
    good = chain_200()[0]
    # Proof of work: the regtest target accepts about half of all nonces; find one it refuses.
    nonce = good.header.nonce
    while check_proof_of_work(dataclasses.replace(good.header, nonce=nonce).hash, BITS, P):
        nonce += 1
    high_hash = Block(dataclasses.replace(good.header, nonce=nonce), good.txs)
    # A transaction list that does not match the merkle root (mutated), under the header of
    # the block after the node's tip (a known hash would just be "already have"; an unknown
    # parent would make it an orphan).
    other = mine_chain(1, pkh=b"\x33" * 20)[0]
    mutated = Block(chain_200()[20].header, other.txs)
    # No coinbase: consensus-invalid with valid PoW and merkle root.
    tx = make_tx("not a coinbase")
    no_cb = solve(assemble_block(GENESIS.header, [tx], GENESIS.header.time + 600, BITS), P)
    assert no_cb is not None
    return {"high-hash": high_hash, "mutated": mutated, "no-coinbase": no_cb}


def test_malformed_and_invalid_data_disconnect_and_ban() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:20])))
            good = await net.node(connect=[addr(a)])
            await wait_until(lambda: good.chain.height == 20, what="honest node synced")
            blk = chain_200()[20]
            bad = _invalid_blocks()
            cases: list[tuple[str, bool, bytes]] = [
                # (label, handshake first, bytes to send)
                ("garbage", False, bytes(range(7, 71))),
                ("wrong magic", False, m.serialize_message(MAIN.magic, m.Ping(1))),
                ("bad checksum", True, frame(b"ping", b"\x00" * 8, csum=b"\xde\xad\xbe\xef")),
                ("oversized length", True, frame(b"block", b"", length=m.MAX_PAYLOAD + 1)),
                ("bad command", True, frame(b"p\xffng", b"\x00" * 8)),
                ("truncated block", True, frame(b"block", blk.to_bytes()[:-10])),
                ("malformed version", False, frame(b"version", b"\x01\x00")),
                ("high-hash block", True, block_frame(bad["high-hash"])),
                ("mutated block", True, block_frame(bad["mutated"])),
                ("block without coinbase", True, block_frame(bad["no-coinbase"])),
            ]
            for i, (label, shake, data) in enumerate(cases):
                ip = f"127.0.0.{10 + i}"
                raw = await RawPeer.connect(a, ip)
                if shake:
                    await raw.handshake()
                await raw.send_bytes(data)
                assert await raw.closed_by_peer(), f"{label}: not disconnected"
                assert f"{ip}/32" in banned(a), f"{label}: not banned"
                # The banned address cannot come back...
                again = await RawPeer.connect(a, ip)
                assert await again.closed_by_peer(2.0), f"{label}: banned address accepted"
                # ...while the honest node stays connected and served.
                (honest,) = handshaken(a)
                assert honest["addr"] == good.peer_info()[0]["addrbind"]
            assert len(banned(a)) == len(cases)
            assert "127.0.0.1/32" not in banned(a)
            # The node still works: a new block reaches the honest peer.
            a.chain.accept_block(blk)
            a.announce_block(blk.hash)
            await wait_until(lambda: good.chain.height == 21, what="block after the attacks")
            ban = a.ban_list()[0]
            assert ban["banned_until"] - ban["ban_created"] == 86400
    run(main())


def test_mutated_copy_does_not_hide_the_real_block() -> None:
    """A mutated block leaves its (valid) header known to the chain without data; the real
    block, announced later by an honest peer, must still be downloaded."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:20])))
            real = chain_200()[20]
            raw = await RawPeer.connect(a, "127.0.0.20")
            await raw.handshake()
            await raw.send_bytes(block_frame(Block(real.header, mine_chain(1, pkh=b"\x66" * 20)[0].txs)))
            assert await raw.closed_by_peer()
            assert "127.0.0.20/32" in banned(a)
            assert a.chain.get_index(real.hash) is not None and a.chain.height == 20
            b = await net.node(MemChain(list(chain_200()[:21])), connect=[addr(a)])
            await wait_until(lambda: a.chain.tip.hash == real.hash, what="real block downloaded")
            assert b.connection_count == 1
    run(main())


def test_unknown_commands_ignored_and_small_offences_scored() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            raw = await RawPeer.connect(a, "127.0.0.30")
            await raw.send(m.Ping(1))                   # before the handshake: +1, ignored
            await raw.handshake()
            await raw.send_bytes(frame(b"sendcmpct", b"\x00" * 9))   # unknown: ignored
            await raw.send(m.Verack())                  # repeated verack: +1
            # A policy rejection (dust) costs nothing.
            await raw.send(m.TxMessage(make_tx("dust", value=10)))
            # A good one is accepted.
            ok = make_tx("fine")
            await raw.send(m.TxMessage(ok))
            await wait_until(lambda: ok.txid in a.mempool, what="tx accepted")
            (info,) = a.peer_info()
            assert info["banscore"] == 2
            assert not a.ban_list()
            # getblocks on an empty chain is still answered (an empty inv).
            await raw.send(m.GetBlocks((GENESIS.hash,)))
            inv = await raw.recv_until(m.Inv)
            assert inv.items == ()
            # getdata for unknown things comes back as notfound.
            await raw.send(m.GetData((m.InvItem(m.MSG_BLOCK, b"\x05" * 32),
                                      m.InvItem(m.MSG_TX, ok.txid))))
            got = await raw.recv_until(m.TxMessage)
            assert got.tx == ok
            nf = await raw.recv_until(m.NotFound)
            assert nf.items == (m.InvItem(m.MSG_BLOCK, b"\x05" * 32),)
            # A consensus-invalid transaction (negative output): a ban at once, as bitcoind's
            # (since 12-07; it was 10 points, and a new connection started again from 0).
            bad_tx = Transaction(1, (TxIn(OutPoint(b"\x01" * 32, 0), b"\x01\x02"),),
                                 (TxOut(-1, PKH),), 0)
            await raw.send(m.TxMessage(bad_tx))
            assert await raw.closed_by_peer()
            assert "127.0.0.30/32" in banned(a)
    run(main())


def test_serves_blocks_by_getblocks_and_getdata() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(MemChain(list(chain_200()[:30])), getblocks_limit=500)
            raw = await RawPeer.connect(a, "127.0.0.31")
            await raw.handshake()
            await raw.send(m.GetBlocks((chain_200()[9].hash, GENESIS.hash), chain_200()[19].hash))
            inv = await raw.recv_until(m.Inv)
            assert [it.hash for it in inv.items] == [b.hash for b in chain_200()[10:20]]
            await raw.send(m.GetData(inv.items))
            for expected in chain_200()[10:20]:
                got = await raw.recv_until(m.BlockMessage)
                assert got.block.hash == expected.hash
            raw.close()
    run(main())


def test_timeouts_disconnect_without_ban() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node(handshake_timeout=0.3, ping_interval=0.2, ping_timeout=0.4)
            silent = await RawPeer.connect(a, "127.0.0.40")
            assert await silent.closed_by_peer(3.0), "no handshake: should be dropped"
            deaf = await RawPeer.connect(a, "127.0.0.41")
            await deaf.handshake()          # then never answers a ping
            assert await deaf.closed_by_peer(3.0), "no pong: should be dropped"
            assert not a.ban_list()
    run(main())


def test_ban_expiry_and_manual_bans() -> None:
    clock = [1_900_000_000.0]

    async def main() -> None:
        async with Net() as net:
            a = await net.node(ban_time=100, now=lambda: clock[0])
            raw = await RawPeer.connect(a, "127.0.0.50")
            await raw.send_bytes(b"\x00" * 24)
            assert await raw.closed_by_peer()
            assert a.ban_list() == [{"address": "127.0.0.50/32", "ban_created": 1_900_000_000,
                                     "banned_until": 1_900_000_100, "ban_duration": 100,
                                     "time_remaining": 100, "ban_reason": a.ban_list()[0]["ban_reason"]}]
            assert "bad-magic" in a.ban_list()[0]["ban_reason"]
            clock[0] += 101
            assert a.ban_list() == []
            back = await RawPeer.connect(a, "127.0.0.50")
            await back.handshake()
            await wait_until(lambda: len(handshaken(a)) == 1, what="expired ban lets it back")
            a.ban("127.0.0.50")                         # drops the live connection too
            assert await back.closed_by_peer()
            a.unban("127.0.0.50")
            with pytest.raises(P2PError):
                a.unban("127.0.0.50")
            a.ban("::ffff:127.0.0.51", 10)
            assert {b["address"] for b in a.ban_list()} == {"127.0.0.51/32"}
            a.clear_banned()
            assert a.ban_list() == []
            with pytest.raises(P2PError):
                a.ban("not-an-ip")
    run(main())


# ================================================================================ connections

def test_self_connection_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cleancoin.net")

    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            a.add_node(addr(a), "onetry")
            await wait_until(lambda: "connected to self" in caplog.text,
                             what="self-connection detection")
            await wait_until(lambda: a.connection_count == 0, what="both ends closed")
            assert not a.ban_list()
    run(main())


def test_max_connections_enforced() -> None:
    """-maxconnections=12: 10 outbound slots (8 full-relay + 2 block-relay, as bitcoind) and 2
    inbound ones. A third inbound peer finds both protected (too few peers to evict one) and
    is refused; outbound connections have slots of their own."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node(max_connections=12)
            assert (a.max_outbound, a.max_inbound) == (10, 2)
            b = await net.node(connect=[addr(a)])
            c = await net.node(connect=[addr(a)])
            await wait_until(lambda: len(handshaken(a)) == 2, what="two peers")
            d = await net.node(connect=[addr(a)])
            raw = await RawPeer.connect(a, "127.0.0.60")
            assert await raw.closed_by_peer(2.0)
            await asyncio.sleep(0.5)                    # d retries every 0.2 s, always refused
            assert a.connection_count == 2 and d.connection_count in (0, 1)
            assert not handshaken(d)
            # A slot frees up: d gets in on its next retry.
            b.disconnect_node(addr=addr(a))
            await b.stop()
            await wait_until(lambda: len(handshaken(d)) == 1, what="d connects once a slot is free")
            assert a.connection_count == 2 and len(handshaken(c)) == 1
            # Full inbound slots do not stop an outbound connection.
            e = await net.node()
            a.add_node(addr(e), "onetry")
            await wait_until(lambda: len(handshaken(e)) == 1, what="outbound connection")
            assert a.connection_count == 3 and a.inbound_count == 2

            # -maxconnections=2: both are outbound slots (bitcoind: 8 full-relay first), none inbound.
            f = await net.node(max_connections=2)
            assert (f.max_outbound, f.max_inbound) == (2, 0)
            raw = await RawPeer.connect(f, "127.0.0.61")
            assert await raw.closed_by_peer(2.0)
            f.add_node(addr(e), "onetry")
            f.add_node(addr(await net.node()), "onetry")
            await wait_until(lambda: len(handshaken(f)) == 2, what="two outbound")
            g = await net.node()
            f.add_node(addr(g), "onetry")
            await asyncio.sleep(0.3)
            assert g.connection_count == 0 and f.connection_count == 2
    run(main())


def test_disconnect_node_and_add_node() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            b = await net.node()
            b.add_node(addr(a), "add")
            with pytest.raises(P2PError) as err:
                b.add_node(addr(a), "add")
            assert err.value.code == -23
            await wait_until(lambda: len(handshaken(b)) == 1, what="added node connects")
            assert b.added_node_info() == [{
                "addednode": addr(a), "connected": True,
                "addresses": [{"address": addr(a), "connected": "outbound"}]}]
            first_id = b.peer_info()[0]["id"]
            # Disconnected by id, an added node is dialled again.
            b.disconnect_node(peer_id=first_id)
            assert b.connection_count == 0
            await wait_until(lambda: len(handshaken(b)) == 1, what="reconnect")
            assert b.peer_info()[0]["id"] != first_id
            # Removed, then disconnected: it stays away.
            b.add_node(addr(a), "remove")
            with pytest.raises(P2PError) as err:
                b.add_node(addr(a), "remove")
            assert err.value.code == -24
            assert b.connection_count == 1              # remove does not disconnect (bitcoind)
            b.disconnect_node(addr=addr(a))
            await asyncio.sleep(0.5)
            assert b.connection_count == 0 and a.connection_count == 0
            # Errors in bitcoind's codes.
            with pytest.raises(P2PError) as err:
                b.disconnect_node(addr="127.0.0.1:1")
            assert err.value.code == -29
            with pytest.raises(P2PError) as err:
                b.disconnect_node(addr=addr(a), peer_id=1)
            assert err.value.code == -8
            with pytest.raises(P2PError):
                b.add_node(addr(a), "sometimes")
            # Disconnect by id from the listening side too.
            b.add_node(addr(a), "onetry")
            await wait_until(lambda: len(handshaken(a)) == 1, what="onetry")
            a.disconnect_node(peer_id=a.peer_info()[0]["id"])
            await wait_until(lambda: b.connection_count == 0, what="closed on the other side")
            await asyncio.sleep(0.4)
            assert b.connection_count == 0              # onetry is not retried
    run(main())


def test_stop_and_bind_errors() -> None:
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            with pytest.raises(OSError):
                await net.node(port=a.port)             # address in use
            b = await net.node(connect=[addr(a)])
            await wait_until(lambda: a.connection_count == 1, what="connected")
            await b.stop()
            await wait_until(lambda: a.connection_count == 0, what="peer gone after stop")
        with pytest.raises(P2PError):
            P2PNode(MemChain(), MemPool(), connect=["127.0.0.1:notaport"])
    run(main())


def test_idle_inbound_flood_takes_no_outbound_slot_and_newcomers_get_in_by_eviction(caplog) -> None:
    """The eclipse attempt (issue 11, item 7): 125 peers connect in, finish the handshake and
    then do nothing. They fill only the inbound slots (115 of -maxconnections=125); the node
    still dials out (outbound slots are kept apart), and an honest newcomer still gets in, by
    evicting one of the idle peers."""
    async def main() -> None:
        async with Net() as net:
            a = await net.node()
            assert (a.max_outbound, a.max_inbound) == (10, 115)
            flood: list[RawPeer] = []
            for i in range(125):
                raw = await RawPeer.connect(a, f"127.0.{1 + i // 100}.{1 + i % 100}")
                flood.append(raw)
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    await raw.handshake()
            await wait_until(lambda: a.inbound_count == a.max_inbound, what="inbound slots full")
            assert a.connection_count == 115
            honest_out = await net.node()
            a.add_node(addr(honest_out), "onetry")
            await wait_until(lambda: len(handshaken(honest_out)) == 1, what="outbound connection")
            newcomer = await net.node(connect=[addr(a)])
            await wait_until(lambda: len(handshaken(newcomer)) == 1, what="newcomer let in")
            await asyncio.sleep(0.3)
            assert len(handshaken(newcomer)) == 1 and len(handshaken(honest_out)) == 1
            assert a.inbound_count <= a.max_inbound and a.connection_count <= 125
            closed = await asyncio.gather(*(r.closed_by_peer(0.2) for r in flood))
            assert sum(closed) >= 11            # 10 refused or evicted while flooding, 1 for the newcomer
    with caplog.at_level(logging.INFO, logger="cleancoin.net"):
        run(main())
    assert "evicting peer=" in caplog.text


def test_eviction_spares_useful_peers_and_drops_the_youngest_of_the_crowd() -> None:
    """select_peer_to_evict, bitcoind's rules: fast, block- and tx-relaying and long-standing
    peers are protected; the youngest peer of the most crowded network group goes."""
    from cleancoin.components.node.p2p.eviction import Candidate, netgroup, select_peer_to_evict

    key = b"k" * 16
    idle = [Candidate(i, connected_at=float(i), min_ping=None, last_block_time=0.0, last_tx_time=0.0,
                      relays_txs=True, netgroup="10.1.0.0/16") for i in range(1, 41)]
    # The youngest idle peer of the crowded group goes.
    assert select_peer_to_evict(idle, key) == 40
    # A young peer that just sent a new block, one with the best ping, one that sent a new
    # transaction: all kept; the youngest idle one goes instead.
    useful = [Candidate(100, 100.0, None, 99.0, 0.0, True, "10.1.0.0/16"),
              Candidate(101, 101.0, 0.001, 0.0, 0.0, True, "10.1.0.0/16"),
              Candidate(102, 102.0, None, 0.0, 98.0, True, "10.1.0.0/16")]
    assert select_peer_to_evict(idle + useful, key) == 40
    # A lone peer of another group is not in the crowd.
    loner = Candidate(200, 200.0, None, 0.0, 0.0, True, "192.168.0.0/16")
    assert select_peer_to_evict(idle + [loner], key) in {c.peer_id for c in idle}
    # Too few peers to spare one: every one is protected.
    assert select_peer_to_evict(idle[:4], key) is None
    assert select_peer_to_evict([], key) is None
    assert netgroup("127.0.5.9") == netgroup("::1") == "local"
    assert netgroup("10.1.200.3") == "10.1.0.0/16" and netgroup("::ffff:10.1.2.3") == "10.1.0.0/16"
    assert netgroup("2001:db8:aa::1") == "2001:db8::/32"
