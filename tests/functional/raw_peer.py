"""A raw P2P connection to a node under test, from a chosen loopback source address: the
wire format by hand, as a remote attacker speaks it. Shared by the P2P fuzz and resource
tests (not a test module)."""

from __future__ import annotations

import os
import socket
import time

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.node.p2p.messages import (
    HEADER_SIZE, Message, Verack, Version, parse_header, parse_payload, serialize_message,
)

MAGIC = REGTEST.magic
READ_TIMEOUT = 10.0


class RawPeer:
    """One connection: send bytes, read whole messages, shake hands."""

    def __init__(self, port: int, source: str, user_agent: str = "/attack/") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.user_agent = user_agent

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

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

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed by the node")
        self.buf += chunk

    def handshake(self) -> None:
        """version out, the node's version and verack in, verack out."""
        nonce = int.from_bytes(os.urandom(8), "little")
        self.send(serialize_message(MAGIC, Version(1, 1, int(time.time()), nonce, self.user_agent, 0, True)))
        seen: set[str] = set()
        while not {"version", "verack"} <= seen:
            msg = self.read_message()
            if msg is not None:
                seen.add(msg.command)
        self.send(serialize_message(MAGIC, Verack()))

    def close(self) -> None:
        self.sock.close()
