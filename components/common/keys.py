"""secp256k1 keys (coincurve), the signature digest, and signing/verifying an input.

Signatures are DER with a trailing SIGHASH_ALL byte, in a P2PKH scriptSig beside a 33-byte
compressed pubkey. Verification is strict: BIP66 DER only, low S only (BIP62/BIP146), so a
third party cannot change a signature's bytes and with them the txid (malleability).

Signature digest. The obvious scheme (Bitcoin's legacy one: re-serialize the whole
transaction per input, with the signed input's slot carrying the spent pkh) hashes the
transaction once per input, i.e. quadratically: a 1 MB transaction with ~6,900 inputs would
hash ~7 GB (Bitcoin's CVE-2013-2292). We commit to exactly the same data, but the BIP143 way,
with per-transaction digests computed once and cached on the immutable Transaction:

    sha256d( version:u32 | hash_prevouts | outpoint being spent | prev_pkh
             | hash_outputs | locktime:u32 | sighash_type:u32 )

hash_prevouts = sha256d(all outpoints), hash_outputs = sha256d(all outputs). Other inputs'
scriptSigs are not committed, as in legacy SIGHASH_ALL, so inputs can be signed in any order
and by different parties. The spent amount is not committed (the signing API is
(tx, index, pkh), as everywhere else in the node).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import coincurve

from .address import AddressError, base58check_decode, base58check_encode, decode_address, encode_address
from .errors import Failure, ValidationError
from .hashes import hash160, sha256d
from .primitives import SIGHASH_ALL, Transaction, make_script_sig, parse_script_sig

if TYPE_CHECKING:
    from .chainparams import ChainParams

__all__ = [
    "AddressError", "PrivateKey", "PublicKey", "SIGHASH_ALL", "decode_address", "encode_address",
    "SignatureCheck", "check_signature", "is_low_s", "is_valid_signature_encoding",
    "prepare_input_check", "sign_input", "sign_transaction", "signature_failure",
    "signature_hash", "verify_input",
]

#: Order of the secp256k1 group.
CURVE_ORDER: int = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_ORDER: int = CURVE_ORDER // 2
_U32 = struct.Struct("<I")
_SCRIPT_FAILED = "mandatory-script-verify-flag-failed"


class PrivateKey:
    """A secp256k1 private key; its public key is always used compressed."""

    __slots__ = ("_key", "__dict__")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32 or not 0 < int.from_bytes(secret, "big") < CURVE_ORDER:
            raise ValueError("private key must be 32 bytes in 1..n-1")
        self._key = coincurve.PrivateKey(secret)

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh random key (coincurve draws from os.urandom)."""
        return cls(coincurve.PrivateKey().secret)

    @property
    def secret(self) -> bytes:
        """The 32 secret bytes."""
        return bytes(self._key.secret)

    @cached_property
    def public_key(self) -> PublicKey:
        """The matching compressed public key."""
        return PublicKey(self._key.public_key.format(compressed=True))

    def sign(self, digest: bytes) -> bytes:
        """DER signature of a 32-byte digest; RFC 6979 nonces, and libsecp256k1 always
        produces low S (checked anyway: a high-S signature here would be a consensus failure)."""
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        sig = self._key.sign(digest, hasher=None)
        if not is_low_s(sig):
            raise RuntimeError("libsecp256k1 returned a high-S signature")
        return sig

    def to_wif(self, params: ChainParams) -> str:
        """Wallet import format (compressed-key flag set)."""
        return base58check_encode(bytes((params.wif_prefix,)) + self.secret + b"\x01")

    @classmethod
    def from_wif(cls, wif: str, params: ChainParams) -> PrivateKey:
        """Parse WIF; AddressError when malformed or of another network."""
        data = base58check_decode(wif)
        if len(data) != 34 or data[-1] != 0x01:
            raise AddressError("invalid private key encoding (only compressed keys)")
        if data[0] != params.wif_prefix:
            raise AddressError("private key is for another network")
        try:
            return cls(data[1:33])
        except ValueError as e:
            raise AddressError(str(e)) from None

    def __repr__(self) -> str:
        return f"PrivateKey(<secret>, pub={self.public_key.data.hex()})"


