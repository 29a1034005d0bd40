"""Consensus rules of CleanCoin, each shown by a crafted transaction or block that is rejected
beside a valid one built the same way.

Everything is real: secp256k1 signatures from coincurve, double-SHA-256 proof of work solved
on regtest, exact serialization. The UTXO set is a dict here (storage is not under test).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest

from cleancoin.components.common import address, hashes, pow as powmod
from cleancoin.components.common.amount import COIN, MAX_MONEY, format_amount, parse_amount
from cleancoin.components.common.chainparams import MAIN, REGTEST, TESTNET, ChainParams, params_for
from cleancoin.components.common.consensus import (
    Coin, block_subsidy, check_block, check_transaction, check_tx_inputs, connect_block_checks,
    contextual_check_block, contextual_check_block_header, is_final_tx,
)
from cleancoin.components.common.errors import DeserializationError, Failure, ValidationError
from cleancoin.components.common.keys import (
    CURVE_ORDER, PrivateKey, PublicKey, is_low_s, is_valid_signature_encoding, sign_input,
    sign_transaction, signature_hash, verify_input,
)
from cleancoin.components.node.mining import assemble_block, create_coinbase, mine_block, solve
from cleancoin.components.common.pow import (
    PrevBlock, block_proof, calculate_next_work_required, check_proof_of_work, compact_to_target,
    derive_target, median_time_past, next_work_required, target_to_compact,
)
from cleancoin.components.common.primitives import (
    MAX_SIZE, Block, BlockHeader, ByteReader, OutPoint, Transaction, TxIn, TxOut, compact_size,
    make_script_sig, merkle_root, parse_script_sig,
)

P = REGTEST
GENESIS = P.genesis_block
T0 = GENESIS.header.time
BITS = GENESIS.header.bits

# Deterministic keys: failures reproduce exactly.
KEY_A = PrivateKey(hashlib.sha256(b"key A").digest())
KEY_B = PrivateKey(hashlib.sha256(b"key B").digest())
PKH_A = KEY_A.public_key.pkh
PKH_B = KEY_B.public_key.pkh


class DictView(dict[OutPoint, Coin]):
    """The UtxoView protocol over a dict."""

    def get(self, outpoint: OutPoint) -> Coin | None:  # type: ignore[override]
        return dict.get(self, outpoint)


def fake_txid(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def funded_view(*coins: tuple[str, int, bytes, int, bool]) -> tuple[DictView, list[OutPoint]]:
    """A view holding coins (label, value, pkh, height, is_coinbase) at made-up outpoints."""
    view = DictView()
    outs = []
    for label, value, pkh, height, is_cb in coins:
        op = OutPoint(fake_txid(label), 0)
        view[op] = Coin(value, pkh, height, is_cb)
        outs.append(op)
    return view, outs


def spend(prevouts: Sequence[OutPoint], outputs: Sequence[tuple[int, bytes]],
          keys: Sequence[PrivateKey], locktime: int = 0) -> Transaction:
    """A signed transaction spending `prevouts` with keys[i] for input i."""
    tx = Transaction(1, tuple(TxIn(op) for op in prevouts),
                     tuple(TxOut(v, pkh) for v, pkh in outputs), locktime)
    return sign_transaction(tx, keys)


@contextlib.contextmanager
def expect(reason: str, failure: Failure | None = None) -> Iterator[None]:
    """pytest.raises for a ValidationError with this reason (and failure category)."""
    with pytest.raises(ValidationError) as info:
        yield
    assert info.value.reason == reason, str(info.value)
    if failure is not None:
        assert info.value.failure is failure, info.value.failure


def block_on_genesis(txs: Sequence[Transaction] = (), fees: int = 0, height: int = 1,
                     coinbase_value: int | None = None, params: ChainParams = P) -> Block:
    """A solved regtest block; by default its coinbase claims exactly subsidy + fees."""
    value = block_subsidy(height, params) + fees if coinbase_value is None else coinbase_value
    cb = create_coinbase(height, PKH_A, value)
    block = solve(assemble_block(GENESIS.header, [cb, *txs], T0 + 600, BITS), params)
    assert block is not None
    return block


# ------------------------------------------------------------------------------- parameters

def test_genesis_hashes_are_stable() -> None:
    assert MAIN.genesis_block.hash_hex == \
        "00000088e86b51daac37de564d4be51a1afb22ba2162cccc2d1b9c1f420fbb17"
    assert TESTNET.genesis_block.hash_hex == \
        "00000bff611eec18030efe79ac273c29ce9b136e34a8826b62dcc66763c2581c"
    assert REGTEST.genesis_block.hash_hex == \
        "74e6584a2f26afd1a15e9851fc3649f10384065db369511915056fce9ecf5f25"
    # Same coinbase everywhere, so the same merkle root.
    for p in (MAIN, TESTNET, REGTEST):
        g = p.genesis_block
        assert hashes.hash_to_hex(g.header.merkle_root) == \
            "5704e23640b4fb64fd9b88f1082485c234681a89b1de452282d0d2dfd2738d24"
        assert check_proof_of_work(g.hash, g.header.bits, p)
        assert g.header.bits == p.pow_limit_bits
        check_block(g, p, now=g.header.time)
        assert g.txs[0].vout[0].pkh == b"\x00" * 20      # unspendable
        assert Block.from_bytes(g.to_bytes()) == g


def test_networks_differ_and_params_for() -> None:
    nets = [params_for(n) for n in ("main", "test", "regtest")]
    for attr in ("magic", "default_port", "rpc_port", "bech32_hrp", "genesis_hash", "datadir_subdir"):
        assert len({getattr(p, attr) for p in nets}) == 3, attr
    ports = {p.default_port for p in nets} | {p.rpc_port for p in nets}
    assert len(ports) == 6 and not ports & {8332, 8333, 18332, 18333, 18443, 18444}
    assert [p.datadir_subdir for p in nets] == ["", "testnet", "regtest"]
    assert (MAIN.halving_interval, REGTEST.halving_interval) == (210_000, 150)
    assert MAIN.coinbase_maturity == REGTEST.coinbase_maturity == 100
    assert REGTEST.pow_no_retargeting and not MAIN.pow_no_retargeting
    assert MAIN.coin == COIN and MAIN.max_money == MAX_MONEY == 21_000_000 * COIN
    with pytest.raises(ValueError, match="unknown chain"):
        params_for("signet")


def test_genesis_with_wrong_nonce_refuses_to_build() -> None:
    with pytest.raises(RuntimeError, match="genesis hash mismatch"):
        dataclasses.replace(MAIN, genesis_nonce=MAIN.genesis_nonce + 1)


# ------------------------------------------------------------------------------- hashes, amounts

def test_ripemd160_pure_matches_vectors_and_hashlib() -> None:
    vectors = {
        b"": "9c1185a5c5e9fc54612808977ee8f548b2258d31",
        b"abc": "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc",
        b"message digest": "5d0689ef49d2fae572b881b123a85ffa21595f36",
        b"a" * 1_000: "aa69deee9a8922e92f8105e007f76110f381e9cf",
    }
    for msg, want in vectors.items():
        assert hashes.ripemd160_pure(msg).hex() == want
        assert hashes.ripemd160(msg).hex() == want
    rng = random.Random(160)
    for n in range(0, 130):
        msg = rng.randbytes(n)
        assert hashes.ripemd160_pure(msg) == hashes.ripemd160(msg)


def test_hash160_is_the_same_without_openssl_ripemd160(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts whose OpenSSL lacks RIPEMD-160 use the pure-Python one: same pkh, same spends."""
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    monkeypatch.setattr(hashes, "RIPEMD160_NATIVE", False)
    assert hashes.hash160(KEY_A.public_key.data) == PKH_A
    assert check_tx_inputs(tx, view, 2, P) == COIN


