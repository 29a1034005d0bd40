"""CleanCoin's output descriptors: bitcoind's descriptor language, cut to this chain's one kind
of output (pay to a public key hash, bech32 addresses).

    addr(<address>)        the output paying that address
    pkh(<public key hex>)  the output paying the hash of that key (33 bytes, compressed)

A descriptor may end in bitcoind's 8-character checksum (`pkh(02...)#3aw5pkx2`): it is
checked when present (as bitcoind does) and `with_checksum` adds it. bitcoind's other forms
(wpkh, sh, wsh, tr, multi, combo, raw, ranged xpub descriptors) describe scripts this chain
does not have; they are refused with a message that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .address import AddressError, decode_address, encode_address
from .chainparams import ChainParams
from .hashes import hash160

# bitcoind's descriptor checksum (src/script/descriptor.cpp, DescriptorChecksum).
_INPUT_CHARSET = ("0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
                  "ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ")
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
_FORM = re.compile(r"([a-z]+)\((.*)\)")


class DescriptorError(ValueError):
    """A descriptor this chain cannot use; the message is the one to show."""


@dataclass(frozen=True)
class Descriptor:
    """One parsed descriptor: the pubkey hash its output pays, and how to write it."""

    pkh: bytes
    text: str          # without checksum, normalised (pkh of the key, or addr of the address)


def _polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = ((chk & 0x7FFFFFFFF) << 5) ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= generator
    return chk


def checksum(text: str) -> str:
    """The 8-character checksum of a descriptor (DescriptorChecksum)."""
    symbols: list[int] = []
    groups: list[int] = []
    for ch in text:
        position = _INPUT_CHARSET.find(ch)
        if position < 0:
            raise DescriptorError(f"Invalid character '{ch}' in descriptor")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    value = _polymod(symbols + [0] * 8) ^ 1
    return "".join(_CHECKSUM_CHARSET[(value >> (5 * (7 - i))) & 31] for i in range(8))


def with_checksum(text: str) -> str:
    """`text#checksum`."""
    return f"{text}#{checksum(text)}"


def parse(text: str, params: ChainParams) -> Descriptor:
    """A descriptor string -> Descriptor; DescriptorError with bitcoind-like messages."""
    body, sep, given = text.partition("#")
    if sep:
        if len(given) != 8:
            raise DescriptorError(f"Expected 8 character checksum, not {len(given)} characters")
        expected = checksum(body)
        if given != expected:
            raise DescriptorError(f"Provided checksum '{given}' does not match computed checksum '{expected}'")
    match = _FORM.fullmatch(body)
    if match is None:
        raise DescriptorError(f"'{body}' is not a valid descriptor function")
    function, argument = match.groups()
    if function == "addr":
        try:
            pkh = decode_address(argument, params)
        except AddressError:
            raise DescriptorError(f"Address is not valid: {argument}") from None
        return Descriptor(pkh, f"addr({encode_address(pkh, params)})")
    if function == "pkh":
        try:
            key = bytes.fromhex(argument)
        except ValueError:
            raise DescriptorError(f"key '{argument}' is not valid") from None
        if len(key) != 33 or key[0] not in (2, 3):
            raise DescriptorError(f"key '{argument}' is not a valid compressed public key")
        return Descriptor(hash160(key), f"pkh({argument.lower()})")
    raise DescriptorError(f"'{function}(...)' descriptors are not supported: this chain's only outputs "
                          "pay a public key hash (use addr(<address>) or pkh(<public key>))")
