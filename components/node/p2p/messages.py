"""P2P wire format: message framing and the payloads of every message the node speaks.

Framing (as in Bitcoin)::

    magic[4]  command[12]  length:u32le  checksum[4]  payload[length]

- `magic` is the network's message start (ChainParams.magic): a peer of another network is
  refused at its first four bytes.
- `command` is printable ASCII, NUL-padded to 12 bytes; bytes after the first NUL must all
  be NUL (Bitcoin's rule, so one command has exactly one encoding).
- `length` is at most MAX_PAYLOAD (2 MiB): the largest message of this protocol is a
  50000-entry inv (1.8 MB), a block at most 1 MB, so a header announcing more is refused
  before any of its payload is buffered. bitcoind used 2 MiB while its blocks were 1 MB
  (4 MB came with segwit's 4M-weight blocks).
- `checksum` is the first four bytes of SHA-256d(payload).

Payloads (little-endian integers, compact-size varints as in primitives.py):

    version     version:u32 services:u64 timestamp:i64 nonce:u64 user_agent:varstr
                start_height:i32 relay:u8
    verack      (empty)
    ping, pong  nonce:u64
    inv, getdata, notfound   vec<type:u32 hash[32]>         (at most 50000 entries)
    getblocks   version:u32 vec<hash[32]> (locator, at most 101) stop[32] (zero: no stop)
    getheaders  the same layout as getblocks
    headers     vec<header[80] tx_count:varint (always 0)>      (at most 2000 entries)
    block       a Block (primitives.Block)
    tx          a Transaction (primitives.Transaction)

Differences from Bitcoin, and why:
- `version` has no addr_recv/addr_from: this node does no address relay (there is no `addr`
  message), so the fields would carry nothing anyone reads.
- No `reject`, `addr`, `getaddr`, `sendheaders`, `mempool`, `feefilter`, compact blocks:
  block download is blocks-first (getblocks -> inv -> getdata -> block), far simpler than
  headers-first, once our tip has the minimum chain work. Below it (a node catching up,
  -minimumchainwork) it is headers-first (getheaders -> headers, counted before any is
  stored -> getdata -> block), so that no block of a chain without that work is asked for.
  `getheaders`/`headers` serve that, and a branch our tip is not on (a block that lags too
  far to be stored, chain.MAX_SIDE_BRANCH_LAG, or an orphan from a peer other than the one
  feeding us) shows its work in headers first, so that an honest chain can overtake a cheap
  one that reached us first (node.py, "Block download"). A `getheaders` is always answered,
  even with no headers.
- A `getblocks` is always answered with an `inv`, even an empty one, so the requester knows
  for certain when a peer has nothing more to give (Bitcoin stays silent).

Parsing is strict: every malformed frame or payload (truncated, trailing bytes, counts over
the limits, non-canonical varints, a relay flag other than 0/1, a non-empty verack) raises
`ProtocolError`, never another exception, so the connection code has exactly one thing to
catch and a reason to ban for.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from ...common.errors import DeserializationError
from ...common.hashes import sha256d
from ...common.primitives import HEADER_SIZE as HEADER_BYTES
from ...common.primitives import Block, BlockHeader, ByteReader, Transaction, compact_size

__all__ = [
    "HEADER_SIZE", "MAX_PAYLOAD", "MAX_INV", "MAX_LOCATOR", "MAX_USER_AGENT", "MSG_TX",
    "MSG_BLOCK", "NODE_NETWORK", "PROTOCOL_VERSION", "MIN_PEER_PROTO_VERSION", "ProtocolError",
    "InvItem", "Message", "Version", "Verack", "Ping", "Pong", "Inv", "GetData", "NotFound",
    "GetBlocks", "GetHeaders", "Headers", "MAX_HEADERS", "BlockMessage", "RawBlockMessage", "TxMessage", "MessageHeader", "MESSAGE_TYPES", "checksum",
    "encode_command", "serialize_message", "parse_header", "parse_payload", "decode_message",
    "inv_items",
]

#: Our protocol version; there is only one so far.
PROTOCOL_VERSION: int = 1
#: Peers announcing an older version are disconnected at the handshake.
MIN_PEER_PROTO_VERSION: int = 1
#: Service bit: this node serves full blocks (the only service there is).
NODE_NETWORK: int = 1

HEADER_SIZE: int = 24
COMMAND_SIZE: int = 12
#: Largest payload accepted: room for the largest message (a 50000-entry inv, 1.8 MB; a
#: block is at most 1 MB) and no more, since a peer can make us buffer this much per
#: connection just by announcing it.
MAX_PAYLOAD: int = 2 * 1024 * 1024
#: Most entries in one inv/getdata/notfound (Bitcoin's MAX_INV_SZ).
MAX_INV: int = 50_000
#: Most hashes in a getblocks locator (Bitcoin's MAX_LOCATOR_SZ).
MAX_LOCATOR: int = 101
#: Most headers in one headers message (Bitcoin's MAX_HEADERS_RESULTS).
MAX_HEADERS: int = 2000
#: Longest user agent (Bitcoin's MAX_SUBVERSION_LENGTH).
MAX_USER_AGENT: int = 256

MSG_TX: int = 1
MSG_BLOCK: int = 2

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_VERSION_FIXED = struct.Struct("<IQqQ")
_INV_ITEM = struct.Struct("<I32s")


class ProtocolError(Exception):
    """A frame or payload that breaks the wire format (or the protocol's rules).

    `reason` is a short tag for logs and ban reasons ("bad-magic", "bad-checksum",
    "oversized", "malformed-payload", ...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def checksum(payload: bytes) -> bytes:
    """First four bytes of SHA-256d(payload)."""
    return sha256d(payload)[:4]


class InvItem(NamedTuple):
    """One inventory entry: a type (MSG_TX, MSG_BLOCK, or an unknown type we ignore) and a
    32-byte hash in internal byte order."""

    type: int
    hash: bytes


# ------------------------------------------------------------------------------- messages

class Message:
    """Base of all message payloads: `command` names it on the wire."""

    command: ClassVar[str] = ""

    def serialize(self) -> bytes:
        """The payload bytes (without the 24-byte header)."""
        raise NotImplementedError

    @classmethod
    def parse(cls, r: ByteReader) -> Message:
        """Read the payload from `r` (the caller checks that nothing is left over)."""
        raise NotImplementedError


def _read_hash(r: ByteReader) -> bytes:
    return r.read(32)


@dataclass(frozen=True)
class Version(Message):
    """The first message each side sends: who it is and how far its chain goes.

    `nonce` is random per connection; receiving one of our own nonces means we connected to
    ourselves. `relay` False asks us not to announce transactions.
    """

    command: ClassVar[str] = "version"
    version: int
    services: int
    timestamp: int
    nonce: int
    user_agent: str
    start_height: int
    relay: bool = True

    def serialize(self) -> bytes:
        ua = self.user_agent.encode("utf-8")
        if len(ua) > MAX_USER_AGENT:
            raise ValueError("user agent too long")
        return (_VERSION_FIXED.pack(self.version, self.services, self.timestamp, self.nonce)
                + compact_size(len(ua)) + ua
                + _I32.pack(self.start_height) + bytes((1 if self.relay else 0,)))

    @classmethod
    def parse(cls, r: ByteReader) -> Version:
        version, services, timestamp, nonce = _VERSION_FIXED.unpack(r.read(_VERSION_FIXED.size))
        n = r.read_compact_size()
        if n > MAX_USER_AGENT:
            raise ProtocolError("malformed-payload", f"user agent of {n} bytes")
        # Undecodable bytes are not a framing error: the user agent is only ever displayed,
        # and displaying it sanitized (see node.py) is all that matters.
        ua = r.read(n).decode("utf-8", errors="replace")
        (start_height,) = _I32.unpack(r.read(4))
        relay = r.read_u8()
        if relay > 1:
            raise ProtocolError("malformed-payload", f"relay flag {relay}")
        return cls(version, services, timestamp, nonce, ua, start_height, bool(relay))


@dataclass(frozen=True)
class Verack(Message):
    """Acknowledges the peer's version; the handshake is complete when both sides got one."""

    command: ClassVar[str] = "verack"

    def serialize(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: ByteReader) -> Verack:
        return cls()


@dataclass(frozen=True)
class Ping(Message):
    """Liveness probe; the peer must answer with a pong carrying the same nonce."""

    command: ClassVar[str] = "ping"
    nonce: int

    def serialize(self) -> bytes:
        return _U64.pack(self.nonce)

    @classmethod
    def parse(cls, r: ByteReader) -> Ping:
        return cls(_U64.unpack(r.read(8))[0])


@dataclass(frozen=True)
class Pong(Message):
    """Answer to a ping."""

    command: ClassVar[str] = "pong"
    nonce: int

    def serialize(self) -> bytes:
        return _U64.pack(self.nonce)

    @classmethod
    def parse(cls, r: ByteReader) -> Pong:
        return cls(_U64.unpack(r.read(8))[0])


@dataclass(frozen=True)
class _InvList(Message):
    """Shared layout of inv, getdata and notfound."""

    items: tuple[InvItem, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.items, tuple):
            object.__setattr__(self, "items", tuple(InvItem(*i) for i in self.items))
        if len(self.items) > MAX_INV:
            raise ValueError(f"more than {MAX_INV} inventory entries")

    def serialize(self) -> bytes:
        return compact_size(len(self.items)) + b"".join(_INV_ITEM.pack(t, h) for t, h in self.items)

    @classmethod
    def parse(cls, r: ByteReader) -> _InvList:
        n = r.read_count(_INV_ITEM.size)
        if n > MAX_INV:
            raise ProtocolError("malformed-payload", f"{cls.command} with {n} entries")
        # One read and iter_unpack: half the CPU of unpacking 50000 entries one by one (a
        # peer decides how many of these we decode).
        items = tuple(map(InvItem._make, _INV_ITEM.iter_unpack(r.read(n * _INV_ITEM.size))))
        return cls(items)


@dataclass(frozen=True)
class Inv(_InvList):
    """Announces objects the sender has (also the answer to getblocks)."""

    command: ClassVar[str] = "inv"


@dataclass(frozen=True)
class GetData(_InvList):
    """Asks for the objects listed."""

    command: ClassVar[str] = "getdata"


@dataclass(frozen=True)
class NotFound(_InvList):
    """The objects of a getdata that the sender does not have."""

    command: ClassVar[str] = "notfound"


@dataclass(frozen=True)
class GetBlocks(Message):
    """Asks for an inv of the block hashes following the first locator hash that the peer has
    on its best chain, up to `stop` (None: up to its limit, 500)."""

    command: ClassVar[str] = "getblocks"
    locator: tuple[bytes, ...]
    stop: bytes | None = None
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.locator, tuple):
            object.__setattr__(self, "locator", tuple(self.locator))
        if len(self.locator) > MAX_LOCATOR:
            raise ValueError(f"locator longer than {MAX_LOCATOR}")
        if any(len(h) != 32 for h in self.locator) or (self.stop is not None and len(self.stop) != 32):
            raise ValueError("hashes must be 32 bytes")

    def serialize(self) -> bytes:
        return (_U32.pack(self.version) + compact_size(len(self.locator)) + b"".join(self.locator)
                + (self.stop if self.stop is not None else b"\x00" * 32))

    @classmethod
    def parse(cls, r: ByteReader) -> GetBlocks:
        version = r.read_u32()
        n = r.read_count(32)
        if n > MAX_LOCATOR:
            raise ProtocolError("malformed-payload", f"locator of {n} hashes")
        locator = tuple(_read_hash(r) for _ in range(n))
        stop = _read_hash(r)
        return cls(locator, None if stop == b"\x00" * 32 else stop, version)


@dataclass(frozen=True)
class GetHeaders(GetBlocks):
    """Asks for the headers following the first locator hash that the peer has on its best
    chain, up to `stop` or MAX_HEADERS of them."""

    command: ClassVar[str] = "getheaders"


@dataclass(frozen=True)
class Headers(Message):
    """Block headers, each followed by a transaction count of 0 (Bitcoin's layout)."""

    command: ClassVar[str] = "headers"
    headers: tuple[BlockHeader, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.headers, tuple):
            object.__setattr__(self, "headers", tuple(self.headers))
        if len(self.headers) > MAX_HEADERS:
            raise ValueError(f"more than {MAX_HEADERS} headers")

    def serialize(self) -> bytes:
        return compact_size(len(self.headers)) + b"".join(h.serialized + b"\x00" for h in self.headers)

    @classmethod
    def parse(cls, r: ByteReader) -> Headers:
        n = r.read_count(HEADER_BYTES + 1)
        if n > MAX_HEADERS:
            raise ProtocolError("malformed-payload", f"headers with {n} entries")
        headers = []
        for _ in range(n):
            headers.append(BlockHeader.parse(r))
            if r.read_compact_size() != 0:
                raise ProtocolError("malformed-payload", "a header with a transaction count")
        return cls(tuple(headers))


@dataclass(frozen=True)
class BlockMessage(Message):
    """A full block."""

    command: ClassVar[str] = "block"
    block: Block

    def serialize(self) -> bytes:
        return self.block.to_bytes()

    @classmethod
    def parse(cls, r: ByteReader) -> BlockMessage:
        return cls(Block.parse(r))


@dataclass(frozen=True)
class RawBlockMessage(Message):
    """A `block` sent as the stored bytes it is (getdata answers): on the wire the same as a
    BlockMessage, without parsing the block and serializing it again. Never parsed into:
    a `block` that arrives is a BlockMessage."""

    command: ClassVar[str] = "block"
    payload: bytes

    def serialize(self) -> bytes:
        return self.payload


@dataclass(frozen=True)
class TxMessage(Message):
    """A loose transaction."""

    command: ClassVar[str] = "tx"
    tx: Transaction

    def serialize(self) -> bytes:
        return self.tx.to_bytes()

    @classmethod
    def parse(cls, r: ByteReader) -> TxMessage:
        return cls(Transaction.parse(r))


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.command: cls
    for cls in (Version, Verack, Ping, Pong, Inv, GetData, NotFound, GetBlocks, GetHeaders, Headers,
                BlockMessage, TxMessage)
}


