"""A raw P2P connection to a node under test, from a chosen loopback source address: the
wire format by hand, as a remote attacker speaks it. Shared by the P2P fuzz and resource
tests (not a test module). `ChainPeer` is such a connection that serves a chain of blocks of
its own (getblocks, getheaders, getdata) from a thread and counts what the node asked."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.primitives import Block
from cleancoin.components.node.p2p.messages import (
    HEADER_SIZE, MAX_HEADERS, MSG_BLOCK, BlockMessage, GetBlocks, GetData, GetHeaders, Headers, Inv, InvItem, Message,
    NotFound, Ping, Pong, Verack, Version, parse_header, parse_payload, serialize_message,
)

MAGIC = REGTEST.magic
READ_TIMEOUT = 10.0


class RawPeer:
    """One connection: send bytes, read whole messages, shake hands."""

    def __init__(self, port: int, source: str, user_agent: str = "/attack/",
                 sock: socket.socket | None = None, target: str = "127.0.0.1") -> None:
        """A connection from `source` (an IPv6 address too: then `target` must be one, e.g.
        the node's -bind=:: seen as ::1) to `target`:`port`."""
        if sock is None:
            sock = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.connect((target, port))
        self.sock = sock
        self.sock.settimeout(READ_TIMEOUT)
        self.buf = b""
        self.sent = 0                       # messages flood() got into the socket
        self.user_agent = user_agent

    @classmethod
    def dialled(cls, port: int, dial: Callable[[str], object], user_agent: str = "/attack/") -> RawPeer:
        """The connection a node makes to 127.0.0.1:`port` (a port its connect rule allows)
        when `dial` asks it to, e.g. its `addnode ADDR onetry`: one of its outbound peers.
        The handshake is the same from either side (RawPeer.handshake)."""
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(READ_TIMEOUT)
            dial(f"127.0.0.1:{port}")
            sock, _ = server.accept()
        return cls(port, "127.0.0.1", user_agent, sock=sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drain(self, stop: threading.Event) -> None:
        """Read and discard until `stop` or the connection ends (an attacker that keeps its
        socket moving, so that the node's send-queue limit never pauses its reading)."""
        self.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                if not self.sock.recv(1 << 16):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def read_frame(self) -> tuple[str, bytes]:
        """The next message's command and its payload as it came (not parsed)."""
        while len(self.buf) < HEADER_SIZE:
            self._fill()
        header = parse_header(self.buf[:HEADER_SIZE], MAGIC)
        while len(self.buf) < HEADER_SIZE + header.length:
            self._fill()
        payload = self.buf[HEADER_SIZE:HEADER_SIZE + header.length]
        self.buf = self.buf[HEADER_SIZE + header.length:]
        return header.command, payload

    def read_message(self) -> Message | None:
        """The next message (None for a command the node may send that this parser skips)."""
        return parse_payload(*self.read_frame())

    def messages(self, timeout: float) -> Iterator[Message | None]:
        """The messages that come within `timeout` seconds, each as read_message gives it (a
        read that times out is waited past, not the end): for a test reading until it sees
        what it waits for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                yield self.read_message()
            except TimeoutError:
                continue

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed by the node")
        self.buf += chunk

    def handshake(self, start_height: int = 0) -> None:
        """version out (claiming `start_height`), the node's version and verack in, verack out."""
        nonce = int.from_bytes(os.urandom(8), "little")
        self.send(serialize_message(MAGIC, Version(1, 1, int(time.time()), nonce, self.user_agent,
                                                   start_height, True)))
        seen: set[str] = set()
        while not {"version", "verack"} <= seen:
            msg = self.read_message()
            if msg is not None:
                seen.add(msg.command)
        self.send(serialize_message(MAGIC, Verack()))

    def sync(self, nonce: int) -> None:
        """Ping and wait for its pong: every message sent before it has been handled."""
        self.send(serialize_message(MAGIC, Ping(nonce)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = self.read_message()
            if msg is not None and msg.command == "pong" and msg.nonce == nonce:
                return
        raise AssertionError("no pong: the peer was dropped")

    def flood(self, stop: threading.Event, data: bytes) -> None:
        """Send `data` over and over, as fast as the node takes it, until `stop` (`sent`
        counts them); reads and drops what the node sends meanwhile (drain)."""
        threading.Thread(target=self.drain, args=(stop,), daemon=True).start()
        self.sent = 0
        while not stop.is_set():
            try:
                self.sock.sendall(data)
            except OSError:
                return
            self.sent += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)     # (wakes a thread blocked reading it)
        self.sock.close()


def push_blocks(port: int, source: str, blocks: Sequence[Block]) -> None:
    """Connect from `source`, send `blocks` unasked as `block` messages, and return once the
    node has handled them (RawPeer.sync)."""
    peer = RawPeer(port, source)
    try:
        peer.handshake()
        for block in blocks:
            peer.send(serialize_message(MAGIC, BlockMessage(block)))
        peer.sync(0)
    finally:
        peer.close()


class ChainPeer:
    """A peer with a chain of its own, `blocks` (block i at height i + 1, forked at genesis):
    after the handshake (claiming `start_height`, by default the chain's height) a thread answers getblocks with an inv
    of up to 500 of its hashes, getheaders with up to MAX_HEADERS headers (`headers`, when
    given, replaces the chain's for that answer: a header chain of its own), getdata with its
    blocks (with `drip` seconds, one block every `drip` seconds from a second thread: a peer
    that serves slowly but never stalls; a notfound for a block not its own, as a node
    answers; with `withhold`, a notfound for every block: a peer that shows the headers and
    has none of the blocks; with `withhold_first`, it keeps (does not send) the lowest block
    asked of it so far and sends the one it kept before: a peer that serves promptly but
    holds one block, the window's first when it can), and pings. `asked` counts the node's
    requests by command, `blocks_asked` the blocks named in its getdata. `push` sends anything unasked.
    `raw`, when given, is the connection to serve (RawPeer.dialled: the node dialled us);
    `port` and `source` are then unused."""

    def __init__(self, port: int, source: str, blocks: Sequence[Block],
                 headers: Sequence[object] | None = None, user_agent: str = "/chain/",
                 start_height: int | None = None, drip: float = 0.0, withhold: bool = False,
                 raw: RawPeer | None = None, withhold_first: bool = False) -> None:
        self.peer = raw if raw is not None else RawPeer(port, source, user_agent)
        self.drip = drip
        self.withhold = withhold
        self.withhold_first = withhold_first
        self.kept: Block | None = None
        self._dripping: list[Block] = []
        self.blocks = list(blocks)
        self.headers = None if headers is None else list(headers)
        self._height = {REGTEST.genesis_block.hash: 0}
        self._height.update((b.hash, i + 1) for i, b in enumerate(self.blocks))
        self._by_hash = {b.hash: b for b in self.blocks}
        self.asked: Counter[str] = Counter()
        self.blocks_asked = 0
        self._pongs: set[int] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.closed = False
        self.peer.handshake(len(self.blocks) if start_height is None else start_height)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if drip:
            threading.Thread(target=self._drip, daemon=True).start()

    def _drip(self) -> None:
        """Send the blocks asked for one every `drip` seconds (see the class docstring)."""
        while not self.closed:
            time.sleep(self.drip)
            with self._lock:
                if self._dripping:
                    try:
                        self.peer.send(serialize_message(MAGIC, BlockMessage(self._dripping.pop(0))))
                    except OSError:
                        self.closed = True

    def push(self, msg: Message) -> None:
        with self._lock:
            self.peer.send(serialize_message(MAGIC, msg))

    def _after(self, locator: Sequence[bytes]) -> int:
        """Height of the first locator hash on our chain (genesis if none)."""
        return next((self._height[h] for h in locator if h in self._height), 0)

    def _serve(self) -> None:
        while True:
            try:
                msg = self.peer.read_message()
            except TimeoutError:
                continue                # (a node that is only waiting for us: keep serving)
            except (ConnectionError, OSError):
                with self._lock:
                    self.closed = True
                    self._changed.notify_all()
                return
            if msg is None:
                continue
            with self._lock:
                self.asked[msg.command] += 1
                if isinstance(msg, Pong):
                    self._pongs.add(msg.nonce)
                    self._changed.notify_all()
                    continue
                out: list[Message] = []
                if isinstance(msg, Ping):
                    out.append(Pong(msg.nonce))
                elif isinstance(msg, GetHeaders):          # (a GetBlocks too: asked first)
                    if self.headers is not None:
                        known = {h.hash: i + 1 for i, h in enumerate(self.headers)}
                        start = next((known[h] for h in msg.locator if h in known), 0)
                        out.append(Headers(tuple(self.headers[start:start + MAX_HEADERS])))
                    else:
                        start = self._after(msg.locator)
                        out.append(Headers(tuple(b.header for b in self.blocks[start:start + MAX_HEADERS])))
                elif isinstance(msg, GetBlocks):
                    start = self._after(msg.locator)
                    out.append(Inv(tuple(InvItem(MSG_BLOCK, b.hash) for b in self.blocks[start:start + 500])))
                elif isinstance(msg, GetData) and self.withhold:
                    self.blocks_asked += sum(1 for item in msg.items if item.type == MSG_BLOCK)
                    out.append(NotFound(msg.items))
                elif isinstance(msg, GetData):
                    missing: list[InvItem] = []
                    for item in msg.items:
                        if item.type == MSG_BLOCK:
                            self.blocks_asked += 1
                            if (self.withhold_first and item.hash in self._by_hash and
                                    (self.kept is None or self._height[item.hash] < self._height[self.kept.hash])):
                                if self.kept is not None:
                                    out.append(BlockMessage(self.kept))
                                self.kept = self._by_hash[item.hash]
                                continue
                            if item.hash not in self._by_hash:
                                missing.append(item)          # (as a node answers)
                            elif self.drip:
                                self._dripping.append(self._by_hash[item.hash])
                            else:
                                out.append(BlockMessage(self._by_hash[item.hash]))
                    if missing:
                        out.append(NotFound(tuple(missing)))
                self._changed.notify_all()
                try:
                    for m in out:
                        self.peer.send(serialize_message(MAGIC, m))
                except OSError:
                    self.closed = True
                    return

    def requests(self) -> int:
        """How many requests the node has sent so far (its pings and pongs not counted)."""
        with self._lock:
            return sum(n for c, n in self.asked.items() if c not in ("ping", "pong"))

    def settle(self, quiet: float = 1.0, timeout: float = 120.0) -> None:
        """Wait until the node has handled everything sent to it and asks for nothing more:
        a ping's pong (a node handles one peer's messages in order) after `quiet` seconds in
        which no request came. AssertionError if the node drops the connection or never
        settles within `timeout`."""
        deadline = time.monotonic() + timeout
        nonce = 1
        while time.monotonic() < deadline:
            before = self.requests()
            time.sleep(quiet)
            nonce += 1
            self.push(Ping(nonce))
            with self._lock:
                while nonce not in self._pongs:
                    if self.closed:
                        raise AssertionError("the node closed the connection")
                    if not self._changed.wait(max(deadline - time.monotonic(), 0.01)):
                        raise AssertionError("no pong")
            if self.requests() == before:
                return
        raise AssertionError(f"the node kept asking for {timeout} s")

    def close(self) -> None:
        self.peer.close()
        self._thread.join(10)
