"""The chain manager: block index, best-chain selection, connect/disconnect, reorganisations.

`ChainManager` owns a `storage.ChainStore` (SQLite) and an in-memory copy of the block index
(every known header with its height, chain work and status flags), as bitcoind keeps
`mapBlockIndex` in memory: choosing the best chain, walking ancestors and answering locators
then never touch the disk. The database is the truth; memory is updated only after the SQLite
transaction that makes a change has committed, so an exception (a failing disk, an invalid
block) can never leave memory ahead of disk.

Flow of a block (accept_block):

1. context-free header checks (proof of work, not too far in the future), the parent must be
   known ("prev-blk-not-found") and not invalid ("bad-prevblk"), contextual header checks
   against the parent (bits, median time past). A failure here stores nothing: a header
   without valid proof of work costs an attacker nothing to make.
2. check_block (merkle root first, so a *mutated* block never gets its hash marked invalid)
   and contextual_check_block. A consensus failure stores the header as failed, so the same
   block is refused at once next time and getchaintips shows it.
3. store the block, then activate the best chain: while some fully-stored, not-failed chain
   has more work than the tip, disconnect down to the fork point and connect up to it, each
   block in its own SQLite transaction. A block that fails to connect is marked failed, its
   descendants failed-child, and the loop goes on with the best chain left, which restores
   the previous tip when the new branch was the culprit. The error is raised afterwards.

The common case (a new block on the tip) is stored and connected in *one* transaction: one
fsync per block instead of two. In initial block download that fsync is made about once a
second rather than per block (IBD_SYNC_INTERVAL; since 12-07).

Connecting a block (_connect_block): every rule but the signature verifications runs first
(consensus.connect_block_inputs); each input's signature goes to sigcheck's helper threads
as soon as the input passed them, so they verify while this thread checks the next inputs
and makes the block's writes in the still open transaction (since 12-08; before, the
verification started once every input was checked and the writes waited for its verdict),
then on this one too; only when every signature passed is the transaction committed (one
commit), else it is rolled back.

Status flags follow bitcoind's (BLOCK_HAVE_DATA, BLOCK_VALID_TRANSACTIONS, BLOCK_VALID_SCRIPTS,
BLOCK_FAILED_VALID, BLOCK_FAILED_CHILD). Equal work never causes a reorganisation: the block
seen first keeps the tip, as in Bitcoin.

Listeners (`add_listener`) get `block_connected(block, index)` / `block_disconnected(block,
index)` after each commit, in chain order: during a reorganisation all disconnections (tip
first), then all connections (lowest first). They run synchronously under the manager's lock,
so they may call back into the manager (utxo lookups) but must not wait for another thread
that does. An exception in a listener is logged and does not stop the chain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..common.chainparams import ChainParams
from ..common.consensus import (
    Coin, block_signature_failure, check_block, check_block_header,
    connect_block_inputs, contextual_check_block, contextual_check_block_header,
)
from ..common.errors import Failure, ValidationError
from ..common.hashes import hash_to_hex, sha256d
from ..common.pow import PrevBlock, block_proof, next_work_required
from ..common.pow import median_time_past as _median
from ..common.primitives import HEADER_SIZE, NULL_HASH, Block, BlockHeader, OutPoint, Transaction
from ..common.sigcheck import SignatureCache, SignatureChecker
from ..common.diskfail import MIN_DISK_SPACE, check_disk_space
from . import verify_chain
from .storage import ChainStore, ChainWriteFailure, IndexRow, StorageError, decode_undo, undo_outpoints

__all__ = [
    "AcceptResult", "BLOCK_FAILED", "BLOCK_FAILED_CHILD", "BLOCK_FAILED_MASK", "BLOCK_HAVE_DATA",
    "BLOCK_VALID_SCRIPTS", "BLOCK_VALID_TRANSACTIONS", "BlockIndex", "BlockNotFound", "HeaderLink",
    "ChainManager", "ChainWriteFailure", "StorageError",
]

log = logging.getLogger("cleancoin.chain")

#: The block's transactions are stored.
BLOCK_HAVE_DATA: int = 1
#: check_block and contextual_check_block passed.
BLOCK_VALID_TRANSACTIONS: int = 2
#: Connected at least once: inputs, amounts and signatures checked against the UTXO set.
BLOCK_VALID_SCRIPTS: int = 4
#: The block itself broke a consensus rule (or invalidateblock named it).
BLOCK_FAILED: int = 8
#: An ancestor is BLOCK_FAILED.
BLOCK_FAILED_CHILD: int = 16
BLOCK_FAILED_MASK: int = BLOCK_FAILED | BLOCK_FAILED_CHILD

#: Seconds between two progress reports of a long activation (startup, reindex).
PROGRESS_INTERVAL: float = 1.0
#: How far, in blocks' worth of the tip's proof of work, a side branch may lag behind the
#: active tip and still have its blocks stored (accept_block). Downloading blocks first, a
#: branch that will overtake the tip arrives block by block, each with less work than the tip
#: until the last: so a lagging branch must be stored, or no reorganisation could happen. But
#: a block forking deep in the past costs an attacker only that era's (low) difficulty, and
#: it held up to a megabyte of disk each: any peer could fill the disk, and since a full disk
#: stops the node (storage: AbortNode), stop it. 288 blocks (two days; bitcoind keeps at
#: least this many when pruning) is far deeper than any reorganisation Bitcoin has seen (53
#: blocks, 2010). A deeper branch is stored when headers we hold already show that it leads
#: to more work than the tip (the P2P layer asks a peer for them when it sends a block of a
#: branch this far behind): without that, a cheap chain that reached a syncing node first
#: kept it from the real one for good.
MAX_SIDE_BRANCH_LAG: int = 288
#: A tip older than this (seconds) means the node is still catching up (bitcoind's
#: DEFAULT_MAX_TIP_AGE): initial_block_download.
MAX_TIP_AGE: int = 24 * 60 * 60
#: In initial block download a block's connect commits without an fsync unless the last
#: synced commit is this many seconds old (issue #16: the fsync was ~15 % of a full block's
#: connect). A power cut then loses the blocks connected since the last synced commit: about
#: this much time of download, or more if the download paused after them (until the next
#: commit, a WAL checkpoint or the kernel's write-back syncs them). A kill -9 loses nothing
#: (the commits are in the OS page cache), and the chain left is whole either way; the
#: wallet follows such a rewind as any other. At the tip every block is synced before
#: anyone hears of it.
IBD_SYNC_INTERVAL: float = 1.0

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BlockIndex:
    """One entry of the block index: a header we accepted, where it sits, what we know of it.

    Immutable: a status change replaces the entry, so a caller holding one sees a consistent
    snapshot.
    """

    hash: bytes
    prev: bytes
    height: int
    header: BlockHeader
    chainwork: int
    status: int

    @property
    def hash_hex(self) -> str:
        """The block hash as users see it."""
        return hash_to_hex(self.hash)

    @property
    def time(self) -> int:
        """Header timestamp."""
        return self.header.time

    @property
    def bits(self) -> int:
        """Header difficulty bits."""
        return self.header.bits

    @property
    def chainwork_hex(self) -> str:
        """Chain work as bitcoind prints it (64 hex digits)."""
        return f"{self.chainwork:064x}"

    @property
    def have_data(self) -> bool:
        """Whether the block's transactions are stored."""
        return bool(self.status & BLOCK_HAVE_DATA)

    @property
    def failed(self) -> bool:
        """Whether it, or an ancestor, is invalid."""
        return bool(self.status & BLOCK_FAILED_MASK)


@dataclass(frozen=True)
class AcceptResult:
    """What accept_block did: `index` the block's entry; `new_tip` whether the active tip
    changed during the call; `already_have` whether the block was stored before."""

    index: BlockIndex
    new_tip: bool
    already_have: bool


