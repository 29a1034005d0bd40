"""Wallet foundation: HD derivation, secret encryption, the SQLite store (crash safety,
plaintext removal), and coin selection checked by the node's own mempool.

Nothing is mocked on the consensus side: transactions are signed with secp256k1 and accepted
(or not) by components/node/mempool.Mempool over a dict chain view holding real regtest
coinbase outputs, as in tests/test_mempool.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cleancoin.components.common.amount import COIN
from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.consensus import Coin, block_subsidy
from cleancoin.components.common.keys import PrivateKey
from cleancoin.components.common.policy import fee_for_size
from cleancoin.components.node.mempool import Mempool
from cleancoin.components.node.mining import create_coinbase
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.wallet import coins as cs
from cleancoin.components.wallet import crypto, hd
from cleancoin.components.wallet.store import (
    RESERVED_NAMES, WalletError, WalletStore, create_from_dump, dump_wallet, valid_wallet_name, wallet_dir,
)

FAST_N = 2 ** 10     # scrypt cost for tests that are not about the KDF itself

# ------------------------------------------------------------------------------------- HD

# BIP32 test vector 1 (seed 000102...0f). Each expected value is a serialized xprv with its own
# base58check checksum, so a typo here fails loudly instead of passing by accident.
BIP32_SEED_1 = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
BIP32_VECTOR_1 = [
    ("m", "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi"),
    ("m/0'", "xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeSvkzY7d2bhkJ7"),
    ("m/0'/1", "xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8MSY3H2EU4pWcQDnRnrVA1xe8fs"),
    ("m/0'/1/2'", "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLTj34bhnZX7UiM"),
    ("m/0'/1/2'/2", "xprvA2JDeKCSNNZky6uBCviVfJSKyQ1mDYahRjijr5idH2WwLsEd4Hsb2Tyh8RfQMuPh7f7RtyzTtdrbdqqsunu5Mm3wDvUAKRHSC34sJ7in334"),
    ("m/0'/1/2'/2/1000000000", "xprvA41z7zogVVwxVSgdKUHDy1SKmdb533PjDz7J6N6mV6uS3ze1ai8FHa8kmHScGpWmj4WggLyQjgPie1rFSruoUihUZREPSL39UNdE3BBDu76"),
]


@pytest.mark.parametrize("path,xprv", BIP32_VECTOR_1)
def test_bip32_vector_1(path: str, xprv: str) -> None:
    """With BIP32's own HMAC key the derivation reproduces the public vector bit for bit."""
    key = hd.derive_path(hd.master_key(BIP32_SEED_1, key=hd.BIP32_SEED_KEY), path)
    assert key.serialize() == xprv
    assert hd.ExtendedKey.deserialize(xprv) == key


def test_cleancoin_seed_key_and_wallet_paths() -> None:
    """CleanCoin's own master key differs from Bitcoin's; wallet keys are m/0'/c'/i'."""
    seed = hashlib.sha256(b"hd test seed").digest()
    ours, bitcoin = hd.master_key(seed), hd.master_key(seed, key=hd.BIP32_SEED_KEY)
    assert ours.secret != bitcoin.secret
    k = hd.wallet_key(ours, 5, internal=True)
    assert k.secret == hd.derive_path(ours, "m/0'/1'/5'").secret
    assert hd.wallet_key(ours, 5, internal=False).secret != k.secret
    assert hd.path_string(5, True) == "m/0'/1'/5'"
    assert "secret" not in repr(ours) or "<secret>" in repr(ours)
    assert ours.secret.hex() not in repr(ours)
    with pytest.raises(ValueError):
        hd.parse_path("0'/1")
    with pytest.raises(ValueError):
        hd.master_key(b"short")


# ------------------------------------------------------------------------------------- crypto

def test_encrypt_decrypt_default_kdf() -> None:
    """Round trip with the default scrypt cost; parameters travel with the blob."""
    secret = os.urandom(32)
    blob = crypto.encrypt(secret, "correct horse")
    assert (blob.n, blob.r, blob.p) == (2 ** 15, 8, 1)
    assert len(blob.salt) == 16 and len(blob.nonce) == 12
    again = crypto.EncryptedBlob.from_bytes(blob.to_bytes())
    assert crypto.decrypt(again, "correct horse") == secret
    assert secret not in blob.to_bytes()


