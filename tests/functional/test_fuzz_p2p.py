"""Fuzz: P2P messages against a real node's P2P port (hypothesis).

One node per module. Each example connects from its own loopback address (127.x.y.z: a peer
that misbehaves gets its address banned, and the next example must not inherit that), maybe
completes the version handshake, and sends one of: raw bytes; a frame with a real or made-up
command and an arbitrary payload (right or wrong checksum, a length that lies); or a real
message whose payload was mutated. It then half-closes and reads until the node closes the
connection, so the node has processed every byte before the check. The property:

- the node process is alive (and, with CleanCoin-node, its wallet process is the same one);
- a good peer from 127.0.0.1, which is never banned, completes the handshake and gets a pong
  for its ping; RPC answers.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.hashes import sha256d
from cleancoin.components.node.p2p.messages import (
    MESSAGE_TYPES, MSG_BLOCK, MSG_TX, BlockMessage, GetBlocks, GetData, Inv, InvItem,
    Ping, Pong, TxMessage, Verack, Version, serialize_message,
)
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from framework import TEST_ADDRESS, TestNode, is_multiprocess
from raw_peer import READ_TIMEOUT, RawPeer

EXAMPLES = settings.default.max_examples
MAGIC = REGTEST.magic


def frame(command: bytes, payload: bytes, *, good_checksum: bool = True,
          length: int | None = None) -> bytes:
    csum = sha256d(payload)[:4] if good_checksum else bytes(4)
    return (MAGIC + command.ljust(12, b"\0")[:12]
            + struct.pack("<I", len(payload) if length is None else length) + csum + payload)


class Peer(RawPeer):
    """A raw peer that can also half-close and wait for the node to close (raw_peer.py)."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(port, source, user_agent="/fuzz:0.1/")

    def until_closed(self) -> str:
        """Half-close and read until the node closes: every byte sent has been processed."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + READ_TIMEOUT
            while self.sock.recv(65536):
                if time.monotonic() > deadline:
                    return "still open"
            return "closed"
        except (ConnectionResetError, BrokenPipeError, OSError):
            return "reset"
        except TimeoutError:
            return "still open"
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


class Target:
    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.pids = self.current_pids()
        self.examples = 0

    def current_pids(self) -> list[int]:
        if is_multiprocess():
            return [int(p["pid"]) for p in self.node.rpc.getprocessinfo()["processes"]]
        return [self.node.process.pid]  # type: ignore[union-attr]

    def next_source(self) -> str:
        """A loopback address of its own for each example (bans are per address)."""
        self.examples += 1
        n = self.examples
        return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{2 + (n & 255) % 250}"

    def good_peer_is_served(self) -> None:
        peer = Peer(self.node.p2p_port, "127.0.0.1")
        try:
            peer.handshake()
            peer.send(serialize_message(MAGIC, Ping(0x1234_5678)))
            while True:
                msg = peer.read_message()
                if isinstance(msg, Pong):
                    assert msg.nonce == 0x1234_5678
                    break
        finally:
            peer.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    node = TestNode(0, tmp_path_factory.mktemp("fuzz-p2p"))
    node.start()
    try:
        if is_multiprocess():
            node.rpc.createwallet("w")
        node.rpc.generatetoaddress(2, TEST_ADDRESS)
        yield Target(node)
        assert node.stop() == 0
    finally:
        node.cleanup()


# ------------------------------------------------------------------------------- messages

hashes = st.binary(min_size=32, max_size=32) | st.just(bytes(32)) | st.just(REGTEST.genesis_block.hash)
commands = (st.sampled_from([c.encode() for c in MESSAGE_TYPES] + [b"addr", b"getheaders",
                                                                   b"reject", b"mempool", b""])
            | st.binary(max_size=12))
valid_messages = st.one_of(
    st.builds(Version, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
              st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1), st.text(max_size=20),
              st.integers(-(2**31), 2**31 - 1), st.booleans()),
    st.just(Verack()),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(Inv, st.lists(st.builds(InvItem, st.sampled_from([MSG_TX, MSG_BLOCK, 0, 7]), hashes),
                            max_size=20).map(tuple)),
    st.builds(GetData, st.lists(st.builds(InvItem, st.sampled_from([MSG_TX, MSG_BLOCK, 3]), hashes),
                                max_size=20).map(tuple)),
    st.builds(GetBlocks, st.lists(hashes, max_size=10).map(tuple), st.none() | hashes,
              st.integers(0, 2**32 - 1)),
    st.just(BlockMessage(REGTEST.genesis_block)),
    st.just(TxMessage(REGTEST.genesis_block.txs[0])),
    st.builds(lambda h, n, value, pkh, sig: TxMessage(Transaction(
        1, (TxIn(OutPoint(h, n), sig),), (TxOut(value, pkh),), 0)),
        hashes, st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 21 * 10**14, 2**62]),
        st.binary(min_size=20, max_size=20), st.binary(max_size=120)),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with its payload cut, extended or flipped, reframed with a good
    checksum so that it reaches the payload parser."""
    msg = draw(valid_messages)
    payload = bytearray(msg.serialize())
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "append", "flip", "varint"]))
        at = draw(st.integers(0, len(payload)))
        if op == "cut":
            del payload[at:]
        elif op == "append":
            payload[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "flip" and payload:
            payload[min(at, len(payload) - 1)] ^= draw(st.integers(1, 255))
        elif op == "varint":
            payload[at:at] = draw(st.sampled_from([b"\xfd\xff\xff", b"\xfe\xff\xff\xff\xff",
                                                   b"\xff" + b"\xff" * 8, b"\xfd\x00\x00"]))
    return frame(msg.command.encode(), bytes(payload))


fuzz_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(frame, commands, st.binary(max_size=200), good_checksum=st.booleans()),
    st.builds(frame, commands, st.binary(max_size=50),
              length=st.sampled_from([0, 1, 1000, 2**21, 2**21 + 1, 4_000_000, 2**32 - 1])),
    mutated(), mutated(),
    valid_messages.map(lambda m: serialize_message(MAGIC, m)),
)


@settings(max_examples=EXAMPLES)
@given(handshake=st.booleans(), chunks=st.lists(fuzz_bytes, min_size=1, max_size=3))
def test_fuzz_p2p_messages(target: Target, handshake: bool, chunks: list[bytes]) -> None:
    peer = Peer(target.node.p2p_port, target.next_source())
    try:
        if handshake:
            peer.handshake()
        for chunk in chunks:
            peer.send(chunk)
    except (ConnectionError, OSError, TimeoutError):
        event("refused before everything was sent")
        peer.close()
    else:
        event(peer.until_closed())
    assert target.node.process is not None and target.node.process.poll() is None
    target.good_peer_is_served()
    assert target.current_pids() == target.pids
    assert target.node.rpc.getblockcount() == 2


def test_a_good_peer_check_can_fail(target: Target) -> None:
    """The good-peer check is real: a banned address is not served."""
    source = target.next_source()
    peer = Peer(target.node.p2p_port, source)
    peer.send(frame(b"version", b"\x01" * 5))          # a malformed version: ban score 100
    assert peer.until_closed() in ("closed", "reset")
    with pytest.raises((ConnectionError, OSError)):
        refused = Peer(target.node.p2p_port, source)
        try:
            refused.handshake()
        finally:
            refused.close()
    target.good_peer_is_served()
    assert Path(target.node.datadir).is_dir()
