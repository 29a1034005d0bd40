"""One loaded wallet (`Wallet`) and the set of loaded wallets (`WalletManager`).

The wallet talks to the node ONLY through the `Chain` interface (components/interfaces/chain.py),
so the same code runs inside CleanCoind (NodeChain, direct calls) and, later, in its own
process over IPC.

Sync model. The store remembers the last block it processed (`best_block`). `sync()` brings it
to the chain's tip: if the wallet's best block left the active chain (a reorg while we were
away, or an invalidateblock), it finds the fork (`find_fork` with a locator of the wallet's
recent blocks), undoes the wallet's blocks above it, then reads the missing blocks in batches
with `get_blocks`. Chain notifications (block connected/disconnected) simply call `sync()`:
the chain has already committed the change when the event arrives, so reading the chain's
current state is always right, and one code path serves load, catch-up and reorgs. An
asyncio lock serialises syncs, so two events never interleave.

Secrets. The seed is read from the store only for signing or deriving keys. Of an encrypted
wallet it lives, while unlocked, in one `SecretBytes` that `lock()` wipes (on walletlock, on
the walletpassphrase timeout, on unload). Messages never contain secrets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import coincurve

from cleancoin.components.interfaces.chain import MAX_GET_HEADERS, Chain, ChainEvent, Handler
from cleancoin.components.interfaces.wallet import WalletEvent
from cleancoin.components.common.chainparams import ChainParams, params_for
from cleancoin.components.common.hashes import hash160
from cleancoin.components.common.errors import ValidationError
from cleancoin.components.common.keys import PrivateKey, sign_transaction, verify_input
from cleancoin.components.common.pow import block_proof
from cleancoin.components.common.private_files import UnsafeFileError, open_own_input
from cleancoin.components.common.primitives import Block, BlockHeader, OutPoint, Transaction, compact_size

from .coins import FeeExceedsMaximum, SpendableCoin, build_transaction
from .events import WalletEventFeed
from .headers import HEADER_SIZE, BlockRefused, Branch, GenesisCheck, HeaderChain, prove_down
from cleancoin.components.common.fee_cap import (DEFAULT_MAX_TX_FEE, MAX_FEE_EXCEEDED, MIN_RELAY_FEE_RATE,
                                               high_fee_warning)
from .crypto import SEED_PURPOSE, SecretBytes, WrongPassphrase, encrypt
from .hd import master_key, wallet_key
from .locked_memory import scrub
from .store import (DB_FILENAME, NEW_SUFFIX, SETTINGS_FILENAME, SETTINGS_TMP_FILENAME, KeyRecord, WalletCoin, WalletError,
                    WalletStore, valid_wallet_name, wallet_dir)

__all__ = ["Balances", "KEYPOOL_SIZE", "KeypoolRanOut", "SETTINGS_FILENAME", "StartupWalletError",
           "UnlockNeeded", "Wallet", "WalletFormatError", "WalletManager", "WrongPassphrase",
           "message_hash", "verify_message"]

log = logging.getLogger("cleancoin.wallet")

#: Keys derived ahead on each chain (external, change), beyond the highest USED index: the
#: lookahead (gap limit) that lets a restored backup find payments to keys handed out after
#: it was taken. bitcoind uses 1000; hardened derivation in Python costs about a millisecond
#: a key, so a smaller pool keeps loads fast.
KEYPOOL_SIZE: int = 100
#: Blocks asked for per get_blocks call during catch-up and rescan.
SYNC_BATCH: int = 200
#: Catch-ups longer than this many blocks log their progress.
PROGRESS_MIN_BLOCKS: int = 1000
#: Locator length: the wallet's recent blocks offered to find_fork.
LOCATOR_DEPTH: int = 32
MESSAGE_MAGIC: bytes = b"CleanCoin Signed Message:\n"
#: Largest settings file read: it holds a short list of wallet names.
MAX_SETTINGS_BYTES: int = 1 << 20


class UnlockNeeded(WalletError):
    """Signing (or deriving keys) needs the passphrase: the wallet is encrypted and locked."""

    def __init__(self) -> None:
        super().__init__("Error: Please enter the wallet passphrase with walletpassphrase first.")


class StartupWalletError(WalletError):
    """A wallet the node was told to load at start-up (-wallet, or the settings list) could
    not be loaded: the node stops (`name` says which; the message says why)."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.name = name


class WalletFormatError(WalletError):
    """The wallet's file is not a wallet database (bitcoind's FAILED_BAD_FORMAT: RPC -18)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"Wallet file verification failed. Failed to load database path "
                         f"'{directory}'. Data is not in recognized format.")


#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC: bytes = b"SQLite format 3\x00"


def _is_sqlite_file(path: Path) -> bool:
    """bitcoind's IsSQLiteFile, without the application id: the SQLite header is there."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


class KeypoolRanOut(WalletError):
    """No key left in the pool and the wallet is locked, so none can be derived."""

    def __init__(self) -> None:
        super().__init__("Error: Keypool ran out, please call keypoolrefill first")


def message_hash(message: str) -> bytes:
    """The digest signmessage signs: sha256d(varstr(magic) || varstr(message))."""
    data = message.encode()
    payload = (compact_size(len(MESSAGE_MAGIC)) + MESSAGE_MAGIC + compact_size(len(data)) + data)
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()


def verify_message(pkh: bytes, signature_b64: str, message: str) -> bool:
    """Whether `signature_b64` (a compact recoverable signature, header byte first, as
    bitcoind's) signs `message` with the key of `pkh`."""
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        raise ValueError("Malformed base64 encoding") from None
    if len(sig) != 65 or not 27 <= sig[0] <= 34:
        return False
    recid = (sig[0] - 27) & 3
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            sig[1:] + bytes((recid,)), message_hash(message), hasher=None)
    except Exception:  # noqa: BLE001 - any recovery failure means "does not verify"
        return False
    return hash160(pub.format(compressed=True)) == pkh


@dataclass(frozen=True)
class Balances:
    """getbalances' `mine` (units)."""

    trusted: int
    untrusted_pending: int
    immature: int


class _Notifications:
    """The ChainNotifications capability handed to the chain: forwards to the wallet."""

    def __init__(self, wallet: Wallet) -> None:
        self._wallet = wallet

    async def block_connected(self, block: bytes, height: int) -> None:
        await self._wallet.sync()

    async def block_disconnected(self, block: bytes, height: int) -> None:
        await self._wallet.sync()

    async def transaction_added_to_mempool(self, tx: bytes) -> None:
        self._wallet.add_mempool_transaction(Transaction.from_bytes(tx), int(time.time()))

    async def transaction_removed_from_mempool(self, txid: bytes, reason: str) -> None:
        # "block" removals are followed by the block's own sync (a confirmed transaction is
        # trusted whatever the pool says); a "conflict" loser also turns conflicted when the
        # winning transaction's block is processed (store._add_tx). Any other reason
        # (eviction, expiry, reorg): no longer in the mempool, so no longer counted as pending
        # (bitcoind's TxStateInactive).
        if reason != "block":
            self._wallet.mempool_removed(txid)

    async def chain_events(self, events: list[ChainEvent]) -> None:
        # A run of block events needs one sync, which reads the chain up to its tip anyway.
        # Only the four event kinds run: the IPC decoder refuses others, and a name from the
        # node is never looked up on this object (getattr ran "__init__" once).
        single = {"transaction_added_to_mempool": self.transaction_added_to_mempool,
                  "transaction_removed_from_mempool": self.transaction_removed_from_mempool}
        synced = False
        for event in events:
            if event.kind in ("block_connected", "block_disconnected"):
                if not synced:
                    await self._wallet.sync()
                    synced = True
                continue
            synced = False
            handler = single.get(event.kind)
            if handler is None:
                raise ValueError(f"unknown chain event kind {event.kind[:40]!r}")
            await handler(*event.args())


