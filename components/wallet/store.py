"""The wallet database: `<netdatadir>/wallets/<name>/wallet.sqlite`.

SQLite in WAL mode with synchronous=FULL; every logical update (a block's effects, a send,
a batch of new keys, encryption) is ONE SQL transaction (`BEGIN IMMEDIATE` ... `COMMIT`), so
a kill -9 at any moment leaves either the old or the new state: no key lost, no coin counted
twice. The tables:

    meta     key -> value: version, network, birth_height, best_hash, best_height,
             encrypted, next_index_0 / next_index_1 (keys derived per chain), scrub_pending,
             chain_recheck (a block was disconnected since the node's chain was last
             checked from genesis; absent in older files, where it counts as set once the
             file holds headers: their anchor was taken on trust; headers.py),
             checked_work ("HEIGHT HASH WORK", since 12-07: the work of the header chain
             the wallet checked, from genesis up to its best block, named by height and hash;
             kept in the transaction of each block connected or disconnected, so a check after
             a disconnect resumes at the fork; absent or naming another block: unknown, the
             next check starts from genesis; headers.py)
    secrets  name -> plaintext | encrypted (the HD seed; plaintext only until encrypt_wallet)
    keys     (internal, idx) -> pubkey, pkh, address, used: public data only
    txs      txid -> raw, block hash/height/position (NULL while unconfirmed), time,
             abandoned, conflicted
    coins    (txid, n) -> value, pkh, is_coinbase, spent_by (txid or NULL), locked
    labels   address -> label
    block_txs (block hash, txid) -> height, position: every block a wallet transaction was
             recorded in, kept after a reorg disconnects the block (txs forgets it), so that
             listsinceblock can report the transactions of blocks that left the active chain
             (`removed`); one row per wallet transaction and block, so it stays small
    headers  height -> hash, the 80 header bytes, trusted: the wallet's own header chain
             (schema version 2), one row per block of the wallet's branch, written in the
             same transaction as the block's effects (headers.py says what is checked);
             `trusted` marks the rows stored without their block (the anchor and what the
             difficulty rule needs from before it): taken from the node on trust before 12-06,
             since then from a header chain the wallet checked from genesis (headers.py), with
             that chain's headers above the anchor, which the blocks taken there must match;
             since 12-07 a disconnected block (reorganisation or rewind) keeps its row as one
             without its block, so the chain the wallet checked stays the bar the node's next
             chain must be or outweigh (before, it took its row and the checked rows above it)
    left_headers hash -> height, the 80 header bytes: each row replaced by another block's
             (since 12-07), in the transaction that replaces it; listsinceblock walks a branch
             that left the wallet's chain by these, not by the node's word (the newest
             MAX_LEFT_HEADERS kept; added to older files when they are opened)

Versions: 1 had no `headers`; `open` upgrades a version 1 file in one transaction (the table,
then version 2), and a version 2 file is refused by version 1 code ("unsupported version").

Keys: `next_index_<chain>` counts the keys derived on a chain; rows exist for exactly
0..next-1 (the keypool: derived ahead, handed out in order by `take_key`). Both change in the
same transaction, so there is never a gap.

Coins: a coin belongs to the wallet when its output pays a pkh in `keys`; it is unspent while
`spent_by` is NULL. A coin whose creating transaction is abandoned or conflicted does not
count; a coin spent by an abandoned transaction counts again (abandon clears spent_by).

Encryption (`encrypt_wallet`, and `change_passphrase` for the old ciphertext) never edits the
secret in place: an in-place update commits into the WAL while the database file (or a free
page, or an older WAL frame) still holds the plaintext until a later checkpoint, and a kill -9
in between leaves an encrypted wallet with its plaintext seed on disk. Instead `_rewrite`
copies the current rows, with the seed already encrypted, into a fresh file beside the
database (`wallet.sqlite.rewrite`, no journal, fsynced), checkpoints and closes the old
database (its WAL and SHM files are gone afterwards), then renames the fresh file over it and
fsyncs the directory. The rename is the commit point: before it the wallet on disk is the old
one (unencrypted, as the caller was never told otherwise) and the fresh file holds no
plaintext; after it the only database is the fresh one, which never held the plaintext. The old
file's blocks are zeroed through a descriptor kept open across the rename (best effort: the
file system may keep copies elsewhere). `open` removes a leftover fresh file (a kill before the
rename), and empties the WAL with a TRUNCATE checkpoint, so frames of an older state (from a
version that edited in place) do not stay on disk while the wallet is loaded.
`scrub_pending` (set by older versions between their commit and their scrub) makes `open`
rewrite the file.

Creation is atomic in the same way: `create` (and `create_from_dump`) builds the complete
database in `wallet.sqlite.new` and renames it into place, so a kill during `createwallet`
never leaves a `wallet.sqlite` without tables, which would block the name for good.

Files: directories 0700, the database 0600 (SQLite gives -wal and -shm the database's mode).

One user at a time: `create` and `open` take an exclusive flock on `<wallet dir>/.lock`
(created 0600 inside the wallet's own directory, so a sandboxed wallet process may take it)
and hold it until `close`. A second opener, in another process or in the same one (flock
locks belong to the open file description), gets `WalletInUse`. The kernel drops the lock
when its holder dies, so a kill -9 leaves no stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleancoin.components.common.address import encode_address
from cleancoin.components.common.chainparams import ChainParams, params_for
from cleancoin.components.common.diskfail import WriteFailure, as_write_failure, write_transaction
from cleancoin.components.common.hashes import hash160
from cleancoin.components.common.sqlite_schema import ForeignSchema, Schema, harden
from cleancoin.components.common.pow import block_proof
from cleancoin.components.common.private_files import UnsafeFileError, new_file, open_own_input, write_new_file
from cleancoin.components.common.primitives import OutPoint, Transaction

from .locked_memory import scrub
from .crypto import (
    DEFAULT_SCRYPT_N, SEED_PURPOSE, EncryptedBlob, SecretBytes, WrongPassphrase, decrypt, encrypt,
)

__all__ = [
    "DB_FILENAME", "DUMP_MAGIC", "KeyRecord", "LOCK_FILENAME", "SCHEMA_VERSION", "WalletCoin",
    "WalletError", "WalletInUse", "WalletStore", "WalletTx", "create_from_dump", "dump_wallet", "wallet_dir",
    "RESERVED_NAMES", "SETTINGS_FILENAME", "SETTINGS_TMP_FILENAME", "WALLET_LOG_FILENAME", "valid_wallet_name",
]

SCHEMA_VERSION: int = 2
#: Versions `open` upgrades to SCHEMA_VERSION (`_MIGRATIONS`).
DB_FILENAME: str = "wallet.sqlite"
#: The fresh copy `_rewrite` builds beside the database before renaming it over the old one.
REWRITE_SUFFIX: str = ".rewrite"
#: A new wallet's database, built complete beside its final name and renamed into place.
NEW_SUFFIX: str = ".new"
#: backupwallet's copy, made beside the database and copied to the destination from there.
BACKUP_SUFFIX: str = ".backup"
#: Zeroes written at a time over the replaced database file.
_ZERO_CHUNK: int = 1 << 16
#: The per-wallet lock file, inside the wallet's directory (see the module docstring).
LOCK_FILENAME: str = ".lock"
#: WalletStore's cached best_hash before it is read.
_UNREAD = object()
DUMP_MAGIC: str = "CLEANCOIN_WALLET_DUMP"
DUMP_FORMAT: int = 1
#: A wallet's name is its directory's name in wallets/: checked with fullmatch (a `$` would
#: let a trailing newline through, and with it a second wallet that prints as the first).
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: The wallets to load at start-up (`load_on_startup`), as bitcoind's settings.json `wallet`
#: list, but in `<netdatadir>/wallets/`: the one directory a sandboxed wallet process may write
#: (and one the node of CleanCoin-node cannot even see). See WalletManager.
SETTINGS_FILENAME: str = "settings.json"
#: The settings file's next version, written beside it and renamed over it.
SETTINGS_TMP_FILENAME: str = SETTINGS_FILENAME + ".tmp"
#: The log of CleanCoin-node's wallet process (wallets/ is the one place it may write).
WALLET_LOG_FILENAME: str = "debug.log"
#: Files of wallets/ that are no wallet's. bitcoind keeps its settings.json beside the wallets
#: directory, not in it, so it needs no such rule; here a wallet of one of these names was a
#: directory in that file's place (since 12-07 refused): `createwallet settings.json` by any
#: RPC user left the start-up list unwritable for good (every later load_on_startup only a
#: warning, no wallet loaded at the next start), and a `debug.log` wallet made by CleanCoind
#: kept a later CleanCoin-node's wallet process from opening its log, so from starting.
RESERVED_NAMES: frozenset[str] = frozenset({SETTINGS_FILENAME, SETTINGS_TMP_FILENAME, WALLET_LOG_FILENAME})

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE secrets (name TEXT PRIMARY KEY, plaintext BLOB, encrypted BLOB);
CREATE TABLE keys (
    internal INTEGER NOT NULL, idx INTEGER NOT NULL, pubkey BLOB NOT NULL,
    pkh BLOB NOT NULL UNIQUE, address TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal, idx));
CREATE TABLE txs (
    txid BLOB PRIMARY KEY, raw BLOB NOT NULL, block_hash BLOB, block_height INTEGER,
    block_pos INTEGER, time INTEGER NOT NULL, abandoned INTEGER NOT NULL DEFAULT 0,
    conflicted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX txs_height ON txs (block_height);
CREATE TABLE coins (
    txid BLOB NOT NULL REFERENCES txs (txid), n INTEGER NOT NULL, value INTEGER NOT NULL,
    pkh BLOB NOT NULL, is_coinbase INTEGER NOT NULL, spent_by BLOB REFERENCES txs (txid),
    locked INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (txid, n));
CREATE INDEX coins_spent_by ON coins (spent_by);
CREATE TABLE labels (address TEXT PRIMARY KEY, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS block_txs (
    block_hash BLOB NOT NULL, txid BLOB NOT NULL, height INTEGER NOT NULL,
    pos INTEGER NOT NULL, PRIMARY KEY (block_hash, txid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS headers (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL, header BLOB NOT NULL,
    trusted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS left_headers (
    hash BLOB PRIMARY KEY, height INTEGER NOT NULL, header BLOB NOT NULL) WITHOUT ROWID;
"""
#: Added after version 1 wallets existed: created on open when missing (same schema version).
_BLOCK_TXS = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS block_txs"):
                     _SCHEMA.index("CREATE TABLE IF NOT EXISTS headers")].rstrip().rstrip(";")