def test_wrong_passphrase_is_a_clear_error_that_leaks_nothing() -> None:
    secret = os.urandom(32)
    blob = crypto.encrypt(secret, "right one", n=FAST_N)
    with pytest.raises(crypto.WrongPassphrase) as info:
        crypto.decrypt(blob, "wrong one")
    msg = str(info.value)
    assert msg == "The wallet passphrase entered was incorrect."
    assert "wrong one" not in msg and "right one" not in msg and secret.hex() not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # The purpose is bound: a seed blob does not open as another record type.
    with pytest.raises(crypto.WrongPassphrase):
        crypto.decrypt(blob, "right one", purpose=b"cleancoin-wallet-other")
    # The header is authenticated: lowering the KDF cost in the file is caught.
    weakened = crypto.EncryptedBlob(blob.log_n - 1, blob.r, blob.p, blob.salt, blob.nonce,
                                    blob.ciphertext)
    with pytest.raises(crypto.WrongPassphrase):
        crypto.decrypt(weakened, "right one")
    # Fresh salt and nonce every time.
    other = crypto.encrypt(secret, "right one", n=FAST_N)
    assert other.salt != blob.salt and other.nonce != blob.nonce
    with pytest.raises(ValueError):
        crypto.EncryptedBlob.from_bytes(b"garbage" * 10)


def _mapping(address: int) -> dict[str, str] | None:
    """The /proc/self/smaps entry of the mapping that starts at `address`."""
    entry: dict[str, str] | None = None
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                if entry is not None:
                    return entry
                if int(head.split("-")[0], 16) == address:
                    entry = {"range": head}
            elif entry is not None:
                key, _, value = line.partition(":")
                entry[key] = value.strip()
    return entry


def test_secret_bytes_live_in_locked_memory_and_are_wiped() -> None:
    """An unlocked wallet's seed stays in memory for the passphrase's timeout: in a mapping of
    its own that the kernel keeps in RAM (never swapped: smaps' Locked), leaves out of core
    dumps ("dd") and gives a forked child as zeros ("wf"), as Bitcoin Core keeps keys. Before,
    it lay in an ordinary bytearray of the heap."""
    secret = os.urandom(32)
    source = bytearray(secret)
    s = crypto.SecretBytes(source)
    assert source == bytearray(32)            # the caller's mutable copy is cleared too
    assert s.get() == secret and len(s) == 32 and secret.hex() not in repr(s)
    assert s.locked, s.lock_error
    mapping = _mapping(s.address)
    assert mapping is not None
    assert mapping["Locked"] == mapping["Size"] == "4 kB", mapping
    assert {"dd", "wf"} <= set(mapping["VmFlags"].split()), mapping
    address = s.address
    s.wipe()
    assert s.wiped and _mapping(address) is None      # zeroed, then given back
    with pytest.raises(ValueError):
        s.get()
    with crypto.SecretBytes(b"\x07" * 8) as t:
        assert t.get() == b"\x07" * 8
    assert t.wiped


def test_locked_memory_is_zeroed_in_place_and_says_when_it_could_not_lock() -> None:
    import subprocess
    import sys
    from cleancoin.components.wallet.locked_memory import LockedBuffer
    buffer = LockedBuffer(16)
    buffer.write(b"\x5a" * 16)
    buffer.wipe()
    assert buffer.read() == bytes(16)
    buffer.release()
    buffer.release()                           # twice is fine
    # Without the right to lock (RLIMIT_MEMLOCK 0, and no CAP_IPC_LOCK, which would let root
    # lock regardless), the memory still works and says why it is not locked.
    code = ("import resource; resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0)); "
            "from cleancoin.components.wallet.crypto import SecretBytes; "
            "s = SecretBytes(b'x' * 32); print(s.locked, s.get() == b'x' * 32, s.lock_error)")
    drop = ["setpriv", "--bounding-set", "-ipc_lock"] if os.getuid() == 0 else []
    out = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("False True "), (out.stdout, out.stderr)


