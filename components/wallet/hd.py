"""Hierarchical deterministic keys: BIP32 private derivation over secp256k1.

The algorithm is BIP32's, unchanged; only the HMAC key of the master derivation differs:
CleanCoin wallets use b"CleanCoin seed" (SEED_KEY), so a CleanCoin seed fed to a Bitcoin wallet
(or the reverse) yields unrelated keys instead of the same keys on two chains. The key is a
parameter so that the tests can run BIP32's public test vector 1 with b"Bitcoin seed": the
vector proves the derivation, the different key only changes the starting point.

Wallet layout: hardened derivation only, as Bitcoin Core's legacy HD wallets:

    m/0'/0'/i'   external (receiving) key i
    m/0'/1'/i'   internal (change) key i

Hardened children cannot be computed from an extended public key, so a leaked xpub plus one
leaked child secret never reveals the master (the non-hardened weakness). The price is that
a watch-only copy cannot derive addresses; the wallet pre-derives public data into its
keypool instead.

Secrets here live in immutable `bytes` (coincurve and hmac need them); they cannot be wiped,
so the wallet keeps the seed in a `crypto.SecretBytes` and derives keys only when it signs.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import coincurve

from cleancoin.components.common.address import base58check_decode, base58check_encode
from cleancoin.components.common.hashes import hash160
from cleancoin.components.common.keys import CURVE_ORDER, PrivateKey
from cleancoin.components.wallet.locked_memory import scrub

__all__ = [
    "BIP32_SEED_KEY", "ExtendedKey", "HARDENED", "InvalidKeyError", "SEED_KEY", "XPRV_VERSION",
    "derive_path", "master_key", "parse_path", "path_string", "wallet_key", "wallet_key_path",
]

#: Child numbers at or above this are hardened (written i' or iH).
HARDENED: int = 0x80000000
#: HMAC-SHA512 key of CleanCoin's master derivation.
SEED_KEY: bytes = b"CleanCoin seed"
#: BIP32's key, for its test vectors and nothing else.
BIP32_SEED_KEY: bytes = b"Bitcoin seed"
#: Version bytes of a serialized mainnet extended private key ("xprv..."), used by the vectors.
XPRV_VERSION: int = 0x0488ADE4
_U32BE = struct.Struct(">I")


class InvalidKeyError(ValueError):
    """A derivation step produced an invalid key (IL >= n or a zero key).

    BIP32 says to skip to the next index; the probability is below 2**-127, so the wallet
    treats it as an error rather than carrying code that no test could reach.
    """


@dataclass(frozen=True)
class ExtendedKey:
    """A private key with its chain code and its place in the tree."""

    secret: bytes = field(repr=False)
    chain_code: bytes = field(repr=False)
    depth: int = 0
    parent_fingerprint: bytes = b"\x00\x00\x00\x00"
    child_number: int = 0

    def __post_init__(self) -> None:
        if len(self.secret) != 32 or not 0 < int.from_bytes(self.secret, "big") < CURVE_ORDER:
            raise InvalidKeyError("extended key secret out of range")
        if len(self.chain_code) != 32:
            raise ValueError("chain code must be 32 bytes")
        if not 0 <= self.depth <= 255:
            raise ValueError("depth out of range")

    @property
    def public_key(self) -> bytes:
        """The compressed public key (33 bytes)."""
        # Not coincurve.PrivateKey: it also makes an x-only keypair, a C struct holding the
        # secret that is freed uncleared (the master key stayed in the heap that way).
        return coincurve.PublicKey.from_valid_secret(self.secret).format(compressed=True)

    @property
    def fingerprint(self) -> bytes:
        """First 4 bytes of HASH160(public key): identifies this key as a parent."""
        return hash160(self.public_key)[:4]

    def private_key(self) -> PrivateKey:
        """The node's signing key for this extended key."""
        return PrivateKey(self.secret)

    def child(self, index: int) -> ExtendedKey:
        """CKDpriv: child `index` (hardened when index >= HARDENED)."""
        if not 0 <= index <= 0xFFFFFFFF:
            raise ValueError("child index out of range")
        if self.depth == 255:
            raise ValueError("maximum depth reached")
        if index >= HARDENED:
            # One allocation: `b"\x00" + secret` would leave a freed copy of the secret behind.
            data = b"".join((b"\x00", self.secret, _U32BE.pack(index)))
        else:
            data = self.public_key + _U32BE.pack(index)
        digest = hmac.digest(self.chain_code, data, hashlib.sha512)
        try:
            il = int.from_bytes(digest[:32], "big")
            if il >= CURVE_ORDER:
                raise InvalidKeyError("derived IL >= n")
            k = (il + int.from_bytes(self.secret, "big")) % CURVE_ORDER
            if k == 0:
                raise InvalidKeyError("derived key is zero")
            return ExtendedKey(k.to_bytes(32, "big"), digest[32:], self.depth + 1, self.fingerprint,
                               index)
        finally:
            # The digest holds the child's chain code, `data` the parent's secret (hardened).
            scrub(digest)
            if index >= HARDENED:
                scrub(data)

    def wipe(self) -> None:
        """Zero this key's secret and chain code in place (locked_memory.scrub): for a key
        derived for one operation, once nothing uses it (no PrivateKey made from it)."""
        scrub(self.secret)
        scrub(self.chain_code)

    def serialize(self, version: int = XPRV_VERSION) -> str:
        """BIP32 serialization (base58check of 78 bytes), e.g. "xprv..." with the default."""
        payload = (_U32BE.pack(version) + bytes((self.depth,)) + self.parent_fingerprint
                   + _U32BE.pack(self.child_number) + self.chain_code + b"\x00" + self.secret)
        return base58check_encode(payload)

    @classmethod
    def deserialize(cls, s: str, version: int = XPRV_VERSION) -> ExtendedKey:
        """Parse a serialized extended private key of `version`; ValueError when malformed."""
        data = base58check_decode(s)
        if len(data) != 78 or _U32BE.unpack(data[:4])[0] != version or data[45] != 0:
            raise ValueError("not an extended private key of the expected version")
        return cls(data[46:], data[13:45], data[4], data[5:9], _U32BE.unpack(data[9:13])[0])

    def __repr__(self) -> str:     # never print the secret or the chain code
        return (f"ExtendedKey(<secret>, depth={self.depth}, child={self.child_number:#x}, "
                f"fingerprint={self.fingerprint.hex()})")