_HEADERS = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS headers"):
                   _SCHEMA.index("CREATE TABLE IF NOT EXISTS left_headers")].rstrip().rstrip(";")
_LEFT_HEADERS = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS left_headers"):].rstrip().rstrip(";")
#: The most `left_headers` rows kept (the lowest heights go first): 116 bytes a row, 1.2 MB.
MAX_LEFT_HEADERS = 10_000
#: Schema migrations: version -> the statements that turn a file of that version into the
#: next one, run in one transaction with the version bump.
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: (_HEADERS,)}
_TABLES = ("meta", "secrets", "keys", "txs", "coins", "labels", "block_txs", "headers", "left_headers")


@functools.cache
def _ours() -> Schema:
    """The schema objects a wallet file may hold (components/common/sqlite_schema.py)."""
    return Schema.of(_SCHEMA)


def _owned_secret(plain: bytes) -> SecretBytes:
    """The seed in its locked buffer, and the fresh `bytes` it came in (a database row, the
    decryption's output: objects nothing else holds) zeroed: freed as they were, a copy of the
    seed stayed in the heap until its block was reused, and a scan of the wallet process's
    memory found it there now and then (test_wallet_memory)."""
    try:
        return SecretBytes(plain)
    finally:
        scrub(plain)


class WalletError(Exception):
    """A wallet operation that cannot be done (exists already, not found, wrong network,
    locked, not encrypted ...). Messages never contain secrets."""


class WalletWriteFailure(WriteFailure, WalletError):
    """A wallet write the disk refused (full, failing): nothing of it was written, the wallet
    is as before the call, and the caller gets RPC_WALLET_ERROR naming the cause and the
    file. Not fatal to anyone: the node and the other wallets go on."""

    rpc_code = -4                # RPC_WALLET_ERROR

    @property
    def rpc_message(self) -> str:
        return f"Error: wallet write failed, {self}; nothing was changed"


class WalletInUse(WalletError):
    """The wallet is open elsewhere: another process (a node, a wallet process, the offline
    tool) or another loader of this process holds its lock."""

    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(f"Error loading wallet {name}. Unable to obtain an exclusive lock on "
                         f"the wallet directory {directory}: Wallet is already in use by another "
                         "process (is it loaded by another instance of CleanCoin?)")