# ------------------------------------------------------------------------------------- store

SEED = hashlib.sha256(b"store test seed: grep for me").digest()
FOREIGN = b"\xee" * 20


def _top_up(store: WalletStore, master: hd.ExtendedKey, internal: bool, n: int) -> None:
    first = store.next_index(internal)
    pubs = [hd.derive_path(master, hd.wallet_key_path(i, internal)).public_key
            for i in range(first, first + n)]
    store.add_keys(internal, first, pubs)


def _receive(pkh: bytes, value: int, tag: bytes) -> Transaction:
    """A transaction from outside the wallet paying `pkh` (its input is not ours)."""
    return Transaction(1, (TxIn(OutPoint(hashlib.sha256(tag).digest(), 0), b"\x01\x01"),),
                       (TxOut(value, pkh),))


def _populate(store: WalletStore) -> Transaction:
    master = hd.master_key(store.seed().get())
    _top_up(store, master, False, 5)
    _top_up(store, master, True, 5)
    k = store.take_key(False)
    assert k is not None and k.index == 0
    store.apply_block(b"\x01" * 32, 0, [_receive(k.pkh, 3 * COIN, b"r0")], time=100)
    coin = store.coins()[0]
    change = store.take_key(True)
    assert change is not None
    tx, fee = cs.build_transaction(
        [cs.SpendableCoin(coin.outpoint, coin.value, hd.wallet_key(master, 0, False))],
        [(FOREIGN, COIN)], 1000, change.pkh, change_position=1)
    assert store.add_transaction(tx, time=101)
    store.set_label(k.address, "first")
    return tx


def _files(store_path: Path) -> list[Path]:
    return [p for p in (store_path, Path(f"{store_path}-wal"), Path(f"{store_path}-shm"))
            if p.exists()]


def test_store_round_trip_permissions_and_dump(tmp_path: Path) -> None:
    store = WalletStore.create(tmp_path, "w1", "regtest", seed=SEED, birth_height=0)
    tx = _populate(store)
    change_value = tx.vout[1].value
    assert store.balance() == change_value
    assert store.balance(min_conf=1) == 0
    assert [c.value for c in store.coins(include_spent=True)] != []
    assert stat.S_IMODE(os.stat(tmp_path / "wallets").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "wallets" / "w1").st_mode) == 0o700
    for f in _files(store.path):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    with pytest.raises(WalletError):
        WalletStore.create(tmp_path, "w1", "regtest")
    with pytest.raises(WalletError):
        WalletStore.create(tmp_path, "../escape", "regtest")
    store.close()

    with pytest.raises(WalletError, match="network"):
        WalletStore.open(tmp_path, "w1", "main")
    store = WalletStore.open(tmp_path, "w1", "regtest")
    assert store.check() == []
    assert store.best_block == (b"\x01" * 32, 0)
    assert store.next_index(False) == 5 and store.unused_keys(False) == 4
    assert store.get_transaction(tx.txid).block_hash is None        # type: ignore[union-attr]
    assert store.balance() == change_value
    assert store.label(store.keys(False)[0].address) == "first"
    # Confirmation in the next block; then a reorg makes it unconfirmed again.
    store.apply_block(b"\x02" * 32, 1, [tx], time=200)
    assert store.balance(min_conf=1) == change_value
    store.disconnect_block(b"\x02" * 32, 1, b"\x01" * 32)
    assert store.balance(min_conf=1) == 0 and store.best_block[1] == 0
    # Abandon: the spent coin counts again, the change does not.
    store.abandon_transaction(tx.txid)
    assert store.balance() == 3 * COIN
    store.lock_coin(store.coins()[0].outpoint)
    assert store.coins(include_locked=False) == []

    dump = tmp_path / "w1.dump"
    n = dump_wallet(store, dump)
    assert n > 10 and stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        dump_wallet(store, dump)
    copy = create_from_dump(tmp_path, "w2", dump)
    assert list(copy.rows()) == list(store.rows())
    assert copy.seed().get() == SEED and copy.check() == []
    copy.close()
    bad = tmp_path / "bad.dump"
    bad.write_text(dump.read_text().replace("first", "firsT"))
    with pytest.raises(WalletError, match="checksum"):
        create_from_dump(tmp_path, "w3", bad)
    assert not (tmp_path / "wallets" / "w3" / "wallet.sqlite").exists()
    store.close()