@dataclass(frozen=True)
class HeaderLink:
    """A header checked against its parent, stored or not: what checking its child needs
    (headers pre-sync keeps one per peer instead of the headers themselves)."""

    hash: bytes
    height: int
    chainwork: int
    bits: int
    time: int
    #: Its time and up to ten ancestors', oldest first: the child's median time past.
    recent_times: tuple[int, ...]
    #: (height, time) of the first block of its retarget period when that block is in the
    #: run above `base` (else None: the index has it).
    period_start: tuple[int, int] | None
    #: The index entry the run of (unstored) headers leaves from.
    base: bytes


class BlockNotFound(KeyError):
    """A block hash that is not in the index (RPC: "Block not found", -5)."""


class _PrefetchedView:
    """consensus.UtxoView over the coins a block spends, read in one go before checking.

    The set cannot change while the block is checked (we are the only writer and hold the
    lock), so a dict answers exactly as the table would: an absent outpoint is not unspent.
    """

    __slots__ = ("coins",)

    def __init__(self, store: ChainStore, block: Block) -> None:
        self.coins = store.get_coins(undo_outpoints(block))

    def get(self, outpoint: OutPoint) -> Coin | None:
        return self.coins.get((outpoint.txid, outpoint.n))


def _default_now() -> int:
    return int(time.time())