def _lock_wallet(d: Path, name: str) -> int:
    """Take the wallet's exclusive lock (non-blocking); the descriptor that holds it."""
    fd = os.open(d / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise WalletInUse(name, d) from None
    return fd


def _unlock_wallet(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_backup_scratch(path: Path) -> None:
    """Remove backup's scratch copy beside `path` (and SQLite's files beside it)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + BACKUP_SUFFIX + suffix)


def _remove_scratch(path: Path) -> None:
    """Remove what a kill before one of the renames (create, _rewrite) left beside `path`."""
    for suffix in (NEW_SUFFIX, REWRITE_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)
    _remove_backup_scratch(path)


def _write_new_database(path: Path, fill: Callable[[sqlite3.Connection], None]) -> None:
    """Create the database file `path` (0600, exclusively), let `fill` write it (it runs its
    own BEGIN .. COMMIT), check it and fsync it. No journal: the file is scratch until the
    caller renames it into place, and a journal would be one more file beside it."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(f"file:{path}", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        fill(conn)
        if conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
            raise WalletError("the new wallet database is not sound")
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _insert_rows(c: sqlite3.Connection, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Insert dump rows (table, {column: value}), parents first (coins reference txs)."""
    for table in _TABLES:
        for t, row in rows:
            if t == table:
                cols = list(row)
                if not all(re.fullmatch(r"[a-z_]+", col) for col in cols):
                    raise WalletError("Malformed column name in dump file")
                c.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                          f"({', '.join('?' * len(cols))})", [row[k] for k in cols])


def _keep_left(c: sqlite3.Connection, replaced: Sequence[tuple[int, bytes]] = (), *,
               above: int | None = None, only_untrusted: bool = False) -> None:
    """Copy into `left_headers` the header rows about to go, in the caller's transaction: those
    at the heights of `replaced` (height, new hash) holding another block, or (`above`) all
    above that height (`only_untrusted`: those with their block). listsinceblock walks down a
    branch that left the wallet's chain by these (the wallet's own headers, each naming its
    parent by hash), not by the node's word. The lowest heights go beyond MAX_LEFT_HEADERS."""
    before = c.total_changes
    if above is not None:
        c.execute("INSERT OR IGNORE INTO left_headers SELECT hash, height, header FROM headers "
                  "WHERE height > ?" + (" AND trusted = 0" if only_untrusted else ""), (above,))
    for height, new_hash in replaced:
        c.execute("INSERT OR IGNORE INTO left_headers SELECT hash, height, header FROM headers "
                  "WHERE height = ? AND hash != ?", (height, new_hash))
    if c.total_changes != before:
        c.execute("DELETE FROM left_headers WHERE height < (SELECT height FROM left_headers "
                  "ORDER BY height DESC LIMIT 1 OFFSET ?)", (MAX_LEFT_HEADERS - 1,))


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zero_file(fd: int) -> None:
    """Overwrite an (unlinked) file's content with zeros and sync, so its old blocks do not
    keep a secret on a file system that rewrites in place."""
    size = os.fstat(fd).st_size
    zeros = bytes(_ZERO_CHUNK)
    offset = 0
    while offset < size:
        offset += os.pwrite(fd, zeros[:min(_ZERO_CHUNK, size - offset)], offset)
    os.fsync(fd)


@dataclass(frozen=True)
class KeyRecord:
    """Public data of one derived key."""

    internal: bool
    index: int
    pubkey: bytes
    pkh: bytes
    address: str
    used: bool


@dataclass(frozen=True)
class WalletCoin:
    """An output paying the wallet, with its confirmation state (height None: unconfirmed)."""

    outpoint: OutPoint
    value: int
    pkh: bytes
    is_coinbase: bool
    height: int | None
    spent_by: bytes | None
    locked: bool


@dataclass(frozen=True)
class WalletTx:
    """A transaction the wallet keeps (it pays us or spends our coins)."""

    tx: Transaction
    block_hash: bytes | None
    block_height: int | None
    block_pos: int | None
    time: int
    abandoned: bool
    conflicted: bool


def valid_wallet_name(name: str) -> bool:
    """Whether `name` may name a wallet: letters, digits, '_', '-', '.' (not first), at most
    64 characters, and none of RESERVED_NAMES in any case (a datadir on a file system that
    ignores case, vfat or a CIFS share, has one file for `Settings.JSON` and `settings.json`)."""
    return _NAME_RE.fullmatch(name) is not None and name.lower() not in RESERVED_NAMES


def wallet_dir(netdatadir: str | os.PathLike[str], name: str) -> Path:
    """`<netdatadir>/wallets/<name>`; WalletError for names that could escape that folder or
    take the place of one of its other files (RESERVED_NAMES)."""
    if not valid_wallet_name(name):
        if name.lower() in RESERVED_NAMES:
            raise WalletError(f"Invalid wallet name {name!r}: the name of a file of the wallets directory "
                              f"({', '.join(sorted(RESERVED_NAMES))})")
        raise WalletError(f"Invalid wallet name {name!r}: use letters, digits, '_', '-', '.' "
                          "(not first), at most 64 characters")
    return Path(netdatadir) / "wallets" / name


def _makedirs_private(path: Path) -> None:
    """Create `path` and missing parents 0700 (chmod too: makedirs' mode obeys the umask)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        os.chmod(d, 0o700)


def _header_proof(header: bytes) -> int:
    """The work of an 80-byte header (its bits at bytes 72..76)."""
    return block_proof(int.from_bytes(header[72:76], "little"))


class WalletStore:
    """One open wallet database. Thread-safe (one lock around the single connection).

    Use `create` or `open`; `close` when done (also a context manager).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, params: ChainParams,
                 lock_fd: int | None = None) -> None:
        self.path = path
        self.params = params
        self._conn = conn
        self._lock = threading.RLock()
        self._backup_lock = threading.Lock()    # one backup at a time uses the scratch copy
        self._lock_fd = lock_fd         # the wallet directory's flock (module docstring)
        self._closed = False
        # best_hash between write transactions (`best_hash`); _UNREAD once one may have moved it.
        self._best_hash: object = _UNREAD
        self._writing = 0                   # write transactions open (`_tx`)

    # ------------------------------------------------------------------------ open/create

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in _tx), never opened
        # implicitly by the sqlite3 module behind our back.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Before any statement reads or writes a table: the confined wallet process wrote
        # this file, and CleanCoind, CleanCoin-qt and the offline tool open it unconfined
        # (components/common/sqlite_schema.py).
        try:
            harden(conn)
            _ours().check(conn, str(path))
        except ForeignSchema as exc:
            conn.close()
            if not exc.recognised:
                # Another program's database, not a changed wallet: the caller's "not a
                # wallet database" (bitcoind's FAILED_BAD_FORMAT, RPC -18).
                raise sqlite3.DatabaseError(f"{path}: none of a wallet's tables") from None
            raise WalletError(str(exc)) from None
        except BaseException:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Freed cells are overwritten with zeros: what a user removes (a label, an abandoned
        # transaction) does not linger in a free page. Secrets never rely on it (_rewrite).
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    @classmethod
    def create(cls, netdatadir: str | os.PathLike[str], name: str, network: str, *,
               seed: bytes | None = None, birth_height: int = 0, seed_blob: bytes | None = None,
               rows: Sequence[tuple[str, dict[str, Any]]] | None = None) -> WalletStore:
        """Create a new wallet (WalletError if one exists). `seed` defaults to 32 random bytes;
        `seed_blob` (createwallet with a passphrase) is the seed already encrypted, so the
        plaintext never reaches the disk; `rows` (create_from_dump) replaces every default row.

        The database is built complete in `wallet.sqlite.new` and renamed into place, so a
        kill during creation never leaves a `wallet.sqlite` without its tables: the name stays
        free and the next create (or open) removes the leftover."""
        params = params_for(network)
        d = wallet_dir(netdatadir, name)
        _makedirs_private(d)
        path = d / DB_FILENAME
        try:
            lock_fd = _lock_wallet(d, name)
        except WalletInUse:
            if path.exists():
                raise WalletError(f"Wallet {name!r} already exists") from None
            raise
        if path.exists():
            _unlock_wallet(lock_fd)
            raise WalletError(f"Wallet {name!r} already exists")

        def fill(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            if rows is not None:
                _insert_rows(c, rows)
            else:
                meta = {
                    "version": SCHEMA_VERSION, "network": network, "birth_height": birth_height,
                    "best_hash": None, "best_height": -1, "encrypted": int(seed_blob is not None),
                    "next_index_0": 0, "next_index_1": 0, "scrub_pending": 0, "chain_recheck": 0,
                }
                c.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                if seed_blob is not None:
                    c.execute("INSERT INTO secrets VALUES ('seed', NULL, ?)", (seed_blob,))
                else:
                    c.execute("INSERT INTO secrets VALUES ('seed', ?, NULL)",
                              (seed if seed is not None else os.urandom(32),))
            c.execute("COMMIT")

        new = Path(str(path) + NEW_SUFFIX)
        renamed = False
        try:
            _remove_scratch(path)
            _write_new_database(new, fill)
            os.rename(new, path)        # the wallet exists from here on, complete
            renamed = True
            _fsync_dir(d)
            return cls(path, cls._connect(path), params, lock_fd)
        except BaseException as exc:
            _remove_scratch(path)
            if renamed:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(str(path) + suffix)
            _unlock_wallet(lock_fd)
            failure = as_write_failure(exc, WalletWriteFailure, str(path))
            if failure is not None:     # the disk: no wallet made, nothing left behind
                raise failure from exc
            raise

    @classmethod
    def open(cls, netdatadir: str | os.PathLike[str], name: str, network: str) -> WalletStore:
        """Open an existing wallet of `network`; WalletError when missing or of another one."""
        path = wallet_dir(netdatadir, name) / DB_FILENAME
        if not path.is_file():
            raise WalletError(f"Wallet {name!r} not found")
        lock_fd = _lock_wallet(path.parent, name)
        try:
            # Scratch files of a kill before a rename (create, _rewrite) were never committed.
            _remove_scratch(path)
            conn = cls._connect(path)
        except BaseException:
            _unlock_wallet(lock_fd)
            raise
        store = cls(path, conn, params_for(network), lock_fd)
        try:
            version, net = store._meta("version"), store._meta("network")
            if version != SCHEMA_VERSION and version not in _MIGRATIONS:
                raise WalletError(f"Wallet {name!r} has unsupported version {version}")
            if net != network:
                raise WalletError(f"Wallet {name!r} is for network {net!r}, not {network!r}")
            with store._tx() as c:
                c.execute(_BLOCK_TXS)
            store._migrate()
            with store._tx() as c:
                c.execute(_LEFT_HEADERS)
            if store._meta("scrub_pending"):
                store._rewrite()    # an older version was killed between its commit and scrub
            else:
                store._checkpoint()
        except BaseException:
            conn.close()
            _unlock_wallet(lock_fd)
            raise
        return store

    def _migrate(self) -> None:
        """Upgrade an older file to SCHEMA_VERSION, one version per transaction, each with
        its version bump: a kill in between leaves a file of one version or the next."""
        while (version := int(self._meta("version"))) != SCHEMA_VERSION:
            with self._tx() as c:
                for statement in _MIGRATIONS[version]:
                    c.execute(statement)
                self._set_meta(c, "version", version + 1)

    def close(self) -> None:
        """Checkpoint and close (the WAL is folded back into the database file), then release
        the wallet's lock. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            _unlock_wallet(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> WalletStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all or nothing, also under kill -9. The disk's refusal
        (full, I/O error) is WalletWriteFailure, after the rollback."""
        with self._lock:
            self._writing += 1                  # best_hash is read from the transaction itself
            try:
                with write_transaction(self._conn, str(self.path), WalletWriteFailure):
                    yield self._conn
            finally:
                self._writing -= 1
                self._best_hash = _UNREAD       # committed or rolled back: read again

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """The reads inside as one read transaction: one snapshot of the wallet, and one read
        lock on the WAL index instead of one per statement (in autocommit every statement is
        a read transaction of its own: two `fcntl` calls each, 22 for a getwalletinfo; issue
        #16). Holds the store's lock throughout; inside, no write (`_tx` cannot begin in a
        transaction) and no `await` (another coroutine of the thread could not write either).
        Inside a write transaction or another `reading`, it adds nothing."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def _meta(self, key: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise WalletError(f"wallet database lacks meta {key!r}")
        return row[0]

    @staticmethod
    def _set_meta(c: sqlite3.Connection, key: str, value: Any) -> None:
        c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------------ meta

    @property
    def network(self) -> str:
        """The network the wallet belongs to."""
        return str(self._meta("network"))

    @property
    def birth_height(self) -> int:
        """Height before which no transaction can concern the wallet (rescans start here)."""
        return int(self._meta("birth_height"))

    @property
    def best_hash(self) -> bytes | None:
        """The hash of the last block processed (best_block's first half). Kept between
        write transactions: the flock makes this store the file's only writer, and every
        write goes through `_tx`, which forgets it (within one, it is read from the
        transaction). A wallet process checks it on every RPC call its node forwards (is the
        wallet at the node's tip?); the query was an eighth of the process's busy time in a
        getwalletinfo (py-spy, issue #16)."""
        with self._lock:
            if self._writing:
                return self._meta("best_hash")
            if self._best_hash is _UNREAD:
                self._best_hash = self._meta("best_hash")
            return self._best_hash  # type: ignore[return-value]

    @property
    def best_block(self) -> tuple[bytes | None, int]:
        """(hash, height) of the last block processed; (None, -1) before the first."""
        with self._lock:
            return self._meta("best_hash"), int(self._meta("best_height"))

    @property
    def encrypted(self) -> bool:
        """True once encrypt_wallet has run."""
        return bool(self._meta("encrypted"))

    def next_index(self, internal: bool) -> int:
        """Number of keys derived on the chain (the next index to derive)."""
        return int(self._meta(f"next_index_{int(internal)}"))

    # ------------------------------------------------------------------------ secrets

    def seed(self) -> SecretBytes:
        """The plaintext seed of an unencrypted wallet; WalletError when encrypted."""
        with self._lock:
            plain, _ = self._conn.execute(
                "SELECT plaintext, encrypted FROM secrets WHERE name = 'seed'").fetchone()
        if plain is None:
            raise WalletError("Wallet is encrypted: unlock it with the passphrase")
        return _owned_secret(plain)

    def unlock(self, passphrase: str | bytes) -> SecretBytes:
        """The seed of an encrypted wallet; WrongPassphrase, or WalletError when unencrypted."""
        with self._lock:
            _, blob = self._conn.execute(
                "SELECT plaintext, encrypted FROM secrets WHERE name = 'seed'").fetchone()
        if blob is None:
            raise WalletError("Error: running with an unencrypted wallet, but walletpassphrase "
                              "was called.")
        return _owned_secret(decrypt(EncryptedBlob.from_bytes(blob), passphrase, purpose=SEED_PURPOSE))

    def encrypt_wallet(self, passphrase: str | bytes, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        """Encrypt the seed. The database is rewritten into a fresh file (see the module
        docstring), so at no moment is an encrypted wallet's plaintext seed in any file."""
        with self._lock:
            plain, _ = self._conn.execute(
                "SELECT plaintext, encrypted FROM secrets WHERE name = 'seed'").fetchone()
            if plain is None or self._meta("encrypted"):
                raise WalletError("Error: running with an encrypted wallet, but encryptwallet "
                                  "was called.")
            with _owned_secret(plain) as secret:
                blob = encrypt(secret, passphrase, purpose=SEED_PURPOSE, n=scrypt_n)
            del plain
            self._rewrite(seed_blob=blob.to_bytes())

    def change_passphrase(self, old: str | bytes, new: str | bytes, *,
                          scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        """Re-encrypt the seed under `new` (fresh salt and nonce); WrongPassphrase for `old`.
        Rewritten as encrypt_wallet is: the old passphrase's blob is in no file afterwards, and
        a kill leaves exactly one of the two passphrases working."""
        with self._lock:
            with self.unlock(old) as secret:
                blob = encrypt(secret, new, purpose=SEED_PURPOSE, n=scrypt_n)
            self._rewrite(seed_blob=blob.to_bytes())

    def _checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it to zero bytes."""
        with self._lock:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise WalletError("could not checkpoint the wallet database (busy)")

    def _rewrite(self, *, seed_blob: bytes | None = None) -> None:
        """Replace the database by a fresh file holding only the current rows (the seed as
        `seed_blob`, encrypted, when given): the commit protocol of the module docstring."""
        with self._lock:
            fresh_path = Path(str(self.path) + REWRITE_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                fresh_path.unlink()
            try:
                self._build_fresh(fresh_path, seed_blob)
                self._checkpoint()
            except BaseException as exc:
                with contextlib.suppress(FileNotFoundError):
                    fresh_path.unlink()
                # Before the swap nothing of the wallet changed: a full disk is the wallet's
                # clear error, and the old file (old passphrase, or none) still holds.
                failure = as_write_failure(exc, WalletWriteFailure, str(fresh_path))
                if failure is not None:
                    raise failure from exc
                raise
            # From here on the old connection is closed; whatever happens, reopen one.
            self._conn.close()
            try:
                self._swap_in(fresh_path)
            finally:
                self._conn = self._connect(self.path)
                self._best_hash = _UNREAD

    def _build_fresh(self, fresh_path: Path, seed_blob: bytes | None) -> None:
        """Copy every row into a new file at `fresh_path` (created 0600), replacing the seed
        row by (NULL, seed_blob) when a blob is given; fsynced. The file never holds a
        plaintext seed that the caller is removing."""

        def fill(fresh: sqlite3.Connection) -> None:
            fresh.execute("PRAGMA foreign_keys=OFF")     # rows arrive table by table
            harden(fresh)
            fresh.execute("ATTACH DATABASE ? AS old", (f"file:{self.path}?mode=ro",))
            try:
                _ours().check(fresh, str(self.path), "old")
            except ForeignSchema as exc:
                raise WalletError(str(exc)) from None
            fresh.execute("BEGIN")
            # Tables and their indexes only, of the known tables: a restored file could carry
            # triggers or views, which have no business in a wallet.
            schema = fresh.execute("SELECT type, name, sql FROM old.sqlite_master WHERE sql IS "
                                   "NOT NULL AND type IN ('table', 'index') "
                                   "ORDER BY type = 'index', rowid").fetchall()
            unknown = {name for kind, name, _ in schema if kind == "table"} - set(_TABLES)
            if unknown:
                raise WalletError(f"wallet database has unknown tables: {sorted(unknown)}")
            for _, _, sql in schema:
                fresh.execute(sql)
            for kind, table, _ in schema:
                if kind != "table":
                    continue
                if table == "secrets":
                    rows = fresh.execute("SELECT name, plaintext, encrypted FROM old.secrets"
                                         ).fetchall()
                    if {r[0] for r in rows} != {"seed"}:
                        raise WalletError("wallet database holds unknown secrets")
                    plain, enc = rows[0][1:]
                    if seed_blob is not None:
                        plain, enc = None, seed_blob
                    fresh.execute("INSERT INTO secrets VALUES ('seed', ?, ?)", (plain, enc))
                    del plain
                else:
                    fresh.execute(f'INSERT INTO main."{table}" SELECT * FROM old."{table}"')
            if seed_blob is not None:
                fresh.execute("INSERT OR REPLACE INTO meta VALUES ('encrypted', 1)")
            fresh.execute("INSERT OR REPLACE INTO meta VALUES ('scrub_pending', 0)")
            fresh.execute("COMMIT")
            fresh.execute("DETACH DATABASE old")

        _write_new_database(fresh_path, fill)

    def _swap_in(self, fresh_path: Path) -> None:
        """With the old connection closed: make sure no WAL or SHM of the old database is
        left (a stale WAL would be replayed onto the new file), rename the fresh file over
        the database (the commit point), fsync the directory, then zero the old file."""
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            with contextlib.suppress(FileNotFoundError):
                if suffix == "-wal" and side.stat().st_size:
                    # The checkpoint above emptied it; frames now mean a write we did not make.
                    raise WalletError("the wallet's WAL is not empty after a checkpoint")
                side.unlink()
        old_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.rename(fresh_path, self.path)
            _fsync_dir(self.path.parent)
            # Past the commit point: a failure to zero (a full disk on a copy-on-write file
            # system) must not report the committed change as failed.
            with contextlib.suppress(OSError):
                _zero_file(old_fd)
        finally:
            os.close(old_fd)

    # ------------------------------------------------------------------------ keys

    def add_keys(self, internal: bool, first_index: int, pubkeys: Sequence[bytes]) -> list[KeyRecord]:
        """Record derived keys first_index.. on a chain; first_index must be next_index (no gaps).

        One transaction: the rows and the new next_index commit together.
        """
        out = []
        with self._tx() as c:
            nxt = int(self._meta(f"next_index_{int(internal)}"))
            if first_index != nxt:
                raise WalletError(f"keys must be added at index {nxt}, not {first_index}")
            for i, pub in enumerate(pubkeys):
                if len(pub) != 33 or pub[0] not in (2, 3):
                    raise ValueError("public key must be 33 bytes, compressed")
                pkh = hash160(pub)
                rec = KeyRecord(internal, first_index + i, bytes(pub), pkh,
                                encode_address(pkh, self.params), False)
                c.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, 0)",
                          (int(internal), rec.index, rec.pubkey, rec.pkh, rec.address))
                out.append(rec)
            self._set_meta(c, f"next_index_{int(internal)}", first_index + len(pubkeys))
        return out

    @staticmethod
    def _key(row: Sequence[Any]) -> KeyRecord:
        return KeyRecord(bool(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))

    def take_key(self, internal: bool) -> KeyRecord | None:
        """Hand out the lowest unused key of a chain (marked used); None when the pool is empty."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM keys WHERE internal = ? AND used = 0 ORDER BY idx "
                            "LIMIT 1", (int(internal),)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE keys SET used = 1 WHERE internal = ? AND idx = ?", (row[0], row[1]))
        return self._key(row[:5] + (1,))

    def unused_keys(self, internal: bool) -> int:
        """Keys derived but not handed out yet (the keypool size)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM keys WHERE internal = ? AND "
                                          "used = 0", (int(internal),)).fetchone()[0])

    def key_by_pkh(self, pkh: bytes) -> KeyRecord | None:
        """The key paying to `pkh`, if it is ours."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM keys WHERE pkh = ?", (pkh,)).fetchone()
        return None if row is None else self._key(row)

    def keys(self, internal: bool | None = None) -> list[KeyRecord]:
        """All derived keys (of one chain when `internal` is given), by chain and index."""
        q, args = "SELECT * FROM keys", ()
        if internal is not None:
            q, args = q + " WHERE internal = ?", (int(internal),)
        with self._lock:
            return [self._key(r) for r in self._conn.execute(q + " ORDER BY internal, idx", args)]

    # ------------------------------------------------------------------------ labels

    def set_label(self, address: str, label: str) -> None:
        """Set (or with "" remove) the label of an address."""
        with self._tx() as c:
            if label:
                c.execute("INSERT OR REPLACE INTO labels VALUES (?, ?)", (address, label))
            else:
                c.execute("DELETE FROM labels WHERE address = ?", (address,))

    def label(self, address: str) -> str:
        """The label of an address ("" when none)."""
        with self._lock:
            row = self._conn.execute("SELECT label FROM labels WHERE address = ?",
                                     (address,)).fetchone()
        return row[0] if row else ""

    # ------------------------------------------------------------------------ transactions

    def _add_tx(self, c: sqlite3.Connection, tx: Transaction, time: int,
                block: tuple[bytes, int, int] | None) -> bool:
        """Record `tx` if it concerns the wallet (pays us or spends our coins); True if so.

        A transaction seen before is updated (its block fields); its coins are inserted once.
        """
        txid = tx.txid
        known = c.execute("SELECT 1 FROM txs WHERE txid = ?", (txid,)).fetchone() is not None
        ours_out = [(n, o) for n, o in enumerate(tx.vout)
                    if c.execute("SELECT 1 FROM keys WHERE pkh = ?", (o.pkh,)).fetchone()]
        spends = [] if tx.is_coinbase else [
            i.prevout for i in tx.vin
            if c.execute("SELECT 1 FROM coins WHERE txid = ? AND n = ?",
                         (i.prevout.txid, i.prevout.n)).fetchone()]
        if not (known or ours_out or spends):
            return False
        bh, height, pos = block if block is not None else (None, None, None)
        if block is not None:
            c.execute("INSERT OR REPLACE INTO block_txs VALUES (?, ?, ?, ?)", (bh, txid, height, pos))
        if known:
            if block is not None:
                # Confirmed: whatever happened before (abandoned, conflicted), it is in a block.
                c.execute("UPDATE txs SET block_hash = ?, block_height = ?, block_pos = ?, "
                          "abandoned = 0, conflicted = 0 WHERE txid = ?", (bh, height, pos, txid))
        else:
            c.execute("INSERT INTO txs VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
                      (txid, tx.to_bytes(), bh, height, pos, time))
        for op in spends:
            # A coin already spent by another (unconfirmed) transaction: this one wins when it
            # is in a block, and the other becomes conflicted. Unconfirmed double spends keep
            # the first spender (as the mempool does).
            row = c.execute("SELECT spent_by FROM coins WHERE txid = ? AND n = ?",
                            (op.txid, op.n)).fetchone()
            if row[0] is not None and row[0] != txid:
                if block is None:
                    continue
                c.execute("UPDATE txs SET conflicted = 1 WHERE txid = ?", (row[0],))
                self._release_spends(c, row[0])
            c.execute("UPDATE coins SET spent_by = ? WHERE txid = ? AND n = ?",
                      (txid, op.txid, op.n))
        for n, o in ours_out:
            c.execute("INSERT OR IGNORE INTO coins VALUES (?, ?, ?, ?, ?, NULL, 0)",
                      (txid, n, o.value, o.pkh, int(tx.is_coinbase)))
            # Lookahead: a payment to key i means keys 0..i of that chain were handed out
            # (by us or by the wallet this one was restored from); mark them used so the
            # unused count is the gap beyond the highest used index (bitcoind's
            # MarkUnusedAddresses), which Wallet tops up, rescanning the block.
            internal, idx = c.execute("SELECT internal, idx FROM keys WHERE pkh = ?",
                                      (o.pkh,)).fetchone()
            c.execute("UPDATE keys SET used = 1 WHERE internal = ? AND idx <= ? AND used = 0",
                      (internal, idx))
        return True

    @staticmethod
    def _release_spends(c: sqlite3.Connection, txid: bytes) -> None:
        c.execute("UPDATE coins SET spent_by = NULL WHERE spent_by = ?", (txid,))

    def add_transaction(self, tx: Transaction, time: int) -> bool:
        """Record an unconfirmed transaction (our send, or one seen in the mempool), with its
        spends and our outputs, in one transaction. True when it concerns the wallet."""
        with self._tx() as c:
            return self._add_tx(c, tx, time, None)

    def apply_block(self, block_hash: bytes, height: int, txs: Iterable[Transaction],
                    time: int, header: bytes | None = None) -> list[bytes]:
        """Process a connected block: record its transactions that concern us and move the
        best block to it, all in one transaction. Returns the txids recorded.

        `txs` may be the whole block or only the relevant ones; positions are the order given,
        so pass the whole block when block_pos matters. `header` (80 bytes, checked by the
        caller) joins the header chain in the same transaction.
        """
        if len(block_hash) != 32:
            raise ValueError("block hash must be 32 bytes")
        recorded = []
        with self._tx() as c:
            best = int(self._meta("best_height"))
            if best >= 0 and height != best + 1:
                raise WalletError(f"block at height {height} does not follow {best}")
            for pos, tx in enumerate(txs):
                if self._add_tx(c, tx, time, (block_hash, height, pos)):
                    recorded.append(tx.txid)
            if header is not None:
                _keep_left(c, [(height, block_hash)])
                c.execute("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, 0)", (height, block_hash, header))
            # The checked chain's work goes up by the block's if the block builds on the one
            # it names (its parent's hash in the header bytes); else it is unknown from here.
            work = self._checked_work(c)
            if work is not None and header is not None and work[0] == height - 1 and header[4:36] == work[1]:
                self._set_checked_work(c, height, block_hash, work[2] + _header_proof(header))
            else:
                c.execute("DELETE FROM meta WHERE key = 'checked_work'")
            self._set_meta(c, "best_hash", block_hash)
            self._set_meta(c, "best_height", height)
        return recorded

    def disconnect_block(self, block_hash: bytes, height: int, prev_hash: bytes | None) -> None:
        """Undo a block (reorg, rewind): its transactions become unconfirmed; its coinbases
        can never confirm again and turn conflicted (their coins stop counting). Its header
        row stays, as a row without its block (trusted): the chain the wallet checked stays
        the bar the node's next chain must be or outweigh (headers.py, `replaces_rows`), so
        neither a rewind (nothing weighed) nor a reorganisation cut short between two
        disconnects lowers it. The new best block is the parent the block's own header row
        names; `prev_hash` (the node's word) only for a block without one (a file from before
        the header chain). One transaction."""
        with self._tx() as c:
            own = c.execute("SELECT header FROM headers WHERE height = ? AND hash = ?",
                            (height, block_hash)).fetchone()
            if own is not None:
                # Before 12-07 the node's word: a compromised node named a parent of its own
                # making and the wallet's best block became a hash that is no block (wedged
                # for good, its file disagreeing with itself).
                prev_hash = bytes(own[0])[4:36] if height > 0 else None
            best_hash, best_height = self._meta("best_hash"), int(self._meta("best_height"))
            if best_hash != block_hash or best_height != height:
                raise WalletError("can only disconnect the last processed block")
            # By height first (the txs_height index): by hash alone it read every transaction
            # of the wallet for each block undone (3.3 ms a block at 30,000 transactions).
            for (txid, raw) in c.execute("SELECT txid, raw FROM txs WHERE block_height = ? AND block_hash = ?",
                                         (height, block_hash)).fetchall():
                c.execute("UPDATE txs SET block_hash = NULL, block_height = NULL, "
                          "block_pos = NULL WHERE txid = ?", (txid,))
                if Transaction.from_bytes(raw).is_coinbase:
                    c.execute("UPDATE txs SET conflicted = 1 WHERE txid = ?", (txid,))
            work = self._checked_work(c)
            c.execute("UPDATE headers SET trusted = 1 WHERE height = ? AND hash = ?", (height, block_hash))
            # A row with its block above the best block would be a bug's; none may stay.
            _keep_left(c, above=height - 1, only_untrusted=True)
            c.execute("DELETE FROM headers WHERE height >= ? AND trusted = 0", (height,))
            # The checked chain's work goes down by the block's, to its parent as its own
            # header names it.
            if work is not None and own is not None and work[:2] == (height, block_hash):
                self._set_checked_work(c, height - 1, prev_hash, work[2] - _header_proof(bytes(own[0])))
            else:
                c.execute("DELETE FROM meta WHERE key = 'checked_work'")
            # The next block comes only after the node's chain is checked from genesis again
            # (headers.py): the blocks after a fork need only their era's difficulty.
            self._set_meta(c, "chain_recheck", 1)
            self._set_meta(c, "best_hash", prev_hash)
            self._set_meta(c, "best_height", height - 1)

    def disconnect_to(self, fork: int, fork_hash: bytes) -> None:
        """Undo every block above `fork` at once (a reorganisation or rewind reaching blocks
        without a header row: a file from before the header chain): their transactions
        become unconfirmed, their coinbases conflicted, their rows (if any) rows without
        their block; the best block becomes `fork_hash` at `fork` (the caller's: its own row
        there, else the node's active chain's) and the node's chain is checked from genesis
        before the next block (`chain_recheck`). One transaction. Before 12-07 each such
        block's parent was the node's word, and a node that named made-up ones left the
        best block a hash that is no block: the wallet wedged for good."""
        if len(fork_hash) != 32 or fork < 0:
            raise ValueError("the fork must be a block")
        with self._tx() as c:
            if fork >= int(self._meta("best_height")):
                raise WalletError("can only disconnect down to a block below the best one")
            for (txid, raw) in c.execute("SELECT txid, raw FROM txs WHERE block_height > ?",
                                         (fork,)).fetchall():
                c.execute("UPDATE txs SET block_hash = NULL, block_height = NULL, "
                          "block_pos = NULL WHERE txid = ?", (txid,))
                if Transaction.from_bytes(raw).is_coinbase:
                    c.execute("UPDATE txs SET conflicted = 1 WHERE txid = ?", (txid,))
            c.execute("UPDATE headers SET trusted = 1 WHERE height > ?", (fork,))
            c.execute("DELETE FROM meta WHERE key = 'checked_work'")
            self._set_meta(c, "chain_recheck", 1)
            self._set_meta(c, "best_hash", fork_hash)
            self._set_meta(c, "best_height", fork)

    # ------------------------------------------------------------------------ headers

    def headers(self, low: int, high: int) -> dict[int, tuple[bytes, bytes, bool]]:
        """The header chain's rows at heights low..high: height -> (hash, header, trusted)."""
        with self._lock:
            rows = self._conn.execute("SELECT height, hash, header, trusted FROM headers WHERE "
                                      "height BETWEEN ? AND ?", (low, high)).fetchall()
        return {h: (bytes(hh), bytes(raw), bool(t)) for h, hh, raw, t in rows}

    def top_header(self) -> int:
        """The highest height with a header row (-1 when none)."""
        with self._lock:
            (top,) = self._conn.execute("SELECT MAX(height) FROM headers").fetchone()
        return -1 if top is None else int(top)

    def chain_height(self, block_hash: bytes, hint: int | None = None, search: bool = True) -> int | None:
        """The height of `block_hash` in the wallet's own chain (a header row at or below its
        best block), None when it is not there. `hint` (the node's word for the height) is
        tried first, so the usual case costs one row; then, if `search`, the rows are
        searched by hash (no index: a scan, 9 ms of CPU for 100,000 rows)."""
        with self._lock:
            best = int(self._meta("best_height"))
            if hint is not None and 0 <= hint <= best:
                row = self._conn.execute("SELECT hash FROM headers WHERE height = ?", (hint,)).fetchone()
                if row is not None and bytes(row[0]) == block_hash:
                    return hint
            if not search:
                return None
            row = self._conn.execute("SELECT height FROM headers WHERE hash = ? AND height <= ?",
                                     (block_hash, best)).fetchone()
        return None if row is None else int(row[0])

    def left_header(self, block_hash: bytes) -> tuple[int, bytes] | None:
        """(height, 80 header bytes) of a block whose row a reorganisation (or a chain that
        outweighed the rows) replaced: a block the wallet's own chain held once, None else."""
        with self._lock:
            row = self._conn.execute("SELECT height, header FROM left_headers WHERE hash = ?",
                                     (block_hash,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def header_count(self) -> int:
        """Rows in the header chain (0: nothing checked yet, the next block anchors it)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM headers").fetchone()[0])

    def linked_from(self, up_to: int | None = None) -> int | None:
        """The lowest height from which the rows run without a gap to the highest at or below
        `up_to` (default: the highest of all; None when there are none): below it the wallet
        knows at most the retarget period's first header, taken on trust. The wallet's own
        blocks pass `up_to` = its best block: rows above it (a checked chain stored from the
        tip down, cut short) may have a gap, which says nothing about the blocks below."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MAX(a.height) FROM headers AS a WHERE a.height <= ? AND NOT EXISTS "
                "(SELECT 1 FROM headers AS b WHERE b.height = a.height - 1)",
                (1 << 62 if up_to is None else up_to,)).fetchone()
        return None if row[0] is None else int(row[0])

    def add_headers(self, rows: Iterable[tuple[int, bytes, bytes, bool]], *, checked_chain: bool = False,
                    checked_work: tuple[int, bytes, int] | None = None, pending_chain: bool = False,
                    drop_above: int | None = None) -> None:
        """Record (height, hash, header, trusted) rows the caller checked (or takes on trust:
        `trusted`), replacing any at the same heights; one transaction. `checked_chain`: they
        come from the node's chain checked from genesis (headers.py), which clears
        `chain_recheck` in the same transaction and records `checked_work` (height, hash,
        work of that chain up to there: the wallet's best block, or the one below its first;
        None: unknown). `pending_chain`: rows of such a chain stored ahead of its anchor, which
        sets `chain_recheck` (a kill before the anchor's transaction: checked again).
        `drop_above`: the rows above that height go in the same transaction (a chain that
        outweighed them replaces them)."""
        rows = list(rows)
        with self._tx() as c:
            if drop_above is not None:
                _keep_left(c, above=drop_above)
                c.execute("DELETE FROM headers WHERE height > ?", (drop_above,))
            _keep_left(c, [(h, hh) for h, hh, _, _ in rows])
            c.executemany("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?)",
                          ((h, hh, raw, int(t)) for h, hh, raw, t in rows))
            if pending_chain:
                self._set_meta(c, "chain_recheck", 1)
            if checked_chain:
                self._set_meta(c, "chain_recheck", 0)
                if checked_work is None:
                    c.execute("DELETE FROM meta WHERE key = 'checked_work'")
                else:
                    self._set_checked_work(c, *checked_work)

    @property
    def checked_work(self) -> tuple[int, bytes, int] | None:
        """(height, hash, work): the work of the header chain the wallet checked, from
        genesis up to that block (meta `checked_work`; None when unknown)."""
        with self._lock:
            return self._checked_work(self._conn)

    @staticmethod
    def _checked_work(c: sqlite3.Connection) -> tuple[int, bytes, int] | None:
        row = c.execute("SELECT value FROM meta WHERE key = 'checked_work'").fetchone()
        try:
            height, block_hash, work = str(row[0]).split()
            return int(height), bytes.fromhex(block_hash), int(work, 16)
        except (TypeError, ValueError):     # absent, or not ours: unknown
            return None

    @classmethod
    def _set_checked_work(cls, c: sqlite3.Connection, height: int, block_hash: bytes, work: int) -> None:
        cls._set_meta(c, "checked_work", f"{height} {block_hash.hex()} {work:x}")

    @property
    def chain_recheck(self) -> bool:
        """A block was disconnected since the node's chain was last checked from genesis
        (meta `chain_recheck`). Absent (a file from before 12-06): yes when it holds headers,
        whose anchor was then taken from the node on trust; its next block comes only after
        one check (headers.py)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'chain_recheck'").fetchone()
            if row is None:
                return bool(self._conn.execute("SELECT 1 FROM headers LIMIT 1").fetchone())
        return bool(row[0])

    def rescan_block(self, block_hash: bytes, height: int, txs: Iterable[Transaction],
                     time: int) -> list[bytes]:
        """rescanblockchain: record a block's transactions that concern us (their confirmation
        too) without moving the best block, which catch-up owns. One transaction."""
        recorded = []
        with self._tx() as c:
            for pos, tx in enumerate(txs):
                if self._add_tx(c, tx, time, (block_hash, height, pos)):
                    recorded.append(tx.txid)
        return recorded

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """A consistent copy of the database at `dest`, created 0600; refuses to overwrite or
        follow anything there (FileExistsError), and ReplacedFile when the name no longer
        holds the copy afterwards (private_files.new_file).

        SQLite's online backup (a concurrent write cannot tear it) writes the copy into a
        scratch file beside the database, in the wallet's own private directory; from there
        it is copied into `dest` through the descriptor that created it, and the scratch file
        is removed (a kill leaves it for the next open to remove). Before 12-07 the backup API
        wrote `dest` itself, opening the name again after our O_EXCL create: another user who
        can write that directory renamed a file of theirs over the new name in between and
        SQLite wrote the wallet, its seed, into the attacker's file (a link there: into any
        file the node may write; a FIFO: a hang with the wallet's lock held). Not
        sqlite3_serialize: Python's copies the image twice in memory (+48 MB peak for a 24 MB
        wallet, against +4 MB this way)."""
        scratch = Path(str(self.path) + BACKUP_SUFFIX)
        with self._backup_lock, new_file(dest) as out:
            _remove_backup_scratch(self.path)
            os.close(os.open(scratch, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            try:
                target = sqlite3.connect(f"file:{scratch}", uri=True)
                try:
                    with self._lock:
                        self._conn.backup(target)
                    # A single self-contained file: no WAL beside the copy.
                    target.execute("PRAGMA journal_mode=DELETE")
                finally:
                    target.close()
                source = os.open(scratch, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    offset, size = 0, os.fstat(source).st_size
                    while offset < size:
                        sent = os.sendfile(out, source, offset, size - offset)
                        if sent == 0:
                            raise WalletError("the wallet's backup copy shrank while it was copied")
                        offset += sent
                finally:
                    os.close(source)
            finally:
                _remove_backup_scratch(self.path)

    def abandon_transaction(self, txid: bytes) -> None:
        """Mark an unconfirmed transaction abandoned: the coins it spent count again, its own
        outputs do not. (The wallet logic checks that the mempool no longer has it.)"""
        with self._tx() as c:
            row = c.execute("SELECT block_hash FROM txs WHERE txid = ?", (txid,)).fetchone()
            if row is None:
                raise WalletError("Invalid or non-wallet transaction id")
            if row[0] is not None:
                raise WalletError("Transaction not eligible for abandonment")
            c.execute("UPDATE txs SET abandoned = 1 WHERE txid = ?", (txid,))
            self._release_spends(c, txid)

    def lock_coin(self, outpoint: OutPoint, locked: bool = True) -> None:
        """lockunspent: a locked coin is never selected for spending (persistent here)."""
        with self._tx() as c:
            cur = c.execute("UPDATE coins SET locked = ? WHERE txid = ? AND n = ?",
                            (int(locked), outpoint.txid, outpoint.n))
            if cur.rowcount != 1:
                raise WalletError("Invalid parameter, unknown transaction output")

    def get_transaction(self, txid: bytes) -> WalletTx | None:
        """A wallet transaction by txid (internal byte order)."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM txs WHERE txid = ?", (txid,)).fetchone()
        return None if row is None else self._wtx(row)

    def block_txids(self, block_hash: bytes) -> list[bytes]:
        """Txids of the wallet transactions ever recorded in the block `block_hash`, by
        position, whether or not the block is still in the active chain (see block_txs)."""
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT txid FROM block_txs WHERE block_hash = ? ORDER BY pos", (block_hash,))]

    @staticmethod
    def _wtx(row: Sequence[Any]) -> WalletTx:
        return WalletTx(Transaction.from_bytes(row[1]), row[2], row[3], row[4], row[5],
                        bool(row[6]), bool(row[7]))

    def transactions(self) -> list[WalletTx]:
        """All wallet transactions, confirmed first by height and position, then unconfirmed."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM txs ORDER BY block_height IS NULL, block_height, block_pos, "
                "time").fetchall()
        return [self._wtx(r) for r in rows]

    def transaction_count(self) -> int:
        """len(transactions()), without reading and parsing every transaction."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM txs").fetchone()[0])

    # ------------------------------------------------------------------------ coins

    _LIVE = ("FROM coins JOIN txs ON coins.txid = txs.txid "
             "WHERE txs.abandoned = 0 AND txs.conflicted = 0")

    def coins(self, *, include_spent: bool = False, include_locked: bool = True) -> list[WalletCoin]:
        """Coins of live transactions (not abandoned/conflicted); unspent ones by default."""
        q = ("SELECT coins.txid, n, value, pkh, is_coinbase, block_height, spent_by, locked "
             + self._LIVE)
        if not include_spent:
            q += " AND spent_by IS NULL"
        if not include_locked:
            q += " AND locked = 0"
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY coins.txid, n").fetchall()
        return [WalletCoin(OutPoint(r[0], r[1]), r[2], r[3], bool(r[4]), r[5], r[6], bool(r[7]))
                for r in rows]

    def spent_values(self) -> dict[bytes, int]:
        """For each transaction that spends coins of live transactions, the value it spends
        of them: one aggregate query, which builds no coin object (coins(include_spent=True)
        built one for every coin the wallet ever spent, on every balance call)."""
        with self._lock:
            rows = self._conn.execute("SELECT spent_by, SUM(value) " + self._LIVE
                                      + " AND spent_by IS NOT NULL GROUP BY spent_by").fetchall()
        return {r[0]: int(r[1]) for r in rows if r[0]}

    def balance(self, *, min_conf: int = 0, include_immature: bool = False) -> int:
        """Sum of unspent live coins with at least `min_conf` confirmations; coinbase coins
        only once mature unless `include_immature`."""
        _, best = self.best_block
        maturity = self.params.coinbase_maturity
        total = 0
        for coin in self.coins():
            conf = 0 if coin.height is None else best - coin.height + 1
            if conf < min_conf:
                continue
            if coin.is_coinbase and not include_immature and conf < maturity:
                continue
            total += coin.value
        return total

    # ------------------------------------------------------------------------ checks

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): what a crash must never produce."""
        problems = []
        with self._lock:
            c = self._conn
            for internal in (0, 1):
                nxt = int(self._meta(f"next_index_{internal}"))
                idx = [r[0] for r in c.execute("SELECT idx FROM keys WHERE internal = ? "
                                               "ORDER BY idx", (internal,))]
                if idx != list(range(nxt)):
                    problems.append(f"chain {internal}: key indexes are not 0..{nxt - 1}")
            for (n,) in c.execute("SELECT COUNT(*) FROM coins LEFT JOIN txs ON "
                                  "coins.txid = txs.txid WHERE txs.txid IS NULL"):
                if n:
                    problems.append(f"{n} coins of unknown transactions")
            for (n,) in c.execute("SELECT COUNT(*) FROM coins LEFT JOIN keys ON "
                                  "coins.pkh = keys.pkh WHERE keys.pkh IS NULL"):
                if n:
                    problems.append(f"{n} coins paying no wallet key")
            # Every recorded spend must be backed by that transaction's input.
            for txid, n, spent_by in c.execute("SELECT txid, n, spent_by FROM coins WHERE "
                                               "spent_by IS NOT NULL").fetchall():
                row = c.execute("SELECT raw FROM txs WHERE txid = ?", (spent_by,)).fetchone()
                if row is None or OutPoint(txid, n) not in {
                        i.prevout for i in Transaction.from_bytes(row[0]).vin}:
                    problems.append(f"coin {OutPoint(txid, n)} spent by a tx not spending it")
            best = int(self._meta("best_height"))
            (top,) = c.execute("SELECT MAX(block_height) FROM txs").fetchone()
            if top is not None and top > best:
                problems.append(f"tx confirmed at {top} above the best height {best}")
            if (self._meta("best_hash") is None) != (best < 0):
                problems.append("best block hash and height disagree")
            # Checked headers come with their block, so none lies above the best block, and
            # the one at its height is the best block's (anchor rows may lie just above a
            # new wallet's best height of -1).
            (top,) = c.execute("SELECT MAX(height) FROM headers WHERE trusted = 0").fetchone()
            if top is not None and top > best:
                problems.append(f"checked header at {top} above the best block {best}")
            at_best = c.execute("SELECT hash FROM headers WHERE height = ?", (best,)).fetchone()
            if at_best is not None and at_best[0] != self._meta("best_hash"):
                problems.append(f"the header at {best} is not the best block's")
            (plain, enc), = c.execute("SELECT plaintext, encrypted FROM secrets "
                                      "WHERE name = 'seed'").fetchall()
            if (plain is None) == (enc is None) or bool(enc) != bool(self._meta("encrypted")):
                problems.append("seed record inconsistent with the encrypted flag")
        return problems

    # ------------------------------------------------------------------------ dump

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row of every table as (table, {column: value}), for dump."""
        with self._lock:
            for table in _TABLES:
                cur = self._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"
                                         if table in ("keys", "coins", "block_txs") else
                                         f"SELECT * FROM {table} ORDER BY 1")
                cols = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    yield table, dict(zip(cols, row, strict=True))