def test_encryption_removes_plaintext_seed_from_every_file(tmp_path: Path) -> None:
    passphrase = "a passphrase that must stay in memory"
    store = WalletStore.create(tmp_path, "enc", "regtest", seed=SEED)
    _populate(store)
    # The seed is visible before: proves the grep below can see it when it is there.
    assert any(SEED in f.read_bytes() for f in _files(store.path))
    store.encrypt_wallet(passphrase)
    assert store.encrypted

    def grep_clean() -> None:
        files = _files(store.path)
        assert files
        for f in files:
            data = f.read_bytes()
            assert SEED not in data, f"plaintext seed in {f.name}"
            assert SEED.hex().encode() not in data
            assert passphrase.encode() not in data, f"passphrase in {f.name}"

    grep_clean()                        # while open (WAL and SHM present)
    with pytest.raises(WalletError):
        store.seed()
    with pytest.raises(crypto.WrongPassphrase):
        store.unlock("not it")
    with store.unlock(passphrase) as seed:
        assert seed.get() == SEED
    with pytest.raises(WalletError):
        store.encrypt_wallet("again")
    store.change_passphrase(passphrase, "second passphrase", scrypt_n=FAST_N)
    with pytest.raises(crypto.WrongPassphrase):
        store.unlock(passphrase)
    assert store.unlock("second passphrase").get() == SEED
    assert store.check() == []
    store.close()
    grep_clean()
    store = WalletStore.open(tmp_path, "enc", "regtest")
    assert store.encrypted and store.unlock("second passphrase").get() == SEED
    grep_clean()
    # A dump of an encrypted wallet carries only the encrypted seed.
    dump = tmp_path / "enc.dump"
    dump_wallet(store, dump)
    assert SEED.hex() not in dump.read_text()
    store.close()


# ------------------------------------------------------------------------------------- crash

_WORKER = textwrap.dedent('''
    import hashlib, sys
    from cleancoin.components.common.amount import COIN
    from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
    from cleancoin.components.wallet import coins as cs, hd
    from cleancoin.components.wallet.store import WalletStore

    s = WalletStore.open(sys.argv[1], "crash", "regtest")
    master = hd.master_key(s.seed().get())
    keys = {}

    def key_for(pkh):
        if pkh not in keys:
            rec = s.key_by_pkh(pkh)
            keys[pkh] = hd.wallet_key(master, rec.index, rec.internal)
        return keys[pkh]

    print("ready", flush=True)
    while True:
        for internal in (False, True):
            if s.unused_keys(internal) < 3:
                n = s.next_index(internal)
                s.add_keys(internal, n, [hd.derive_path(master, hd.wallet_key_path(i, internal))
                                         .public_key for i in range(n, n + 10)])
        h = s.best_block[1] + 1
        rec = s.take_key(False)
        receive = Transaction(1, (TxIn(OutPoint(hashlib.sha256(b"ext%d" % h).digest(), 0),
                                       b"\\x01\\x01"),), (TxOut(COIN + h, rec.pkh),))
        pending = [w.tx for w in s.transactions()
                   if w.block_hash is None and not w.abandoned and not w.conflicted]
        s.apply_block(hashlib.sha256(b"block%d" % h).digest(), h, [receive] + pending, h)
        spendable = [cs.SpendableCoin(c.outpoint, c.value, key_for(c.pkh))
                     for c in s.coins(include_locked=False) if c.height is not None]
        change = s.take_key(True)
        tx, fee = cs.build_transaction(spendable, [(b"\\xee" * 20, COIN // 3)], 1000, change.pkh)
        s.add_transaction(tx, h)
''')