class Wallet:
    """One loaded wallet over its store and a `Chain`."""

    def __init__(self, name: str, store: WalletStore, chain: Chain,
                 max_tx_fee: int = DEFAULT_MAX_TX_FEE, minimum_chain_work: int | None = None) -> None:
        self.name = name
        self.store = store
        self.chain = chain
        self.params: ChainParams = store.params
        self.pay_tx_fee: int = 0           # settxfee, units per 1000 bytes; 0: relay minimum (own)
        # -maxtxfee: no transaction of this wallet pays more, whatever rate the node names
        # (fee_cap.py says why that is the point under CleanCoin-node).
        self.max_tx_fee = max_tx_fee
        self._handler: Handler | None = None
        self._sync_lock = asyncio.Lock()
        # Every block from the node is checked against the wallet's own header chain first
        # (headers.py): a compromised node must not be able to show a payment that never
        # happened.
        self.header_chain = HeaderChain(store, self.params, minimum_chain_work=minimum_chain_work)
        self._last_refusal: tuple[bytes, str] | None = None
        # The anchor's check from genesis while it waits (headers.py): resumed, not redone.
        self._genesis_check: GenesisCheck | None = None
        #: Why the wallet has no anchor yet (getwalletinfo's `anchor`), None once it has one.
        self.anchor_wait: BlockRefused | None = None
        self._unlocked: SecretBytes | None = None
        self._unlocked_until: float = 0.0
        self._relock: asyncio.TimerHandle | None = None
        # Unconfirmed wallet transactions the node's mempool holds (bitcoind's
        # TxStateInMempool), kept in memory as bitcoind does: from the mempool notifications
        # (the pool's contents first, on load) and our accepted broadcasts.
        self._in_mempool: set[bytes] = set()
        # lockunspent without `persistent` (bitcoind's default): in memory only, gone with an
        # unload or a restart. Persistent locks are the store's `locked` column.
        self._temp_locks: set[OutPoint] = set()
        # Told of every change a front end shows (WalletLoader sets it: the loader coalesces
        # and pushes WalletEvents); called as on_change(wallet, kind, txid).
        self.on_change: Callable[[Wallet, str, bytes], None] | None = None

    def _changed(self, kind: str, txid: bytes = b"") -> None:
        if self.on_change is not None:
            self.on_change(self, kind, txid)

    def event(self, kind: str, txid: bytes = b"") -> WalletEvent:
        """The wallet's state now, as a WalletEvent of `kind`."""
        b = self.balances()
        return WalletEvent(self.name, kind, txid, b.trusted, b.untrusted_pending, b.immature,
                           self.store.encrypted, self.locked, self.unlocked_until)

    # ------------------------------------------------------------------ coin locks

    def is_locked_coin(self, coin: WalletCoin) -> bool:
        """Locked by lockunspent, persistently or for this session."""
        return coin.locked or coin.outpoint in self._temp_locks

    def lock_coin(self, outpoint: OutPoint, persistent: bool) -> None:
        """lockunspent false: kept out of coin selection; in the store only if `persistent`
        (a persistent lock of a coin locked for the session replaces that lock)."""
        if persistent:
            self.store.lock_coin(outpoint, True)
            self._temp_locks.discard(outpoint)
        else:
            self._temp_locks.add(outpoint)

    def unlock_coin(self, outpoint: OutPoint, persistent_too: bool) -> None:
        """lockunspent true: whichever lock the coin has (`persistent_too`: it has a stored one)."""
        self._temp_locks.discard(outpoint)
        if persistent_too:
            self.store.lock_coin(outpoint, False)

    def locked_outpoints(self) -> list[OutPoint]:
        """listlockunspent: every locked unspent coin, stored or for this session."""
        return [c.outpoint for c in self.store.coins() if self.is_locked_coin(c)]

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Catch up with the chain, then follow it through notifications. Registering
        delivers the mempool's transactions first (bitcoind's requestMempoolTransactions):
        those that concern us are recorded, so a payment made while we were not loaded, or
        while our process restarted, is not missed, and our own unconfirmed ones that the pool
        holds count as in the mempool. The first catch-up comes before, so that a pool
        transaction spending a coin of ours finds the coin; the second takes any block that
        came in between (a sync that finds nothing new costs two queries)."""
        await self.sync()
        self._handler = await self.chain.handle_notifications(_Notifications(self))
        await self.sync()
        if not self.store.encrypted:
            self.top_up_keypool()
        await self.resubmit()

    def in_mempool(self, txid: bytes) -> bool:
        """Whether the node's mempool holds the (unconfirmed) transaction, as far as we know."""
        return txid in self._in_mempool

    def mempool_removed(self, txid: bytes) -> None:
        """The transaction left the mempool without being confirmed."""
        if txid in self._in_mempool:
            self._in_mempool.discard(txid)
            self._changed("transaction", txid)

    async def resubmit(self) -> int:
        """Offer our unconfirmed sends to the node again (bitcoind's ResubmitWalletTransactions):
        the node's pool does not survive a restart, and a send must not silently stall.
        Returns how many the node accepted; a refusal is only logged (it may be conflicted)."""
        accepted = 0
        for wtx in self.store.transactions():
            if (wtx.block_height is not None or wtx.abandoned or wtx.conflicted
                    or not self._from_me(wtx.tx.txid)):
                continue
            result = await self.chain.broadcast_transaction(wtx.tx.to_bytes(), 0)
            if result.ok:
                accepted += 1
                self._in_mempool.add(wtx.tx.txid)
            else:
                log.info("wallet %s: resubmitting %s refused: %s", self.name, wtx.tx.txid_hex,
                         result.reason)
        return accepted

    async def close(self) -> None:
        """Stop following the chain, wipe secrets, close the store."""
        if self._handler is not None:
            with contextlib.suppress(Exception):
                await self._handler.disconnect()
            self._handler = None
        self.lock()
        async with self._sync_lock:       # no sync may be writing while the store closes
            self.store.close()

    # ------------------------------------------------------------------ chain sync

    async def _locator(self) -> list[bytes]:
        """The wallet's recent block hashes, newest first (walking prev hashes through the
        chain's header index, which keeps side branches)."""
        best_hash, _ = self.store.best_block
        out: list[bytes] = []
        h = best_hash
        while h is not None and len(out) < LOCATOR_DEPTH:
            out.append(h)
            try:
                info = await self.chain.get_block_header_info(h)
            except Exception:  # noqa: BLE001 - unknown to the node: the locator ends here
                break
            h = info.prev_hash if info.height > 0 else None
        return out

    async def _unwind_to_active_chain(self) -> bool:
        """Undo the wallet's blocks that are no longer in the active chain, if the node's
        branch from the fork on is valid and has more work than the wallet's (checked
        before anything is undone). False when that reorganisation is refused: the wallet
        stays where it is."""
        best_hash, best_height = self.store.best_block
        if best_hash is None:
            return True
        try:
            info = await self.chain.get_block_header_info(best_hash)
            if info.in_active_chain:
                return True
        except Exception:  # noqa: BLE001 - the node does not know our block at all
            info = None
        fork = await self.chain.find_fork(await self._locator())
        if self.store.header_count() and await self.chain.get_height() == fork:
            # A rewind (invalidateblock): the node's chain ends at the fork. Followed: it
            # takes confirmations away and adds none, as withheld blocks would. The undone
            # blocks' rows stay as rows without their block (disconnect_block): the node's
            # next chain must be those or outweigh them, as a reorganisation must (before
            # 12-07 they went, and the next branch cost only its own blocks' work: a rewind
            # 50 blocks deep, then one block paying 1000 coins, was believed).
            log.info("wallet %s: the node's chain ends at %d, below the wallet's best block %d "
                     "(a rewind, e.g. invalidateblock)", self.name, fork, best_height)
        elif self.store.header_count():
            try:
                await self._check_more_work(fork, best_height)
            except BlockRefused as refused:
                self._refused(refused)
                return False
        else:
            # A wallet from before the header chain: nothing to compare with (first use).
            log.info("wallet %s: no header chain yet; following the node's reorganisation",
                     self.name)
        log.info("wallet %s: best block %d left the active chain; back to the fork at %d",
                 self.name, best_height, fork)
        while True:
            best_hash, best_height = self.store.best_block
            if best_hash is None or best_height <= fork:
                break
            # The parent is the one the block's own header row names (disconnect_block). A
            # block without a row (a file from before the headers) and all below it down to
            # the fork go at once, to the fork's own row or the node's active chain's block
            # there, checked from genesis before the next block: before 12-07 the node named
            # each one's parent, and made-up ones wedged the wallet for good.
            if not self.store.headers(best_height, best_height):
                row = self.store.headers(fork, fork).get(fork)
                fork_hash = row[0] if row is not None else await self.chain.get_block_hash(fork)
                log.info("wallet %s: blocks %d..%d have no header row: undone at once, back to "
                         "the fork", self.name, fork + 1, best_height)
                self.store.disconnect_to(fork, fork_hash)
                break
            self.store.disconnect_block(best_hash, best_height, None)
        return True

    async def _overtaken(self, fork: int) -> bool:
        """The node's block above `fork` (the wallet's best block, or the anchor's parent) is
        not the one of the wallet's checked header chain there: the node's header chain is
        checked again from the fork (`_anchor`), and replaces the rows above it only if it
        differs from them and has more work (`HeaderChain.replaces_rows`); True when it did
        (the next round's blocks must be its own), False when the rows stay (the node's own
        header chain is them, or outweighs them not: the caller logs the refusal). Before
        12-07 the node's branch was weighed by its blocks and the rows simply dropped: a node
        that showed the real, longer chain's blocks for the weighing and its own block in the
        catch-up after it had a payment taken at the fork era's difficulty."""
        before = self.store.headers(fork + 1, fork + 1).get(fork + 1)
        try:
            await self._anchor(fork)
        except BlockRefused as refused:
            # getwalletinfo's anchor says why the wallet waits (`_anchor`), until it takes a
            # block again.
            self._refused(refused)
            return False
        if self.store.headers(fork + 1, fork + 1).get(fork + 1) == before:
            return False
        log.info("wallet %s: the node's header chain above %d has more work than the one the "
                 "wallet checked up to there: following it", self.name, fork)
        return True

    async def _check_more_work(self, fork: int, best_height: int) -> None:
        """BlockRefused unless the node's active chain above `fork` is a valid branch off
        the wallet's header at `fork` with more work than the wallet's headers above it (its
        blocks, and the checked header chain stored beyond them). Reads the branch only until
        its work exceeds ours: the catch-up that follows checks every block again as it
        applies it."""
        ours = self.header_chain.work(fork + 1, best_height) if 0 <= fork < best_height else None
        if ours is None or not self.store.headers(fork, fork):
            raise BlockRefused(max(fork, 0), bytes(32), "fork-below-header-chain",
                               f"the node names a fork at {fork}; the wallet cannot weigh its "
                               f"blocks {fork + 1}..{best_height} against the node's branch "
                               f"without its own headers {fork}..{best_height}")
        # And the rows above its best block that are there (a checked chain stored from the
        # tip down and cut short leaves a gap: before 12-07 that refused every reorganisation,
        # fork-below-header-chain, until the node showed that chain again).
        above = self.store.headers(best_height + 1, self.store.top_header())
        ours += sum(block_proof(BlockHeader.from_bytes(raw).bits) for _, raw, _ in above.values())
        best_height = max(best_height, self.store.top_header())
        branch = Branch(fork)
        theirs = 0
        height = fork + 1
        while True:
            raws = await self.chain.get_blocks(height, SYNC_BATCH)
            if not raws:
                break
            for raw in raws:
                block = self.header_chain.parse(raw, height)
                self.header_chain.check(block, height, branch)
                branch.headers[height] = block.header
                theirs += block_proof(block.header.bits)
                if theirs > ours:
                    return
                height += 1
        raise BlockRefused(height - 1, bytes(32), "less-work",
                           f"the node's branch from the fork at {fork} has work {theirs}, the "
                           f"wallet's {ours} (blocks {fork + 1}..{best_height})")

    def _refused(self, refused: BlockRefused) -> None:
        """Log a refused block (once while the node keeps offering the same one)."""
        key = (refused.block_hash, refused.reason)
        if key == self._last_refusal:
            return
        self._last_refusal = key
        log.warning("wallet %s: refused block %d (%s) from the node: %s%s; the wallet stays at "
                    "height %d", self.name, refused.height, refused.block_hash[::-1].hex(),
                    refused.reason, f" ({refused.detail})" if refused.detail else "",
                    self.store.best_block[1])

    def _anchor_refused(self, refused: BlockRefused) -> None:
        """Log why the wallet takes no anchor yet (once per reason while it waits): it takes
        no block until it has one, and says so in getwalletinfo's `anchor`."""
        key = (bytes(32), "anchor:" + refused.reason)
        if key == self._last_refusal:
            return
        self._last_refusal = key
        log.warning("wallet %s: no anchor taken from the node's chain: %s%s; the wallet waits "
                    "and takes no block until the node's chain passes the check", self.name,
                    refused.reason, f" ({refused.detail})" if refused.detail else "")

    async def _anchor(self, parent: int) -> None:
        """Take the anchor (headers.py) for a first block at `parent` + 1 from the node's
        header chain, checked here from genesis (`_read_headers`), once it has the minimum
        chain work. BlockRefused when it does not (the wallet waits: `anchor_wait`)."""
        keep = self.header_chain.anchor_keep(parent)
        check = self._genesis_check
        if check is None or check.keep != keep or check.keep_from != parent + 1:
            # After a disconnect the check resumes at the fork, from the wallet's own checked
            # rows (the node's header there must be the wallet's best block, by hash): it
            # costs the new branch, not the whole chain again.
            check = self._genesis_check = (self.header_chain.resumed_check(parent, keep)
                                           or GenesisCheck(self.params, keep, parent + 1))
        try:
            check = await self._read_headers(check)
            rows = self.header_chain.anchor_rows(check, parent, self.store.best_hash)
            # The rows above the parent (a former anchor's checked chain, or what a rewind
            # kept) give way only to a chain that is them or outweighs them.
            await self._store_above(check, parent, replace=self.header_chain.replaces_rows(check, parent))
        except BlockRefused as refused:
            self.anchor_wait = refused
            raise
        # Rows the wallet holds at or below the parent (its own blocks', after a disconnect)
        # stay as they are; above it, the checked chain's.
        held = self.store.headers(min(check.kept, default=0), parent) if parent >= 0 else {}
        self.store.add_headers([r for r in rows if r[0] not in held], checked_chain=True,
                               checked_work=(parent, check.kept[parent].hash if parent >= 0 else bytes(32),
                                             check.work_below))
        self._genesis_check = None
        self.anchor_wait = None
        log.info("wallet %s: header chain anchored at block %d (%s): the node's chain checked "
                 "from %s to its tip at %d, work %#x (minimum chain work %#x)", self.name,
                 parent, check.kept[parent].hash[::-1].hex() if parent >= 0 else "-",
                 f"its block {check.begin} (the wallet's)" if check.begin else "genesis", check.height,
                 check.work, self.header_chain.minimum_chain_work)

    async def _store_above(self, check: GenesisCheck, parent: int, replace: bool = False) -> None:
        """Store the checked chain's headers above `parent` (the anchor's), read again from the
        node one answer at a time from the tip down and proven to be the ones checked
        (headers.prove_down): the check keeps only its tip, so the wallet never holds more
        than one answer of them. Each answer is its own transaction, which also marks the
        chain to be checked again (meta chain_recheck) until the anchor's transaction
        clears it: rows stored before a kill are the checked chain's, and the next start
        takes its anchor again. BlockRefused ("headers-changed") when the node's chain
        changed since the check: the next round checks it again. `replace`: the rows above
        the checked chain's tip go too, in the first answer's transaction (the chain
        outweighed them: `HeaderChain.replaces_rows`; a kill after it leaves the new chain's
        top, which the next check then agrees with)."""
        if check.last is None:
            return
        top, need = check.height, check.last.hash
        drop_above = check.height if replace else None
        while top > parent:
            low = max(parent + 1, top - MAX_GET_HEADERS + 1)
            try:
                raw = await self.chain.get_headers(low, top - low + 1)
            except Exception as exc:  # noqa: BLE001 - an error of the node's
                raise BlockRefused(low, bytes(32), "no-headers",
                                   f"the node did not serve its headers: {str(exc)[:200]}") from None
            if not isinstance(raw, bytes) or len(raw) != (top - low + 1) * HEADER_SIZE:
                raise BlockRefused(low, need, "headers-changed", "the node's header chain got shorter under the check")
            rows, need = prove_down(raw, low, need)
            # Rows the wallet holds already are not written again (a node whose blocks are
            # not its header chain's has the chain checked again at every round: _overtaken).
            held = self.store.headers(low, top)
            rows = [r for r in rows if held.get(r[0], (None,))[0] != r[1]]
            self.store.add_headers(rows, pending_chain=True, drop_above=drop_above)
            drop_above = None
            top = low - 1
            await asyncio.sleep(0)
        if parent >= 0 and need != check.kept[parent].hash:
            raise BlockRefused(parent, need, "headers-changed", "the node's header chain changed under the check")

    def anchor_info(self) -> dict[str, Any]:
        """getwalletinfo's `anchor`: whether the wallet has its anchor (headers.py), or why it
        waits for one ("below-minimum-chain-work", ...), and the minimum chain work it uses."""
        info: dict[str, Any] = {"minimumchainwork": f"{self.header_chain.minimum_chain_work:064x}"}
        if self.anchor_wait is not None:
            info.update(status="waiting", reason=self.anchor_wait.reason, message=str(self.anchor_wait))
        else:
            info["status"] = "anchored" if self.store.header_count() else "none"
        return info

    async def _read_headers(self, check: GenesisCheck) -> GenesisCheck:
        """Feed `check` the node's headers from where it stands to the node's tip; returns
        the check that got there. Each answer is asked from the last header checked, which
        must come first again: a node whose chain changed below that point (or got shorter)
        is read again in a new check, once per call: from the fork for a check resumed there
        (`HeaderChain.resumed_check`), else from genesis. A resumed check whose first header,
        the fork's, is not the wallet's best block is refused at once (`bad-anchor`): a check
        from genesis would refuse that chain for the same reason, and a lying node had the
        wallet read its whole chain for it at every round."""
        restarted = False
        while True:
            resume = check.last is not None
            start = check.height if resume else 0
            try:
                raw = await self.chain.get_headers(start, MAX_GET_HEADERS)
            except Exception as exc:  # noqa: BLE001 - an older node (unimplemented) or an error
                raise BlockRefused(start, bytes(32), "no-headers",
                                   f"the node did not serve its headers: {str(exc)[:200]}") from None
            if not isinstance(raw, bytes) or len(raw) > MAX_GET_HEADERS * HEADER_SIZE:
                raise BlockRefused(start, bytes(32), "bad-headers", "the node's answer to get_headers is malformed")
            if resume:
                assert check.last is not None
                if raw[:HEADER_SIZE] != check.last.serialized:
                    if check.begin and check.height == check.begin:
                        raise BlockRefused(check.begin, check.last.hash, "bad-anchor",
                                           "the node's header at the fork is not the wallet's best block")
                    if restarted:
                        raise BlockRefused(start, bytes(32), "headers-changed",
                                           "the node's header chain keeps changing under the check")
                    restarted = True
                    check = self._genesis_check = (
                        (self.header_chain.resumed_check(check.begin, check.keep) if check.begin else None)
                        or GenesisCheck(self.params, check.keep, check.keep_from))
                    continue
                raw = raw[HEADER_SIZE:]
            if not raw:
                return check
            check.feed(raw)
            await asyncio.sleep(0)      # a long chain: let the process serve others meanwhile

    async def sync(self) -> int:
        """Bring the wallet to the chain's tip (see the module docstring); returns the number
        of blocks applied."""
        async with self._sync_lock:
            # The lookahead first (a restored backup may hold a smaller keypool): payments
            # to keys beyond it would go unseen. Extended as blocks pay our keys.
            if not self.locked:
                self.top_up_keypool()
            done = 0
            t0 = time.monotonic()
            # Over IPC the chain can reorganise between two get_blocks calls: a block whose
            # parent is not our best block means exactly that, and we start over from the
            # unwind. A few rounds at most in practice; the bound only stops a livelock.
            for _ in range(100):
                applied, complete = await self._sync_round(t0, done)
                done += applied
                if complete:
                    break
            if done >= PROGRESS_MIN_BLOCKS:
                log.info("wallet %s: caught up to height %d, %d blocks in %.1f s", self.name,
                         self.store.best_block[1], done, time.monotonic() - t0)
            if done:      # confirmations and maturity move with every block
                self._changed("balance")
            return done

    async def _sync_round(self, t0: float, done_before: int) -> tuple[int, bool]:
        """One unwind + forward pass; (blocks applied, False if the chain moved under us)."""
        if not await self._unwind_to_active_chain():
            return 0, True
        best_hash, best = self.store.best_block
        start = best + 1 if best >= 0 else max(0, self.store.birth_height)
        tip = await self.chain.get_height()
        # The anchor, checked from genesis (headers.py): for a wallet without headers even at
        # genesis, whose first blocks would otherwise be any branch the node likes.
        # After a disconnect (reorganisation, rewind) the chain is checked again before the
        # next block: blocks above a fork need only the difficulty of the fork's era.
        if start <= tip and (not self.header_chain.has_parent(start) or not self.store.header_count()
                             or self.store.chain_recheck):
            try:
                await self._anchor(start - 1)
            except BlockRefused as refused:
                self._anchor_refused(refused)
                return 0, True
        total = tip - start + 1
        done = 0
        last_log = t0
        while start <= tip:
            raws = await self.chain.get_blocks(start, SYNC_BATCH)
            if not raws:
                break
            for raw in raws:
                try:
                    block = self.header_chain.parse(raw, start)
                    if best_hash is not None and block.header.prev_hash != best_hash:
                        return done, False
                    self.header_chain.check(block, start)
                except BlockRefused as refused:
                    if refused.reason == "not-in-header-chain":
                        if await self._overtaken(start - 1):
                            return done, False      # the rows gave way to more work: start over
                        # The wallet waits for the node's blocks to be its header chain's (or
                        # for a chain that outweighs the rows): getwalletinfo's anchor says
                        # why (the re-check's own reason when it refused, e.g. less-work).
                        self.anchor_wait = self.anchor_wait or refused
                    self._refused(refused)
                    return done, True
                if self.store.apply_block(block.hash, start, block.txs, block.header.time,
                                          block.header.serialized):
                    self._extend_lookahead(lambda b=block, h=start: self.store.rescan_block(
                        b.hash, h, b.txs, b.header.time))
                best_hash = block.hash
                self.anchor_wait = None         # taking blocks again: waiting for nothing
                start += 1
                done += 1
                # Between two blocks (each its own transaction, the store consistent) the
                # process serves RPC: a batch of 200 blocks at a few ms each held every
                # call of the wallet for seconds (getwalletinfo 3.4 s, measured 12-07).
                await asyncio.sleep(0)
            now = time.monotonic()
            if total >= PROGRESS_MIN_BLOCKS and now - last_log >= 1.0:
                last_log = now
                log.info("wallet %s: catching up, height %d of %d (%.0f blocks/s)",
                         self.name, start - 1, tip, (done_before + done) / max(now - t0, 1e-9))
        return done, True

    async def rescan(self, start_height: int = 0, stop_height: int | None = None) -> tuple[int, int]:
        """rescanblockchain: re-read blocks start..stop (default: the tip) and record what
        concerns us. Returns (start, stop). Only blocks of the wallet's header chain count:
        below its lowest header the chain is first extended down by hash from the node's
        blocks (`_extend_down`), and the wallet's best block bounds the stop (a block above
        it was refused or is not caught up yet). WalletError when the node's blocks do not
        match the wallet's headers."""
        async with self._sync_lock:
            tip = await self.chain.get_height()
            stop = tip if stop_height is None else min(stop_height, tip)
            stop = min(stop, self.store.best_block[1])
            h = start_height
            try:
                if h <= stop:
                    await self._extend_down(h)
                while h <= stop:
                    raws = await self.chain.get_blocks(h, min(SYNC_BATCH, stop - h + 1))
                    if not raws:
                        break
                    known = self.store.headers(h, h + len(raws) - 1)
                    for raw in raws:
                        block = self.header_chain.parse(raw, h)
                        self.header_chain.check_known(block, h, known.get(h))
                        if self.store.rescan_block(block.hash, h, block.txs, block.header.time):
                            self._extend_lookahead(lambda b=block, hh=h: self.store.rescan_block(
                                b.hash, hh, b.txs, b.header.time))
                        h += 1
                        await asyncio.sleep(0)      # other calls between blocks, as the catch-up
            except BlockRefused as refused:
                self._refused(refused)
                raise WalletError(f"Rescan stopped at height {refused.height}: the node's block "
                                  f"there was refused ({refused.reason})") from None
            return start_height, stop

    async def _extend_down(self, low: int) -> None:
        """Extend the header chain down to `low` with the node's blocks, each one the parent
        the row above it names (so they are as good as the anchor they hang from; stored as
        taken on trust, since the difficulty rule was not checked for them)."""
        # From the wallet's best block down (the rescan stops there): rows above it take no part.
        linked = self.store.linked_from(self.store.best_block[1])
        if linked is None or low >= linked:
            return
        hi = linked
        expect = self.store.headers(hi, hi)[hi][1]
        parent_hash = BlockHeader.from_bytes(expect).prev_hash
        while hi > low:
            lo = max(low, hi - SYNC_BATCH)
            blocks: list[Block] = []
            while lo + len(blocks) < hi:
                raws = await self.chain.get_blocks(lo + len(blocks), hi - lo - len(blocks))
                if not raws:
                    raise BlockRefused(lo + len(blocks), bytes(32), "bad-prevblk",
                                       "the node has fewer blocks than the wallet's headers")
                blocks.extend(self.header_chain.parse(raw, lo + len(blocks)) for raw in raws)
            blocks = blocks[:hi - lo]
            rows = []
            for i in range(len(blocks) - 1, -1, -1):
                block, height = blocks[i], lo + i
                if block.hash != parent_hash:
                    raise BlockRefused(height, block.hash, "bad-prevblk",
                                       f"not the parent of the wallet's header at {height + 1}")
                if height == 0 and block.hash != self.params.genesis_hash:
                    raise BlockRefused(0, block.hash, "bad-genesis", "not this network's genesis block")
                rows.append((height, block.hash, block.header.serialized, True))
                parent_hash = block.header.prev_hash
            self.store.add_headers(rows)
            hi = lo

    # ------------------------------------------------------------------ secrets

    @property
    def locked(self) -> bool:
        """True for an encrypted wallet without the passphrase given (or timed out)."""
        return self.store.encrypted and self._unlocked is None

    @property
    def unlocked_until(self) -> int:
        """getwalletinfo's unlocked_until (0 when locked)."""
        return int(self._unlocked_until) if self._unlocked is not None else 0

    @contextlib.contextmanager
    def _seed(self) -> Any:
        """The seed for one operation; UnlockNeeded while locked. A plaintext seed read from
        an unencrypted store is wiped after use; the unlocked one stays until lock()."""
        if not self.store.encrypted:
            with self.store.seed() as seed:
                yield seed
            return
        if self._unlocked is None:
            raise UnlockNeeded()
        yield self._unlocked

    @contextlib.contextmanager
    def _master(self) -> Any:
        """The master key for one operation (UnlockNeeded while locked); its secret and chain
        code, and the seed's copy it was made from, are zeroed afterwards (locked_memory.scrub):
        freed, they stayed in the heap for as long as the process ran."""
        with self._seed() as seed:
            plain = seed.get()
            try:
                master = master_key(plain)
            finally:
                scrub(plain)
            try:
                yield master
            finally:
                master.wipe()

    def unlock(self, passphrase: str, timeout: int) -> None:
        """walletpassphrase: keep the seed for `timeout` seconds (WrongPassphrase)."""
        if not self.store.encrypted:
            raise WalletError("Error: running with an unencrypted wallet, but walletpassphrase "
                              "was called.")
        self.set_unlocked(self.store.unlock(passphrase), timeout)

    def set_unlocked(self, secret: SecretBytes, timeout: int) -> None:
        """Keep an already decrypted seed for `timeout` seconds (the RPC decrypts in a worker
        thread, since scrypt is slow on purpose, then hands the result here on the loop)."""
        self.lock()
        if not secret.locked:
            # Bitcoin Core says the same ("Failed to lock memory"): the seed may reach swap.
            log.warning("wallet %s: the unlocked seed is not in locked memory (%s): it may be "
                        "written to swap; raise the memlock limit (ulimit -l)", self.name, secret.lock_error)
        self._unlocked = secret
        self._unlocked_until = time.time() + timeout
        with contextlib.suppress(RuntimeError):     # no loop: no timer (tests without asyncio)
            self._relock = asyncio.get_running_loop().call_later(timeout, self.lock)
        self.top_up_keypool()
        self._changed("status")

    def lock(self) -> None:
        """walletlock (and the unlock timeout): wipe the seed from memory."""
        if self._relock is not None:
            self._relock.cancel()
            self._relock = None
        if self._unlocked is not None:
            self._unlocked.wipe()
            self._unlocked = None
            self._changed("status")
        self._unlocked_until = 0.0

    def encrypt(self, passphrase: str) -> None:
        """encryptwallet: from now on the seed is on disk only encrypted; the wallet is locked."""
        if self.store.encrypted:
            raise WalletError("Error: running with an encrypted wallet, but encryptwallet was "
                              "called.")
        self.top_up_keypool()         # last chance to derive keys without the passphrase
        self.store.encrypt_wallet(passphrase)
        self.lock()
        self._changed("status")

    def change_passphrase(self, old: str, new: str) -> None:
        """walletpassphrasechange (WrongPassphrase for `old`)."""
        if not self.store.encrypted:
            raise WalletError("Error: running with an unencrypted wallet, but "
                              "walletpassphrasechange was called.")
        self.store.change_passphrase(old, new)

    # ------------------------------------------------------------------ keys

    def top_up_keypool(self, size: int = KEYPOOL_SIZE) -> int:
        """Derive keys until each chain has `size` unused ones; returns how many were added.
        Needs the seed (UnlockNeeded for a locked wallet)."""
        added = 0
        need = [(internal, size - self.store.unused_keys(internal)) for internal in (False, True)]
        if all(n <= 0 for _, n in need):
            return 0
        with self._master() as master:
            for internal, n in need:
                if n <= 0:
                    continue
                first = self.store.next_index(internal)
                pubs = [wallet_key(master, first + i, internal).public_key.data
                        for i in range(n)]
                self.store.add_keys(internal, first, pubs)
                added += n
        return added

    def _extend_lookahead(self, reprocess: Any) -> None:
        """After recording a block or transaction: when it paid keys near the end of the
        lookahead (the store marks a paid key and every lower one of its chain used), derive
        keys to restore the gap of KEYPOOL_SIZE, then `reprocess` the same block or
        transaction, since it may also pay the keys just derived; repeat until nothing new.
        A locked wallet cannot derive: the gap shrinks until it is unlocked (a log line)."""
        while any(self.store.unused_keys(internal) < KEYPOOL_SIZE for internal in (False, True)):
            if self.locked:
                log.warning("wallet %s: locked, cannot extend the keypool lookahead; "
                            "unlock it (and rescan) to find payments to later keys", self.name)
                return
            if self.top_up_keypool() == 0:
                return
            reprocess()

    def add_mempool_transaction(self, tx: Transaction, time_: int) -> bool:
        """A transaction from the mempool: record it if it concerns us, extending the
        lookahead (see _extend_lookahead) when it pays one of our later keys. One that spends
        a coin of ours without our key's valid signature is refused (`_forged_spend`)."""
        forged = self._forged_spend(tx)
        if forged:
            log.warning("wallet %s: refused transaction %s from the node: %s", self.name,
                        tx.txid_hex, forged)
            return False
        mine = self.store.add_transaction(tx, time_)
        if mine:
            self._in_mempool.add(tx.txid)
            self._extend_lookahead(lambda: self.store.add_transaction(tx, time_))
            self._changed("transaction", tx.txid)
        return mine

    def _forged_spend(self, tx: Transaction) -> str:
        """Why the wallet must not take `tx` from the node ("" when it may): an unconfirmed
        transaction that spends our coins counts as our own (its change is trusted, as in
        bitcoind), so each input spending a coin of ours must carry our key's valid signature
        (SIGHASH_ALL: it commits to every output), and one spending only our coins may pay
        out no more than they hold. bitcoind relies on its node's validation here; under
        CleanCoin-node the node is the less trusted side. Confirmed transactions are the
        header chain's business (headers.py)."""
        ours = 0
        foreign = False
        for i, txin in enumerate(tx.vin):
            parent = self.store.get_transaction(txin.prevout.txid)
            out = (parent.tx.vout[txin.prevout.n]
                   if parent is not None and txin.prevout.n < len(parent.tx.vout) else None)
            if out is None or self.store.key_by_pkh(out.pkh) is None:
                foreign = True
                continue
            try:
                verify_input(tx, i, out.pkh)
            except ValidationError as exc:
                return (f"input {i} spends the wallet's coin {txin.prevout} without its key's "
                        f"valid signature ({exc.debug or exc.reason})")
            ours += out.value
        if ours and not foreign and sum(o.value for o in tx.vout) > ours:
            return "it pays out more than the wallet's coins it spends hold"
        return ""

    def new_key(self, internal: bool) -> KeyRecord:
        """getnewaddress / getrawchangeaddress: the next key from the pool, topping it up
        when possible (a locked wallet hands out what is left, then KeypoolRanOut)."""
        if not self.locked:
            self.top_up_keypool()
        rec = self.store.take_key(internal)
        if rec is None:
            raise KeypoolRanOut()
        return rec

    def _private_key(self, master: Any, rec: KeyRecord) -> PrivateKey:
        return wallet_key(master, rec.index, rec.internal)

    def sign_inputs(self, tx: Transaction, prev_pkhs: Sequence[bytes | None]) -> tuple[Transaction, list[bool]]:
        """signrawtransactionwithwallet: sign each input whose spent output (prev_pkhs[i])
        pays one of our keys; returns the transaction and which inputs were signed.
        UnlockNeeded when there is one to sign and the wallet is locked."""
        records = [self.store.key_by_pkh(pkh) if pkh is not None else None for pkh in prev_pkhs]
        if not any(records):
            return tx, [False] * len(records)
        with self._master() as master:
            keys = [self._private_key(master, rec) if rec is not None else None for rec in records]
        return sign_transaction(tx, keys), [rec is not None for rec in records]

    def sign_message(self, pkh: bytes, message: str) -> str:
        """signmessage: base64 of header byte + r + s (recoverable, compressed key)."""
        rec = self.store.key_by_pkh(pkh)
        if rec is None:
            raise WalletError("Private key not available")
        with self._master() as master:
            key = self._private_key(master, rec)
            sig = coincurve.PrivateKey(key.secret).sign_recoverable(message_hash(message),
                                                                    hasher=None)
        header = 27 + sig[64] + 4          # +4: compressed public key, as bitcoind
        return base64.b64encode(bytes((header,)) + sig[:64]).decode()

    # ------------------------------------------------------------------ coins and balances

    def confirmations(self, height: int | None, best: int | None = None) -> int:
        """Depth of a block height under the wallet's best block (0: unconfirmed); `best`,
        the best block's height read once by a caller that asks about many coins."""
        if best is None:
            _, best = self.store.best_block
        return 0 if height is None else best - height + 1

    def is_mature(self, coin: WalletCoin, best: int | None = None) -> bool:
        """bitcoind's rule: a coinbase is spendable at depth maturity + 1 (101 blocks for the
        first one), one block later than consensus strictly needs, so a 1-block reorg cannot
        invalidate a spend."""
        return (not coin.is_coinbase
                or self.confirmations(coin.height, best) > self.params.coinbase_maturity)

    def _spenders(self) -> set[bytes]:
        """Txids of transactions that spend our coins: ours (their change is trusted). One
        query, so balance and selection stay linear in the number of coins."""
        return set(self.store.spent_values())

    def _from_me(self, txid: bytes) -> bool:
        """Whether the transaction spends one of our coins (its change is then trusted)."""
        return txid in self._spenders()

    def is_trusted(self, coin: WalletCoin, spenders: set[bytes] | None = None) -> bool:
        """Confirmed, or its transaction is trusted (`tx_trusted`)."""
        if coin.height is not None:
            return True
        return self.tx_trusted(coin.outpoint.txid,
                               self._spenders() if spenders is None else spenders)

    def tx_trusted(self, txid: bytes, spenders: set[bytes],
                   trusted_parents: set[bytes] | None = None) -> bool:
        """bitcoind's CachedTxIsTrusted: a confirmed transaction is trusted; an unconfirmed
        one only when we made it (it spends our coins), the mempool holds it (one evicted or
        expired is not trusted until it is back: resubmitted on load, or rebroadcast), and
        every input spends an output of ours whose transaction is trusted in turn."""
        wtx = self.store.get_transaction(txid)
        if wtx is None or wtx.abandoned or wtx.conflicted:
            return False
        if wtx.block_height is not None:
            return True
        if txid not in spenders or txid not in self._in_mempool:
            return False
        trusted_parents = set() if trusted_parents is None else trusted_parents
        for txin in wtx.tx.vin:
            parent = self.store.get_transaction(txin.prevout.txid)
            if parent is None or txin.prevout.n >= len(parent.tx.vout):
                return False
            if self.store.key_by_pkh(parent.tx.vout[txin.prevout.n].pkh) is None:
                return False
            if parent.tx.txid in trusted_parents:
                continue
            if not self.tx_trusted(parent.tx.txid, spenders, trusted_parents):
                return False
            trusted_parents.add(parent.tx.txid)
        return True

    def balances(self) -> Balances:
        """getbalances' mine, as bitcoind's GetBalance: trusted; untrusted_pending (unconfirmed,
        not trusted, and in the mempool: a transaction evicted or expired from it counts
        nowhere); immature."""
        trusted = pending = immature = 0
        # The spenders from an aggregate query: no object for each coin spent long ago.
        spenders = self._spenders()
        _, best = self.store.best_block       # once, not twice per coin
        for coin in self.store.coins():
            if coin.is_coinbase and not self.is_mature(coin, best):
                immature += coin.value
            elif self.is_trusted(coin, spenders):
                trusted += coin.value
            elif coin.height is None and self.in_mempool(coin.outpoint.txid):
                pending += coin.value
        return Balances(trusted, pending, immature)

    def spendable_coins(self, min_conf: int = 0) -> list[WalletCoin]:
        """Coins coin selection may use: mature, trusted, unlocked, with min_conf."""
        spenders = self._spenders()
        _, best = self.store.best_block
        return [c for c in self.store.coins(include_locked=False)
                if c.outpoint not in self._temp_locks
                and self.is_mature(c, best) and self.is_trusted(c, spenders)
                and self.confirmations(c.height, best) >= min_conf]

    # ------------------------------------------------------------------ sending

    async def fee_rate(self) -> int:
        """settxfee when set, else the network's minimum relay fee (units per 1000 bytes).

        The wallet's own constant, not the node's answer (`Chain.relayMinFee`): no option
        changes the node's relay minimum (fee_cap.MIN_RELAY_FEE_RATE), so a different answer
        is a compromised node's. Before 12-07 the wallet paid whatever rate the node named up
        to -maxtxfee: 0.315 coin of fee for a one-coin payment under a 0.5 cap
        (tests/functional/test_wallet_fee_cap.py). A node whose relay minimum were really
        higher refuses the transaction, and the wallet gives its coins back (send)."""
        return self.pay_tx_fee or MIN_RELAY_FEE_RATE

    async def send(self, outputs: Sequence[tuple[bytes, int]],
                   subtract_fee_from: set[int] | frozenset[int] = frozenset(),
                   fee_rate: int | None = None) -> tuple[Transaction, int]:
        """Build, sign, record and broadcast; returns (transaction, fee). Raises
        UnlockNeeded, coins.CoinSelectionError, WalletError (rejected by the node)."""
        if self.locked:
            raise UnlockNeeded()
        rate = fee_rate if fee_rate is not None else await self.fee_rate()
        with self._master() as master:
            spendable = []
            for coin in self.spendable_coins():
                rec = self.store.key_by_pkh(coin.pkh)
                assert rec is not None      # coins exist only for our keys
                spendable.append(SpendableCoin(coin.outpoint, coin.value,
                                               self._private_key(master, rec)))
            change = self.new_key(internal=True)
            tx, fee = build_transaction(spendable, outputs, rate, change.pkh, subtract_fee_from)
        if fee > self.max_tx_fee:
            # Signed but never stored nor sent: nothing of it leaves this function.
            log.warning("wallet %s: refused to send a transaction paying a fee of %d units at %d units "
                        "per 1000 bytes (cap -maxtxfee: %d)", self.name, fee, rate, self.max_tx_fee)
            raise FeeExceedsMaximum(MAX_FEE_EXCEEDED)
        # Recorded before the broadcast: should we die in between, the wallet knows the spend
        # (and can rebroadcast or abandon it) rather than forgetting coins it gave away.
        self.store.add_transaction(tx, int(time.time()))
        # The cap goes with it, as bitcoind's wallet passes m_default_max_tx_fee: an honest
        # node checks it again against the fee it computes from its own coins.
        result = await self.chain.broadcast_transaction(tx.to_bytes(), self.max_tx_fee)
        if not result.ok:
            # The node refused it: it will never confirm from here, give the coins back.
            self.store.abandon_transaction(tx.txid)
            raise WalletError(f"Transaction rejected by the node: {result.reason}")
        self._in_mempool.add(tx.txid)
        self._changed("transaction", tx.txid)
        return tx, fee

    async def abandon(self, txid: bytes) -> None:
        """abandontransaction: only for an unconfirmed transaction the mempool does not hold."""
        wtx = self.store.get_transaction(txid)
        if wtx is None:
            raise WalletError("Invalid or non-wallet transaction id")
        if wtx.block_height is not None or wtx.abandoned or await self.chain.is_in_mempool(txid):
            raise WalletError("Transaction not eligible for abandonment")
        self.store.abandon_transaction(txid)
        self._in_mempool.discard(txid)
        self._changed("transaction", txid)

    def backup(self, dest: str) -> None:
        """backupwallet: a consistent copy of the database file."""
        self.store.backup(dest)