def _enc_value(v: Any) -> Any:
    # JSON has no bytes; tag them (and strings, so a string that looks like hex stays a string).
    if isinstance(v, bytes):
        return "x:" + v.hex()
    if isinstance(v, str):
        return "s:" + v
    return v


def _dec_value(v: Any) -> Any:
    if isinstance(v, str):
        if v.startswith("x:"):
            return bytes.fromhex(v[2:])
        if v.startswith("s:"):
            return v[2:]
        raise ValueError("bad value in dump")
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    raise ValueError("bad value in dump")


def dump_wallet(store: WalletStore, dump_path: str | os.PathLike[str]) -> int:
    """Write the wallet as text: `key=value` lines, the last one `checksum=<sha256 hex>` of
    everything before it. Refuses to overwrite a file; created 0600 (an unencrypted wallet's
    dump holds its seed). Returns the number of rows written.

    Lines: `CLEANCOIN_WALLET_DUMP=1`, `network=<name>`, then one `<table>=<json row>` per row.
    """
    lines = [f"{DUMP_MAGIC}={DUMP_FORMAT}", f"network={store.network}"]
    count = 0
    for table, row in store.rows():
        lines.append(f"{table}=" + json.dumps({k: _enc_value(v) for k, v in row.items()},
                                              sort_keys=True, separators=(",", ":")))
        count += 1
    body = "".join(line + "\n" for line in lines)
    text = body + f"checksum={hashlib.sha256(body.encode()).hexdigest()}\n"
    write_new_file(dump_path, text.encode("utf-8"))
    return count