def _check_invariants(netdatadir: Path) -> int:
    """Open the wallet as a fresh process would and check everything a crash must not break.
    Returns the best height."""
    store = WalletStore.open(netdatadir, "crash", "regtest")
    try:
        assert store.check() == []
        _, best = store.best_block
        # Independent of the store's own queries: raw SQL over the file.
        db = sqlite3.connect(store.path)
        try:
            for internal in (0, 1):
                nxt = db.execute("SELECT value FROM meta WHERE key = ?",
                                 (f"next_index_{internal}",)).fetchone()[0]
                idx = [r[0] for r in db.execute(
                    "SELECT idx FROM keys WHERE internal = ? ORDER BY idx", (internal,))]
                assert idx == list(range(nxt)), "key index gap or key beyond next index"
            unspent = db.execute("SELECT COALESCE(SUM(value), 0) FROM coins WHERE spent_by "
                                 "IS NULL").fetchone()[0]
            top = db.execute("SELECT MAX(block_height) FROM txs").fetchone()[0]
        finally:
            db.close()
        assert store.balance(include_immature=True) == unspent
        if best >= 0:
            assert top == best, (top, best)         # every block carries a receive
        # No coin both spent and unspent, no outpoint spent twice.
        spent_outpoints: list[OutPoint] = []
        ours = {c.outpoint: c for c in store.coins(include_spent=True)}
        sends = 0
        paid_out = 0
        for wtx in store.transactions():
            mine = [i.prevout for i in wtx.tx.vin if i.prevout in ours]
            spent_outpoints += mine
            for op in mine:
                assert ours[op].spent_by == wtx.tx.txid
            if mine:
                sends += 1
                in_value = sum(ours[op].value for op in mine)
                change = sum(o.value for o in wtx.tx.vout if o.pkh != FOREIGN)
                paid_out += in_value - change            # payment + fee
        assert len(spent_outpoints) == len(set(spent_outpoints))
        assert {op for op, c in ours.items() if c.spent_by is not None} == set(spent_outpoints)
        # Conservation: everything received is either still ours or was paid out.
        received = sum(COIN + h for h in range(best + 1))
        assert unspent + paid_out == received, (unspent, paid_out, received)
        return best
    finally:
        store.close()


def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    WalletStore.create(tmp_path, "crash", "regtest", seed=SEED).close()
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    rng = random.Random(1234)
    heights = []
    deadline = time.monotonic() + 12
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
            time.sleep(rng.uniform(0.05, 0.5))
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
        assert proc.returncode == -signal.SIGKILL
        heights.append(_check_invariants(tmp_path))
        if time.monotonic() > deadline:
            break
    assert heights == sorted(heights) and heights[-1] > 5, heights
    print("heights after each kill:", heights)


# ------------------------------------------------------------------------------------- coins

KEY_A = PrivateKey(hashlib.sha256(b"wallet coin key A").digest())
PKH_B = PrivateKey(hashlib.sha256(b"wallet coin key B").digest()).public_key.pkh
CHANGE = PrivateKey(hashlib.sha256(b"wallet change key").digest()).public_key.pkh
NOW = REGTEST.genesis_block.header.time + 1_000_000


class DictChainView:
    """The mempool's ChainView over a dict of coins (the idea of tests/test_mempool.py's)."""

    def __init__(self, tip_height: int) -> None:
        self.coins: dict[OutPoint, Coin] = {}
        self.tip_height = tip_height

    def utxo(self, outpoint: OutPoint) -> Coin | None:
        return self.coins.get(outpoint)

    def has_coins_of(self, txid: bytes) -> bool:
        return any(op.txid == txid for op in self.coins)

    def median_time_past_tip(self) -> int:
        return REGTEST.genesis_block.header.time