def test_amounts() -> None:
    assert parse_amount("0.00000001") == 1
    assert parse_amount(0.1) == 10_000_000
    assert parse_amount(Decimal("21000000")) == MAX_MONEY
    assert format_amount(123_456_789) == Decimal("1.23456789")
    for bad in ("0.000000001", -1, "21000000.00000001", "nan", "x", True, None):
        with pytest.raises(ValueError):
            parse_amount(bad)


# ------------------------------------------------------------------------------- compact bits

# From Bitcoin Core's arith_uint256_tests (SetCompact/GetCompact): (bits, target, negative,
# overflow, GetCompact(negative) of the target).
BITCOIN_COMPACT_VECTORS = [
    (0x00000000, 0, False, False, 0),
    (0x00123456, 0, False, False, 0),
    (0x01003456, 0, False, False, 0),
    (0x02000056, 0, False, False, 0),
    (0x03000000, 0, False, False, 0),
    (0x04000000, 0, False, False, 0),
    (0x00923456, 0, False, False, 0),
    (0x01803456, 0, False, False, 0),
    (0x02800056, 0, False, False, 0),
    (0x03800000, 0, False, False, 0),
    (0x04800000, 0, False, False, 0),
    (0x01123456, 0x12, False, False, 0x01120000),
    (0x01FEDCBA, 0x7E, True, False, 0x01FE0000),
    (0x02123456, 0x1234, False, False, 0x02123400),
    (0x03123456, 0x123456, False, False, 0x03123456),
    (0x04123456, 0x12345600, False, False, 0x04123456),
    (0x04923456, 0x12345600, True, False, 0x04923456),
    (0x05009234, 0x92340000, False, False, 0x05009234),
    (0x20123456, 0x123456 << (8 * 29), False, False, 0x20123456),
    (0x1D00FFFF, 0xFFFF << (8 * 26), False, False, 0x1D00FFFF),
]


@pytest.mark.parametrize("bits,target,negative,overflow,compact", BITCOIN_COMPACT_VECTORS)
def test_compact_bitcoin_vectors(bits: int, target: int, negative: bool, overflow: bool,
                                 compact: int) -> None:
    assert compact_to_target(bits) == (target, negative, overflow)
    assert target_to_compact(target, negative) == compact


def test_compact_overflow_and_round_trips() -> None:
    assert compact_to_target(0xFF123456)[2]                     # overflow
    assert compact_to_target(0x1D00FFFF)[0] == int("00000000ffff" + "0" * 52, 16)
    assert target_to_compact(0x80) == 0x02008000                 # sign bit avoided
    assert derive_target(0x1D00FFFF, MAIN.pow_limit) is not None
    assert derive_target(0x04923456, MAIN.pow_limit) is None    # negative
    assert derive_target(0x1F00FFFF, MAIN.pow_limit) is None    # easier than pow_limit
    assert derive_target(0x00000000, MAIN.pow_limit) is None    # zero
    rng = random.Random(7)
    for _ in range(2_000):
        t = rng.getrandbits(rng.randint(1, 255))
        c = target_to_compact(t)
        back, neg, over = compact_to_target(c)
        assert not neg and not over
        # Only the top 3 bytes survive, or the top 2 when the third would set the sign bit.
        size = (t.bit_length() + 7) // 8
        shift = max(0, 8 * (size - 3))
        if size >= 3 and (t >> shift) & 0x800000:
            shift += 8
        assert back == (t >> shift) << shift
        assert target_to_compact(back) == c