def create_from_dump(netdatadir: str | os.PathLike[str], name: str,
                     dump_path: str | os.PathLike[str]) -> WalletStore:
    """Create wallet `name` from a dump_wallet file (checksum verified first; the new wallet
    is removed again if anything fails, so no half-made wallet stays behind). The dump must be
    a file no other user could have chosen (private_files.open_own_input; since 12-07):
    WalletError naming why, FileNotFoundError when it is missing or not a regular file."""
    try:
        with open_own_input(dump_path, "the dump file") as source:
            text = source.read().decode("utf-8")
    except UnsafeFileError as exc:
        raise WalletError(f"Not created: {exc}") from None
    except UnicodeDecodeError:
        raise WalletError("Not a CleanCoin wallet dump (not UTF-8 text)") from None
    if not text.endswith("\n"):
        raise WalletError("Dump file is truncated")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[-1].startswith("checksum="):
        raise WalletError("Dump file has no checksum line")
    body = "".join(line + "\n" for line in lines[:-1])
    if hashlib.sha256(body.encode()).hexdigest() != lines[-1][len("checksum="):]:
        raise WalletError("Dump file checksum does not match: the file is corrupt")
    if lines[0] != f"{DUMP_MAGIC}={DUMP_FORMAT}":
        raise WalletError("Not a CleanCoin wallet dump, or an unsupported format version")
    key, _, network = lines[1].partition("=")
    if key != "network":
        raise WalletError("Dump file lacks the network line")
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for line in lines[2:-1]:
            table, _, data = line.partition("=")
            if table not in _TABLES:
                raise WalletError(f"Unknown record type {table!r} in dump file")
            rows.append((table, {k: _dec_value(v) for k, v in json.loads(data).items()}))
    except (ValueError, AttributeError, RecursionError) as e:
        raise WalletError(f"Malformed record in dump file: {type(e).__name__}") from None
    try:
        store = WalletStore.create(netdatadir, name, network, rows=rows)
    except sqlite3.Error as e:
        raise WalletError(f"Malformed record in dump file: {e}") from None
    try:
        problems = store.check()
        if problems or store.network != network:
            raise WalletError("Dump file describes an inconsistent wallet: " + "; ".join(problems))
    except BaseException:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(store.path) + suffix)
        raise
    return store