@pytest.fixture
def wallet_coins() -> tuple[Mempool, list[cs.SpendableCoin]]:
    """Mature regtest coinbase outputs at heights 1..5 paying KEY_A, and a pool over them."""
    view = DictChainView(200)
    out = []
    for h in range(1, 6):
        value = block_subsidy(h, REGTEST)
        cb = create_coinbase(h, KEY_A.public_key.pkh, value)
        op = OutPoint(cb.txid, 0)
        view.coins[op] = Coin(value, KEY_A.public_key.pkh, h, True)
        out.append(cs.SpendableCoin(op, value, KEY_A))
    return Mempool(REGTEST, view), out


def test_fee_at_min_relay_rate_is_accepted_by_the_mempool(wallet_coins) -> None:
    pool, coins = wallet_coins
    tx, fee = cs.build_transaction(coins[:1], [(PKH_B, 10 * COIN)], pool.min_relay_fee_per_kb,
                                   CHANGE, change_position=1)
    assert fee == fee_for_size(1000, cs.estimate_size(1, 2))
    assert tx.size <= cs.estimate_size(1, 2) and fee >= fee_for_size(1000, tx.size)
    assert fee - fee_for_size(1000, tx.size) <= 2           # only signature-length slack
    entry = pool.accept(tx, now=NOW)
    assert entry.fee == fee
    assert tx.vout[0] == TxOut(10 * COIN, PKH_B)
    assert tx.vout[1] == TxOut(coins[0].value - 10 * COIN - fee, CHANGE)


def test_multiple_inputs_largest_first(wallet_coins) -> None:
    pool, coins = wallet_coins
    tx, fee = cs.build_transaction(coins, [(PKH_B, 120 * COIN)], 1000, CHANGE)
    assert len(tx.vin) == 3
    assert fee == fee_for_size(1000, cs.estimate_size(3, 2))
    pool.accept(tx, now=NOW)
    change = [o for o in tx.vout if o.pkh == CHANGE]
    assert change and change[0].value == 150 * COIN - 120 * COIN - fee


def test_dust_change_goes_to_the_fee(wallet_coins) -> None:
    pool, coins = wallet_coins
    base_fee = fee_for_size(1000, cs.estimate_size(1, 1))
    amount = coins[0].value - base_fee - cs.DUST_THRESHOLD + 1
    tx, fee = cs.build_transaction(coins[:1], [(PKH_B, amount)], 1000, CHANGE)
    assert len(tx.vout) == 1 and fee == coins[0].value - amount
    assert base_fee < fee < base_fee + cs.DUST_THRESHOLD
    pool.accept(tx, now=NOW)


def test_subtract_fee_from_amount(wallet_coins) -> None:
    pool, coins = wallet_coins
    value = coins[0].value
    tx, fee = cs.build_transaction(coins[:1], [(PKH_B, value)], 1000, CHANGE, {0})
    assert len(tx.vin) == 1 and len(tx.vout) == 1
    assert tx.vout[0].value == value - fee and fee == fee_for_size(1000, cs.estimate_size(1, 1))
    pool.accept(tx, now=NOW)
    # Split between two recipients, with change; the first pays the odd unit.
    tx2, fee2 = cs.build_transaction(coins[1:2], [(PKH_B, 10 * COIN), (CHANGE, 10 * COIN)],
                                     3333, KEY_A.public_key.pkh, {0, 1}, change_position=2)
    assert tx2.vout[0].value + tx2.vout[1].value == 20 * COIN - fee2
    assert tx2.vout[1].value - tx2.vout[0].value == fee2 % 2
    assert tx2.vout[2].value == coins[1].value - 20 * COIN
    pool.accept(tx2, now=NOW)


def test_insufficient_funds_and_amount_too_small(wallet_coins) -> None:
    _, coins = wallet_coins
    with pytest.raises(cs.InsufficientFunds):
        cs.build_transaction(coins, [(PKH_B, 250 * COIN)], 1000, CHANGE)
    with pytest.raises(cs.InsufficientFunds):      # the amount fits, amount + fee does not
        cs.build_transaction(coins[:1], [(PKH_B, coins[0].value)], 1000, CHANGE)
    with pytest.raises(cs.AmountTooSmall):
        cs.build_transaction(coins, [(PKH_B, cs.DUST_THRESHOLD - 1)], 1000, CHANGE)
    with pytest.raises(cs.AmountTooSmall):      # the recipient cannot pay the fee
        cs.build_transaction(coins, [(PKH_B, cs.DUST_THRESHOLD + 10)], 1000, CHANGE, {0})