# ------------------------------------------------------------------------------- framing

class MessageHeader(NamedTuple):
    """The decoded 24-byte header (magic already checked)."""

    command: str
    length: int
    checksum: bytes


_HEADER_TAIL = struct.Struct("<12sI4s")


def encode_command(command: str) -> bytes:
    """`command` NUL-padded to 12 bytes."""
    raw = command.encode("ascii")
    if not 0 < len(raw) <= COMMAND_SIZE:
        raise ValueError(f"bad command {command!r}")
    return raw.ljust(COMMAND_SIZE, b"\x00")


def serialize_message(magic: bytes, msg: Message) -> bytes:
    """The complete frame: header, then payload."""
    payload = msg.serialize()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too large")
    header = _HEADER_TAIL.pack(encode_command(msg.command), len(payload), checksum(payload))
    return magic + header + payload


def _decode_command(raw: bytes) -> str:
    name, _, padding = raw.partition(b"\x00")
    # Bitcoin's CMessageHeader::IsCommandValid: printable ASCII, then only NULs.
    if not name or padding.strip(b"\x00") or any(not 0x20 <= b <= 0x7E for b in name):
        raise ProtocolError("bad-command", repr(raw))
    return name.decode("ascii")


def parse_header(header: bytes, magic: bytes) -> MessageHeader:
    """Decode and check a 24-byte header: magic, command, and length <= MAX_PAYLOAD."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError("truncated-header", f"{len(header)} bytes")
    if header[:4] != magic:
        raise ProtocolError("bad-magic", header[:4].hex())
    raw_cmd, length, csum = _HEADER_TAIL.unpack(header[4:])
    command = _decode_command(raw_cmd)
    if length > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"{command} announces {length} bytes")
    return MessageHeader(command, length, csum)


def parse_payload(command: str, payload: bytes) -> Message | None:
    """The message for `command`, or None for a command we do not know (ignored, as in
    Bitcoin, so a newer peer's extra messages do not cost it the connection).

    Raises ProtocolError for any malformed payload.
    """
    cls = MESSAGE_TYPES.get(command)
    if cls is None:
        return None
    r = ByteReader(payload)
    try:
        msg = cls.parse(r)
        r.finish()
    except ProtocolError:
        raise
    except (DeserializationError, ValueError, struct.error, IndexError, OverflowError) as e:
        # DeserializationError from primitives' strict readers; ValueError from a dataclass
        # refusing a field value; the others cannot happen with ByteReader but are caught so
        # that no payload can ever surface as anything but a ProtocolError.
        raise ProtocolError("malformed-payload", f"{command}: {e}") from None
    return msg


def decode_message(magic: bytes, frame: bytes) -> Message | None:
    """Decode one complete frame (header and payload, nothing more): checksum included."""
    hdr = parse_header(frame[:HEADER_SIZE], magic)
    payload = frame[HEADER_SIZE:]
    if len(payload) != hdr.length:
        raise ProtocolError("malformed-payload",
                            f"frame has {len(payload)} payload bytes, header says {hdr.length}")
    if checksum(payload) != hdr.checksum:
        raise ProtocolError("bad-checksum", hdr.command)
    return parse_payload(hdr.command, payload)


def inv_items(type_: int, hashes: Iterable[bytes]) -> tuple[InvItem, ...]:
    """InvItems of one type for `hashes`."""
    return tuple(InvItem(type_, h) for h in hashes)
