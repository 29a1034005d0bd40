"""SQLite storage of the chain: block index, raw blocks, undo data, UTXO set, tx index, tip.

One database file (stdlib `sqlite3`), WAL journal, and every state change of the chain is one
SQLite transaction: storing a block, connecting one block (UTXO changes + undo data + tx index
+ status + tip), disconnecting one block, a change of validity flags. A transaction either
commits whole or not at all, so a process killed at any instant leaves the database at the
last commit, whose UTXO set always matches its tip.

Durability: `PRAGMA synchronous=FULL` by default. SQLite's documentation says WAL commits
survive an *application* crash (kill -9) at any synchronous level, because a commit has been
written to the WAL file (in the OS page cache) before COMMIT returns; NORMAL would therefore
already satisfy "kill -9 loses nothing committed". FULL adds one fsync of the WAL per commit,
which makes a commit survive a power loss or kernel crash too. We pay for it (about 0.35 ms per
block here, under 10% of a 100-transaction block's signature checks) because other parties act
on a commit as soon as it returns: the wallet records the block in *its own* database, peers
are told about the new tip. With NORMAL a power cut could roll the chain back behind what the
wallet already stored. Reindex switches to NORMAL while it runs (it only rewrites state that
is derived from blocks already stored durably, so a power cut merely loses reindex progress)
and restores FULL, whose next commit syncs the WAL including everything before it. Since
12-07 a block connected in initial block download commits at NORMAL too (`transaction(
durable=False)`), unless the last synced commit is a second old (chain.IBD_SYNC_INTERVAL):
a power cut then takes back what was connected since the last synced commit (about a
second of download, more if it paused), whole blocks only, and the wallet follows that as a
rewind; at the tip every commit is synced as before.

Layout (hashes and txids are 32 raw bytes in internal byte order):

    block_index(hash PK, prev, height, header[80], chainwork[32 big-endian], status, seq)
    blocks(hash PK, data)                 raw serialized block
    block_sums(hash PK, crc32)            CRC-32 of a block's stored bytes, written with them
                                          (since 12-07; blocks stored before have none until
                                          their first serve checks them): a block whose bytes
                                          a disk fault changed under an intact header is not
                                          served to peers (ChainManager.get_block_raw)
    undo(hash PK, data)                   spent coins of a connected block, see encode_undo
    utxo(txid, n PK, value, pkh, height, coinbase)
    tx_index(txid PK, block, pos, len)    where the tx's bytes sit inside its block's bytes
    meta(key PK, value)                   "tip", "network", "genesis", "schema"

chainwork is stored big-endian and fixed-width so that byte order equals numeric order.
The tx index holds exactly the transactions of the active chain (maintained in the same
transaction as the UTXO set), except the genesis coinbase, which, as in Bitcoin, is not an
ordinary transaction: its output is never added to the UTXO set.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..common.consensus import BlockConnection, Coin
from ..common.diskfail import WriteFailure, write_transaction
from ..common.errors import DeserializationError
from ..common.hashes import hash_to_hex
from ..common.sqlite_schema import ForeignSchema, Schema, harden
from ..common.primitives import Block, ByteReader, OutPoint, Transaction, compact_size

SCHEMA_VERSION: int = 1
#: Suggested file name inside the network datadir.
DEFAULT_DB_NAME: str = "chainstate.sqlite"
SYNCHRONOUS_LEVELS: tuple[str, ...] = ("NORMAL", "FULL", "EXTRA")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS block_index (
    hash      BLOB PRIMARY KEY,
    prev      BLOB NOT NULL,
    height    INTEGER NOT NULL,
    header    BLOB NOT NULL,
    chainwork BLOB NOT NULL,
    status    INTEGER NOT NULL,
    seq       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS block_sums (
    hash  BLOB PRIMARY KEY,
    crc32 INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS undo (
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS utxo (
    txid     BLOB NOT NULL,
    n        INTEGER NOT NULL,
    value    INTEGER NOT NULL,
    pkh      BLOB NOT NULL,
    height   INTEGER NOT NULL,
    coinbase INTEGER NOT NULL,
    PRIMARY KEY (txid, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tx_index (
    txid  BLOB PRIMARY KEY,
    block BLOB NOT NULL,
    pos   INTEGER NOT NULL,
    len   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""


@functools.cache
def _ours() -> Schema:
    """The schema objects a chain database may hold (components/common/sqlite_schema.py)."""
    return Schema.of(_SCHEMA)


# Large blobs (blocks, undo) stay in rowid tables: SQLite advises WITHOUT ROWID only for rows
# well under a page. The small, hot tables (utxo, tx_index, block_index) are WITHOUT ROWID so a
# lookup is one b-tree descent instead of index + table.

_SQL_GET_COIN = "SELECT value, pkh, height, coinbase FROM utxo WHERE txid = ? AND n = ?"
_SQL_DEL_COIN = "DELETE FROM utxo WHERE txid = ? AND n = ?"
_SQL_HAS_COINS_OF = "SELECT 1 FROM utxo WHERE txid = ? LIMIT 1"
_SQL_ADD_COIN = "INSERT INTO utxo (txid, n, value, pkh, height, coinbase) VALUES (?, ?, ?, ?, ?, ?)"
_SQL_ADD_TX = "INSERT OR REPLACE INTO tx_index (txid, block, pos, len) VALUES (?, ?, ?, ?)"
_SQL_DEL_TX = "DELETE FROM tx_index WHERE txid = ?"
_SQL_PUT_INDEX = ("INSERT OR REPLACE INTO block_index (hash, prev, height, header, chainwork, status, seq) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)")
_SQL_SET_STATUS = "UPDATE block_index SET status = ? WHERE hash = ?"
_SQL_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_PREFETCH_CHUNK = 256           # outpoints per query: 512 parameters, under any SQLite limit
_PREFETCH_SQL: dict[int, str] = {}


def _prefetch_sql(size: int) -> str:
    sql = _PREFETCH_SQL.get(size)
    if sql is None:
        sql = _PREFETCH_SQL[size] = (
            "WITH k(t, n) AS (VALUES " + ",".join(["(?, ?)"] * size) + ") "
            "SELECT u.txid, u.n, u.value, u.pkh, u.height, u.coinbase "
            "FROM k JOIN utxo u ON u.txid = k.t AND u.n = k.n")
    return sql


class StorageError(RuntimeError):
    """The database is not what it should be: another network's, a newer schema, or data that
    contradicts itself (corruption). Never raised for invalid blocks (those are
    ValidationErrors)."""


class ChainWriteFailure(WriteFailure):
    """A chain state write failed because of the disk (full, failing, read-only): fatal to
    the node (bitcoind's AbortNode), never the fault of a block or a peer. Nothing of the
    failed transaction was written."""

    @property
    def rpc_message(self) -> str:
        """The RPC answer: cause, file, and that the node stops (the caller should not retry)."""
        return f"Error: chain state not written, {self}; the node is shutting down (see debug.log)"


# ------------------------------------------------------------------------------- encodings

def chainwork_to_bytes(work: int) -> bytes:
    """Fixed 32-byte big-endian, so SQL byte comparison is numeric comparison."""
    return work.to_bytes(32, "big")


def _varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, high bit = more. 50 coins (5e9 units) take 5 bytes,
    a height under 8192 two; Bitcoin's compact size would need 9 and 3."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise StorageError("undo data: bad varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def encode_undo(spent: Sequence[tuple[OutPoint, Coin]]) -> bytes:
    """Undo data of a block: the coins it spent from the UTXO set, in spend order.

    Per coin: varint(height * 2 + is_coinbase) varint(value) pkh[20]. Outpoints are *not*
    stored (36 bytes a coin saved): they are the block's inputs, in order, minus those that
    spend an output of the same block (see `undo_outpoints`). A count prefix lets the reader
    check that the two agree.
    """
    parts = [compact_size(len(spent))]
    for _, coin in spent:
        parts.append(_varint(coin.height * 2 + (1 if coin.is_coinbase else 0)))
        parts.append(_varint(coin.value))
        parts.append(coin.pkh)
    return b"".join(parts)


def decode_undo(data: bytes) -> list[Coin]:
    """Inverse of encode_undo (without the outpoints). StorageError when malformed."""
    try:
        r = ByteReader(data)
        count = r.read_compact_size()
        pos = r.pos
    except DeserializationError as e:
        raise StorageError(f"undo data: {e}") from None
    coins: list[Coin] = []
    for _ in range(count):
        hc, pos = _read_varint(data, pos)
        value, pos = _read_varint(data, pos)
        pkh = data[pos:pos + 20]
        if len(pkh) != 20:
            raise StorageError("undo data: truncated")
        pos += 20
        coins.append(Coin(value, pkh, hc >> 1, bool(hc & 1)))
    if pos != len(data):
        raise StorageError("undo data: trailing bytes")
    return coins


def undo_outpoints(block: Block) -> list[OutPoint]:
    """The outpoints a valid, connected block took from the UTXO set, in spend order.

    Those are all non-coinbase inputs except the ones spending an output of an earlier
    transaction of the same block. That test is "prevout txid is a txid of this block":
    a valid block cannot spend a *later* transaction's output, and txids are unique (coinbases
    carry their height, so every transaction differs from every other one).
    """
    own = {tx.txid for tx in block.txs}
    return [txin.prevout for tx in block.txs[1:] for txin in tx.vin if txin.prevout.txid not in own]


def tx_positions(block: Block) -> list[tuple[int, int]]:
    """(offset, length) of each transaction inside block.serialized."""
    pos = 80 + len(compact_size(len(block.txs)))
    out = []
    for tx in block.txs:
        n = len(tx.serialized)
        out.append((pos, n))
        pos += n
    return out


@dataclass(frozen=True)
class IndexRow:
    """One block_index row as stored."""

    hash: bytes
    prev: bytes
    height: int
    header: bytes
    chainwork: int
    status: int
    seq: int


# ------------------------------------------------------------------------------- the store

class ChainStore:
    """The SQLite file and every statement run on it. No chain logic here: ChainManager
    decides what to write, this class writes it (inside `transaction()`) and reads it back.

    Single connection, used under ChainManager's lock; `check_same_thread=False` so the
    manager may be driven from a worker thread (e.g. asyncio's default executor).
    """

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}")
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        # The level a durable transaction commits at (set_synchronous changes it for a
        # reindex) and the one last given to SQLite (a deferred commit sets NORMAL).
        self._durable_level = synchronous
        self._applied_level = synchronous
        #: time.monotonic() of the last commit that synced the WAL (a level above NORMAL):
        #: what a power cut could lose is what was committed after it (ChainManager's
        #: initial-block-download connects defer their sync up to IBD_SYNC_INTERVAL).
        self.synced_at: float = time.monotonic()
        # One process at a time (bitcoind's datadir .lock): a second node on the same file
        # would interleave its blocks with ours. flock dies with the process, kill -9 too.
        self._lock_file = open(path + ".lock", "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise StorageError(f"{path} is in use by another process") from None
        try:
            # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves
            # so that a transaction is exactly one chain state change.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       cached_statements=64)
        except BaseException:
            self._lock_file.close()
            raise
        self._in_txn = False
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        db, path, synchronous = self._db, self.path, self.synchronous
        # Before any statement reads or writes a table: the confined node wrote this file,
        # and CleanCoind and CleanCoin-qt open it unconfined (components/common/sqlite_schema.py).
        harden(db)
        try:
            _ours().check(db, path)
        except ForeignSchema as exc:
            raise StorageError(str(exc)) from None
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: cannot switch to WAL journal (got {mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("PRAGMA temp_store=MEMORY")
        # 64 MiB page cache: the UTXO and tx index b-trees stay hot while connecting.
        db.execute("PRAGMA cache_size=-65536")
        # Keep the WAL from growing without bound between checkpoints (bytes).
        db.execute("PRAGMA journal_size_limit=67108864")
        with self.transaction():
            # Not executescript(): it COMMITs first, outside our transaction.
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute(_SQL_SET_META, ("schema", str(SCHEMA_VERSION).encode()))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StorageError(f"{path}: schema version {int(row[0])}, this program reads "
                                   f"{SCHEMA_VERSION}")

    # -------------------------------------------------------------------- plumbing

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the main file) and release
        the file lock."""
        try:
            self._db.close()
        finally:
            self._lock_file.close()

    def set_synchronous(self, level: str) -> None:
        """Change the sync level of durable transactions (outside a transaction)."""
        level = level.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(level)
        self._durable_level = level
        self._apply_level(level)

    def _apply_level(self, level: str) -> None:
        if level != self._applied_level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._applied_level = level

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (re-raised).

        `durable=False` commits at synchronous=NORMAL, without the fsync of the WAL: as
        atomic, and as safe from kill -9 (the commit is in the OS page cache when COMMIT
        returns), but a power cut or kernel crash may take it back, together with every
        commit after it, never a part of one (WAL frames carry checksums; SQLite keeps
        the whole commits before the first bad frame). The next durable commit syncs the
        WAL and with it everything before.

        IMMEDIATE takes the write lock up front rather than halfway through a block. Not
        reentrant, on purpose: nesting would hide which writes belong to which chain step.
        A failing COMMIT (disk full, I/O error) rolls back too and raises: the caller then
        leaves its memory untouched, as for any other failure. A failure of the disk
        (SQLITE_FULL, SQLITE_IOERR, ENOSPC, EIO: diskfail.write_failure_cause) is raised as
        ChainWriteFailure naming the cause and this file, whichever statement hit it.
        """
        if self._in_txn:
            raise RuntimeError("nested chain store transaction")
        level = self._durable_level if durable else "NORMAL"
        self._apply_level(level)
        self._in_txn = True
        try:
            with write_transaction(self._db, self.path, ChainWriteFailure):
                yield
        finally:
            self._in_txn = False
        if level != "NORMAL":
            self.synced_at = time.monotonic()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: the writes made in the block either stay, or on an
        exception (re-raised) are undone, the transaction's earlier writes kept (SQLite's
        SAVEPOINT / ROLLBACK TO). A block that fails to connect is stored as failed in the
        same transaction as its connect's writes were made in (ChainManager)."""
        if not self._in_txn:
            raise RuntimeError("a savepoint needs an open chain store transaction")
        self._db.execute("SAVEPOINT connect_block")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO connect_block")
            self._db.execute("RELEASE connect_block")
            raise
        self._db.execute("RELEASE connect_block")

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction() is open."""
        return self._in_txn

    # -------------------------------------------------------------------- meta

    def get_meta(self, key: str) -> bytes | None:
        """A meta value, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        """Set a meta value (inside a transaction)."""
        self._db.execute(_SQL_SET_META, (key, value))

    # -------------------------------------------------------------------- block index

    def load_index(self) -> list[IndexRow]:
        """Every block_index row, parents before children (ordered by height)."""
        rows = self._db.execute(
            "SELECT hash, prev, height, header, chainwork, status, seq FROM block_index "
            "ORDER BY height").fetchall()
        return [IndexRow(bytes(h), bytes(p), ht, bytes(hd), int.from_bytes(w, "big"), st, sq)
                for h, p, ht, hd, w, st, sq in rows]

    def put_index(self, row: IndexRow) -> None:
        """Insert or replace one index row (inside a transaction)."""
        self._db.execute(_SQL_PUT_INDEX, (row.hash, row.prev, row.height, row.header,
                                          chainwork_to_bytes(row.chainwork), row.status, row.seq))

    def set_statuses(self, items: Iterable[tuple[bytes, int]]) -> None:
        """Set the status of several blocks: (hash, status) pairs (inside a transaction)."""
        self._db.executemany(_SQL_SET_STATUS, [(st, h) for h, st in items])

    # -------------------------------------------------------------------- blocks and undo

    def put_block(self, block_hash: bytes, raw: bytes) -> None:
        """Store a block's bytes (inside a transaction)."""
        self._db.execute("INSERT OR REPLACE INTO blocks (hash, data) VALUES (?, ?)", (block_hash, raw))
        self.put_block_sum(block_hash, zlib.crc32(raw))

    def put_block_sum(self, block_hash: bytes, crc32: int) -> None:
        """Record the CRC-32 of a block's stored bytes (inside a transaction)."""
        self._db.execute("INSERT OR REPLACE INTO block_sums (hash, crc32) VALUES (?, ?)", (block_hash, crc32))

    def drop_block(self, block_hash: bytes) -> None:
        """Forget a block's bytes (inside a transaction): they were not that block's."""
        self._db.execute("DELETE FROM blocks WHERE hash = ?", (block_hash,))
        self._db.execute("DELETE FROM block_sums WHERE hash = ?", (block_hash,))

    def get_block_raw(self, block_hash: bytes) -> bytes | None:
        """A stored block's bytes, or None."""
        row = self._db.execute("SELECT data FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_block_raw_and_sum(self, block_hash: bytes) -> tuple[bytes, int | None] | None:
        """A stored block's bytes and their recorded CRC-32 (None: stored before 12-07), or
        None; one query."""
        row = self._db.execute("SELECT b.data, s.crc32 FROM blocks AS b LEFT JOIN block_sums AS s "
                               "ON s.hash = b.hash WHERE b.hash = ?", (block_hash,)).fetchone()
        return None if row is None else (bytes(row[0]), None if row[1] is None else int(row[1]))

    def iter_block_hashes(self) -> Iterator[bytes]:
        """Hashes of all stored raw blocks."""
        for (h,) in self._db.execute("SELECT hash FROM blocks"):
            yield bytes(h)

    def get_undo_raw(self, block_hash: bytes) -> bytes | None:
        """A block's undo bytes, or None (never connected)."""
        row = self._db.execute("SELECT data FROM undo WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    # -------------------------------------------------------------------- UTXO set

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """The unspent coin at `outpoint`, or None."""
        row = self._db.execute(_SQL_GET_COIN, (outpoint.txid, outpoint.n)).fetchone()
        if row is None:
            return None
        return Coin(row[0], bytes(row[1]), row[2], bool(row[3]))

    #: consensus.UtxoView, so connect_block_inputs can read the table directly.
    get = get_coin

    def has_coins_of(self, txid: bytes) -> bool:
        """Whether any output of `txid` is unspent: one search of the primary key's prefix,
        whatever the number of outputs."""
        return self._db.execute(_SQL_HAS_COINS_OF, (txid,)).fetchone() is not None

    def get_coins(self, outpoints: Sequence[OutPoint]) -> dict[tuple[bytes, int], Coin]:
        """The unspent coins among `outpoints`, keyed by (txid, n), fetched in few queries
        (absent = not unspent). Tuple keys: building OutPoint objects would cost more than
        the query.

        A join against a VALUES list runs one primary-key search per outpoint inside SQLite,
        about five times faster than a SELECT per outpoint from Python. (A row-value
        `(txid, n) IN (VALUES ...)` would scan the whole table.) Chunks are padded to powers
        of two so that a handful of statement texts cover every size and stay prepared in
        the statement cache.
        """
        out: dict[tuple[bytes, int], Coin] = {}
        for start in range(0, len(outpoints), _PREFETCH_CHUNK):
            chunk = list(outpoints[start:start + _PREFETCH_CHUNK])
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (size - len(chunk))     # duplicates only repeat a row
            params: list[object] = []
            for op in chunk:
                params += (op.txid, op.n)
            for txid, n, value, pkh, height, cb in self._db.execute(_prefetch_sql(size), params):
                out[(txid, n)] = Coin(value, pkh, height, bool(cb))
        return out

    def apply_connect(self, block: Block, conn: BlockConnection) -> None:
        """The writes of connecting `block` (inside a transaction, which the caller commits
        together with the block's new status and any other write of the same step).

        Removes the spent coins, adds the created ones, stores the undo data, indexes the
        transactions and makes the block the tip. A spent coin that is not
        in the table means the UTXO set disagrees with the view connect_block_inputs used:
        StorageError, and the caller's transaction rolls back.
        """
        db = self._db
        block_hash = block.hash
        if conn.spent:
            cur = db.executemany(_SQL_DEL_COIN, [(op.txid, op.n) for op, _ in conn.spent])
            if cur.rowcount != len(conn.spent):
                raise StorageError(f"connect {hash_to_hex(block_hash)}: {len(conn.spent)} coins "
                                   f"to spend, {cur.rowcount} found")
        db.executemany(_SQL_ADD_COIN, [(op.txid, op.n, c.value, c.pkh, c.height, int(c.is_coinbase))
                                       for op, c in conn.created])
        db.execute("INSERT OR REPLACE INTO undo (hash, data) VALUES (?, ?)",
                   (block_hash, encode_undo(conn.spent)))
        db.executemany(_SQL_ADD_TX, [(tx.txid, block_hash, pos, n)
                                     for tx, (pos, n) in zip(block.txs, tx_positions(block), strict=True)])
        db.execute(_SQL_SET_META, ("tip", block_hash))

    def apply_disconnect(self, block: Block, restored: Sequence[tuple[OutPoint, Coin]],
                         new_tip: bytes) -> None:
        """The writes of disconnecting the tip `block` (inside a transaction): remove the
        outputs it created, put back the coins it spent, drop its transactions from the tx
        index, move the tip to `new_tip` (its parent). The number of outputs removed is
        checked against what the block must have left unspent."""
        db = self._db
        # Inputs that did not take a coin from the UTXO set spent an output of this block,
        # which therefore is not in the table either.
        spent_inside = sum(len(tx.vin) for tx in block.txs[1:]) - len(restored)
        outputs = [(tx.txid, n) for tx in block.txs for n in range(len(tx.vout))]
        cur = db.executemany(_SQL_DEL_COIN, outputs)
        if cur.rowcount != len(outputs) - spent_inside:
            raise StorageError(f"disconnect {hash_to_hex(block.hash)}: expected "
                               f"{len(outputs) - spent_inside} outputs, found {cur.rowcount}")
        db.executemany(_SQL_ADD_COIN, [(op.txid, op.n, c.value, c.pkh, c.height, int(c.is_coinbase))
                                       for op, c in restored])
        db.executemany(_SQL_DEL_TX, [(tx.txid,) for tx in block.txs])
        db.execute(_SQL_SET_META, ("tip", new_tip))

    def reset_chainstate(self, genesis_hash: bytes) -> None:
        """Empty the UTXO set and the tx index and set the tip to genesis (inside a
        transaction): the starting point of a reindex."""
        db = self._db
        db.execute("DELETE FROM utxo")
        db.execute("DELETE FROM tx_index")
        db.execute("DELETE FROM undo WHERE hash != ?", (genesis_hash,))
        db.execute(_SQL_SET_META, ("tip", genesis_hash))

    def utxo_stats(self) -> tuple[int, int, int, str]:
        """(txouts, total value, distinct transactions, hash_serialized hex) of the UTXO set.

        The hash is SHA-256d over every coin in (txid, n) order, each as txid n:u32
        value:i64 pkh height:u32 coinbase:u8: equal hashes mean equal sets (used to compare a
        reindexed or replayed set with the stored one)."""
        h = hashlib.sha256()
        count = total = txs = 0
        last = b""
        for txid, n, value, pkh, height, cb in self._db.execute(
                "SELECT txid, n, value, pkh, height, coinbase FROM utxo ORDER BY txid, n"):
            txid = bytes(txid)
            if txid != last:
                txs += 1
                last = txid
            count += 1
            total += value
            h.update(coin_record(OutPoint(txid, n), Coin(value, bytes(pkh), height, bool(cb))))
        return count, total, txs, hash_to_hex(hashlib.sha256(h.digest()).digest())

    def iter_utxos(self) -> Iterator[tuple[OutPoint, Coin]]:
        """Every coin, in (txid, n) order."""
        for txid, n, value, pkh, height, cb in self._db.execute(
                "SELECT txid, n, value, pkh, height, coinbase FROM utxo ORDER BY txid, n"):
            yield OutPoint(bytes(txid), n), Coin(value, bytes(pkh), height, bool(cb))

    # -------------------------------------------------------------------- tx index

    def find_tx(self, txid: bytes) -> tuple[Transaction, bytes] | None:
        """(transaction, hash of the active-chain block holding it), or None.

        Reads only the transaction's bytes out of the stored block (substr on the blob)."""
        row = self._db.execute(
            "SELECT t.block, substr(b.data, t.pos + 1, t.len) FROM tx_index t "
            "JOIN blocks b ON b.hash = t.block WHERE t.txid = ?", (txid,)).fetchone()
        if row is None:
            return None
        tx = Transaction.from_bytes(bytes(row[1]))
        if tx.txid != txid:
            raise StorageError(f"tx index points at the wrong bytes for {hash_to_hex(txid)}")
        return tx, bytes(row[0])

    def tx_index_size(self) -> int:
        """Rows in the tx index."""
        return int(self._db.execute("SELECT COUNT(*) FROM tx_index").fetchone()[0])

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Raw read access for diagnostics and tests."""
        return self._db.execute(sql, params)


def coin_record(op: OutPoint, coin: Coin) -> bytes:
    """Canonical bytes of one UTXO entry (for hashing the set)."""
    return (op.txid + op.n.to_bytes(4, "little") + coin.value.to_bytes(8, "little", signed=True)
            + coin.pkh + coin.height.to_bytes(4, "little") + bytes((coin.is_coinbase,)))