def _open_backup(backup_file: str) -> BinaryIO:
    """The backup file restorewallet copies (private_files.open_own_input): missing or not a
    regular file (a FIFO is refused at once) is FileNotFoundError, as bitcoind's "Backup file
    does not exist"; one another user could have chosen is a WalletError: they could have
    renamed a wallet of their own over the operator's backup, whose seed the restored wallet
    would then hold (before 12-07 it was restored)."""
    try:
        return open_own_input(backup_file, "the backup file")
    except FileNotFoundError:
        raise FileNotFoundError(f"Backup file does not exist: {backup_file}") from None
    except UnsafeFileError as exc:
        raise WalletError(f"Not restored: {exc}") from None


class WalletManager:
    """The wallets of one node: `<netdatadir>/wallets/<name>/`, several loaded at once."""

    def __init__(self, netdatadir: str | os.PathLike[str], chain: Chain, network: str,
                 max_tx_fee: int = DEFAULT_MAX_TX_FEE, minimum_chain_work: int | None = None) -> None:
        self.netdatadir = Path(netdatadir)
        self.chain = chain
        self.network = network
        self.max_tx_fee = max_tx_fee          # -maxtxfee, for every wallet loaded here
        # -minimumchainwork (None: the network's): no wallet loaded here takes its anchor
        # from a chain with less work (headers.py). The caller's own setting, as -maxtxfee.
        self.minimum_chain_work = minimum_chain_work
        warning = high_fee_warning(max_tx_fee)
        if warning:
            log.warning("Warning: %s", warning)
        self.params = params_for(network)
        self.wallets: dict[str, Wallet] = {}
        self._lock = asyncio.Lock()
        self.events = WalletEventFeed()     # changes, for front ends (events.py)

    # ------------------------------------------------------------------ start-up list

    @property
    def settings_path(self) -> Path:
        """`<netdatadir>/wallets/settings.json`: {"wallet": [names loaded at start-up]}."""
        return self.netdatadir / "wallets" / SETTINGS_FILENAME

    def _read_settings(self) -> dict[str, Any]:
        """The settings file's object ({} when there is none). It lies in wallets/, which
        CleanCoin-node's confined wallet process writes, and CleanCoind and CleanCoin-qt read
        it unconfined on the same datadir: a link is not followed (it could lead the reader to
        any file of the user's), nor is anything but a regular file of at most
        MAX_SETTINGS_BYTES read, and JSON nested too deep for the parser is refused like any
        that does not parse, as bitcoind refuses a corrupt settings.json: named, not a crash."""
        path = self.settings_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            why = "it is a symbolic link, which is not followed" if exc.errno == errno.ELOOP else exc.strerror
            raise WalletError(f"Unable to parse settings file {path}: {why}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise WalletError(f"Unable to parse settings file {path}: not a regular file")
            raw = os.read(fd, MAX_SETTINGS_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_SETTINGS_BYTES:
            raise WalletError(f"Unable to parse settings file {path}: larger than {MAX_SETTINGS_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as exc:
            raise WalletError(f"Unable to parse settings file {path}: {exc}") from None
        return data

    def startup_wallets(self) -> list[str]:
        """The names in the settings file's `wallet` list (empty when there is no file)."""
        value = self._read_settings().get("wallet", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def _write_settings(self, data: dict[str, Any]) -> None:
        """Atomically, as bitcoind's WriteSettings: a temporary file beside it, written and
        fsync'ed, renamed over the old one, and the directory fsync'ed."""
        path = self.settings_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(SETTINGS_TMP_FILENAME)
        # Whatever lies at the temporary name (a leftover, or a link the confined wallet
        # process planted for the next unconfined writer to follow) is removed, never opened.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(data, indent=4) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def update_startup(self, name: str, load_on_startup: bool | None) -> list[str]:
        """bitcoind's UpdateWalletSetting: true adds `name` to the start-up list (once), false
        removes it, None leaves the list alone. Returns warnings (the RPC's `warnings`): a
        failure to update the file does not undo the load or unload."""
        if load_on_startup is None:
            return []
        try:
            data = self._read_settings()
            names = self.startup_wallets()
            if load_on_startup and name not in names:
                names.append(name)
            elif not load_on_startup and name in names:
                names = [n for n in names if n != name]
            else:
                return []
            data["wallet"] = names
            self._write_settings(data)
        except (OSError, WalletError) as exc:
            log.warning("wallet %s: cannot update %s: %s", name, self.settings_path, exc)
            return ["Wallet load on startup setting could not be updated, so wallet may not be "
                    "loaded next node startup."]
        return []

    async def load_startup_wallets(self, names: Sequence[str], *, include_listed: bool = True) -> list[str]:
        """Start-up: load the -wallet wallets `names`, then those of the settings list (each
        name once). A -wallet wallet that cannot be loaded raises StartupWalletError (the node
        stops). A listed wallet that no longer exists is skipped with a warning in the log,
        as bitcoind ("Skipping -wallet path that doesn't exist"), and so is a listed name no
        wallet can have; any other failure of a listed one raises too, as bitcoind's
        LoadWallets. `include_listed` false (-nowallet) leaves the settings list out. Returns
        the names loaded."""
        try:
            listed = self.startup_wallets() if include_listed else []
        except WalletError as exc:
            log.warning("%s; no wallet loaded from it", exc)
            listed = []
        loaded = []
        for name in dict.fromkeys([*names, *listed]):
            if name in self.wallets:
                continue
            if name not in names and not valid_wallet_name(name):
                # No wallet can have that name (store.valid_wallet_name): gone, as far as the
                # list goes. A list written before 12-07 may hold "debug.log"; one written by
                # a compromised wallet process "../x": neither keeps the node from starting.
                log.warning("Skipping -wallet name that cannot name a wallet: %r (listed in %s)", name,
                            self.settings_path)
                continue
            try:
                await self.load(name)
            except FileNotFoundError as exc:
                if name in names:
                    raise StartupWalletError(name, exc) from exc
                log.warning("Skipping -wallet path that doesn't exist. %s (listed in %s)", exc,
                            self.settings_path)
                continue
            except Exception as exc:
                raise StartupWalletError(name, exc) from exc
            loaded.append(name)
        return loaded

    # ------------------------------------------------------------------ loaded wallets

    def names(self) -> list[str]:
        """Loaded wallets, in load order."""
        return list(self.wallets)

    def get(self, name: str) -> Wallet:
        wallet = self.wallets.get(name)
        if wallet is None:
            raise WalletError(f"Wallet {name!r} is not loaded")
        return wallet

    def on_disk(self) -> list[str]:
        """Wallet directories holding a database (listwalletdir)."""
        root = self.netdatadir / "wallets"
        if not root.is_dir():
            return []
        return sorted(d.name for d in root.iterdir() if valid_wallet_name(d.name) and (d / DB_FILENAME).is_file())

    async def _start(self, name: str, store: WalletStore) -> Wallet:
        wallet = Wallet(name, store, self.chain, self.max_tx_fee, self.minimum_chain_work)
        try:
            await wallet.load()
        except BaseException:
            await wallet.close()
            raise
        self.wallets[name] = wallet
        wallet.on_change = self.events.changed
        self.events.changed(wallet, "loaded")
        log.info("wallet %s loaded (best block %d)", name, store.best_block[1])
        return wallet

    async def create(self, name: str, passphrase: str = "") -> Wallet:
        """createwallet: a new wallet whose history starts at the current tip (a new seed has
        no past), encrypted at once when a passphrase is given."""
        async with self._lock:
            if name in self.wallets:
                raise WalletError(f"Wallet {name!r} is already loaded.")
            tip = await self.chain.get_height()
            if not passphrase:
                store = WalletStore.create(self.netdatadir, name, self.network,
                                           birth_height=max(0, tip))
                return await self._start(name, store)
            # Encrypted from the first byte written: creating it in plain and encrypting it
            # afterwards would leave an unencrypted wallet behind a kill in between.
            seed = SecretBytes(os.urandom(32))
            blob = await asyncio.to_thread(encrypt, seed, passphrase, purpose=SEED_PURPOSE)
            store = WalletStore.create(self.netdatadir, name, self.network,
                                       birth_height=max(0, tip), seed_blob=blob.to_bytes())
            wallet = await self._start(name, store)
            wallet.set_unlocked(seed, 1)    # derives the keypool, as encryptwallet does first
            wallet.lock()                   # and wipes the seed
            return wallet

    async def load(self, name: str) -> Wallet:
        """loadwallet: open and catch up."""
        async with self._lock:
            if name in self.wallets:
                raise WalletError(f"Wallet {name!r} is already loaded.")
            path = wallet_dir(self.netdatadir, name) / DB_FILENAME
            if not path.is_file():
                raise FileNotFoundError(f"Wallet file verification failed. Failed to load "
                                        f"database path '{path.parent}'. Path does not exist.")
            if not _is_sqlite_file(path):
                raise WalletFormatError(path.parent)
            try:
                store = WalletStore.open(self.netdatadir, name, self.network)
            except sqlite3.DatabaseError as exc:
                # A SQLite file, but not a wallet's (no such table, corrupt pages, ...).
                log.warning("wallet %s: %s is not a wallet database (%s)", name, path, exc)
                raise WalletFormatError(path.parent) from None
            return await self._start(name, store)

    async def unload(self, name: str) -> None:
        """unloadwallet."""
        async with self._lock:
            wallet = self.get(name)
            del self.wallets[name]
            wallet.on_change = None
            await wallet.close()
            self.events.unloaded(name)
            log.info("wallet %s unloaded", name)

    async def restore(self, name: str, backup_file: str) -> Wallet:
        """restorewallet. When our copy does not load (WalletError from load: not a wallet,
        another network, ...), a wallet directory this restore created is removed again, its
        lock file with it (bitcoind removes the wallet path when loading fails), so the name
        stays free. Only then: a restore that lost a race for the name (FileExistsError before
        any copy) must not remove the winner's wallet."""
        directory = wallet_dir(self.netdatadir, name)
        created_dir = not directory.exists()
        try:
            return await self._restore_copy(name, backup_file)
        except WalletError:
            if created_dir:
                import shutil   # here: with bz2, lzma and zlib, 2.4 ms on every wallet's start
                shutil.rmtree(directory, ignore_errors=True)
            raise

    async def _restore_copy(self, name: str, backup_file: str) -> Wallet:
        """restorewallet: copy a backupwallet file into a new wallet directory, then load it."""
        source = _open_backup(backup_file)
        try:
            return await self._restore_from(name, source)
        finally:
            source.close()

    async def _restore_from(self, name: str, source: BinaryIO) -> Wallet:
        """_restore_copy's copy from the opened backup `source`, then the load."""
        d = wallet_dir(self.netdatadir, name)
        if (d / DB_FILENAME).exists():
            raise FileExistsError(f"Wallet {name!r} already exists.")
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest = d / DB_FILENAME
        # Copied beside its final name and renamed into place: a kill during the copy must not
        # leave a partial wallet.sqlite that takes the name (the next load or create removes
        # the leftover, as for createwallet).
        new = d / (DB_FILENAME + NEW_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        fd = os.open(new, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        renamed = False
        try:
            import shutil   # not with the module: see restore
            with os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target)
                target.flush()
                os.fsync(target.fileno())
            if dest.exists():
                raise FileExistsError(f"Wallet {name!r} already exists.")
            os.rename(new, dest)
            renamed = True
            return await self.load(name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                (dest if renamed else new).unlink()
            raise

    async def close_all(self) -> None:
        """Unload every wallet (node shutdown)."""
        for name in list(self.wallets):
            with contextlib.suppress(Exception):
                await self.unload(name)