def test_block_history_survives_a_disconnect_and_is_added_to_older_wallets(tmp_path: Path) -> None:
    """block_txs remembers which blocks held wallet transactions after a reorg disconnects
    them (listsinceblock's `removed`); a wallet made before the table existed gets it on open."""
    store = WalletStore.create(tmp_path, "w", "regtest", seed=SEED)
    tx = _populate(store)
    store.apply_block(b"\x02" * 32, 1, [tx], time=200)
    store.disconnect_block(b"\x02" * 32, 1, b"\x01" * 32)
    assert store.get_transaction(tx.txid).block_hash is None        # type: ignore[union-attr]
    assert store.block_txids(b"\x02" * 32) == [tx.txid]
    store.close()
    # An older wallet: no block_txs table. Opening adds it (empty); the wallet works on.
    conn = sqlite3.connect(tmp_path / "wallets" / "w" / "wallet.sqlite")
    conn.execute("DROP TABLE block_txs")
    conn.commit()
    conn.close()
    with WalletStore.open(tmp_path, "w", "regtest") as store:
        assert store.block_txids(b"\x02" * 32) == [] and store.check() == []
        store.apply_block(b"\x03" * 32, 1, [tx], time=300)
        assert store.block_txids(b"\x03" * 32) == [tx.txid]


def test_undoing_a_block_reads_its_own_transactions_not_the_wallets_all(tmp_path: Path) -> None:
    """A deep reorganisation undoes one block at a time. Each undo looked the block's
    transactions up by hash, which no index covers: every transaction of the wallet was read
    for each block (3.3 ms a block at 30,000 transactions, a 300-block rewind 1.0 s of CPU;
    now 0.4 ms, 0.11 s). Counted in SQLite's virtual-machine steps (a progress handler every
    100), so the bound does not depend on the machine's speed: the undo of a block of one
    transaction costs the same in a wallet of 100 transactions and of 3,000."""
    store = WalletStore.create(tmp_path, "w", "regtest", seed=SEED)
    _top_up(store, hd.master_key(store.seed().get()), False, 1)
    pkh = store.keys(False)[0].pkh
    steps = {}
    for height in range(3000):
        tx = Transaction(1, (TxIn(OutPoint(hashlib.sha256(b"%d" % height).digest(), 0), b"\x00" * 10),),
                         (TxOut(1000, pkh),), 0)
        store.apply_block(hashlib.sha256(b"block %d" % height).digest(), height, [tx], time=height)
        if height + 1 in (100, 3000):
            counted = [0]

            def step(counted: list[int] = counted) -> int:
                counted[0] += 1
                return 0

            store._conn.set_progress_handler(step, 100)
            block_hash = hashlib.sha256(b"block %d" % height).digest()
            store.disconnect_block(block_hash, height, hashlib.sha256(b"block %d" % (height - 1)).digest())
            store._conn.set_progress_handler(None, 100)
            store.apply_block(block_hash, height, [tx], time=height)
            steps[height + 1] = counted[0]
    print(f"VM steps (in hundreds) of one undo: {steps}")
    assert steps[3000] <= steps[100] + 2, steps
    store.close()


def test_replaced_header_rows_are_kept_newest_first_up_to_the_bound(tmp_path: Path, monkeypatch) -> None:
    """Each header row replaced by another block's goes to `left_headers` (listsinceblock's
    walk down a branch that left), in the replacing transaction; beyond MAX_LEFT_HEADERS the
    lowest heights go. A row written again with its own hash is not "left"."""
    from cleancoin.components.wallet import store as store_mod
    monkeypatch.setattr(store_mod, "MAX_LEFT_HEADERS", 3)
    s = WalletStore.create(tmp_path, "w", REGTEST.name)

    def header(tag: bytes, height: int) -> tuple[int, bytes, bytes, bool]:
        raw = tag * 4 + bytes(76)
        return height, hashlib.sha256(raw + bytes([height])).digest(), raw, True

    s.add_headers([header(b"a", h) for h in range(6)])
    s.add_headers([header(b"a", h) for h in range(6)])            # the same rows again
    assert s.left_header(header(b"a", 5)[1]) is None
    s.add_headers([header(b"b", h) for h in range(1, 6)])          # rows 1..5 replaced
    kept = {h for h in range(6) if s.left_header(header(b"a", h)[1]) is not None}
    assert kept == {3, 4, 5}, kept
    assert s.left_header(header(b"a", 5)[1]) == (5, header(b"a", 5)[2])
    s.close()