class PublicKey:
    """A compressed (33-byte) secp256k1 public key, validated to be on the curve."""

    __slots__ = ("data", "_key", "__dict__")

    def __init__(self, data: bytes) -> None:
        if len(data) != 33 or data[0] not in (2, 3):
            raise ValueError("public key must be 33 bytes, compressed")
        try:
            self._key = coincurve.PublicKey(data)
        except ValueError:
            raise ValueError("public key is not a curve point") from None
        self.data = bytes(data)

    @cached_property
    def pkh(self) -> bytes:
        """HASH160 of the key: what outputs pay to."""
        return hash160(self.data)

    def address(self, params: ChainParams) -> str:
        """The address of this key on `params`' network."""
        return encode_address(self.pkh, params)

    def verify(self, signature: bytes, digest: bytes) -> bool:
        """True for a strict-DER, low-S signature (without sighash byte) of the 32-byte digest."""
        if not is_valid_signature_encoding(signature + b"\x01") or not is_low_s(signature):
            return False
        return bool(self._key.verify(signature, digest, hasher=None))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"PublicKey({self.data.hex()})"


def is_valid_signature_encoding(sig: bytes) -> bool:
    """BIP66 strict DER, `sig` including its trailing sighash byte (Bitcoin's
    IsValidSignatureEncoding): 0x30 len 0x02 lenR R 0x02 lenS S hashtype, minimal positive
    integers, no padding, nothing after."""
    n = len(sig)
    if n < 9 or n > 73 or sig[0] != 0x30 or sig[1] != n - 3:
        return False
    len_r = sig[3]
    if 5 + len_r >= n:
        return False
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != n:
        return False
    if sig[2] != 0x02 or len_r == 0 or sig[4] & 0x80:
        return False
    if len_r > 1 and sig[4] == 0x00 and not sig[5] & 0x80:
        return False
    if sig[len_r + 4] != 0x02 or len_s == 0 or sig[len_r + 6] & 0x80:
        return False
    if len_s > 1 and sig[len_r + 6] == 0x00 and not sig[len_r + 7] & 0x80:
        return False
    return True


def is_low_s(der: bytes) -> bool:
    """True when the S of a (well-formed) DER signature is at most n/2.

    For every valid (r, s) the pair (r, n - s) is valid too; allowing only the lower S
    leaves one encoding per signature.
    """
    try:
        len_r = der[3]
        len_s = der[5 + len_r]
        s = int.from_bytes(der[6 + len_r:6 + len_r + len_s], "big")
    except IndexError:
        return False
    return 0 < s <= _HALF_ORDER


def signature_hash(tx: Transaction, input_index: int, prev_pkh: bytes,
                   sighash_type: int = SIGHASH_ALL) -> bytes:
    """The 32-byte digest input `input_index` signs when it spends an output paying `prev_pkh`.

    Linear in the transaction size over all inputs (see the module docstring).
    """
    if not 0 <= input_index < len(tx.vin):
        raise IndexError("input index out of range")
    if len(prev_pkh) != 20:
        raise ValueError("prev_pkh must be 20 bytes")
    head, tail = tx.sighash_parts
    return sha256d(b"".join((head, tx.vin[input_index].prevout.to_bytes(), prev_pkh, tail,
                             _U32.pack(sighash_type))))


def _script_sig_for(tx: Transaction, input_index: int, key: PrivateKey) -> bytes:
    pub = key.public_key
    sig = key.sign(signature_hash(tx, input_index, pub.pkh)) + bytes((SIGHASH_ALL,))
    return make_script_sig(sig, pub.data)