def master_key(seed: bytes | bytearray, key: bytes = SEED_KEY) -> ExtendedKey:
    """The master extended key of `seed` (16..64 bytes, as BIP32)."""
    if not 16 <= len(seed) <= 64:
        raise ValueError("seed must be 16 to 64 bytes")
    digest = hmac.digest(key, bytes(seed), hashlib.sha512)
    try:
        return ExtendedKey(digest[:32], digest[32:])
    finally:
        scrub(digest)       # secret and chain code, side by side


def parse_path(path: str) -> list[int]:
    """"m/0'/1/2h" -> [0x80000000, 1, 0x80000002]; ValueError when malformed."""
    parts = path.strip().split("/")
    if not parts or parts[0] != "m":
        raise ValueError("path must start with m")
    out = []
    for p in parts[1:]:
        hardened = p.endswith(("'", "h", "H"))
        digits = p[:-1] if hardened else p
        if not digits.isdigit() or int(digits) >= HARDENED:
            raise ValueError(f"bad path element {p!r}")
        out.append(int(digits) + (HARDENED if hardened else 0))
    return out


def derive_path(root: ExtendedKey, path: str | Sequence[int]) -> ExtendedKey:
    """The key at `path` (a string for parse_path, or child numbers) below `root`."""
    key = root
    for index in parse_path(path) if isinstance(path, str) else path:
        parent, key = key, key.child(index)
        if parent is not root:
            parent.wipe()       # an intermediate (an account's chain key) nobody else holds
    return key


def wallet_key_path(index: int, internal: bool) -> list[int]:
    """Child numbers of wallet key `index`: m/0'/0'/i' (external) or m/0'/1'/i' (change)."""
    if not 0 <= index < HARDENED:
        raise ValueError("key index out of range")
    return [HARDENED, HARDENED + (1 if internal else 0), HARDENED + index]


def path_string(index: int, internal: bool) -> str:
    """The path of a wallet key as users see it (getaddressinfo's hdkeypath)."""
    return f"m/0'/{1 if internal else 0}'/{index}'"


def wallet_key(master: ExtendedKey, index: int, internal: bool) -> PrivateKey:
    """The signing key of wallet key `index` on the external or internal chain."""
    return derive_path(master, wallet_key_path(index, internal)).private_key()