def test_block_proof_and_difficulty() -> None:
    assert block_proof(0x1D00FFFF) == 0x100010001                # Bitcoin's difficulty-1 work
    assert block_proof(0x207FFFFF) == 2
    assert block_proof(0x04923456) == 0
    assert powmod.difficulty(MAIN.genesis_block.header.bits, MAIN) == 1.0
    harder = target_to_compact(compact_to_target(MAIN.pow_limit_bits)[0] // 4)
    assert powmod.difficulty(harder, MAIN) == pytest.approx(4.0, rel=1e-4)  # compact is lossy


# ------------------------------------------------------------------------------- retargeting

def test_retarget_exact_timespan_keeps_bits_and_clamps_at_four() -> None:
    span = MAIN.target_timespan
    bits = 0x1D00FFFF
    target = compact_to_target(bits)[0]
    assert calculate_next_work_required(bits, 10 * span, 9 * span, MAIN) == bits
    # Twice as fast: target halves. Far too fast: clamped to a quarter.
    assert compact_to_target(calculate_next_work_required(bits, span // 2, 0, MAIN))[0] == \
        compact_to_target(target_to_compact(target // 2))[0]
    assert calculate_next_work_required(bits, 1, 0, MAIN) == target_to_compact(target // 4)
    assert calculate_next_work_required(bits, span // 4, 0, MAIN) == target_to_compact(target // 4)
    # Far too slow: clamped to four times, and never easier than pow_limit.
    assert calculate_next_work_required(bits, 100 * span, 0, MAIN) == target_to_compact(target * 4)
    assert calculate_next_work_required(MAIN.pow_limit_bits, 100 * span, 0, MAIN) == MAIN.pow_limit_bits


def test_next_work_required_only_at_period_boundaries() -> None:
    interval = MAIN.retarget_interval
    asked: list[int] = []

    def ancestor_time(h: int) -> int:
        asked.append(h)
        return 1_000_000 + h * 300          # blocks came every 5 minutes: twice too fast

    bits = 0x1D00FFFF
    prev = PrevBlock(interval * 3 - 2, bits, 1_000_000 + (interval * 3 - 2) * 300)
    assert next_work_required(prev, MAIN, ancestor_time) == bits and not asked
    prev = PrevBlock(interval * 3 - 1, bits, 1_000_000 + (interval * 3 - 1) * 300)
    new = next_work_required(prev, MAIN, ancestor_time)
    assert asked == [interval * 2]                       # first block of the period
    assert compact_to_target(new)[0] < compact_to_target(bits)[0]
    # Regtest never retargets.
    assert next_work_required(PrevBlock(2015, BITS, 5), P, ancestor_time) == BITS
    assert calculate_next_work_required(BITS, 1, 0, P) == BITS
    assert TESTNET.retarget_interval == 144


def test_contextual_header_rules() -> None:
    interval = MAIN.retarget_interval
    bits = 0x1D00FFFF
    span = MAIN.target_timespan
    prev = PrevBlock(interval - 1, bits, 10_000_000)
    ancestor = lambda h: prev.time - span  # noqa: E731  exact timespan: bits unchanged

    def hdr(time: int, b: int = bits) -> BlockHeader:
        return BlockHeader(1, b"\x11" * 32, b"\x22" * 32, time, b, 0)

    def check(header: BlockHeader, now: int | None = None) -> None:
        contextual_check_block_header(header, prev, MAIN, median_time_past=prev.time - 5000,
                                      ancestor_time=ancestor, now=now)

    check(hdr(prev.time - 600))
    with expect("time-timewarp-attack", Failure.INVALID_HEADER):       # BIP94
        check(hdr(prev.time - 601))
    with expect("bad-diffbits", Failure.INVALID_HEADER):
        check(hdr(prev.time + 1, 0x1D00FFFE))
    with expect("time-too-old", Failure.INVALID_HEADER):
        check(hdr(prev.time - 5000))
    check(hdr(prev.time + 7200), now=prev.time)
    with expect("time-too-new", Failure.TIME_FUTURE):
        check(hdr(prev.time + 7201), now=prev.time)
    assert median_time_past([5, 1, 4, 2, 3]) == 3
    assert median_time_past(list(range(100))) == 94              # only the last 11 count


# ------------------------------------------------------------------------------- subsidy

def test_subsidy_halves_at_the_regtest_interval() -> None:
    assert block_subsidy(0, P) == block_subsidy(149, P) == 50 * COIN
    assert block_subsidy(150, P) == 25 * COIN
    assert block_subsidy(300, P) == 1_250_000_000
    assert block_subsidy(150 * 64, P) == 0
    assert block_subsidy(209_999, MAIN) == 50 * COIN and block_subsidy(210_000, MAIN) == 25 * COIN
    total = sum(block_subsidy(h * 210_000, MAIN) * 210_000 for h in range(64))
    assert total <= MAX_MONEY


# ------------------------------------------------------------------------------- serialization

def sample_tx() -> Transaction:
    view, (op,) = funded_view(("ser", 5 * COIN, PKH_A, 1, False))
    return spend([op, OutPoint(fake_txid("ser2"), 7)], [(COIN, PKH_B), (2 * COIN, PKH_A)],
                 [KEY_A, KEY_B], locktime=12)


def test_serialization_round_trips() -> None:
    tx = sample_tx()
    raw = tx.to_bytes()
    again = Transaction.from_bytes(raw)
    assert again == tx and again.txid == tx.txid and again.to_bytes() == raw
    assert Transaction.from_hex(raw.hex()) == tx
    assert tx.txid == hashlib.sha256(hashlib.sha256(raw).digest()).digest()
    assert tx.txid_hex == tx.txid[::-1].hex()
    block = block_on_genesis([tx], fees=0, coinbase_value=1)
    assert Block.from_bytes(block.to_bytes()) == block
    assert len(block.header.to_bytes()) == 80
    assert BlockHeader.from_bytes(block.header.to_bytes()) == block.header
    assert block.hash == hashlib.sha256(hashlib.sha256(block.header.to_bytes()).digest()).digest()
    for n in (0, 1, 0xFC, 0xFD, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000):
        assert ByteReader(compact_size(n)).read_compact_size(range_check=False) == n
    assert parse_script_sig(make_script_sig(b"\x30" * 71, b"\x02" * 33)) == (b"\x30" * 71, b"\x02" * 33)


def test_compact_size_must_be_canonical_and_counts_must_fit() -> None:
    for raw in (b"\xfd\xfc\x00", b"\xfe\xff\xff\x00\x00", b"\xff" + (2**32 - 1).to_bytes(8, "little")):
        with pytest.raises(DeserializationError, match="non-canonical"):
            ByteReader(raw).read_compact_size(range_check=False)
    # A real transaction with its input count re-encoded in 3 bytes parses no more.
    raw = sample_tx().to_bytes()
    assert raw[4] == 2
    with pytest.raises(DeserializationError, match="non-canonical"):
        Transaction.from_bytes(raw[:4] + b"\xfd\x02\x00" + raw[5:])
    # A count that cannot fit the remaining bytes is refused before any item is read.
    with pytest.raises(DeserializationError, match="exceeds remaining"):
        Block.from_bytes(GENESIS.header.to_bytes() + compact_size(MAX_SIZE) + b"\x00" * 100)
    with pytest.raises(DeserializationError, match="too large"):
        ByteReader(compact_size(MAX_SIZE + 1)).read_compact_size()


def test_decoderawtransaction_shape() -> None:
    tx = sample_tx()
    d = tx.to_dict(P)
    assert d["txid"] == d["hash"] == tx.txid_hex and d["size"] == tx.size
    assert d["vin"][0]["txid"] == tx.vin[0].prevout.txid_hex and d["vin"][1]["vout"] == 7
    assert d["vin"][0]["scriptSig"]["hex"] == tx.vin[0].script_sig.hex()
    assert "[ALL]" in d["vin"][0]["scriptSig"]["asm"]
    assert d["vout"][0] == {"value": Decimal("1.00000000"), "n": 0,
                            "address": KEY_B.public_key.address(P),
                            "scriptPubKey": {"hex": PKH_B.hex(), "type": "pubkeyhash",
                                             "address": KEY_B.public_key.address(P)}}
    cb = GENESIS.to_dict(P, verbosity=2)["tx"][0]
    assert "coinbase" in cb["vin"][0]


@pytest.mark.parametrize("raw,why", [
    (b"", "empty"),
    (bytes.fromhex("01000000" "fd0100"), "non-canonical varint"),
    (bytes.fromhex("01000000" "fe00000001"), "count larger than the data"),
    (bytes.fromhex("01000000" "ffffffffffffffffff"), "count beyond MAX_SIZE"),
    (bytes.fromhex("01000000" "00" "00" "00000000" "00"), "trailing byte"),
    (bytes.fromhex("01000000" "01") + b"\x00" * 36 + bytes.fromhex("fd0010"), "script past the end"),
])
def test_malformed_transactions(raw: bytes, why: str) -> None:
    with pytest.raises(DeserializationError):
        Transaction.from_bytes(raw)
    with pytest.raises(DeserializationError):
        Block.from_bytes(GENESIS.header.to_bytes() + b"\x01" + raw)


def test_fuzz_parsing_never_raises_anything_but_deserialization_error() -> None:
    """Seeded fuzz (hypothesis is not installed): random bytes, every truncation and random
    mutations of a real block. Parsing either fails with DeserializationError or yields an
    object that re-serializes, from its fields alone, to exactly the input (canonical)."""
    tx = sample_tx()
    block = block_on_genesis([tx], coinbase_value=1)
    raw_block = block.to_bytes()
    raw_tx = tx.to_bytes()
    rng = random.Random(2012_2459)
    inputs: list[bytes] = [rng.randbytes(rng.randint(0, 300)) for _ in range(5_000)]
    inputs += [raw_block[:i] for i in range(len(raw_block))]
    inputs += [raw_tx[:i] for i in range(len(raw_tx))]
    for _ in range(10_000):
        b = bytearray(raw_block if rng.random() < 0.5 else raw_tx)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(b))
            if op < 0.5:
                b[pos] = rng.randrange(256)
            elif op < 0.75:
                b[pos:pos] = rng.randbytes(rng.randint(1, 9))
            else:
                del b[pos:pos + rng.randint(1, 9)]
        inputs.append(bytes(b))
    parsed = 0
    for data in inputs:
        for kind in (Transaction, Block, BlockHeader):
            try:
                obj = kind.from_bytes(data)
            except DeserializationError:
                continue
            parsed += 1
            fresh: Transaction | Block | BlockHeader
            if isinstance(obj, Transaction):
                fresh = Transaction(obj.version, obj.vin, obj.vout, obj.locktime)
            elif isinstance(obj, Block):
                h = obj.header
                fresh = Block(BlockHeader(h.version, h.prev_hash, h.merkle_root, h.time, h.bits,
                                          h.nonce),
                              tuple(Transaction(t.version, t.vin, t.vout, t.locktime) for t in obj.txs))
            else:
                fresh = BlockHeader(obj.version, obj.prev_hash, obj.merkle_root, obj.time,
                                    obj.bits, obj.nonce)
            assert fresh.to_bytes() == data
    assert parsed > 100      # mutations of values keep many inputs parseable
    with pytest.raises(DeserializationError):
        Transaction.from_hex("zz")


# ------------------------------------------------------------------------------- keys, addresses

def test_addresses_are_bech32_and_network_checked() -> None:
    addr = KEY_A.public_key.address(P)
    assert addr.startswith("ccrt1q")
    assert address.decode_address(addr, P) == PKH_A
    assert address.decode_address(addr.upper(), P) == PKH_A
    main_addr = KEY_A.public_key.address(MAIN)
    assert main_addr.startswith("cc1q")
    with pytest.raises(address.AddressError, match="another network"):
        address.decode_address(main_addr, P)
    with pytest.raises(address.AddressError, match="another network"):
        address.decode_address(KEY_A.public_key.address(TESTNET), MAIN)
    # Every single-character substitution is caught by the checksum.
    body = addr[len("ccrt1"):]
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    for i, c in enumerate(body):
        bad = addr[:5 + i] + charset[(charset.index(c) + 1) % 32] + addr[6 + i:]
        assert not address.is_valid_address(bad, P)
    # BIP173's own v0 P2WPKH vector decodes to its 20-byte program (hrp "bc").
    bc = dataclasses.replace(MAIN, bech32_hrp="bc")
    assert address.decode_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", bc).hex() == \
        "751e76e8199196d454941c45d1b3a323f1433bd6"


def test_wif_round_trip_and_network() -> None:
    wif = KEY_A.to_wif(MAIN)
    assert PrivateKey.from_wif(wif, MAIN).secret == KEY_A.secret
    with pytest.raises(address.AddressError):
        PrivateKey.from_wif(wif, TESTNET)
    with pytest.raises(address.AddressError):
        PrivateKey.from_wif(wif[:-1] + ("1" if wif[-1] != "1" else "2"), MAIN)
    with pytest.raises(ValueError):
        PrivateKey(b"\x00" * 32)
    with pytest.raises(ValueError):
        PublicKey(b"\x04" + b"\x01" * 32)


def test_signature_hash_commits_to_the_transaction() -> None:
    tx = sample_tx()
    base = signature_hash(tx, 0, PKH_A)
    assert signature_hash(tx, 1, PKH_A) != base
    assert signature_hash(tx, 0, PKH_B) != base
    variants = [
        dataclasses.replace(tx, version=2), dataclasses.replace(tx, locktime=13),
        dataclasses.replace(tx, vout=tx.vout[:1]),
        dataclasses.replace(tx, vout=(TxOut(tx.vout[0].value + 1, PKH_B), tx.vout[1])),
        dataclasses.replace(tx, vin=tx.vin[::-1]),
    ]
    for v in variants:
        assert signature_hash(v, 0, PKH_A) != base
    # Other inputs' scriptSigs are not committed: inputs can be signed independently.
    other = dataclasses.replace(tx, vin=(tx.vin[0], TxIn(tx.vin[1].prevout, b"")))
    assert signature_hash(other, 0, PKH_A) == base


# ------------------------------------------------------------------------------- transactions

def test_check_transaction_rules() -> None:
    op1, op2 = OutPoint(fake_txid("x"), 0), OutPoint(fake_txid("x"), 1)
    good = Transaction(1, (TxIn(op1, b"s"), TxIn(op2, b"s")), (TxOut(COIN, PKH_A),))
    check_transaction(good)
    cases = {
        "bad-txns-vin-empty": dataclasses.replace(good, vin=()),
        "bad-txns-vout-empty": dataclasses.replace(good, vout=()),
        "bad-txns-inputs-duplicate": dataclasses.replace(good, vin=(TxIn(op1, b"s"), TxIn(op1, b"t"))),
        "bad-txns-vout-negative": dataclasses.replace(good, vout=(TxOut(-1, PKH_A),)),
        "bad-txns-vout-toolarge": dataclasses.replace(good, vout=(TxOut(MAX_MONEY + 1, PKH_A),)),
        "bad-txns-txouttotal-toolarge": dataclasses.replace(
            good, vout=(TxOut(MAX_MONEY, PKH_A), TxOut(1, PKH_A))),
        "bad-txns-prevout-null": dataclasses.replace(
            good, vin=(TxIn(op1, b"s"), TxIn(OutPoint.null(), b"s"))),
        "bad-txns-oversize": dataclasses.replace(good, vin=(TxIn(op1, b"s" * 2_000),)),
    }
    for reason, tx in cases.items():
        with expect(reason, Failure.CONSENSUS):
            check_transaction(tx, max_size=1_000)
    # Boundaries that are valid.
    check_transaction(dataclasses.replace(good, vout=(TxOut(0, PKH_A),)))
    check_transaction(dataclasses.replace(good, vout=(TxOut(MAX_MONEY, PKH_A),)))
    # Negative values survive serialization so that consensus, not the parser, rejects them.
    neg = Transaction.from_bytes(cases["bad-txns-vout-negative"].to_bytes())
    assert neg.vout[0].value == -1


def test_coinbase_script_length() -> None:
    def cb(script: bytes) -> Transaction:
        return Transaction(1, (TxIn(OutPoint.null(), script),), (TxOut(COIN, PKH_A),))

    check_transaction(cb(b"\x01\x01"))
    check_transaction(cb(b"\x01" * 100))
    with expect("bad-cb-length"):
        check_transaction(cb(b"\x01"))
    with expect("bad-cb-length"):
        check_transaction(cb(b"\x01" * 101))


def test_valid_spend_and_fee() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    check_transaction(tx)
    assert check_tx_inputs(tx, view, 2, P) == COIN
    verify_input(tx, 0, PKH_A)


def test_outputs_exceeding_inputs() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    assert check_tx_inputs(spend([op], [(10 * COIN, PKH_B)], [KEY_A]), view, 2, P) == 0
    with expect("bad-txns-in-belowout", Failure.CONSENSUS):
        check_tx_inputs(spend([op], [(10 * COIN + 1, PKH_B)], [KEY_A]), view, 2, P)


def test_missing_input() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([OutPoint(op.txid, 1)], [(COIN, PKH_B)], [KEY_A])
    with expect("bad-txns-inputs-missingorspent", Failure.MISSING_INPUTS):
        check_tx_inputs(tx, view, 2, P)


def test_coinbase_maturity() -> None:
    view, (op,) = funded_view(("cb", 50 * COIN, PKH_A, 10, True))
    tx = spend([op], [(49 * COIN, PKH_B)], [KEY_A])
    with expect("bad-txns-premature-spend-of-coinbase", Failure.PREMATURE_SPEND):
        check_tx_inputs(tx, view, 10 + P.coinbase_maturity - 1, P)
    assert check_tx_inputs(tx, view, 10 + P.coinbase_maturity, P) == COIN
    # The same output from a non-coinbase transaction is spendable at once.
    view[op] = Coin(50 * COIN, PKH_A, 10, False)
    assert check_tx_inputs(tx, view, 11, P) == COIN


def test_bad_signature() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    check_tx_inputs(tx, view, 2, P)
    # Change an output after signing: the signature no longer matches.
    tampered = dataclasses.replace(tx, vout=(TxOut(9 * COIN, PKH_A),))
    with expect("mandatory-script-verify-flag-failed", Failure.CONSENSUS):
        check_tx_inputs(tampered, view, 2, P)
    # Flip a bit inside R (the DER stays well-formed).
    sig, pub = parse_script_sig(tx.vin[0].script_sig)  # type: ignore[misc]
    bad = bytearray(sig)
    bad[10] ^= 0x01
    forged = dataclasses.replace(tx, vin=(TxIn(op, make_script_sig(bytes(bad), pub)),))
    assert is_valid_signature_encoding(bytes(bad))
    with expect("mandatory-script-verify-flag-failed"):
        check_tx_inputs(forged, view, 2, P)
    # Skipping signature checks (e.g. assumed-valid history) accepts it.
    assert check_tx_inputs(forged, view, 2, P, verify_signatures=False) == COIN


def _der_int(x: int) -> bytes:
    b = x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes((len(b),)) + b


def _der(r: int, s: int) -> bytes:
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes((len(body),)) + body


def _der_parse(der: bytes) -> tuple[int, int]:
    len_r = der[3]
    r = int.from_bytes(der[4:4 + len_r], "big")
    s = int.from_bytes(der[6 + len_r:6 + len_r + der[5 + len_r]], "big")
    return r, s


def test_high_s_signature_rejected_low_s_accepted() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    sig, pub = parse_script_sig(tx.vin[0].script_sig)  # type: ignore[misc]
    r, s = _der_parse(sig[:-1])
    assert _der(r, s) == sig[:-1] and is_low_s(sig[:-1])
    high = _der(r, CURVE_ORDER - s)        # the same signature, mathematically valid
    assert not is_low_s(high)
    malleated = dataclasses.replace(tx, vin=(TxIn(op, make_script_sig(high + b"\x01", pub)),))
    assert malleated.txid != tx.txid
    with expect("mandatory-script-verify-flag-failed"):
        check_tx_inputs(malleated, view, 2, P)
    with pytest.raises(ValidationError, match="S value is unnecessarily high"):
        verify_input(malleated, 0, PKH_A)
    assert not KEY_A.public_key.verify(high, signature_hash(tx, 0, PKH_A))
    assert KEY_A.public_key.verify(sig[:-1], signature_hash(tx, 0, PKH_A))


def test_non_strict_der_and_sighash_type_rejected() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    sig, pub = parse_script_sig(tx.vin[0].script_sig)  # type: ignore[misc]
    r, s = _der_parse(sig[:-1])
    # R padded with a superfluous zero byte: BER-valid, not strict DER.
    rb = b"\x00" + _der_int(r)[2:]
    padded_r = b"\x02" + bytes((len(rb),)) + rb
    body = padded_r + _der_int(s)
    padded = b"\x30" + bytes((len(body),)) + body + b"\x01"
    assert not is_valid_signature_encoding(padded)
    for bad_sig, why in ((padded, "Non-canonical DER"), (sig[:-1] + b"\x02", "hash type"),
                         (sig[:-1], "Non-canonical DER")):
        bad = dataclasses.replace(tx, vin=(TxIn(op, make_script_sig(bad_sig, pub)),))
        with pytest.raises(ValidationError, match=why):
            verify_input(bad, 0, PKH_A)
    for script, why in ((b"", "scriptSig"), (tx.vin[0].script_sig + b"\x00", "scriptSig")):
        bad = dataclasses.replace(tx, vin=(TxIn(op, script),))
        with pytest.raises(ValidationError, match=why):
            verify_input(bad, 0, PKH_A)


def test_wrong_pubkey_for_the_pkh() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 1, False))
    # B signs validly (for B's own pkh) but the coin pays to A.
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_B])
    with pytest.raises(ValidationError, match="does not match the spent output") as info:
        check_tx_inputs(tx, view, 2, P)
    assert info.value.reason == "mandatory-script-verify-flag-failed"
    # A's pubkey with B's signature: hash matches, signature does not.
    sig_b, _ = parse_script_sig(tx.vin[0].script_sig)  # type: ignore[misc]
    mixed = dataclasses.replace(tx, vin=(TxIn(op, make_script_sig(sig_b, KEY_A.public_key.data)),))
    with pytest.raises(ValidationError, match="CHECK"):
        check_tx_inputs(mixed, view, 2, P)
    assert check_tx_inputs(spend([op], [(9 * COIN, PKH_B)], [KEY_A]), view, 2, P) == COIN


def test_sign_input_one_at_a_time_equals_sign_transaction() -> None:
    view, ops = funded_view(("a", 5 * COIN, PKH_A, 1, False), ("b", 5 * COIN, PKH_B, 1, False))
    unsigned = Transaction(1, tuple(TxIn(op) for op in ops), (TxOut(9 * COIN, PKH_A),))
    one = sign_input(sign_input(unsigned, 1, KEY_B), 0, KEY_A)
    both = sign_transaction(unsigned, [KEY_A, KEY_B])
    assert one == both        # RFC 6979: deterministic signatures
    assert check_tx_inputs(one, view, 2, P) == COIN


def test_finality() -> None:
    tx = Transaction(1, (TxIn(OutPoint(fake_txid("f"), 0), b"s"),), (TxOut(1, PKH_A),), 100)
    assert not is_final_tx(tx, 100, 0) and is_final_tx(tx, 101, 0)
    t = dataclasses.replace(tx, locktime=1_800_000_000)
    assert not is_final_tx(t, 10**6, 1_800_000_000) and is_final_tx(t, 1, 1_800_000_001)
    assert is_final_tx(dataclasses.replace(tx, locktime=0), 0, 0)


# ------------------------------------------------------------------------------- blocks

def test_valid_block_and_coinbase_amount() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    fee = COIN
    good = block_on_genesis([tx], fees=fee)
    check_block(good, P, now=T0 + 600)
    contextual_check_block(good, 1, T0)
    conn = connect_block_checks(good, 1, view, P)
    assert conn.fees == fee and conn.tx_fees == (0, fee)
    assert conn.spent == ((op, view[op]),)
    assert {o for o, _ in conn.created} == {OutPoint(good.txs[0].txid, 0), OutPoint(tx.txid, 0)}
    assert dict(conn.created)[OutPoint(good.txs[0].txid, 0)].is_coinbase
    # Claiming one unit more than subsidy + fees.
    greedy = block_on_genesis([tx], coinbase_value=block_subsidy(1, P) + fee + 1)
    check_block(greedy, P)
    with expect("bad-cb-amount", Failure.CONSENSUS):
        connect_block_checks(greedy, 1, view, P)
    # Claiming less is allowed (the difference is destroyed).
    connect_block_checks(block_on_genesis([tx], coinbase_value=0), 1, view, P)


def test_double_spend_inside_a_block() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    t1 = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    t2 = spend([op], [(8 * COIN, PKH_B)], [KEY_A])        # same coin, other txid
    connect_block_checks(block_on_genesis([t1], fees=COIN), 1, view, P)
    connect_block_checks(block_on_genesis([t2], fees=2 * COIN), 1, view, P)
    both = block_on_genesis([t1, t2], fees=3 * COIN)
    check_block(both, P)                                   # context-free: nothing wrong
    with expect("bad-txns-inputs-missingorspent", Failure.CONSENSUS):
        connect_block_checks(both, 1, view, P)


def test_spending_within_a_block_follows_order() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    t1 = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    t2 = spend([OutPoint(t1.txid, 0)], [(8 * COIN, PKH_A)], [KEY_B])
    chained = block_on_genesis([t1, t2], fees=2 * COIN)
    conn = connect_block_checks(chained, 1, view, P)
    created = dict(conn.created)
    assert OutPoint(t1.txid, 0) not in created and OutPoint(t2.txid, 0) in created
    assert [o for o, _ in conn.spent] == [op]
    with expect("bad-txns-inputs-missingorspent"):
        connect_block_checks(block_on_genesis([t2, t1], fees=2 * COIN), 1, view, P)
    # The coinbase of the same block is immature.
    cb = create_coinbase(1, PKH_A, block_subsidy(1, P))
    cb_spend = spend([OutPoint(cb.txid, 0)], [(COIN, PKH_B)], [KEY_A])
    own = solve(assemble_block(GENESIS.header, [cb, cb_spend], T0 + 600, BITS), P)
    assert own is not None
    with expect("bad-txns-premature-spend-of-coinbase"):
        connect_block_checks(own, 1, view, P)


def test_bad_signature_inside_a_block() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    forged = spend([op], [(9 * COIN, PKH_B)], [KEY_B])
    block = block_on_genesis([forged], fees=COIN)
    with expect("mandatory-script-verify-flag-failed", Failure.CONSENSUS):
        connect_block_checks(block, 1, view, P)


def test_bad_merkle_root() -> None:
    good = block_on_genesis()
    check_block(good, P)
    header = dataclasses.replace(good.header, merkle_root=b"\x00" * 32)
    bad = solve(Block(header, good.txs), P)
    assert bad is not None
    with expect("bad-txnmrklroot", Failure.MUTATED):
        check_block(bad, P)
    # Swapping in another coinbase under the original header: same hash, different data.
    other_cb = create_coinbase(1, PKH_B, block_subsidy(1, P))
    swapped = Block(good.header, (other_cb,))
    assert swapped.hash == good.hash
    with pytest.raises(ValidationError) as info:
        check_block(swapped, P)
    assert info.value.reason == "bad-txnmrklroot" and not info.value.marks_block_invalid


def test_duplicated_transaction_merkle_mutation() -> None:
    view, ops = funded_view(("a", 5 * COIN, PKH_A, 0, False), ("b", 5 * COIN, PKH_A, 0, False))
    t1 = spend([ops[0]], [(5 * COIN, PKH_B)], [KEY_A])
    t2 = spend([ops[1]], [(5 * COIN, PKH_B)], [KEY_A])
    good = block_on_genesis([t1, t2])                 # 3 transactions: t2 is paired with itself
    mutated = Block(good.header, (*good.txs, t2))     # ... so appending a copy keeps the root
    assert merkle_root([t.txid for t in mutated.txs]) == (good.header.merkle_root, True)
    assert merkle_root([t.txid for t in good.txs]) == (good.header.merkle_root, False)
    assert mutated.hash == good.hash
    check_block(good, P)
    connect_block_checks(good, 1, view, P)
    with pytest.raises(ValidationError) as info:
        check_block(mutated, P)
    assert info.value.reason == "bad-txns-duplicate" and info.value.failure is Failure.MUTATED
    assert not info.value.marks_block_invalid


def test_merkle_root_algorithm() -> None:
    a, b, c = (hashlib.sha256(x).digest() for x in (b"a", b"b", b"c"))
    d = hashes.sha256d
    assert merkle_root([a]) == (a, False)
    assert merkle_root([a, b]) == (d(a + b), False)
    assert merkle_root([a, b, c]) == (d(d(a + b) + d(c + c)), False)
    assert merkle_root([a, b, c, c]) == (d(d(a + b) + d(c + c)), True)
    assert merkle_root([a, a])[1]


def test_high_hash() -> None:
    block = block_on_genesis()
    check_block(block, P)
    target = compact_to_target(BITS)[0]
    nonce = 0
    while int.from_bytes(dataclasses.replace(block.header, nonce=nonce).hash, "little") <= target:
        nonce += 1
    unsolved = Block(dataclasses.replace(block.header, nonce=nonce), block.txs)
    with expect("high-hash", Failure.INVALID_HEADER):
        check_block(unsolved, P)
    check_block(unsolved, P, check_pow=False)   # e.g. a block template
    # Bits easier than pow_limit are never acceptable, whatever the hash.
    lax = Block(dataclasses.replace(block.header, bits=0x2100FFFF), block.txs)
    with expect("high-hash"):
        check_block(lax, P)


def test_block_structure_rules() -> None:
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    tx = spend([op], [(9 * COIN, PKH_B)], [KEY_A])
    cb = create_coinbase(1, PKH_A, block_subsidy(1, P))

    def solved(txs: Sequence[Transaction], time: int = T0 + 600) -> Block:
        b = solve(assemble_block(GENESIS.header, txs, time, BITS), P)
        assert b is not None
        return b

    check_block(solved([cb, tx]), P)
    with expect("bad-cb-missing"):
        check_block(solved([tx, cb]), P)
    with expect("bad-cb-multiple"):
        check_block(solved([cb, create_coinbase(1, PKH_B, 1)]), P)
    with expect("bad-blk-length"):
        check_block(solved([]), P)
    small = dataclasses.replace(P, max_block_size=300)
    check_block(solved([cb]), small)
    with expect("bad-blk-length"):
        check_block(solved([cb, tx]), small)
    with expect("bad-txns-vout-negative"):
        check_block(solved([cb, Transaction(1, tx.vin, (TxOut(-5, PKH_B),))]), P)
    future = solved([cb], time=T0 + 10_000)
    check_block(future, P, now=T0 + 10_000 - 7200)
    with pytest.raises(ValidationError) as info:
        check_block(future, P, now=T0 + 10_000 - 7201)
    assert info.value.reason == "time-too-new" and not info.value.marks_block_invalid


def test_coinbase_height_and_finality_in_block() -> None:
    good = block_on_genesis()
    contextual_check_block(good, 1, T0)
    with expect("bad-cb-height"):
        contextual_check_block(good, 2, T0)
    wrong = solve(assemble_block(GENESIS.header, [create_coinbase(7, PKH_A, COIN)], T0 + 600, BITS), P)
    assert wrong is not None
    with expect("bad-cb-height"):
        contextual_check_block(wrong, 1, T0)
    # Heights are minimal CScriptNums: 256 is 00 01; 128 needs a 00 so it is not negative.
    assert create_coinbase(256, PKH_A, 1).vin[0].script_sig.startswith(b"\x02\x00\x01")
    assert create_coinbase(128, PKH_A, 1).vin[0].script_sig.startswith(b"\x02\x80\x00")
    view, (op,) = funded_view(("a", 10 * COIN, PKH_A, 0, False))
    locked = spend([op], [(9 * COIN, PKH_B)], [KEY_A], locktime=5)
    b = block_on_genesis([locked], fees=COIN)
    with expect("bad-txns-nonfinal"):
        contextual_check_block(b, 1, T0)
    at_6 = solve(assemble_block(GENESIS.header, [create_coinbase(6, PKH_A, COIN), locked], T0 + 600, BITS), P)
    assert at_6 is not None
    contextual_check_block(at_6, 6, T0)


def test_mined_regtest_chain_connects_and_pays_after_maturity() -> None:
    """101 blocks on regtest make the first coinbase spendable, as regtest users expect."""
    view = DictView()
    prev = GENESIS.header
    blocks: list[Block] = []
    times = [GENESIS.header.time]
    for height in range(1, 102):
        b = mine_block(prev, height, PKH_A, P, T0 + 600 * height, BITS)
        check_block(b, P, now=b.header.time)
        contextual_check_block_header(b.header, PrevBlock(height - 1, prev.bits, prev.time), P,
                                      median_time_past=median_time_past(times),
                                      ancestor_time=lambda h: times[h])
        contextual_check_block(b, height, median_time_past(times))
        conn = connect_block_checks(b, height, view, P)
        for op, coin in conn.created:
            view[op] = coin
        blocks.append(b)
        times.append(b.header.time)
        prev = b.header
    first = OutPoint(blocks[0].txs[0].txid, 0)
    second = OutPoint(blocks[1].txs[0].txid, 0)
    pay = spend([first], [(49 * COIN, PKH_B)], [KEY_A])
    assert check_tx_inputs(pay, view, 102, P) == COIN            # mempool: tip + 1
    with expect("bad-txns-premature-spend-of-coinbase"):
        check_tx_inputs(spend([second], [(49 * COIN, PKH_B)], [KEY_A]), view, 101, P)
    nxt = mine_block(prev, 102, PKH_A, P, T0 + 600 * 102, BITS, [pay], fees=COIN)
    check_block(nxt, P)
    conn = connect_block_checks(nxt, 102, view, P)
    assert conn.fees == COIN and conn.spent[0][0] == first
    # The header chain's work adds up as expected: 2 hashes per regtest block.
    assert sum(block_proof(b.header.bits) for b in blocks) == 2 * 101