def sign_input(tx: Transaction, input_index: int, key: PrivateKey) -> Transaction:
    """A copy of `tx` whose input `input_index` carries `key`'s signature and pubkey.

    The spent output must pay to `key.public_key.pkh` (else verification fails).
    """
    vin = list(tx.vin)
    vin[input_index] = replace(vin[input_index], script_sig=_script_sig_for(tx, input_index, key))
    return replace(tx, vin=tuple(vin))


def sign_transaction(tx: Transaction, keys: Sequence[PrivateKey | None]) -> Transaction:
    """Sign every input i with keys[i] (None leaves it as is), in one pass.

    Digests do not cover scriptSigs, so all are computed from `tx` itself; calling sign_input
    per input would rebuild the cached per-transaction hashes each time.
    """
    if len(keys) != len(tx.vin):
        raise ValueError("need one key (or None) per input")
    vin = tuple(txin if key is None else replace(txin, script_sig=_script_sig_for(tx, i, key))
                for i, (txin, key) in enumerate(zip(tx.vin, keys, strict=True)))
    return replace(tx, vin=vin)


def _fail(debug: str) -> ValidationError:
    return ValidationError(Failure.CONSENSUS, _SCRIPT_FAILED, debug)


class SignatureCheck(NamedTuple):
    """One input's signature, ready for libsecp256k1: every other check of the input passed
    (prepare_input_check). `tx` and `input_index` say whose it is, for the error message."""

    pubkey: bytes
    der: bytes
    digest: bytes
    tx: Transaction
    input_index: int


def prepare_input_check(tx: Transaction, input_index: int, prev_pkh: bytes) -> SignatureCheck:
    """Everything verify_input checks except the elliptic-curve verification itself, which
    is returned as a SignatureCheck for check_signature (so a block can verify all its
    signatures together, on several threads: see sigcheck.py).

    Raises ValidationError("mandatory-script-verify-flag-failed") as verify_input does.
    """
    parsed = parse_script_sig(tx.vin[input_index].script_sig)
    if parsed is None:
        raise _fail("scriptSig is not <signature> <pubkey>")
    sig, pub = parsed
    if not is_valid_signature_encoding(sig):
        raise _fail("Non-canonical DER signature")
    if sig[-1] != SIGHASH_ALL:
        raise _fail("Signature hash type missing or not understood")
    der = sig[:-1]
    if not is_low_s(der):
        raise _fail("Non-canonical signature: S value is unnecessarily high")
    if len(pub) != 33 or pub[0] not in (2, 3):
        raise _fail("Public key is not compressed")
    if hash160(pub) != prev_pkh:
        raise _fail("Public key does not match the spent output's pubkey hash")
    return SignatureCheck(pub, der, signature_hash(tx, input_index, prev_pkh), tx, input_index)


def check_signature(pubkey: bytes, der: bytes, digest: bytes) -> bool:
    """libsecp256k1's verdict on a prepared signature: False for a pubkey that is not a curve
    point, DER it cannot parse, or a signature that does not verify. Releases the GIL
    inside libsecp256k1 (cffi), so threads can run it side by side."""
    try:
        return bool(coincurve.PublicKey(pubkey).verify(der, digest, hasher=None))
    except ValueError:  # not a curve point, or DER that libsecp256k1 cannot parse
        return False


def signature_failure() -> ValidationError:
    """The error for a SignatureCheck that check_signature refused."""
    return _fail("Signature must be zero for failed CHECK(MULTI)SIG operation")


def verify_input(tx: Transaction, input_index: int, prev_pkh: bytes) -> None:
    """Check that input `input_index` validly spends an output paying to `prev_pkh`.

    Raises ValidationError("mandatory-script-verify-flag-failed", debug=why) for: a scriptSig
    that is not exactly push(sig) push(pubkey); non-strict DER; high S; a sighash type other
    than ALL; a pubkey that is not a valid compressed point; a pubkey whose HASH160 is not
    `prev_pkh`; a signature that does not verify.
    """
    check = prepare_input_check(tx, input_index, prev_pkh)
    if not check_signature(check.pubkey, check.der, check.digest):
        raise signature_failure()