def test_wallet_names_stay_inside_wallets_and_off_its_other_files(tmp_path: Path) -> None:
    """A name is one directory below wallets/ and none of the files kept there (the start-up
    list, its next version, CleanCoin-node's wallet log; test_rpc_wallet_names.py has the
    attacks). A trailing newline is refused too: `$` would have let it through."""
    from cleancoin.components.wallet.service import wallet_log_path
    from cleancoin.components.wallet.wallet import WalletManager
    assert os.path.basename(wallet_log_path(str(tmp_path))) in RESERVED_NAMES
    settings = WalletManager(tmp_path, None, "regtest").settings_path     # type: ignore[arg-type]
    assert {settings.name, settings.name + ".tmp"} <= RESERVED_NAMES
    for name in ("w", "W-1_.x", "a" * 64):
        assert valid_wallet_name(name) and wallet_dir(tmp_path, name) == tmp_path / "wallets" / name
    for name in ("", "a" * 65, ".hidden", "..", "../x", "/x", "x/y", "x\0", "w\n", "w\r", "\u00e9",
                 "Settings.JSON", "DEBUG.LOG", *RESERVED_NAMES):
        assert not valid_wallet_name(name), name
        with pytest.raises(WalletError, match="Invalid wallet name"):
            wallet_dir(tmp_path, name)


def test_a_backup_leaves_no_scratch_copy_and_a_killed_ones_is_removed_at_open(tmp_path: Path) -> None:
    """backup's scratch copy beside the database is gone when it returns; one a kill left
    (with SQLite's journal beside it) is removed by the next open, never taken for anything."""
    store = WalletStore.create(tmp_path, "w", "regtest")
    store.backup(tmp_path / "copy")
    directory = store.path.parent
    assert not [p.name for p in directory.iterdir() if ".backup" in p.name]
    store.close()
    for leftover in ("wallet.sqlite.backup", "wallet.sqlite.backup-journal"):
        (directory / leftover).write_bytes(b"half a copy")
    WalletStore.open(tmp_path, "w", "regtest").close()
    assert not [p.name for p in directory.iterdir() if ".backup" in p.name]


def test_reads_in_reading_are_one_snapshot_and_a_write_inside_is_refused(tmp_path: Path) -> None:
    """`reading` (since 12-07) makes its reads one read transaction, one WAL read lock instead
    of one per statement: a commit by another connection in between is not seen inside (it
    is after), a write inside cannot begin, and nested in a write or another `reading` it adds
    nothing."""
    store = WalletStore.create(tmp_path, "w", "regtest")
    try:
        other = sqlite3.connect(store.path, isolation_level=None)
        try:
            with store.reading():
                assert store.best_block == (None, -1)
                other.execute("UPDATE meta SET value = 7 WHERE key = 'best_height'")   # committed
                assert store.best_block == (None, -1)           # the same snapshot
                with store.reading():
                    assert store.best_block == (None, -1)
                with pytest.raises(sqlite3.OperationalError):   # no write begins inside
                    store.add_keys(False, 0, [])
            assert store.best_block == (None, 7)
            assert not store._conn.in_transaction
            with store._tx():
                with store.reading():
                    store._conn.execute("UPDATE meta SET value = 8 WHERE key = 'best_height'")
                assert store._conn.in_transaction
            assert store.best_block == (None, 8)
        finally:
            other.close()
    finally:
        store.close()
