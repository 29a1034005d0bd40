"""Hash functions of the consensus rules: SHA-256d and HASH160.

HASH160 = RIPEMD-160(SHA-256(x)), as in Bitcoin. OpenSSL 3 moved RIPEMD-160 to its "legacy"
provider, so `hashlib.new("ripemd160")` works on some hosts and raises on others. Consensus
must never depend on the host's OpenSSL build: a fallback that computed a *different* hash
(e.g. truncated SHA-256) would split the chain between hosts. So when hashlib lacks it we use
the pure-Python RIPEMD-160 below, which gives the same digests (tests compare both against the
published vectors). It is slow (~130 us per call against ~1 us native) but only ever hashes 32-byte
SHA-256 digests of pubkeys, once per input.
"""

from __future__ import annotations

import hashlib
import struct


def sha256(data: bytes) -> bytes:
    """Single SHA-256."""
    return hashlib.sha256(data).digest()


_sha256 = hashlib.sha256


def sha256d(data: bytes) -> bytes:
    """Double SHA-256: txids, block hashes, merkle nodes, checksums."""
    return _sha256(_sha256(data).digest()).digest()


def hash_to_hex(h: bytes) -> str:
    """Internal byte order -> display hex (byte-reversed, as Bitcoin shows txids and hashes)."""
    return h[::-1].hex()


def hex_to_hash(s: str) -> bytes:
    """Display hex (64 hex digits) -> internal byte order. Raises ValueError when malformed."""
    if len(s) != 64:
        raise ValueError("hash must be 64 hex digits")
    return bytes.fromhex(s)[::-1]


# ---------------------------------------------------------------------------------------------
# RIPEMD-160, pure Python (Dobbertin, Bosselaers, Preneel 1996), used only when hashlib lacks it.

_RL = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
    3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
    1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
    4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13,
)
_RR = (
    5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
    6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
    15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
    8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
    12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11,
)
_SL = (
    11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
    7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
    11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
    11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
    9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6,
)
_SR = (
    8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
    9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
    9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
    15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
    8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11,
)
_KL = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_KR = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)
_M32 = 0xFFFFFFFF


def _f(j: int, x: int, y: int, z: int) -> int:
    r = j >> 4
    if r == 0:
        return x ^ y ^ z
    if r == 1:
        return (x & y) | (~x & z)
    if r == 2:
        return (x | ~y) ^ z
    if r == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def _rol(x: int, n: int) -> int:
    x &= _M32
    return ((x << n) | (x >> (32 - n))) & _M32


def ripemd160_pure(data: bytes) -> bytes:
    """RIPEMD-160 in pure Python (reference algorithm)."""
    h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", 8 * len(data))
    for off in range(0, len(msg), 64):
        x = struct.unpack_from("<16I", msg, off)
        al, bl, cl, dl, el = h0, h1, h2, h3, h4
        ar, br, cr, dr, er = h0, h1, h2, h3, h4
        for j in range(80):
            t = _rol(al + _f(j, bl, cl, dl) + x[_RL[j]] + _KL[j >> 4], _SL[j]) + el
            al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t & _M32
            t = _rol(ar + _f(79 - j, br, cr, dr) + x[_RR[j]] + _KR[j >> 4], _SR[j]) + er
            ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t & _M32
        h0, h1, h2, h3, h4 = (
            (h1 + cl + dr) & _M32,
            (h2 + dl + er) & _M32,
            (h3 + el + ar) & _M32,
            (h4 + al + br) & _M32,
            (h0 + bl + cr) & _M32,
        )
    return struct.pack("<5I", h0, h1, h2, h3, h4)


def _openssl_ripemd160_available() -> bool:
    try:
        return hashlib.new("ripemd160", b"abc").hexdigest() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
    except (ValueError, TypeError):
        return False


#: Whether hashlib (OpenSSL) provides RIPEMD-160 on this host; informational only.
RIPEMD160_NATIVE: bool = _openssl_ripemd160_available()


# hashlib.new() goes through a Python-level constructor lookup on every call (about half of
# a HASH160's time); copying a fresh object is the same OpenSSL context without it.
_RIPEMD160_EMPTY = hashlib.new("ripemd160") if RIPEMD160_NATIVE else None


def ripemd160(data: bytes) -> bytes:
    """RIPEMD-160, native when hashlib has it, else pure Python (same digest either way)."""
    if RIPEMD160_NATIVE and _RIPEMD160_EMPTY is not None:
        h = _RIPEMD160_EMPTY.copy()
        h.update(data)
        return h.digest()
    return ripemd160_pure(data)


def hash160(data: bytes) -> bytes:
    """RIPEMD-160(SHA-256(data)): the 20-byte pubkey hash outputs pay to."""
    return ripemd160(hashlib.sha256(data).digest())