class _Progress:
    """Rate-limited progress for long activations: calls `fn(stage, height, total)` and logs
    height, total and rate at most every PROGRESS_INTERVAL seconds, and once at the end."""

    def __init__(self, stage: str, fn: ProgressFn | None, start_height: int, total: int) -> None:
        self.stage = stage
        self.fn = fn
        self.start_height = start_height
        self.total = total
        self.t0 = self.last = time.monotonic()

    def report(self, height: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        done = height - self.start_height
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        log.info("%s: height %d/%d (%.1f blocks/s)", self.stage, height, self.total, rate)
        if self.fn is not None:
            try:
                self.fn(self.stage, height, self.total)
            except Exception:  # progress display must never break validation
                log.exception("progress callback failed")


class ChainManager:
    """The node's block chain on SQLite. Synchronous and thread-safe (one re-entrant lock).

    `now` is the clock for "time-too-new" checks (tests pin it); `on_progress(stage, height,
    total)` hears about long work (startup catch-up, reindex). `synchronous` is SQLite's sync
    level; FULL (default) makes every commit durable against power loss as well as kill -9
    (see storage.py for the reasoning). `sig_threads` is how many threads verify a block's
    signatures, the calling one included (default: sigcheck.default_threads(); the node passes
    -par's count); `sig_cache` the signatures already verified (the node's mempool fills it).

    Disk failures (bitcoind's CheckDiskSpace and AbortNode): before a block or header is
    stored, the database's filesystem must keep `min_free_space` bytes (bitcoind's 50 MiB;
    None: no check) plus the block's size free; a write the disk refuses (SQLITE_FULL,
    SQLITE_IOERR) rolls back whole. Either raises ChainWriteFailure, never a ValidationError: the block is not
    marked invalid. The first one latches (`fatal`): `on_fatal` hears it once and every later
    change raises it again, so a node stops writing until it is restarted with space back.
    """

    def __init__(self, params: ChainParams, db_path: str, *,
                 now: Callable[[], int] = _default_now,
                 on_progress: ProgressFn | None = None,
                 synchronous: str = "FULL",
                 sig_threads: int | None = None,
                 sig_cache: SignatureCache | None = None,
                 min_free_space: int | None = MIN_DISK_SPACE,
                 on_fatal: Callable[[ChainWriteFailure], None] | None = None,
                 max_side_branch_lag: int = MAX_SIDE_BRANCH_LAG,
                 for_reindex: bool = False,
                 minimum_chain_work: int | None = None) -> None:
        self.params = params
        #: bitcoind's nMinimumChainWork (-minimumchainwork; None: the network's): below it the
        #: node is in initial block download, and presync stores no branch below it.
        self.minimum_chain_work: int = (params.minimum_chain_work if minimum_chain_work is None
                                        else minimum_chain_work)
        # -reindex follows: an active chain that fails the load checks is rebuilt, not refused.
        self._for_reindex = for_reindex
        self._max_side_branch_lag = max_side_branch_lag
        self.db_path = db_path
        self._db_dir = os.path.dirname(os.path.abspath(db_path))
        self._min_free_space = min_free_space
        self._on_fatal = on_fatal
        #: The disk failure that stopped this chain (None while it works): every later change
        #: is refused with it, so nothing more is written until the node restarts.
        self.fatal: ChainWriteFailure | None = None
        self._now = now
        self._on_progress = on_progress
        self._lock = threading.RLock()
        self._listeners: list[Any] = []
        self._notify_enabled = True
        self._closed = False
        self._busy = False              # a chain change is in progress (see _mutating)
        #: Stored blocks found corrupt when asked for (get_block_raw), logged once each.
        self._corrupt_logged: set[bytes] = set()
        #: Verifies blocks' signatures (and, for the node's mempool, transactions'), with the
        #: cache of those a mempool transaction already showed valid.
        self.signatures = self._sigs = SignatureChecker(sig_threads, sig_cache)
        #: How many threads verify a block's signatures, the calling one included.
        self.signature_threads = self._sigs.threads
        try:
            self._store = ChainStore(db_path, synchronous=synchronous)
        except BaseException:
            self._sigs.close()
            raise
        self._synchronous = self._store.synchronous
        self._index: dict[bytes, BlockIndex] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._seq: dict[bytes, int] = {}
        self._next_seq = 1
        # Hashes whose block and all ancestors' blocks are stored (bitcoind: nChainTx != 0):
        # only those can become the tip.
        self._linked: set[bytes] = set()
        # Linked, not failed, at least as much work as the tip (bitcoind's
        # setBlockIndexCandidates). Small: the tip plus competing branch tips.
        self._candidates: set[bytes] = set()
        self._chain: list[bytes] = []          # active chain, by height
        self._best_header: bytes | None = None     # hash: entries are replaced on change
        # The best header's own branch, above its fork from the active chain: (best header,
        # fork point, hashes). Only _check_lag reads it, for blocks of a branch that lags.
        self._best_branch: tuple[bytes, BlockIndex, frozenset[bytes]] | None = None
        try:
            self._open()
        except BaseException:
            self._store.close()
            self._sigs.close()
            raise

    # ------------------------------------------------------------------ start-up

    def _open(self) -> None:
        store = self._store
        genesis = self.params.genesis_block
        network = store.get_meta("network")
        if network is None:
            self._init_genesis(genesis)
        elif network.decode() != self.params.name or store.get_meta("genesis") != genesis.hash:
            raise StorageError(f"{self.db_path} belongs to network {network.decode()!r} "
                               f"(or another genesis), not {self.params.name!r}")
        failed = self._load_index()
        tip_hash = store.get_meta("tip")
        chain: list[bytes] = []
        if tip_hash is None or tip_hash not in self._index:
            if not self._for_reindex:
                raise StorageError(f"{self.db_path}: tip missing from the block index; "
                                   "restart with -reindex to rebuild the chain state")
        else:
            h = tip_hash
            while h != NULL_HASH:
                chain.append(h)
                h = self._index[h].prev
            chain.reverse()
        tampered = [h for h in chain if h in failed]
        if tampered and not self._for_reindex:
            # The chain state (coins, undo data) is what connecting that block did: it cannot
            # be trusted, and disconnecting would trust the block's own undo data.
            raise StorageError(
                f"{self.db_path}: the active chain holds block {hash_to_hex(tampered[0])}, which "
                f"fails its header checks ({failed[tampered[0]]}): the database was changed by "
                "something other than this node. Restart with -reindex to rebuild the chain "
                "state from the blocks that pass")
        if tampered or not chain:
            chain = [genesis.hash]      # reindex() rebuilds from here
        self._chain = chain
        self._rebuild_candidates()
        if self._for_reindex:
            log.info("chain index loaded for -reindex: %d entries", len(self._index))
            return
        # Finish what a crash interrupted: a block stored but not yet connected, a
        # reorganisation halfway, an invalidateblock that had not disconnected everything.
        err = self._activate_best_chain({}, progress=("activate", self._on_progress))
        if err is not None:
            log.warning("start-up: a stored block failed to connect: %s", err)
        log.info("chain loaded: %d blocks in index, tip %s at height %d",
                 len(self._index), self.tip.hash_hex, self.tip.height)

    def _init_genesis(self, genesis: Block) -> None:
        """Store the genesis block as connected tip. Its coinbase output is not added to the
        UTXO set and not indexed (consensus: it is unspendable, as in Bitcoin)."""
        status = BLOCK_HAVE_DATA | BLOCK_VALID_TRANSACTIONS | BLOCK_VALID_SCRIPTS
        row = IndexRow(genesis.hash, NULL_HASH, 0, genesis.header.serialized,
                       block_proof(genesis.header.bits), status, 0)
        store = self._store
        with store.transaction():
            store.put_index(row)
            store.put_block(genesis.hash, genesis.serialized)
            store.set_meta("network", self.params.name.encode())
            store.set_meta("genesis", genesis.hash)
            store.set_meta("tip", genesis.hash)

    def _load_index(self) -> dict[bytes, str]:
        """Load the block index, checking every entry as if its header had just arrived.

        Under CleanCoin-node the confined node writes this file, and what a compromised node
        planted here the next start (CleanCoind's too) would otherwise believe: a header
        without proof of work connected as the tip, a branch with a made-up chain work
        chosen over the real chain. So, as bitcoind's LoadBlockIndex checks each entry's
        proof of work and adds up the chain work again, every entry is checked against its
        parent (proof of work, the difficulty the rules demand, the median time past) and its
        height and chain work are computed, never read: entries are walked from genesis
        through their parents.

        An entry that fails is marked failed (its descendants failed-child), stored so, and
        logged once; returns those newly marked, with why. Rows that hold no parsable header
        of their own hash, or do not lead back to genesis, are ignored with a warning (no
        header the node stored can be either).
        """
        params = self.params
        rows = {row.hash: row for row in self._store.load_index()}
        genesis = rows.get(params.genesis_hash)
        if genesis is None:
            raise StorageError(f"{self.db_path}: the genesis block is missing from the block index")
        children: dict[bytes, list[IndexRow]] = {}
        for row in rows.values():
            if row.hash != params.genesis_hash:
                children.setdefault(row.prev, []).append(row)
        header = params.genesis_block.header
        self._add_loaded(BlockIndex(genesis.hash, NULL_HASH, 0, header, block_proof(header.bits),
                                    genesis.status), genesis.seq)
        failed: dict[bytes, str] = {}
        changes: list[tuple[bytes, int]] = []
        recomputed = 0
        stack = [genesis.hash]
        while stack:
            parent = self._index[stack.pop()]
            for row in children.pop(parent.hash, ()):
                try:
                    header = BlockHeader.from_bytes(row.header)
                except ValueError:
                    continue
                if header.hash != row.hash:
                    continue
                status = row.status
                reason = self._loaded_header_failure(header, parent)
                if reason is not None and not status & BLOCK_FAILED:
                    status |= BLOCK_FAILED
                    failed[row.hash] = reason
                    log.warning("block index entry %s fails its header checks (%s): marked invalid; "
                                "the chain database was changed by something other than this node",
                                hash_to_hex(row.hash), reason)
                elif parent.status & BLOCK_FAILED_MASK and not status & BLOCK_FAILED_MASK:
                    status |= BLOCK_FAILED_CHILD
                if status != row.status:
                    changes.append((row.hash, status))
                idx = BlockIndex(row.hash, parent.hash, parent.height + 1, header,
                                 parent.chainwork + block_proof(header.bits), status)
                if (idx.height, idx.chainwork) != (row.height, row.chainwork):
                    recomputed += 1
                self._add_loaded(idx, row.seq)
                stack.append(row.hash)
        ignored = len(rows) - len(self._index)
        if ignored:
            log.warning("%d block index rows do not hold their own header or do not lead back to "
                        "the genesis block: ignored", ignored)
        if recomputed:
            log.warning("%d block index entries stored a height or chain work their headers do "
                        "not give: computed again", recomputed)
        if changes:
            with self._store.transaction():
                self._store.set_statuses(changes)
        self._recompute_linked()
        return failed

    def _add_loaded(self, idx: BlockIndex, seq: int) -> None:
        self._index[idx.hash] = idx
        self._seq[idx.hash] = seq
        self._next_seq = max(self._next_seq, seq + 1)
        if idx.height > 0:
            self._children.setdefault(idx.prev, []).append(idx.hash)
        self._consider_best_header(idx)

    def _loaded_header_failure(self, header: BlockHeader, parent: BlockIndex) -> str | None:
        """Why a stored header breaks a header rule on top of `parent`, or None. The clock is
        left out: a header that was not too far ahead when it came stays valid."""
        try:
            check_block_header(header, self.params)
            self._check_contextual_header(header, parent, None)
        except ValidationError as e:
            return str(e)
        return None

    def _recompute_linked(self) -> None:
        linked: set[bytes] = set()
        for idx in sorted(self._index.values(), key=lambda i: i.height):
            if idx.status & BLOCK_HAVE_DATA and (idx.height == 0 or idx.prev in linked):
                linked.add(idx.hash)
        self._linked = linked

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        """Close the database. Every commit is already on disk; nothing is flushed here."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._store.close()
                finally:
                    self._sigs.close()

    def __enter__(self) -> ChainManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("chain manager is closed")

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[None]:
        """Lock for a chain change, refusing re-entry: a listener that changed the chain
        while it is being moved would pull the tip from under the loop that moves it (it
        would connect a block onto the wrong parent). Reads from listeners are fine."""
        with self._lock:
            self._check_open()
            if self._busy:
                raise RuntimeError("the chain cannot be changed from inside a chain listener")
            if self.fatal is not None:
                raise ChainWriteFailure(self.fatal.cause, self.fatal.path, "the chain stopped on it")
            self._busy = True
            try:
                yield
            except ChainWriteFailure as exc:
                self._stop_on(exc)
                raise
            finally:
                self._busy = False

    def _stop_on(self, exc: ChainWriteFailure) -> None:
        """Latch the first disk failure and tell the owner (once)."""
        if self.fatal is not None:
            return
        self.fatal = exc
        log.error("*** Chain state not written: %s", exc)
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except Exception:       # the owner's bug must not hide the disk failure
                log.exception("on_fatal callback failed")

    def _check_space(self, additional: int) -> None:
        """bitcoind's CheckDiskSpace before a write: ChainWriteFailure("Disk space is too
        low!") when the reserve would not be left. None as the reserve: no check (tests that
        want the disk itself to refuse)."""
        if self._min_free_space is None:
            return
        try:
            ok = check_disk_space(self._db_dir, additional, reserve=self._min_free_space)
        except OSError as exc:
            raise ChainWriteFailure("cannot read the free space", self._db_dir, str(exc)) from exc
        if not ok:
            raise ChainWriteFailure("Disk space is too low!", self._db_dir,
                                    f"under {self._min_free_space >> 20} MiB free")

    @property
    def tip(self) -> BlockIndex:
        """The active chain's last block."""
        with self._lock:
            return self._index[self._chain[-1]]

    @property
    def height(self) -> int:
        """Height of the tip."""
        with self._lock:
            return len(self._chain) - 1

    @property
    def best_header(self) -> BlockIndex:
        """The not-failed header with the most work (possibly without block data): what
        initial block download aims for."""
        with self._lock:
            assert self._best_header is not None
            return self._index[self._best_header]

    def initial_block_download(self, now: float) -> bool:
        """bitcoind's IsInitialBlockDownload (without its latch): the tip has less work than
        the minimum chain work, lies below the best header, or is older than MAX_TIP_AGE."""
        with self._lock:
            return self._catching_up(self._index[self._chain[-1]], now)

    def _catching_up(self, tip: BlockIndex, now: float) -> bool:
        """initial_block_download's test for `tip` as the tip (under the lock)."""
        best = self._index[self._best_header] if self._best_header is not None else tip
        return (tip.chainwork < self.minimum_chain_work or tip.height < best.height
                or tip.time < now - MAX_TIP_AGE)

    def _connect_durably(self, idx: BlockIndex) -> bool:
        """Whether the commit that connects `idx` must sync (see IBD_SYNC_INTERVAL): always,
        unless `idx` leaves the node in initial block download and the last sync is recent."""
        return (time.monotonic() - self._store.synced_at >= IBD_SYNC_INTERVAL
                or not self._catching_up(idx, self._now()))

    def get_index(self, block_hash: bytes) -> BlockIndex | None:
        """The index entry of a known block (header), or None."""
        with self._lock:
            return self._index.get(block_hash)

    def block_at_height(self, height: int) -> BlockIndex | None:
        """The active chain's block at `height`, or None when out of range."""
        with self._lock:
            if 0 <= height < len(self._chain):
                return self._index[self._chain[height]]
            return None

    def is_in_active_chain(self, block_hash: bytes) -> bool:
        """Whether the block is on the active chain."""
        with self._lock:
            return self._in_active(block_hash)

    def _in_active(self, block_hash: bytes) -> bool:
        idx = self._index.get(block_hash)
        return idx is not None and idx.height < len(self._chain) and self._chain[idx.height] == block_hash

    def _require(self, block_hash: bytes) -> BlockIndex:
        idx = self._index.get(block_hash)
        if idx is None:
            raise BlockNotFound(hash_to_hex(block_hash))
        return idx

    def ancestor(self, index: BlockIndex, height: int) -> BlockIndex:
        """The ancestor of `index` at `height` (itself at its own height)."""
        with self._lock:
            return self._ancestor(index, height)

    def _ancestor(self, idx: BlockIndex, height: int) -> BlockIndex:
        if not 0 <= height <= idx.height:
            raise ValueError(f"no ancestor at height {height} of a block at {idx.height}")
        while idx.height != height:
            # Once on the active chain, jump straight to the answer.
            if idx.height < len(self._chain) and self._chain[idx.height] == idx.hash:
                return self._index[self._chain[height]]
            idx = self._index[idx.prev]
        return idx

    def _fork_point(self, idx: BlockIndex) -> BlockIndex:
        """The last block `idx`'s chain shares with the active chain."""
        while not (idx.height < len(self._chain) and self._chain[idx.height] == idx.hash):
            idx = self._index[idx.prev]
        return idx

    def get_block(self, block_hash: bytes) -> Block | None:
        """The stored block, or None (unknown, or only its header is known)."""
        with self._lock:
            self._check_open()
            return self._read_block(block_hash)

    def get_block_raw(self, block_hash: bytes) -> bytes | None:
        """The stored block's bytes as they are, or None: what a peer's getdata is served
        (parsed and serialized again, a 672 KB block cost 24 ms of CPU per copy; bitcoind
        reads it raw too). Checked: the header hashes to `block_hash`, and the bytes match
        the CRC-32 stored with them (a block stored before 12-07 has none: its merkle root is
        checked once, by a parse, and its CRC-32 then stored). A block that fails is None,
        logged once: served, its changed body would make every peer that asked ban us."""
        with self._lock:
            self._check_open()
            found = self._store.get_block_raw_and_sum(block_hash)
            if found is None:
                return None
            raw, crc = found
            if sha256d(raw[:HEADER_SIZE]) != block_hash:
                raise StorageError(f"stored block {hash_to_hex(block_hash)} has another header")
            if crc is not None:
                fault = "" if zlib.crc32(raw) == crc else "its bytes do not match their CRC-32"
            else:
                fault = self._merkle_fault(raw)
                if not fault and self.fatal is None and not self._busy:
                    # Best effort: a failing write only means the parse again next time.
                    with contextlib.suppress(ChainWriteFailure, sqlite3.Error), self._store.transaction():
                        self._store.put_block_sum(block_hash, zlib.crc32(raw))
            if not fault:
                return raw
            if block_hash not in self._corrupt_logged:
                self._corrupt_logged.add(block_hash)
                log.error("stored block %s is corrupt (%s; a disk fault?): not served to peers",
                          hash_to_hex(block_hash), fault)
            return None

    @staticmethod
    def _merkle_fault(raw: bytes) -> str:
        """Why `raw` is not the block of its header ("" when its transactions are)."""
        try:
            block = Block.from_bytes(raw)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a changed body
            return f"its bytes do not parse: {type(exc).__name__}"
        root, mutated = block.compute_merkle_root()
        return "" if root == block.header.merkle_root and not mutated else "its merkle root does not match"

    def _read_block(self, block_hash: bytes) -> Block | None:
        raw = self._store.get_block_raw(block_hash)
        if raw is None:
            return None
        block = Block.from_bytes(raw)
        if block.hash != block_hash:
            raise StorageError(f"stored block {hash_to_hex(block_hash)} hashes to {block.hash_hex}")
        return block

    def get_undo(self, block_hash: bytes, block: Block | None = None) -> tuple[tuple[OutPoint, Coin], ...] | None:
        """The coins the block spent when it was (last) connected, with their outpoints, in
        spend order (the same shape as BlockConnection.spent); None if never connected.
        `block`: the block of that hash, when the caller has read it already (verifychain
        reads each block once, not twice)."""
        with self._lock:
            self._check_open()
            raw = self._store.get_undo_raw(block_hash)
            if block is None:
                block = self._read_block(block_hash)
            if raw is None or block is None:
                return None
            return self._undo_pairs(block, raw)

    @staticmethod
    def _undo_pairs(block: Block, raw: bytes) -> tuple[tuple[OutPoint, Coin], ...]:
        coins = decode_undo(raw)
        ops = undo_outpoints(block)
        if len(coins) != len(ops):
            raise StorageError(f"undo data of {block.hash_hex} has {len(coins)} coins, "
                               f"the block spends {len(ops)}")
        return tuple(zip(ops, coins, strict=True))

    def median_time_past(self, index: BlockIndex) -> int:
        """Median of the times of `index` and its up to ten predecessors: a block on top of
        `index` must be later than this, and locktimes compare against it (BIP113)."""
        with self._lock:
            return self._mtp(index)

    def _mtp(self, idx: BlockIndex) -> int:
        times = [idx.header.time]
        while len(times) < 11 and idx.height > 0:
            idx = self._index[idx.prev]
            times.append(idx.header.time)
        return _median(times)

    def next_bits(self, prev_index: BlockIndex) -> int:
        """The difficulty bits a block on top of `prev_index` must carry."""
        with self._lock:
            return self._next_bits(prev_index)

    def _next_bits(self, prev: BlockIndex) -> int:
        return next_work_required(PrevBlock(prev.height, prev.header.bits, prev.header.time),
                                  self.params, lambda h: self._ancestor(prev, h).header.time)

    # ------------------------------------------------------------------ UTXO and tx lookups

    def utxo(self, outpoint: OutPoint) -> Coin | None:
        """The unspent coin at `outpoint` as of the tip, or None."""
        with self._lock:
            self._check_open()
            return self._store.get_coin(outpoint)

    def get(self, outpoint: OutPoint) -> Coin | None:
        """consensus.UtxoView: same as utxo()."""
        return self.utxo(outpoint)

    def has_coins_of(self, txid: bytes) -> bool:
        """Whether any output of `txid` is unspent as of the tip (one key search)."""
        with self._lock:
            self._check_open()
            return self._store.has_coins_of(txid)

    def utxos(self, outpoints: list[OutPoint]) -> dict[tuple[bytes, int], Coin]:
        """The unspent coins among `outpoints`, keyed by (txid, n), in a few queries."""
        with self._lock:
            self._check_open()
            return self._store.get_coins(outpoints)

    def utxo_stats(self) -> dict[str, Any]:
        """gettxoutsetinfo: height, bestblock (display hex), transactions (with unspent
        outputs), txouts, total_amount (units) and hash_serialized (SHA-256d over the sorted
        set; equal for equal sets)."""
        with self._lock:
            self._check_open()
            txouts, total, txs, digest = self._store.utxo_stats()
            tip = self.tip
            return {"height": tip.height, "bestblock": tip.hash_hex, "transactions": txs,
                    "txouts": txouts, "total_amount": total, "hash_serialized": digest}

    def coins_paying(self, pkhs: set[bytes] | frozenset[bytes]) -> tuple[list[tuple[OutPoint, Coin]], int, BlockIndex]:
        """scantxoutset: every unspent coin paying one of `pkhs`, how many coins were scanned,
        and the tip they are of (one pass over the UTXO set under the lock: one state)."""
        with self._lock:
            self._check_open()
            found: list[tuple[OutPoint, Coin]] = []
            scanned = 0
            for op, coin in self._store.iter_utxos():
                scanned += 1
                if coin.pkh in pkhs:
                    found.append((op, coin))
            return found, scanned, self.tip

    def find_tx(self, txid: bytes) -> tuple[Transaction, bytes | None] | None:
        """(transaction, hash of the active-chain block containing it), or None.

        The block hash is never None here; the type leaves room for callers that merge in
        the mempool (getrawtransaction), where it is."""
        with self._lock:
            self._check_open()
            found = self._store.find_tx(txid)
            return None if found is None else (found[0], found[1])

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: Any) -> None:
        """Register an object with block_connected(block, index) and/or
        block_disconnected(block, index); called after each commit, in chain order."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        """Unregister a listener (no error if it was not registered)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, event: str, block: Block, idx: BlockIndex) -> None:
        if not self._notify_enabled:
            return
        for listener in list(self._listeners):
            fn = getattr(listener, event, None)
            if fn is None:
                continue
            try:
                fn(block, idx)
            except Exception:
                log.exception("chain listener %r failed in %s", listener, event)

    # ------------------------------------------------------------------ accepting

    def _check_header(self, header: BlockHeader, now: int) -> BlockIndex:
        """Header checks of a new header; returns its (unstored) entry with status 0."""
        check_block_header(header, self.params, now)
        parent = self._index.get(header.prev_hash)
        if parent is None:
            raise ValidationError(Failure.MISSING_INPUTS, "prev-blk-not-found",
                                  f"previous block {hash_to_hex(header.prev_hash)} is unknown")
        if parent.status & BLOCK_FAILED_MASK:
            raise ValidationError(Failure.CONSENSUS, "bad-prevblk", "previous block is invalid")
        self._check_contextual_header(header, parent, now)
        return BlockIndex(header.hash, parent.hash, parent.height + 1, header,
                          parent.chainwork + block_proof(header.bits), 0)

    def _check_contextual_header(self, header: BlockHeader, parent: BlockIndex, now: int | None) -> None:
        """The header rules that need its (stored) parent: difficulty bits, median time past,
        time (`now` None: not the clock). Raises ValidationError."""
        contextual_check_block_header(
            header, PrevBlock(parent.height, parent.header.bits, parent.header.time), self.params,
            median_time_past=self._mtp(parent),
            ancestor_time=lambda h: self._ancestor(parent, h).header.time, now=now)

    @staticmethod
    def _known_failure(idx: BlockIndex) -> ValidationError:
        if idx.status & BLOCK_FAILED:
            return ValidationError(Failure.CONSENSUS, "duplicate-invalid", "block is known invalid")
        return ValidationError(Failure.CONSENSUS, "bad-prevblk", "an ancestor is invalid")

    def accept_header(self, header: BlockHeader) -> BlockIndex:
        """Check and store a header without its block (headers-first download). Returns its
        entry (the existing one if known). Raises ValidationError as accept_block does."""
        with self._mutating():
            idx = self._index.get(header.hash)
            if idx is not None:
                if idx.status & BLOCK_FAILED_MASK:
                    raise self._known_failure(idx)
                return idx
            idx = self._check_header(header, self._now())
            self._check_space(len(header.serialized))
            self._store_header(idx)
            return self._index[idx.hash]

    def _store_header(self, idx: BlockIndex) -> None:
        with self._store.transaction():
            self._store.put_index(self._row(idx, 0))
        self._note_stored(idx, 0)

    # ------------------------------------------------------------------ headers pre-sync

    def header_link(self, block_hash: bytes) -> HeaderLink | None:
        """The link of a known, not-failed index entry, from which a run of unstored headers
        may be checked (check_header_link); None if unknown or failed."""
        with self._lock:
            idx = self._index.get(block_hash)
            if idx is None or idx.status & BLOCK_FAILED_MASK:
                return None
            times: list[int] = []
            x = idx
            while True:
                times.append(x.header.time)
                if len(times) == 11 or x.height == 0:
                    break
                x = self._index[x.prev]
            return HeaderLink(idx.hash, idx.height, idx.chainwork, idx.header.bits, idx.header.time,
                              tuple(reversed(times)), None, idx.hash)

    def check_header_link(self, header: BlockHeader, prev: HeaderLink) -> HeaderLink:
        """Check `header` as accept_header would (proof of work, time, the difficulty and
        median time past its parent demands) against `prev`, a header that need not be
        stored, and return its link: nothing is written (bitcoind's headers pre-sync, which
        counts a branch's work before storing any of it). Raises ValidationError."""
        if header.prev_hash != prev.hash:
            raise ValueError("the header does not follow the link")
        with self._lock:
            check_block_header(header, self.params, self._now())
            base = self._index.get(prev.base)
            if base is None:
                raise ValueError("the link's base is not in the index")
            if base.status & BLOCK_FAILED_MASK:
                raise ValidationError(Failure.CONSENSUS, "bad-prevblk", "previous block is invalid")

            def ancestor_time(height: int) -> int:
                # Retargeting reads the first block of the period: recorded in the run when it
                # lies above the base, in the index below it.
                if height > base.height:
                    if prev.period_start is None or prev.period_start[0] != height:
                        raise ValueError(f"no time recorded for height {height}")
                    return prev.period_start[1]
                return self._ancestor(base, height).header.time

            contextual_check_block_header(
                header, PrevBlock(prev.height, prev.bits, prev.time), self.params,
                median_time_past=_median(prev.recent_times), ancestor_time=ancestor_time,
                now=self._now())
        height = prev.height + 1
        period_start = prev.period_start
        if height % self.params.retarget_interval == 0:
            period_start = (height, header.time)
        return HeaderLink(header.hash, height, prev.chainwork + block_proof(header.bits), header.bits,
                          header.time, (*prev.recent_times, header.time)[-11:], period_start, prev.base)

    def accept_headers(self, headers: Sequence[BlockHeader], *, min_work_checked: bool = False) -> BlockIndex:
        """Check and store a continuous run of headers (the first one's parent known) in one
        transaction; returns the last one's entry. Headers already known are skipped.

        Unless `min_work_checked` (the caller counted, by headers pre-sync, that the branch
        these headers start goes on to more work than the tip: p2p/presync.py), the run must
        itself end with more work than the tip, or nothing is stored ("too-little-chainwork",
        not invalid): a header that leads nowhere costs its sender only its era's proof of
        work, and stored it held disk and memory for good. Raises ValidationError as
        accept_header does (nothing of the run stored)."""
        if not headers:
            raise ValueError("no headers")
        with self._mutating():
            link: HeaderLink | None = None
            new: list[BlockIndex] = []
            for header in headers:
                known = self._index.get(header.hash)
                if known is not None and not new:
                    if known.status & BLOCK_FAILED_MASK:
                        raise self._known_failure(known)
                    link = None
                    continue
                if link is None:
                    link = self.header_link(header.prev_hash)
                    if link is None:
                        parent = self._index.get(header.prev_hash)
                        if parent is None:
                            raise ValidationError(Failure.MISSING_INPUTS, "prev-blk-not-found",
                                                  f"previous block {hash_to_hex(header.prev_hash)} is unknown")
                        raise ValidationError(Failure.CONSENSUS, "bad-prevblk", "previous block is invalid")
                link = self.check_header_link(header, link)
                new.append(BlockIndex(header.hash, header.prev_hash, link.height, header, link.chainwork, 0))
            if not new:
                return self._index[headers[-1].hash]
            tip = self._index[self._chain[-1]]
            if not min_work_checked and new[-1].chainwork <= tip.chainwork:
                raise ValidationError(
                    Failure.TOO_LITTLE_WORK, "too-little-chainwork",
                    f"headers up to height {new[-1].height} have less work than the tip at height {tip.height}")
            self._check_space(len(new) * 80)
            with self._store.transaction():
                for idx in new:
                    self._store.put_index(self._row(idx, 0))
            for idx in new:
                self._note_stored(idx, 0)
            return self._index[new[-1].hash]

    def accept_block(self, block: Block) -> AcceptResult:
        """Validate, store and (if its chain is now the best) connect `block`; see the module
        docstring. Raises ValidationError: "prev-blk-not-found" (unknown parent: an orphan,
        nothing stored), a header or block rule, or the failure of a block connected while
        activating the best chain (after the best valid chain has been restored)."""
        with self._mutating():
            h = block.hash
            idx = self._index.get(h)
            if idx is not None:
                if idx.status & BLOCK_FAILED_MASK:
                    raise self._known_failure(idx)
                if idx.status & BLOCK_HAVE_DATA:
                    return AcceptResult(idx, False, True)
            now = self._now()
            known_header = idx is not None
            if idx is None:
                idx = self._check_header(block.header, now)
            parent = self._index[idx.prev]
            self._check_lag(idx)
            try:
                # Proof of work was checked with the header (here or in accept_header).
                check_block(block, self.params, now, check_pow=False)
                contextual_check_block(block, idx.height, self._mtp(parent))
            except ValidationError as e:
                if e.marks_block_invalid:
                    if known_header:
                        self._mark_failed(h)
                    else:
                        self._store_header(replace(idx, status=BLOCK_FAILED))
                elif not known_header and e.failure is Failure.MUTATED:
                    # The header is fine (it passed every header rule); only these
                    # transactions are not its own. Remember the header.
                    self._store_header(idx)
                raise
            # Only a block that passed every check costs disk space (and may stop the node).
            self._check_space(len(block.serialized))
            stored = replace(idx, status=idx.status | BLOCK_HAVE_DATA | BLOCK_VALID_TRANSACTIONS)
            seq = self._next_seq
            self._next_seq += 1
            old_tip = self._chain[-1]
            if (not known_header and stored.prev == old_tip
                    and all(self._index[c].chainwork < stored.chainwork for c in self._candidates)):
                err = self._store_and_connect(stored, block, seq)
                if err is not None:
                    raise err
            else:
                with self._store.transaction():
                    self._store.put_index(self._row(stored, seq))
                    self._store.put_block(h, block.serialized)
                self._note_stored(stored, seq)
            err = self._activate_best_chain({h: block})
            if err is not None:
                raise err
            return AcceptResult(self._index[h], self._chain[-1] != old_tip, False)

    def _check_lag(self, idx: BlockIndex) -> None:
        """Refuse to store a block whose branch lags more than MAX_SIDE_BRANCH_LAG blocks' worth
        of work behind the active tip (see there): "too-little-chainwork", not invalid, and
        nothing of it stored, as bitcoind's AcceptBlock keeps no less-work block it did not
        ask for (its headers-first download asks only for blocks of a branch with more work).
        Unless its headers, known already, lead to more work than the tip has: then it is
        stored as any block (`_on_best_header_branch`)."""
        tip = self._index[self._chain[-1]]
        lag = tip.chainwork - idx.chainwork
        if lag <= 0:
            return
        proof = max(block_proof(tip.header.bits), 1)
        if lag > self._max_side_branch_lag * proof and not self._on_best_header_branch(idx, tip):
            raise ValidationError(
                Failure.TOO_LITTLE_WORK, "too-little-chainwork",
                f"its branch lags {lag // proof} blocks' work behind the tip "
                f"at height {tip.height} (at most {self._max_side_branch_lag} are stored unless the branch's "
                "headers show more work than the tip)")

    def _on_best_header_branch(self, idx: BlockIndex, tip: BlockIndex) -> bool:
        """Whether `idx` lies on the branch of a header with more work than the tip: a block
        asked for because its headers showed that work (p2p/node.py, "Block download"), as
        bitcoind stores the blocks of its best header chain however far they lag. A lagging
        branch without such headers is still refused (the disk-fill attack above)."""
        if self._best_header is None:
            return False
        best = self._index[self._best_header]
        if best.chainwork <= tip.chainwork:
            return False
        cached = self._best_branch
        if (cached is None or cached[0] != best.hash
                or not (cached[1].height < len(self._chain) and self._chain[cached[1].height] == cached[1].hash)):
            # Walked once per best header (and again only if its fork point left the active
            # chain): a long branch costs one pass, not one per block of it.
            branch: set[bytes] = set()
            entry = best
            while not (entry.height < len(self._chain) and self._chain[entry.height] == entry.hash):
                branch.add(entry.hash)
                entry = self._index[entry.prev]
            cached = self._best_branch = (best.hash, entry, frozenset(branch))
        return idx.hash in cached[2]

    def _store_and_connect(self, stored: BlockIndex, block: Block, seq: int) -> ValidationError | None:
        """Store a new block that extends the tip and connect it, in one transaction. If it
        fails to connect it is stored as failed (same transaction; the connect's writes,
        made while its signatures were verified, are undone to a savepoint) and the error
        returned."""
        store = self._store
        err: ValidationError | None = None
        with store.transaction(durable=self._connect_durably(stored)):
            try:
                with store.savepoint():
                    self._connect_block(block, stored.height)
            except ValidationError as e:
                err = e
            if err is None:
                final = replace(stored, status=stored.status | BLOCK_VALID_SCRIPTS)
            elif err.marks_block_invalid:
                final = replace(stored, status=stored.status | BLOCK_FAILED)
            else:
                final = stored
            store.put_index(self._row(final, seq))
            store.put_block(final.hash, block.serialized)
        self._note_stored(final, seq, candidate=err is None)
        if err is None:
            self._chain.append(final.hash)
            self._prune_candidates()
            self._notify("block_connected", block, final)
        return err

    def _connect_block(self, block: Block, height: int) -> None:
        """Check `block` against the UTXO set and make its writes (inside the caller's open
        transaction), or raise ValidationError if a rule fails: then the caller's
        transaction (or savepoint) must be rolled back, as every exception here demands.
        Each signature goes to sigcheck's helper threads as soon as its input passed every
        other rule, so they verify while this thread checks the next inputs and makes the
        writes; this thread then verifies what is left. Nothing is committed before every
        signature passed (docs/node.md says why the writes overlap the verification)."""
        session = self._sigs.begin(sum(len(tx.vin) for tx in block.txs[1:]))
        try:
            conn, _ = connect_block_inputs(block, height, _PrefetchedView(self._store, block),
                                           self.params, signature_checks=session)
            self._store.apply_connect(block, conn)
        except BaseException:
            # Never leave while the helpers still verify this block's signatures.
            session.abort()
            raise
        bad = session.wait()
        if bad is not None:
            raise block_signature_failure(session.checks[bad])

    @staticmethod
    def _row(idx: BlockIndex, seq: int) -> IndexRow:
        return IndexRow(idx.hash, idx.prev, idx.height, idx.header.serialized, idx.chainwork,
                        idx.status, seq)

    def _note_stored(self, idx: BlockIndex, seq: int, *, candidate: bool = True) -> None:
        """Memory side of storing an index entry (after its commit)."""
        h = idx.hash
        if h not in self._index:
            self._children.setdefault(idx.prev, []).append(h)
        self._index[h] = idx
        self._seq[h] = seq
        self._consider_best_header(idx)
        if idx.status & BLOCK_HAVE_DATA and idx.prev in self._linked and h not in self._linked:
            # This block, and any stored descendants that were waiting for it, can now be
            # tips: bitcoind's mapBlocksUnlinked.
            stack = [h]
            while stack:
                x = stack.pop()
                self._linked.add(x)
                xi = self._index[x]
                if not xi.status & BLOCK_FAILED_MASK and (candidate or x != h):
                    self._candidates.add(x)
                for c in self._children.get(x, ()):
                    if self._index[c].status & BLOCK_HAVE_DATA and c not in self._linked:
                        stack.append(c)

    def _consider_best_header(self, idx: BlockIndex) -> None:
        if idx.status & BLOCK_FAILED_MASK:
            return
        if self._best_header is None or idx.chainwork > self._index[self._best_header].chainwork:
            self._best_header = idx.hash

    def _recompute_best_header(self) -> None:
        self._best_header = None
        for idx in self._index.values():
            self._consider_best_header(idx)

    # ------------------------------------------------------------------ best chain

    def _rebuild_candidates(self) -> None:
        """All linked, valid entries with at least the work of the deepest valid block of the
        active chain (after invalidateblock the tip itself may be failed)."""
        floor = self._index[self._chain[-1]]
        i = len(self._chain) - 1
        while floor.status & BLOCK_FAILED_MASK and i > 0:
            i -= 1
            floor = self._index[self._chain[i]]
        self._candidates = {h for h in self._linked
                            if not self._index[h].status & BLOCK_FAILED_MASK
                            and self._index[h].chainwork >= floor.chainwork}

    def _prune_candidates(self) -> None:
        work = self._index[self._chain[-1]].chainwork
        self._candidates = {h for h in self._candidates if self._index[h].chainwork >= work}

    def _best_candidate(self) -> BlockIndex | None:
        best: BlockIndex | None = None
        best_seq = 0
        for h in self._candidates:
            idx = self._index[h]
            seq = self._seq.get(h, 0)
            # Most work; at equal work the one whose data arrived first.
            if best is None or idx.chainwork > best.chainwork or (
                    idx.chainwork == best.chainwork and seq < best_seq):
                best, best_seq = idx, seq
        return best

    def _activate_best_chain(self, cache: dict[bytes, Block],
                             progress: tuple[str, ProgressFn | None] | None = None
                             ) -> ValidationError | None:
        """Move the tip to the most-work valid chain; returns the first connect failure."""
        first_err: ValidationError | None = None
        # A failed tip (invalidateblock, or a crash in the middle of one) is left first.
        while self._index[self._chain[-1]].status & BLOCK_FAILED_MASK:
            self._disconnect_tip()
        reporter: _Progress | None = None
        while True:
            tip = self._index[self._chain[-1]]
            best = self._best_candidate()
            if best is None or best.chainwork <= tip.chainwork:
                break
            if progress is not None and reporter is None and best.height - tip.height > 1:
                reporter = _Progress(progress[0], progress[1], tip.height, best.height)
                reporter.report(tip.height, final=True)
            fork = self._fork_point(best)
            while self._chain[-1] != fork.hash:
                self._disconnect_tip()
            path: list[BlockIndex] = []
            x = best
            while x.hash != fork.hash:
                path.append(x)
                x = self._index[x.prev]
            for idx in reversed(path):
                try:
                    block = cache.pop(idx.hash, None) or self._read_stored_block(idx)
                    if block is None:
                        break       # its bytes were dropped: the best chain left is tried
                    self._connect_tip(idx, block)
                except ValidationError as e:
                    log.warning("block %s at height %d failed to connect: %s",
                                idx.hash_hex, idx.height, e)
                    if first_err is None:
                        first_err = e
                    if e.marks_block_invalid:
                        self._mark_failed(idx.hash)
                    else:
                        # Not the block's fault for sure (never happens for connect
                        # checks today): stop trying it until the next restart.
                        self._candidates -= {h for h in self._candidates
                                             if self._index[h].height >= idx.height
                                             and self._ancestor(self._index[h], idx.height).hash == idx.hash}
                    break
                if reporter is not None:
                    reporter.report(idx.height)
        if reporter is not None:
            reporter.report(self._index[self._chain[-1]].height, final=True)
        self._prune_candidates()
        return first_err

    def _read_stored_block(self, idx: BlockIndex) -> Block | None:
        """A stored block about to be connected, checked again as bitcoind's ConnectBlock checks
        a block read from disk (CheckBlock): here the file's writer is not trusted. Bytes that
        are not the block of this header (transactions swapped under a valid header: the
        merkle root does not match) are dropped and the entry loses its data, so the block is
        downloaded again; None then. Any other rule a block of this header breaks raises, and
        marks it invalid as for a block from a peer."""
        block = self._read_block(idx.hash)
        if block is None:
            raise StorageError(f"block {idx.hash_hex} is marked stored but missing")
        try:
            check_block(block, self.params, check_pow=False)
        except ValidationError as e:
            if e.failure is not Failure.MUTATED:
                raise
            log.warning("stored block %s at height %d is not the block of its header (%s): dropped, "
                        "to be downloaded again; the chain database was changed by something other "
                        "than this node", idx.hash_hex, idx.height, e)
            status = idx.status & ~(BLOCK_HAVE_DATA | BLOCK_VALID_TRANSACTIONS | BLOCK_VALID_SCRIPTS)
            with self._store.transaction():
                self._store.drop_block(idx.hash)
                self._store.set_statuses([(idx.hash, status)])
            self._index[idx.hash] = replace(idx, status=status)
            self._recompute_linked()
            self._rebuild_candidates()
            return None
        return block

    def _connect_tip(self, idx: BlockIndex, block: Block) -> None:
        """Connect `block` (child of the tip) in one transaction; ValidationError leaves
        everything as it was."""
        if idx.prev != self._chain[-1]:
            raise RuntimeError(f"connect {idx.hash_hex}: its parent is not the tip")
        store = self._store
        new = replace(idx, status=idx.status | BLOCK_VALID_SCRIPTS)
        with store.transaction(durable=self._connect_durably(idx)):
            self._connect_block(block, idx.height)
            store.set_statuses([(idx.hash, new.status)])
        self._index[idx.hash] = new
        self._chain.append(idx.hash)
        self._candidates.add(idx.hash)
        self._notify("block_connected", block, new)

    def _disconnect_tip(self) -> None:
        """Disconnect the tip in one transaction, restoring the coins it spent."""
        tip = self._index[self._chain[-1]]
        if tip.height == 0:
            raise StorageError("cannot disconnect the genesis block")
        block = self._read_block(tip.hash)
        raw_undo = self._store.get_undo_raw(tip.hash)
        if block is None or raw_undo is None:
            raise StorageError(f"cannot disconnect {tip.hash_hex}: block or undo data missing")
        restored = self._undo_pairs(block, raw_undo)
        with self._store.transaction():
            self._store.apply_disconnect(block, restored, tip.prev)
        self._chain.pop()
        self._notify("block_disconnected", block, tip)

    def _descendants(self, block_hash: bytes) -> Iterator[bytes]:
        stack = list(self._children.get(block_hash, ()))
        while stack:
            h = stack.pop()
            yield h
            stack.extend(self._children.get(h, ()))

    def _mark_failed(self, block_hash: bytes) -> None:
        """Mark the block failed and its descendants failed-child, in one transaction."""
        idx = self._index[block_hash]
        changes = [(block_hash, idx.status | BLOCK_FAILED)]
        changes += [(d, self._index[d].status | BLOCK_FAILED_CHILD) for d in self._descendants(block_hash)]
        with self._store.transaction():
            self._store.set_statuses(changes)
        for h, status in changes:
            self._index[h] = replace(self._index[h], status=status)
            self._candidates.discard(h)
        if self._best_header in {h for h, _ in changes}:
            self._recompute_best_header()

    # ------------------------------------------------------------------ invalidate / reconsider

    def invalidate_block(self, block_hash: bytes) -> None:
        """invalidateblock: mark the block failed and its descendants failed-child, rewind the
        active chain below it and move to the best remaining chain. Raises BlockNotFound, or
        ValueError for genesis, or a ValidationError met while activating."""
        with self._mutating():
            idx = self._require(block_hash)
            if idx.height == 0:
                raise ValueError("the genesis block cannot be invalidated")
            # Flags first, in their own commit: if we are killed while disconnecting,
            # start-up sees a failed tip and finishes the rewind.
            self._mark_failed(block_hash)
            self._rebuild_candidates()
            err = self._activate_best_chain({})
            if err is not None:
                raise err

    def reconsider_block(self, block_hash: bytes) -> None:
        """reconsiderblock: clear the failure flags of the block, its ancestors and its
        descendants, then activate the best chain (which may fail again and re-mark them:
        that error is raised after the best valid chain is restored)."""
        with self._mutating():
            idx = self._require(block_hash)
            changes: list[tuple[bytes, int]] = []
            for h in (block_hash, *self._descendants(block_hash)):
                st = self._index[h].status
                if st & BLOCK_FAILED_MASK:
                    changes.append((h, st & ~BLOCK_FAILED_MASK))
            x = idx
            while x.height > 0:
                x = self._index[x.prev]
                if x.status & BLOCK_FAILED_MASK:
                    changes.append((x.hash, x.status & ~BLOCK_FAILED_MASK))
            if changes:
                with self._store.transaction():
                    self._store.set_statuses(changes)
                for h, status in changes:
                    self._index[h] = replace(self._index[h], status=status)
                self._recompute_best_header()
            self._rebuild_candidates()
            err = self._activate_best_chain({})
            if err is not None:
                raise err

    # ------------------------------------------------------------------ P2P helpers

    def locator(self, index: BlockIndex | None = None) -> list[bytes]:
        """Bitcoin's block locator from `index` (default: the tip): the last 10 blocks, then
        exponentially sparser back to genesis, which is always last."""
        with self._lock:
            idx: BlockIndex = index if index is not None else self._index[self._chain[-1]]
            out: list[bytes] = []
            step = 1
            while True:
                out.append(idx.hash)
                if idx.height == 0:
                    return out
                idx = self._ancestor(idx, max(idx.height - step, 0))
                if len(out) > 10:
                    step *= 2

    def find_fork(self, locator: list[bytes]) -> BlockIndex:
        """The first locator entry on the active chain (the tip if an entry descends from
        it, genesis if none matches): where the asking peer's chain meets ours."""
        with self._lock:
            tip = self._index[self._chain[-1]]
            for h in locator:
                idx = self._index.get(h)
                if idx is None:
                    continue
                if self._in_active(h):
                    return idx
                if idx.height > tip.height and self._ancestor(idx, tip.height).hash == tip.hash:
                    return tip
            return self._index[self._chain[0]]

    def hashes_after(self, locator: list[bytes], stop: bytes | None, limit: int) -> list[bytes]:
        """Active-chain hashes after find_fork(locator), up to and including `stop`, at most
        `limit` (getblocks: 500, getheaders: 2000)."""
        with self._lock:
            fork = self.find_fork(locator)
            out: list[bytes] = []
            for height in range(fork.height + 1, min(len(self._chain), fork.height + 1 + max(limit, 0))):
                h = self._chain[height]
                out.append(h)
                if h == stop:
                    break
            return out

    def chain_tips(self) -> list[dict[str, Any]]:
        """getchaintips: every block without children, and the active tip; each with height,
        hash (display hex), branchlen (blocks since the fork from the active chain) and
        status: active, valid-fork (fully validated), valid-headers (all blocks stored, not
        all validated), headers-only (some block missing), invalid."""
        with self._lock:
            tip = self._index[self._chain[-1]]
            tips = [idx for h, idx in self._index.items() if not self._children.get(h)]
            if tip not in tips:
                tips.append(tip)
            out: list[dict[str, Any]] = []
            for idx in sorted(tips, key=lambda i: (-i.height, i.hash_hex)):
                fork = self._fork_point(idx)
                if idx.hash == tip.hash:
                    status = "active"
                elif idx.status & BLOCK_FAILED_MASK:
                    status = "invalid"
                elif idx.hash not in self._linked:
                    status = "headers-only"
                elif idx.status & BLOCK_VALID_SCRIPTS:
                    status = "valid-fork"
                else:
                    status = "valid-headers"
                out.append({"height": idx.height, "hash": idx.hash_hex,
                            "branchlen": idx.height - fork.height, "status": status})
            return out

    # ------------------------------------------------------------------ reindex

    def verify_chain(self, level: int = verify_chain.DEFAULT_CHECK_LEVEL,
                     nblocks: int = verify_chain.DEFAULT_CHECK_BLOCKS,
                     progress: Callable[[int, int], None] | None = None) -> verify_chain.VerifyResult:
        """verifychain and the start-up check (-checkblocks, -checklevel): the last `nblocks`
        blocks against their undo data and the UTXO set (verify_chain.verify), with the chain
        held still meanwhile, as bitcoind holds cs_main."""
        with self._lock:
            self._check_open()
            return verify_chain.verify(self, level, nblocks, progress)

    def reindex(self, on_progress: ProgressFn | None = None) -> None:
        """-reindex: rebuild the UTXO set, tx index, undo data and tip by reconnecting the
        stored blocks from genesis (signatures checked again), with progress reports
        ("reindex", height, total) to `on_progress` (default: the constructor's) and the log.

        Run it before attaching listeners: it sends no notifications (the blocks it
        reconnects are, apart from any now found invalid, those that were connected before).
        Failure flags are kept; a block found invalid on the way is marked and the best
        remaining chain is used. Killed halfway, the next start-up continues from the
        partial tip.
        """
        with self._mutating():
            fn = on_progress if on_progress is not None else self._on_progress
            genesis = self.params.genesis_hash
            # Blocks whose bytes went missing can no longer be tips.
            stored = set(self._store.iter_block_hashes())
            lost = [(h, idx.status & ~BLOCK_HAVE_DATA) for h, idx in self._index.items()
                    if idx.status & BLOCK_HAVE_DATA and h not in stored]
            with self._store.transaction():
                self._store.reset_chainstate(genesis)
                if lost:
                    self._store.set_statuses(lost)
            for h, status in lost:
                log.warning("reindex: block %s has no stored data", hash_to_hex(h))
                self._index[h] = replace(self._index[h], status=status)
            self._chain = [genesis]
            self._recompute_linked()
            self._rebuild_candidates()
            self._notify_enabled = False
            # Derived state only: losing progress to a power cut is harmless, so skip the
            # per-block fsync while rebuilding.
            self._store.set_synchronous("NORMAL")
            try:
                err = self._activate_best_chain({}, progress=("reindex", fn))
            finally:
                self._notify_enabled = True
                self._store.set_synchronous(self._synchronous)
                # Under FULL this commit fsyncs the WAL, and with it every frame before it.
                with self._store.transaction():
                    self._store.set_meta("reindexed", str(int(time.time())).encode())
            if err is not None:
                log.warning("reindex: a block failed to connect: %s", err)
            log.info("reindex done: tip %s at height %d", self.tip.hash_hex, self.tip.height)
