"""CleanCoin's descriptor forms with bitcoind's checksum, and address errors in bitcoind's words."""

from __future__ import annotations

import pytest

from cleancoin.components.common import descriptors
from cleancoin.components.common.address import address_error, encode_address
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.hashes import hash160

KEY = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"


def test_checksums_are_bitcoinds() -> None:
    # Vectors from Bitcoin Core's doc/descriptors.md.
    assert descriptors.with_checksum(f"pkh({KEY})") == f"pkh({KEY})#8fhd9pwu"
    assert descriptors.checksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)") == "02wpgw69"


def test_parse_forms_and_refusals() -> None:
    pkh = hash160(bytes.fromhex(KEY))
    address = encode_address(pkh, REGTEST)
    assert descriptors.parse(f"pkh({KEY})#8fhd9pwu", REGTEST).pkh == pkh
    assert descriptors.parse(f"addr({address})", REGTEST) == descriptors.Descriptor(pkh, f"addr({address})")
    with pytest.raises(descriptors.DescriptorError, match="does not match computed checksum"):
        descriptors.parse(f"pkh({KEY})#8fhd9pwv", REGTEST)
    with pytest.raises(descriptors.DescriptorError, match="not supported"):
        descriptors.parse(f"wpkh({KEY})", REGTEST)
    with pytest.raises(descriptors.DescriptorError, match="compressed public key"):
        descriptors.parse("pkh(04" + "00" * 64 + ")", REGTEST)
    with pytest.raises(descriptors.DescriptorError, match="Address is not valid"):
        descriptors.parse("addr(nope)", REGTEST)


def test_address_errors_in_bitcoinds_words() -> None:
    good = encode_address(b"\x01" * 20, REGTEST)
    assert address_error(good, REGTEST) == ""
    assert address_error("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", REGTEST) == "Invalid or unsupported Base58-encoded address."
    assert address_error("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", REGTEST) == \
        "Invalid checksum or length of Base58 address (P2PKH or P2SH)"
    assert address_error("0OIl", REGTEST) == "Invalid or unsupported Segwit (Bech32) or Base58 encoding."
    assert address_error(good[:-1] + ("q" if good[-1] != "q" else "p"), REGTEST) == "Invalid Bech32 checksum"
    assert address_error(good[:5] + good[5:].upper(), REGTEST) == "Invalid character or mixed case"
