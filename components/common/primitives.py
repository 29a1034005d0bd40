"""Transactions, block headers and blocks: exact byte serialization and parsing.

Wire format (little-endian integers, Bitcoin's compact-size varints):

    OutPoint    txid[32] n:u32
    TxIn        OutPoint script_sig:varbytes
    TxOut       value:i64 pkh[20]
    Transaction version:u32 vin:vec<TxIn> vout:vec<TxOut> locktime:u32
    BlockHeader version:u32 prev_hash[32] merkle_root[32] time:u32 bits:u32 nonce:u32  (80 bytes)
    Block       BlockHeader vec<Transaction>

Outputs are P2PKH only, so an output is a value and a 20-byte pubkey hash, with no script
length: a fixed 28 bytes leaves nothing to malleate and nothing to parse. A spending input's
`script_sig` is Bitcoin's P2PKH scriptSig byte for byte: push(DER signature + sighash byte)
push(33-byte compressed pubkey); a coinbase's is free-form (2..100 bytes, starting with the
block height). There is no nSequence: without scripts there is nothing for relative locktimes
or replacement signalling to do, so `locktime` always applies (see consensus.is_final_tx).
Values are signed on the wire so that a negative value parses and is then *rejected* by
consensus (bad-txns-vout-negative) rather than silently read as a huge unsigned number.

Parsing is strict: truncated input, trailing bytes, non-canonical varints and counts that
cannot fit the remaining bytes raise DeserializationError, never IndexError or struct.error.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .address import encode_address
from .amount import format_amount
from .errors import DeserializationError
from .hashes import hash_to_hex, sha256d
from .pow import difficulty

if TYPE_CHECKING:
    from .chainparams import ChainParams

#: Largest size a compact-size length may announce (Bitcoin's MAX_SIZE, 32 MiB).
MAX_SIZE: int = 0x02000000
NULL_HASH: bytes = b"\x00" * 32
NULL_INDEX: int = 0xFFFFFFFF
HEADER_SIZE: int = 80
PKH_SIZE: int = 20
TXOUT_SIZE: int = 8 + PKH_SIZE
_MIN_TXIN_SIZE = 32 + 4 + 1           # empty script
_MIN_TX_SIZE = 4 + 1 + 1 + 4          # no inputs, no outputs: parses, then fails consensus
SIGHASH_ALL: int = 0x01

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_HEADER = struct.Struct("<I32s32sIII")

_T = TypeVar("_T")


class _LocklessCachedProperty(Generic[_T]):
    """functools.cached_property as Python 3.12 has it: without 3.11's lock.

    3.11's version takes an RLock (one per property, shared by every instance of the class)
    on each first access; a block connect makes ~3 such accesses per transaction (txid and the two
    signature-digest parts), and the lock was a tenth of the per-input Python time (issue
    #16). The values cached here are pure functions of immutable objects, so two threads
    that race on a first access compute the same value and either store wins.
    """

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.attrname = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _LocklessCachedProperty[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value
        return value


if sys.version_info >= (3, 12):
    from functools import cached_property
else:
    cached_property = _LocklessCachedProperty


# ------------------------------------------------------------------------------- byte helpers

class ByteReader:
    """A cursor over bytes whose every read is bounds-checked (DeserializationError)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = bytes(data)
        self.pos = pos

    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def read(self, n: int) -> bytes:
        """The next `n` bytes."""
        if n < 0 or self.pos + n > len(self.data):
            raise DeserializationError(f"truncated: need {n} bytes at offset {self.pos}, "
                                       f"have {len(self.data) - self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def read_u8(self) -> int:
        """One unsigned byte."""
        if self.pos >= len(self.data):
            raise DeserializationError(f"truncated: need 1 byte at offset {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def read_u32(self) -> int:
        """A little-endian uint32."""
        if self.pos + 4 > len(self.data):
            raise DeserializationError(f"truncated: need 4 bytes at offset {self.pos}")
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def read_i64(self) -> int:
        """A little-endian int64."""
        if self.pos + 8 > len(self.data):
            raise DeserializationError(f"truncated: need 8 bytes at offset {self.pos}")
        (v,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(v)

    def read_compact_size(self, *, range_check: bool = True) -> int:
        """A compact-size varint; non-canonical encodings and (by default) > MAX_SIZE are errors."""
        first = self.read_u8()
        if first < 0xFD:
            value = first
        elif first == 0xFD:
            value = int.from_bytes(self.read(2), "little")
            if value < 0xFD:
                raise DeserializationError("non-canonical compact size")
        elif first == 0xFE:
            value = int.from_bytes(self.read(4), "little")
            if value < 0x10000:
                raise DeserializationError("non-canonical compact size")
        else:
            value = int.from_bytes(self.read(8), "little")
            if value < 0x100000000:
                raise DeserializationError("non-canonical compact size")
        if range_check and value > MAX_SIZE:
            raise DeserializationError("compact size too large")
        return value

    def read_var_bytes(self) -> bytes:
        """A compact-size length followed by that many bytes."""
        return self.read(self.read_compact_size())

    def read_count(self, min_item_size: int) -> int:
        """A vector length, refused when the items cannot possibly fit the remaining bytes.

        Checking up front rejects a 5-byte message announcing 30 million items at once,
        instead of looping until the bytes run out.
        """
        n = self.read_compact_size()
        if n * min_item_size > self.remaining():
            raise DeserializationError(f"count {n} exceeds remaining data")
        return n

    def finish(self) -> None:
        """Raise unless every byte was consumed."""
        if self.pos != len(self.data):
            raise DeserializationError(f"{len(self.data) - self.pos} trailing bytes")


def compact_size(n: int) -> bytes:
    """Encode a compact-size varint (canonical, shortest form)."""
    if n < 0:
        raise ValueError("negative compact size")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _check_u32(name: str, v: int) -> None:
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"{name} out of uint32 range: {v}")


# ------------------------------------------------------------------------------- script helpers

def push_data(data: bytes) -> bytes:
    """A minimal script push for up to 75 bytes (all this coin ever pushes)."""
    if not 0 < len(data) <= 75:
        raise ValueError("push_data handles 1..75 bytes")
    return bytes((len(data),)) + data


def make_script_sig(signature: bytes, pubkey: bytes) -> bytes:
    """P2PKH scriptSig: push(signature incl. sighash byte) push(pubkey)."""
    return push_data(signature) + push_data(pubkey)


def parse_script_sig(script: bytes) -> tuple[bytes, bytes] | None:
    """(signature incl. sighash byte, pubkey) when `script` is exactly two direct pushes, else None."""
    if len(script) < 2:
        return None
    n1 = script[0]
    if not 0 < n1 <= 75 or 1 + n1 >= len(script):
        return None
    n2 = script[1 + n1]
    if not 0 < n2 <= 75 or 2 + n1 + n2 != len(script):
        return None
    return script[1:1 + n1], script[2 + n1:]


def script_num(n: int) -> bytes:
    """Bitcoin's CScriptNum encoding: minimal little-endian, sign bit in the top byte."""
    if n == 0:
        return b""
    neg, a = n < 0, abs(n)
    out = bytearray()
    while a:
        out.append(a & 0xFF)
        a >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if neg else 0x00)
    elif neg:
        out[-1] |= 0x80
    return bytes(out)


def coinbase_height_prefix(height: int) -> bytes:
    """The bytes a coinbase script at `height` must start with (BIP34-like).

    Unlike Bitcoin (OP_1..OP_16 for small heights) every height is a direct push of its
    CScriptNum, so one simple rule covers all heights: length byte, then the number.
    Height 0 (genesis, which is never checked) would be the empty push b"\\x00".
    """
    if height < 0:
        raise ValueError("negative height")
    num = script_num(height)
    return bytes((len(num),)) + num


# ------------------------------------------------------------------------------- transactions

@dataclass(frozen=True)
class OutPoint:
    """A reference to output `n` of transaction `txid` (internal byte order)."""

    txid: bytes
    n: int

    def __post_init__(self) -> None:
        if len(self.txid) != 32:
            raise ValueError("txid must be 32 bytes")
        _check_u32("n", self.n)

    @classmethod
    def null(cls) -> OutPoint:
        """The prevout of a coinbase input."""
        return cls(NULL_HASH, NULL_INDEX)

    @property
    def is_null(self) -> bool:
        """True for a coinbase's prevout."""
        return self.n == NULL_INDEX and self.txid == NULL_HASH

    @property
    def txid_hex(self) -> str:
        """The txid as shown to users (reversed hex)."""
        return hash_to_hex(self.txid)

    def to_bytes(self) -> bytes:
        """36 bytes: txid, n."""
        return self.txid + _U32.pack(self.n)

    @classmethod
    def parse(cls, r: ByteReader) -> OutPoint:
        """Read one from a ByteReader."""
        txid = r.read(32)
        return cls(txid, r.read_u32())

    def __str__(self) -> str:
        return f"{self.txid_hex}:{self.n}"


@dataclass(frozen=True)
class TxIn:
    """A transaction input: what it spends and the P2PKH scriptSig (or coinbase script)."""

    prevout: OutPoint
    script_sig: bytes = b""

    def to_bytes(self) -> bytes:
        """Serialized input."""
        return self.prevout.to_bytes() + compact_size(len(self.script_sig)) + self.script_sig

    @classmethod
    def parse(cls, r: ByteReader) -> TxIn:
        """Read one from a ByteReader."""
        prevout = OutPoint.parse(r)
        return cls(prevout, r.read_var_bytes())


@dataclass(frozen=True)
class TxOut:
    """A transaction output: `value` units payable to the key whose HASH160 is `pkh`."""

    value: int
    pkh: bytes

    def __post_init__(self) -> None:
        if not -(1 << 63) <= self.value < (1 << 63):
            raise ValueError("value does not fit int64")
        if len(self.pkh) != PKH_SIZE:
            raise ValueError("pkh must be 20 bytes")

    def to_bytes(self) -> bytes:
        """28 bytes: value (int64), pkh."""
        return _I64.pack(self.value) + self.pkh

    @classmethod
    def parse(cls, r: ByteReader) -> TxOut:
        """Read one from a ByteReader."""
        value = r.read_i64()
        return cls(value, r.read(PKH_SIZE))


@dataclass(frozen=True)
class Transaction:
    """A transaction. Immutable; derived values (bytes, txid, digests) are cached."""

    version: int
    vin: tuple[TxIn, ...]
    vout: tuple[TxOut, ...]
    locktime: int = 0

    def __post_init__(self) -> None:
        _check_u32("version", self.version)
        _check_u32("locktime", self.locktime)
        # Accept lists for convenience but store tuples: the object must stay immutable,
        # or the cached txid could go stale.
        if not isinstance(self.vin, tuple):
            object.__setattr__(self, "vin", tuple(self.vin))
        if not isinstance(self.vout, tuple):
            object.__setattr__(self, "vout", tuple(self.vout))

    @cached_property
    def serialized(self) -> bytes:
        """The exact serialization (cached)."""
        parts = [_U32.pack(self.version), compact_size(len(self.vin))]
        parts += [i.to_bytes() for i in self.vin]
        parts.append(compact_size(len(self.vout)))
        parts += [o.to_bytes() for o in self.vout]
        parts.append(_U32.pack(self.locktime))
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        """The exact serialization."""
        return self.serialized

    @classmethod
    def parse(cls, r: ByteReader) -> Transaction:
        """Read one transaction from a ByteReader (trailing data is the caller's business)."""
        start = r.pos
        version = r.read_u32()
        vin = tuple(TxIn.parse(r) for _ in range(r.read_count(_MIN_TXIN_SIZE)))
        vout = tuple(TxOut.parse(r) for _ in range(r.read_count(TXOUT_SIZE)))
        locktime = r.read_u32()
        tx = cls(version, vin, vout, locktime)
        # The bytes we just read are the serialization (parsing is canonical), so cache
        # them instead of re-encoding.
        tx.__dict__["serialized"] = r.data[start:r.pos]
        return tx

    @classmethod
    def from_bytes(cls, data: bytes) -> Transaction:
        """Parse exactly one transaction; trailing bytes are an error."""
        r = ByteReader(data)
        tx = cls.parse(r)
        r.finish()
        return tx

    @classmethod
    def from_hex(cls, s: str) -> Transaction:
        """Parse hex (as in sendrawtransaction); bad hex is a DeserializationError too."""
        try:
            data = bytes.fromhex(s)
        except (ValueError, TypeError):
            raise DeserializationError("not hex") from None
        return cls.from_bytes(data)

    @cached_property
    def txid(self) -> bytes:
        """Double SHA-256 of the serialization, internal byte order."""
        return sha256d(self.serialized)

    @property
    def txid_hex(self) -> str:
        """The txid as users see it (reversed hex)."""
        return hash_to_hex(self.txid)

    @property
    def size(self) -> int:
        """Serialized size in bytes."""
        return len(self.serialized)

    @property
    def is_coinbase(self) -> bool:
        """One input whose prevout is null."""
        return len(self.vin) == 1 and self.vin[0].prevout.is_null

    @property
    def value_out(self) -> int:
        """Sum of output values (unchecked; consensus checks ranges)."""
        return sum(o.value for o in self.vout)

    @property
    def hash_prevouts(self) -> bytes:
        """SHA-256d of all prevouts: part of every input's signature digest (keys.signature_hash).
        Not cached on its own: `sighash_parts` is, and nothing else reads it."""
        pack = _U32.pack
        return sha256d(b"".join([i.prevout.txid + pack(i.prevout.n) for i in self.vin]))

    @property
    def hash_outputs(self) -> bytes:
        """SHA-256d of all outputs: part of every input's signature digest (not cached on its
        own, as hash_prevouts).

        Outputs are a fixed TXOUT_SIZE bytes each and come right before the 4-byte locktime:
        a transaction that has its serialization already (a parsed one) hashes one slice of
        it; one built in memory (a wallet signing) encodes its outputs alone rather than
        serializing the whole transaction, which signing then changes anyway.
        """
        serialized = self.__dict__.get("serialized")
        if serialized is not None:
            end = len(serialized) - 4
            return sha256d(serialized[end - TXOUT_SIZE * len(self.vout):end])
        pack = _I64.pack
        return sha256d(b"".join([pack(o.value) + o.pkh for o in self.vout]))

    @cached_property
    def sighash_parts(self) -> tuple[bytes, bytes]:
        """The parts of every input's signature digest that do not depend on the input:
        (version | hash_prevouts, hash_outputs | locktime). Cached, so a transaction with
        many inputs builds them once (keys.signature_hash)."""
        return (_U32.pack(self.version) + self.hash_prevouts,
                self.hash_outputs + _U32.pack(self.locktime))

    def to_dict(self, params: ChainParams | None = None) -> dict[str, Any]:
        """decoderawtransaction-style dict. Values are Decimal coins (the RPC encoder prints
        them as JSON numbers); addresses appear when `params` is given."""
        vin: list[dict[str, Any]] = []
        for txin in self.vin:
            if txin.prevout.is_null:
                vin.append({"coinbase": txin.script_sig.hex()})
                continue
            parsed = parse_script_sig(txin.script_sig)
            if parsed is not None:
                sig, pub = parsed
                asm = f"{sig[:-1].hex()}[{'ALL' if sig[-1] == SIGHASH_ALL else sig[-1]}] {pub.hex()}"
            else:
                asm = "[error]"
            vin.append({"txid": txin.prevout.txid_hex, "vout": txin.prevout.n,
                        "scriptSig": {"asm": asm, "hex": txin.script_sig.hex()}})
        vout: list[dict[str, Any]] = []
        for n, out in enumerate(self.vout):
            spk: dict[str, Any] = {"hex": out.pkh.hex(), "type": "pubkeyhash"}
            entry: dict[str, Any] = {"value": format_amount(out.value), "n": n, "scriptPubKey": spk}
            if params is not None:
                spk["address"] = entry["address"] = encode_address(out.pkh, params)
            vout.append(entry)
        return {
            "txid": self.txid_hex,
            "hash": self.txid_hex,      # no witness data: wtxid == txid
            "version": self.version,
            "size": self.size,
            "vsize": self.size,
            "weight": 4 * self.size,
            "locktime": self.locktime,
            "vin": vin,
            "vout": vout,
        }


# ------------------------------------------------------------------------------- blocks

@dataclass(frozen=True)
class BlockHeader:
    """The 80-byte block header; its double SHA-256 is the block hash."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def __post_init__(self) -> None:
        if len(self.prev_hash) != 32 or len(self.merkle_root) != 32:
            raise ValueError("prev_hash and merkle_root must be 32 bytes")
        for name in ("version", "time", "bits", "nonce"):
            _check_u32(name, getattr(self, name))

    @cached_property
    def serialized(self) -> bytes:
        """The 80 header bytes (cached)."""
        return _HEADER.pack(self.version, self.prev_hash, self.merkle_root,
                            self.time, self.bits, self.nonce)

    def to_bytes(self) -> bytes:
        """The 80 header bytes."""
        return self.serialized

    @classmethod
    def parse(cls, r: ByteReader) -> BlockHeader:
        """Read 80 bytes from a ByteReader."""
        raw = r.read(HEADER_SIZE)
        version, prev, merkle, time, bits, nonce = _HEADER.unpack(raw)
        hdr = cls(version, prev, merkle, time, bits, nonce)
        hdr.__dict__["serialized"] = raw
        return hdr

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockHeader:
        """Parse exactly 80 bytes."""
        r = ByteReader(data)
        hdr = cls.parse(r)
        r.finish()
        return hdr

    @cached_property
    def hash(self) -> bytes:
        """Block hash: double SHA-256 of the 80 bytes, internal byte order."""
        return sha256d(self.serialized)

    @property
    def hash_hex(self) -> str:
        """The block hash as users see it (reversed hex)."""
        return hash_to_hex(self.hash)

    def to_dict(self, params: ChainParams | None = None) -> dict[str, Any]:
        """getblockheader-style fields that need no chain context (the RPC adds height,
        confirmations, chainwork, mediantime and nextblockhash)."""
        d: dict[str, Any] = {
            "hash": self.hash_hex,
            "version": self.version,
            "versionHex": f"{self.version:08x}",
            "merkleroot": hash_to_hex(self.merkle_root),
            "time": self.time,
            "nonce": self.nonce,
            "bits": f"{self.bits:08x}",
        }
        if params is not None:
            d["difficulty"] = difficulty(self.bits, params)
        if self.prev_hash != NULL_HASH:
            d["previousblockhash"] = hash_to_hex(self.prev_hash)
        return d


def merkle_root(hashes: Sequence[bytes]) -> tuple[bytes, bool]:
    """Bitcoin's merkle root of `hashes` and whether the list is *mutated*.

    An odd level duplicates its last element. That makes [a, b, c] and [a, b, c, c] share a
    root (CVE-2012-2459): a block with a duplicated transaction would have the same header hash
    as the real one. Bitcoin detects it by noticing two identical siblings at any level; any
    such pair means the block is mutated (a valid block never has two identical txids).
    """
    if not hashes:
        return NULL_HASH, False
    level = list(hashes)
    mutated = False
    while len(level) > 1:
        for i in range(0, len(level) - 1, 2):
            if level[i] == level[i + 1]:
                mutated = True
        if len(level) & 1:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0], mutated


@dataclass(frozen=True)
class Block:
    """A header and its transactions (the first one is the coinbase)."""

    header: BlockHeader
    txs: tuple[Transaction, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.txs, tuple):
            object.__setattr__(self, "txs", tuple(self.txs))

    @cached_property
    def serialized(self) -> bytes:
        """The exact serialization (cached)."""
        return b"".join([self.header.serialized, compact_size(len(self.txs))]
                        + [tx.serialized for tx in self.txs])

    def to_bytes(self) -> bytes:
        """The exact serialization."""
        return self.serialized

    @classmethod
    def parse(cls, r: ByteReader) -> Block:
        """Read one block from a ByteReader."""
        start = r.pos
        header = BlockHeader.parse(r)
        txs = tuple(Transaction.parse(r) for _ in range(r.read_count(_MIN_TX_SIZE)))
        block = cls(header, txs)
        block.__dict__["serialized"] = r.data[start:r.pos]
        return block

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Parse exactly one block; trailing bytes are an error."""
        r = ByteReader(data)
        block = cls.parse(r)
        r.finish()
        return block

    @property
    def hash(self) -> bytes:
        """The header's hash."""
        return self.header.hash

    @property
    def hash_hex(self) -> str:
        """The block hash as users see it."""
        return self.header.hash_hex

    @property
    def size(self) -> int:
        """Serialized size in bytes."""
        return len(self.serialized)

    def compute_merkle_root(self) -> tuple[bytes, bool]:
        """(merkle root of the txids, mutated flag); see `merkle_root`."""
        return merkle_root([tx.txid for tx in self.txs])

    def to_dict(self, params: ChainParams | None = None, verbosity: int = 1) -> dict[str, Any]:
        """getblock-style dict: txids at verbosity 1, decoded transactions at 2."""
        d = self.header.to_dict(params)
        d["size"] = d["strippedsize"] = self.size
        d["weight"] = 4 * self.size
        d["nTx"] = len(self.txs)
        if verbosity >= 2:
            d["tx"] = [tx.to_dict(params) for tx in self.txs]
        else:
            d["tx"] = [tx.txid_hex for tx in self.txs]
        return d
