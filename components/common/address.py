"""Addresses (bech32) and WIF private keys (base58check).

Address scheme: bech32 (BIP173), shaped exactly like a segwit version-0 address with a
20-byte program: human-readable part per network ("cc", "tc", "ccrt"), separator "1", then
the version symbol 0 and the 32 5-bit groups of the pubkey hash, then a 6-symbol checksum.
Why bech32 over base58check:

- its BCH checksum *guarantees* detection of up to 4 substituted characters (base58check's
  4-byte hash only makes an error unlikely), and can point at the wrong character;
- the network is spelled out in the hrp, so a main address pasted into regtest fails with
  a readable "wrong network" instead of a version byte mismatch;
- one case, no look-alike-free alphabet juggling; QR codes in upper case are smaller;
- being shaped like segwit v0, any BIP173 library (e.g. the reference `segwit_addr.py`)
  decodes our addresses unchanged, given our hrp.

bech32's known weakness (inserting or deleting a 'q' before a final 'p' keeps the checksum
valid) cannot bite: the payload length is fixed at 20 bytes and checked on decode. That is
why BIP350 kept plain bech32 for version 0 as well.

WIF stays base58check, as in Bitcoin, so dumpprivkey/importprivkey users see the familiar form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hashes import sha256d

if TYPE_CHECKING:
    from .chainparams import ChainParams

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1
ADDRESS_VERSION = 0


class AddressError(ValueError):
    """An address or key string that does not decode (bad checksum, wrong network, ...)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        b = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (b >> i) & 1:
                chk ^= _GEN[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for v in data:
        if v < 0 or v >> frombits:
            raise AddressError("invalid data value")
        acc = (acc << frombits) | v
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise AddressError("invalid padding")
    return out


def bech32_encode(hrp: str, data: list[int]) -> str:
    """Encode 5-bit groups under `hrp` with a bech32 checksum."""
    values = _hrp_expand(hrp) + data
    mod = _polymod(values + [0] * 6) ^ _BECH32_CONST
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def bech32_decode(s: str) -> tuple[str, list[int]]:
    """(hrp, 5-bit data without checksum); AddressError on any defect (BIP173 rules)."""
    if not 8 <= len(s) <= 90:
        raise AddressError("invalid length")
    if any(ord(c) < 33 or ord(c) > 126 for c in s):
        raise AddressError("invalid character")
    if s.lower() != s and s.upper() != s:
        raise AddressError("mixed case")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise AddressError("missing separator or checksum")
    hrp = s[:pos]
    try:
        data = [_CHARSET_REV[c] for c in s[pos + 1:]]
    except KeyError:
        raise AddressError("invalid bech32 character") from None
    if _polymod(_hrp_expand(hrp) + data) != _BECH32_CONST:
        raise AddressError("invalid checksum")
    return hrp, data[:-6]


def encode_address(pkh: bytes, params: ChainParams) -> str:
    """The address paying to a 20-byte pubkey hash on `params`' network."""
    if len(pkh) != 20:
        raise ValueError("pkh must be 20 bytes")
    return bech32_encode(params.bech32_hrp, [ADDRESS_VERSION] + _convertbits(pkh, 8, 5, True))


def decode_address(address: str, params: ChainParams) -> bytes:
    """The pubkey hash an address pays to; AddressError if malformed or of another network."""
    hrp, data = bech32_decode(address)
    if hrp != params.bech32_hrp:
        raise AddressError(f"address is for another network (prefix {hrp!r}, "
                           f"expected {params.bech32_hrp!r})")
    if not data or data[0] != ADDRESS_VERSION:
        raise AddressError("unknown address version")
    pkh = bytes(_convertbits(data[1:], 5, 8, False))
    if len(pkh) != 20:
        raise AddressError("invalid address length")
    return pkh


def is_valid_address(address: str, params: ChainParams) -> bool:
    """True when `address` decodes on `params`' network."""
    try:
        decode_address(address, params)
    except AddressError:
        return False
    return True


# ------------------------------------------------------------------------------- base58check

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_REV = {c: i for i, c in enumerate(_B58)}


def base58check_encode(payload: bytes) -> str:
    """Base58 of payload + first 4 bytes of its SHA-256d."""
    data = payload + sha256d(payload)[:4]
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def base58check_decode(s: str) -> bytes:
    """The payload of a base58check string; AddressError on bad characters or checksum."""
    if not s or len(s) > 200:
        raise AddressError("invalid base58 length")
    n = 0
    for c in s:
        try:
            n = n * 58 + _B58_REV[c]
        except KeyError:
            raise AddressError("invalid base58 character") from None
    pad = len(s) - len(s.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    data = b"\x00" * pad + body
    if len(data) < 5 or sha256d(data[:-4])[:4] != data[-4:]:
        raise AddressError("invalid base58 checksum")
    return data[:-4]


# bech32_decode's reasons in the words of bitcoind's bech32::LocateErrors.
_BECH32_REASONS = {
    "invalid length": "Bech32 string too long",
    "invalid character": "Invalid character or mixed case",
    "mixed case": "Invalid character or mixed case",
    "missing separator or checksum": "Missing separator",
    "invalid bech32 character": "Invalid Base 32 character",
    "invalid checksum": "Invalid Bech32 checksum",
}


def address_error(address: str, params: ChainParams) -> str:
    """Why `address` is not a valid address of `params`' network, in bitcoind's words
    (DecodeDestination): a string that does not start with this network's prefix is judged
    as Base58 (bitcoind's legacy addresses) or as an unknown encoding; one that does, by its
    Bech32 defect. Empty when the address is valid."""
    hrp = params.bech32_hrp
    if address[:len(hrp)].lower() != hrp:
        try:
            base58check_decode(address)
            return "Invalid or unsupported Base58-encoded address."
        except AddressError:
            pass
        if address and all(c in _B58_REV for c in address):
            return "Invalid checksum or length of Base58 address (P2PKH or P2SH)"
        return "Invalid or unsupported Segwit (Bech32) or Base58 encoding."
    try:
        got, data = bech32_decode(address)
    except AddressError as exc:
        return _BECH32_REASONS.get(str(exc), "Invalid Bech32 address")
    if not data:
        return "Empty Bech32 data section"
    if got != hrp:
        return f"Invalid or unsupported prefix for Segwit (Bech32) address (expected {hrp}, got {got})."
    try:
        decode_address(address, params)
    except AddressError as exc:
        return {"unknown address version": "Invalid Bech32 address witness version",
                "invalid address length": "Invalid Bech32 address program size (20 bytes expected)",
                }.get(str(exc), "Invalid Bech32 address data")
    return ""
