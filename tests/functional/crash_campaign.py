#!/usr/bin/env python3
"""A kill -9 campaign against real nodes: random process, random moment, reused datadirs.

    tests/functional/crash_campaign.py --kills 160 --max-seconds 1200      # make crashtest
    tests/functional/crash_campaign.py --kills 3 --per-datadir 3           # the make test one

Each datadir gets a node (CleanCoind, or CleanCoin-node with its wallet process) with two
wallets, alice (funded by mining) and bob, and lives through `--per-datadir` kills. In each
life a workload thread runs random operations over RPC: alice sends to bob, a block is mined,
a fresh wallet is created and encrypted (by encryptwallet, or at once by createwallet with a
passphrase), alice is backed up; since 12-07 also a reorganisation (invalidateblock on one of
the top blocks, a longer branch mined from the fork, reconsiderblock: the old blocks stay as a
side branch), a rewind (invalidateblock, then reconsiderblock), a burst of 5-25 blocks (a long
wallet catch-up), rescanblockchain, and unloadwallet + loadwallet while the node runs. After a
random delay one process is SIGKILLed: CleanCoind or its whole process group; or, with
CleanCoin-node, the node, its wallet process (the node restarts it, often mid-catch-up), its
zygote or the whole group. Then the invariants:

- integrity: the chain database and every wallet database pass `PRAGMA integrity_check`
  (on copies, so the check cannot repair what it looks at), and every wallet passes the
  store's own consistency check;
- storage (crash_invariants.py, since 12-07): every stored block has its block_sums row and
  it is the CRC-32 of the stored bytes, no sum lacks its block, the index agrees; each
  wallet's header rows hash right and link down from its best block, and its `checked_work`
  names its best block with the node's chainwork there;
- secrets: no file anywhere in the datadir holds the seed (raw, hex), master key or first
  derived keys of a wallet whose files say it is encrypted;
- nothing committed is lost: every block hash `generatetoaddress` returned is stored, and in
  the active chain unless the node's tip has at least its work (a reconsiderblock revives
  what an earlier, killed invalidation left) or the workload's own invalidateblock may have
  moved it off (the node then takes the best branch, which may fork below); every txid `sendtoaddress` returned is
  still in alice's wallet and, unless a reorganisation began since, in the mempool or a
  block; every wallet whose encryption returned is encrypted and opens with its passphrase,
  and a wallet asked to be created with a passphrase is absent or encrypted; every backup
  `backupwallet` wrote passes integrity_check; bob (who only receives) has at least the
  balance he had when the life began (unless a reorganisation began in it);
- after recovery: `verifychain` passes; alice and bob catch up with the node's tip (its hash;
  a wallet left on a branch the node gave up with at least the work of the node's chain
  waits by design until the node's chain has more: one round of blocks is mined past it);
  each wallet's header chain is the node's active chain up to the tip, with no row above it,
  and its `checked_work` is the node's chainwork at the tip; and a fresh rescan (alice's
  keys in a wallet without any record of the chain, loaded and caught up) finds the same
  confirmed transactions in the same blocks and, with nothing unconfirmed, the same balances;
- recovery: a killed wallet process is restarted by the node (CleanCoin-node) and serves
  again; otherwise the node is stopped if alive (`stop`, exit status 0 expected) and started
  again on the same datadir, and serves.

A line per kill, then a summary; exit status 0 when every invariant held. The same module is
driven by tests/functional/test_crash_campaign.py with a few kills inside `make test`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crash_invariants import chain_files, copy_db, make_fresh, read_wallet, synced_wallet, wallet_headers  # noqa: E402
from framework import (  # noqa: E402
    NODE_EXECUTABLE, TEST_ADDRESS, TestNode, child_pids, is_multiprocess, wait_gone, wait_until,
)
from wallet_secrets import committed_state, files_holding, read_seed, secrets_of  # noqa: E402

from cleancoin.components.common.chainparams import REGTEST  # noqa: E402
from cleancoin.components.common.keys import PrivateKey  # noqa: E402
from cleancoin.components.rpc.client import RpcTransportError  # noqa: E402
from cleancoin.components.rpc.errors import RpcError  # noqa: E402
from cleancoin.components.wallet.store import WalletStore  # noqa: E402

PASSPHRASE = "crash campaign passphrase"
MAX_LIFE_SECONDS = 1.5          # kill at a random moment of the first this-many seconds
SOURCE_INDEX = 999              # the sync source's datadir (node999)
SOURCE_HEIGHT = 400             # its chain before the first sync datadir
SYNC_MIN_WORK = 2 * 301         # a regtest block is 2 units of work: the chain to height 300
SYNC_LIVES = 3                  # kills per sync datadir
SYNC_LIFE_SECONDS = 3.0
SYNC_TIMEOUT = 120.0
RESTART_TIMEOUT = 30.0
TARGETS_MONO = ("node", "group")
TARGETS_MULTI = ("node", "wallet", "zygote", "group")


class InvariantBroken(AssertionError):
    """One of the campaign's invariants did not hold."""


@dataclass
class Ledger:
    """What the node said was done (the RPC returned), so it must survive any kill."""

    blocks: dict[str, int] = field(default_factory=dict)       # hash -> height
    #: Blocks the workload itself moved off the active chain (the old branch of a fork, or
    #: the blocks above an invalidateblock that a kill may have left invalid).
    displaced: set[str] = field(default_factory=set)
    sends: list[tuple[str, int]] = field(default_factory=list)  # (txid alice sent, reorgs then)
    #: Reorganisations and rewinds begun: a send from before one may have lost its inputs
    #: (a coinbase immature again at the lower tip) and bob's balance may fall.
    reorgs: int = 0
    #: The wallet an unload/load was cycling when the kill came (it may be unloaded).
    reloading: str | None = None
    encrypted: list[str] = field(default_factory=list)         # wallets encryptwallet finished
    seeds: dict[str, bytes] = field(default_factory=dict)      # wallet -> seed, read at creation
    born_encrypted: set[str] = field(default_factory=set)      # createwallet with a passphrase
    backups: list[Path] = field(default_factory=list)
    bob_floor: Decimal = Decimal(0)
    counter: int = 0


@dataclass
class KillRecord:
    datadir: int
    life: int
    target: str
    delay: float
    during: str
    checks_seconds: float
    recovery_seconds: float | None
    operations: int = 0                  # operations the workload completed in that life


class Phases:
    """Seconds per named phase of the checks (the kill line shows where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = now - self._t
        self._t = now


class Workload:
    """Random operations until the node stops answering; `current` names the one running."""

    def __init__(self, node: TestNode, ledger: Ledger, rng: random.Random) -> None:
        self.node = node
        self.ledger = ledger
        self.rng = rng
        self.current = "idle"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.ended_by = ""              # what ended the operations, if not the stop flag
        self.done: collections.Counter[str] = collections.Counter()

    def _call(self, method: str, *args: Any, wallet: str | None = None) -> Any:
        return self.node.client.call(method, *args, wallet=wallet)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                op = self.rng.choices(OPERATIONS, WEIGHTS)[0]
                self.current = op
                getattr(self, "_" + op)()
                self.done[op] += 1
                self.current = "idle"
        except (RpcTransportError, OSError, RpcError) as exc:
            # The kill (or the recovery after it) cut the call.
            self.ended_by = f"{type(exc).__name__}: {str(exc)[:120]}"
        except BaseException as exc:     # noqa: BLE001 - reported by the campaign
            self.error = exc

    def _send(self) -> None:
        to = self._call("getnewaddress", wallet="bob")
        amount = Decimal(self.rng.randint(1, 100)) / 100
        try:
            txid = self._call("sendtoaddress", to, amount, wallet="alice")
        except RpcError as exc:
            if exc.code in (-6, -4, -26, -25):  # insufficient funds until a block matures more
                return                          # (or a coin a rewind made immature again)
            raise
        self.ledger.sends.append((txid, self.ledger.reorgs))

    def _mine(self) -> None:
        address = self._call("getnewaddress", wallet="alice")
        for h in self._call("generatetoaddress", 1, address):
            self.ledger.blocks[h] = -1

    def _encrypt(self) -> None:
        self.ledger.counter += 1
        name = f"e{self.ledger.counter}"
        if self.rng.random() < 0.5:
            # createwallet with a passphrase: the seed never reaches the disk in plain, so
            # after any kill the wallet is absent or encrypted.
            self.ledger.born_encrypted.add(name)
            self._call("createwallet", name, False, False, PASSPHRASE)
            self.ledger.encrypted.append(name)
            self._call("unloadwallet", name)
            return
        self._call("createwallet", name)
        self.ledger.seeds[name] = read_seed(self.node.netdatadir / "wallets" / name)
        self._call("encryptwallet", PASSPHRASE, wallet=name)
        self.ledger.encrypted.append(name)
        self._call("unloadwallet", name)

    def _backup(self) -> None:
        self.ledger.counter += 1
        dest = self.node.netdatadir / "wallets" / f"backup-{self.ledger.counter}.dat"
        self._call("backupwallet", str(dest), wallet="alice")
        self.ledger.backups.append(dest)

    def _active_above(self, depth: int) -> list[str]:
        """The hashes of the active chain's top `depth` blocks, lowest first."""
        height = self._call("getblockcount")
        return [self._call("getblockhash", h) for h in range(max(1, height - depth + 1), height + 1)]

    def _displace(self, old: list[str]) -> None:
        """Before invalidateblock on old[0]: every active block that may leave the active
        chain. Not only old[0] and those above it: the node then takes the valid branch
        with the most work, which may fork below old[0] (a side branch of an earlier fork)."""
        self.ledger.reorgs += 1
        height = self._call("getblockcount")
        low = min([t["height"] - t["branchlen"] for t in self._call("getchaintips")
                   if t["status"] != "active"] + [height - len(old)])
        self.ledger.displaced.update(self._active_above(height - low))

    def _fork(self) -> None:
        """A reorganisation: the top 1-3 blocks are invalidated, a longer branch is mined from
        the fork, and the old blocks are reconsidered (a side branch with less work, stored)."""
        old = self._active_above(self.rng.randint(1, 3))
        self._displace(old)
        self._call("invalidateblock", old[0])
        address = self._call("getnewaddress", wallet="alice")
        for h in self._call("generatetoaddress", len(old) + 1, address):
            self.ledger.blocks[h] = -1
        self._call("reconsiderblock", old[0])

    def _rewind(self) -> None:
        """invalidateblock on one of the top blocks (the chain gets shorter: the wallet
        follows a rewind, or the node takes a side branch), then reconsiderblock (the branch
        comes back unless a side branch of equal work took its place: it stays displaced)."""
        old = self._active_above(self.rng.randint(1, 2))
        self._displace(old)
        self._call("invalidateblock", old[0])
        time.sleep(self.rng.uniform(0, 0.2))        # the wallet follows meanwhile (or not)
        self._call("reconsiderblock", old[0])

    def _burst(self) -> None:
        """Many blocks at once: the wallet has a long catch-up (a kill lands inside it)."""
        address = self._call("getnewaddress", wallet="alice")
        for h in self._call("generatetoaddress", self.rng.randint(5, 25), address):
            self.ledger.blocks[h] = -1

    def _rescan(self) -> None:
        height = self._call("getblockcount")
        self._call("rescanblockchain", self.rng.randint(0, height), wallet=self.rng.choice(["alice", "bob"]))

    def _reload(self) -> None:
        """unloadwallet then loadwallet while the node runs (the wallet catches up again)."""
        name = self.rng.choice(["alice", "bob"])
        self.ledger.reloading = name
        self._call("unloadwallet", name)
        self._call("loadwallet", name)
        self.ledger.reloading = None


#: The workload's operations and their weights: the time goes about evenly to encryption
#: (one takes ~250 ms: createwallet, keypool, scrypt) and the rest (~10-50 ms each).
OPERATIONS = ("send", "mine", "encrypt", "backup", "fork", "rewind", "burst", "rescan", "reload")
WEIGHTS = (10, 6, 1, 3, 3, 2, 2, 2, 2)


def integrity_ok(db: Path, scratch: Path) -> None:
    """`PRAGMA integrity_check` on a copy of `db` with its -wal (the original stays as the
    kill left it)."""
    conn = sqlite3.connect(copy_db(db, scratch))
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if result != [("ok",)]:
        raise InvariantBroken(f"{db}: integrity_check says {result[:3]}")


class Campaign:
    """The kills of one executable; `run` returns the records, raising on a broken invariant."""

    def __init__(self, base: Path, kills: int, per_datadir: int, seed: int, deadline: float,
                 quiet: bool = False, targets: tuple[str, ...] | None = None,
                 fresh_every: int = 1, keep_going: bool = False, sync_every: int = 0) -> None:
        self.base = base
        #: The fresh rescan (the dearest check) after every this-many kills (0: never).
        self.fresh_every = fresh_every
        self.keep_going = keep_going
        #: Every this-many datadirs one is a headers-first sync instead (0: none).
        self.sync_every = sync_every
        self.source_node: TestNode | None = None
        self.failures: list[str] = []
        self.kill_point = "before the first kill"
        self.last_phases: dict[str, float] = {}
        #: (wallet best block, the work of the branch it waits on) pairs mined past. Keyed by
        #: the work too: two lives may fork twice from the same block, and the second branch
        #: (more work than the first, which was mined past) is another wait to mine past.
        self.outworked_once: set[tuple[str, int]] = set()
        known = TARGETS_MULTI if is_multiprocess() else TARGETS_MONO
        self.targets = tuple(t for t in (targets or known) if t in known) or known
        self.kills = kills
        self.per_datadir = per_datadir
        self.rng = random.Random(seed)
        self.seed = seed
        self.deadline = deadline
        self.quiet = quiet
        self.records: list[KillRecord] = []
        self.kind = os.path.basename(NODE_EXECUTABLE)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # ------------------------------------------------------------------ one datadir

    def run(self) -> list[KillRecord]:
        """Datadir after datadir until the kills or the time are used up. A broken invariant
        raises, or with `keep_going` is recorded in `failures` (its datadir kept) and the
        campaign goes on in a new datadir."""
        index = 0
        while len(self.records) < self.kills and time.monotonic() < self.deadline:
            try:
                if self.sync_every and index % self.sync_every == self.sync_every - 1:
                    self.sync_datadir(index)
                else:
                    self.datadir(index)
            except (InvariantBroken, AssertionError) as exc:
                failure = f"datadir {index}, {self.kill_point}: {exc}"
                if not self.keep_going:
                    raise InvariantBroken(failure) from exc
                self.failures.append(failure)
                self.records.append(KillRecord(index, -1, "failed", 0, "", 0, None))
                self.say(f"[{len(self.records)}/{self.kills}] FAILED: {failure}")
            index += 1
        return self.records

    # ------------------------------------------------------------------ a headers-first sync

    def close(self) -> None:
        """Stop the source node, if one was started."""
        if self.source_node is not None:
            self.source_node.cleanup()
            self.source_node = None

    def source(self) -> TestNode:
        """The campaign's source node (started once, never killed): SOURCE_HEIGHT blocks to
        sync from, and a side branch of its own (invalidateblock, a longer branch, then
        reconsiderblock) that it does not serve as its chain."""
        if self.source_node is None:
            node = self.source_node = TestNode(SOURCE_INDEX, self.base)
            node.start()
            node.rpc.generatetoaddress(SOURCE_HEIGHT - 3, TEST_ADDRESS)
            side = node.rpc.generatetoaddress(2, TEST_ADDRESS)
            node.rpc.invalidateblock(side[0])
            # Another address: the same coinbase in the same second would be the invalid
            # block again (duplicate-invalid).
            other = PrivateKey(hashlib.sha256(b"crash campaign side").digest()).public_key.address(REGTEST)
            node.rpc.generatetoaddress(3, other)
            node.rpc.reconsiderblock(side[0])
        return self.source_node

    def sync_datadir(self, index: int) -> None:
        """A node that starts empty with -minimumchainwork below the source's chain and
        downloads it headers-first (presync, then the headers, then the blocks) while its
        wallets (created empty) wait for the minimum chain work, then anchor and catch up.
        SYNC_LIVES kills land anywhere in that; after each the tip must have at least the
        height it had when the kill came (each connected block is committed), after the last
        the node reaches the source's tip and every check of `header_checks` holds."""
        source = self.source()
        source.rpc.generatetoaddress(self.rng.randint(3, 15), TEST_ADDRESS)   # new tips each time
        node = TestNode(index, self.base, [f"-minimumchainwork={SYNC_MIN_WORK:x}"], new_session=True)
        ledger = Ledger()
        self.kill_point = "before the first kill"
        try:
            node.start()
            node.rpc.createwallet("alice")
            node.rpc.createwallet("bob")
            for life in range(SYNC_LIVES):
                if len(self.records) >= self.kills or time.monotonic() >= self.deadline:
                    break
                target = self.rng.choice(self.targets)
                pids = self.tree(node)
                node.rpc.addnode(source.p2p_addr, "onetry")
                delay = self.rng.uniform(0.05, SYNC_LIFE_SECONDS)
                time.sleep(delay)
                # The anchor first: a wallet catching up answers late, and a height read
                # before would look like an anchor below the minimum chain work.
                phase = node.client.call("getwalletinfo", wallet="alice")["anchor"]["status"]
                height = node.rpc.getblockcount()
                self.kill_point = (f"sync life {life}: killed {target} after {delay:.2f} s at "
                                   f"height {height}, alice's anchor {phase}")
                self.kill(node, target, pids)
                t0 = time.monotonic()
                recovery = self.recover(node, ledger, target, pids, None)
                if node.rpc.getblockcount() < height:
                    raise InvariantBroken(f"the tip fell from {height} to {node.rpc.getblockcount()}")
                self.records.append(KillRecord(index, life, target, delay, f"sync {phase}",
                                               time.monotonic() - t0, recovery))
                self.say(f"[{len(self.records)}/{self.kills}] {self.kind} sync datadir {index} life "
                         f"{life}: killed {target} after {delay:.2f} s at height {height} (alice's "
                         f"anchor {phase}); back in {recovery:.2f} s")
            node.rpc.addnode(source.p2p_addr, "onetry")
            tip = source.rpc.getbestblockhash()
            wait_until(lambda: node.rpc.getbestblockhash() == tip, SYNC_TIMEOUT,
                       what="the node to sync from the source")
            self.wait_synced(node)
            if node.rpc.verifychain() is not True:
                raise InvariantBroken("verifychain failed (the node's debug.log says why)")
            self.header_checks(node, ledger)
            self.say(f"  sync datadir {index}: at the source's tip {node.rpc.getblockcount()}, "
                     f"every invariant holds")
            code = node.stop()
            if code != 0:
                raise InvariantBroken(f"sync datadir {index}: stop exited with {code}")
        finally:
            node.cleanup()

    def datadir(self, index: int) -> None:
        node = TestNode(index, self.base, new_session=True)
        ledger = Ledger()
        self.kill_point = "before the first kill"
        try:
            node.start()
            node.rpc.createwallet("alice")
            node.rpc.createwallet("bob")
            address = node.client.call("getnewaddress", wallet="alice")
            for h in node.rpc.generatetoaddress(101, address):
                ledger.blocks[h] = -1
            self.wait_synced(node)
            for life in range(self.per_datadir):
                if len(self.records) >= self.kills or time.monotonic() >= self.deadline:
                    break
                self.life(node, ledger, index, life)
            if node.process is not None:
                code = node.stop()
                if code != 0:
                    raise InvariantBroken(f"datadir {index}: stop exited with {code}")
        finally:
            node.cleanup()

    def wait_synced(self, node: TestNode, wallets: tuple[str, ...] = ("alice", "bob")) -> None:
        """Until each wallet's best block is the node's tip (its hash, not only its height:
        after a reorganisation the same height may be another block)."""
        tip = node.rpc.getbestblockhash()

        def synced_or_waiting(wallet: str) -> bool:
            # A wallet that says it waits for more work (after a rewind, since 12-07) is
            # mined past at once rather than after the timeout.
            info = node.client.call("getwalletinfo", wallet=wallet)
            return info["lastprocessedblock"]["hash"] == tip or info["anchor"].get("reason") == "less-work"

        for wallet in wallets:
            try:
                wait_until(lambda w=wallet: synced_or_waiting(w), RESTART_TIMEOUT, what=f"{wallet} to sync")
                if node.client.call("getwalletinfo", wallet=wallet)["lastprocessedblock"]["hash"] != tip:
                    raise AssertionError("waiting for more work")
            except AssertionError:
                if self.outworked(node, wallet):
                    self.wait_synced(node, wallets)
                    return
                info = node.client.call("getwalletinfo", wallet=wallet)
                raise InvariantBroken(f"{wallet} does not follow the node's chain: it stays at "
                                      f"{info['lastprocessedblock']}, anchor {info['anchor']}, the "
                                      f"node's tip {node.rpc.getblockcount()} {tip}") from None

    def outworked(self, node: TestNode, wallet: str) -> bool:
        """The wallet stays on a branch the node left (invalidateblock, then a kill before
        the new branch outgrew it), or waits at the fork of a rewind whose branch the node
        then left for one of equal work (since 12-07 a rewind keeps the undone blocks' rows as
        the bar), and the node's chain does not exceed that branch's work: by design it
        waits for more work (docs/wallet.md, a reorganisation). Mines past every branch the
        node knows once and says so (True); False when the wallet lags for another reason."""
        best = node.client.call("getwalletinfo", wallet=wallet)["lastprocessedblock"]["hash"]
        if best is None:
            return False
        try:
            works = [int(node.rpc.getblockheader(h)["chainwork"], 16)
                     for h in [best] + [t["hash"] for t in node.rpc.getchaintips() if t["status"] != "active"]]
        except RpcError:
            return False
        ours = max(works)
        theirs = int(node.rpc.getblockheader(node.rpc.getbestblockhash())["chainwork"], 16)
        # Once per (block, branch work): mining past it again would not help; the wallet
        # lags for another reason then.
        if theirs > ours or (best, ours) in self.outworked_once:
            return False
        self.outworked_once.add((best, ours))
        # Regtest blocks are 2 units of work each.
        node.rpc.generatetoaddress((ours - theirs) // 2 + 1,
                                   node.client.call("getnewaddress", wallet="alice"))
        self.say(f"  {wallet} waited on the node's left branch (work {ours:#x} >= the tip's "
                 f"{theirs:#x}): mined past it")
        return True

    def header_checks(self, node: TestNode, ledger: Ledger, retried: bool = False) -> None:
        """After catch-up: each wallet's header chain is the node's active chain, and a
        fresh rescan of alice's keys finds what alice holds (crash_invariants.py).

        Rows above the node's tip are the checked headers of a branch the node gave up (its
        invalidateblock while the wallet lagged): by design the node's next blocks must show
        more work than them (docs/wallet.md). Once, that many blocks and one more are mined,
        and then the wallet must have followed and dropped the rows."""
        scratch = self.base / "scratch"
        tip_height = node.rpc.getblockcount()
        tip_work = int(node.rpc.getblockheader(node.rpc.getbestblockhash())["chainwork"], 16)
        active = node.client.batch([("getblockhash", [h]) for h in range(tip_height + 1)])

        def block_hash(h: int) -> str:
            return str(active[h])

        wallets = node.netdatadir / "wallets"
        read = {}
        for name in ("alice", "bob"):
            ledger.counter += 1
            copy = wallets / f"check-{ledger.counter}.dat"
            node.client.call("backupwallet", str(copy), wallet=name)
            read[name] = read_wallet(copy, scratch)
            problems = synced_wallet(name, read[name], tip_height, block_hash, tip_work)
            above = [h for h in read[name]["rows"] if h > tip_height]       # type: ignore[attr-defined]
            if problems and above and not retried:
                copy.unlink()
                self.say(f"  {name} holds {len(above)} header rows above the node's tip {tip_height} "
                         f"(a branch the node gave up): mining past them")
                node.rpc.generatetoaddress(len(above) + 1, node.client.call("getnewaddress", wallet="alice"))
                self.wait_synced(node)
                self.header_checks(node, ledger, retried=True)
                return
            if problems:
                copy.unlink()
                raise InvariantBroken("; ".join(problems))
            if name == "alice" and self.fresh_every and len(self.records) % self.fresh_every == self.fresh_every - 1:
                self.fresh_check(node, ledger, copy, read[name])
            copy.unlink()

    def fresh_check(self, node: TestNode, ledger: Ledger, copy: Path, held: dict[str, object]) -> None:
        """A wallet with alice's keys and no record of the chain, loaded and caught up,
        holds the same confirmed transactions and (with nothing unconfirmed) balances."""
        ledger.counter += 1
        name = f"fresh-{ledger.counter}"
        directory = node.netdatadir / "wallets" / name
        make_fresh(copy, directory)
        try:
            node.rpc.loadwallet(name)
            self.wait_synced(node, (name,))
            ledger.counter += 1
            again = node.netdatadir / "wallets" / f"check-{ledger.counter}.dat"
            node.client.call("backupwallet", str(again), wallet=name)
            fresh = read_wallet(again, self.base / "scratch")
            again.unlink()
            mine = node.client.call("getbalances", wallet="alice")["mine"]
            theirs = node.client.call("getbalances", wallet=name)["mine"]
            node.rpc.unloadwallet(name)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if fresh["confirmed"] != held["confirmed"]:
            ours, new = held["confirmed"], fresh["confirmed"]
            raise InvariantBroken(
                f"alice's confirmed transactions differ from a fresh rescan's: only alice's "
                f"{sorted(t[::-1].hex()[:16] for t in ours.keys() - new.keys())[:3]}, only the "
                f"rescan's {sorted(t[::-1].hex()[:16] for t in new.keys() - ours.keys())[:3]}, in "
                f"another block {sum(1 for t in ours.keys() & new.keys() if ours[t] != new[t])}")
        if not held["pending"] and mine != theirs:
            raise InvariantBroken(f"alice's balances {mine} differ from a fresh rescan's {theirs}")

    def bob_total(self, node: TestNode) -> Decimal:
        mine = node.client.call("getbalances", wallet="bob")["mine"]
        return Decimal(mine["trusted"]) + Decimal(mine["untrusted_pending"]) + Decimal(mine["immature"])

    # ------------------------------------------------------------------ one kill

    def life(self, node: TestNode, ledger: Ledger, index: int, life: int) -> None:
        ledger.bob_floor = self.bob_total(node)
        reorgs_before = ledger.reorgs
        target = self.rng.choice(self.targets)
        pids = self.tree(node)
        work = Workload(node, ledger, random.Random(self.rng.getrandbits(32)))
        work.thread.start()
        delay = self.rng.uniform(0.05, MAX_LIFE_SECONDS)
        time.sleep(delay)
        during = work.current
        self.kill_point = (f"life {life}: killed {target} after {delay:.2f} s during {during} "
                           f"(operations done: {dict(work.done)})")
        self.kill(node, target, pids)
        t0 = time.monotonic()
        recovery = self.recover(node, ledger, target, pids, work)
        ledger.reloading = None
        if work.error is not None:
            raise InvariantBroken(f"the workload failed: {work.error!r}")
        self.online_checks(node, ledger, reorged=ledger.reorgs != reorgs_before)
        checks = time.monotonic() - t0
        self.records.append(KillRecord(index, life, target, delay, during, checks, recovery,
                                       sum(work.done.values())))
        self.say(f"[{len(self.records)}/{self.kills}] {self.kind} datadir {index} life {life}: "
                 f"killed {target} after {delay:.2f} s ({sum(work.done.values())} operations "
                 f"done) during {during}; back in "
                 f"{recovery:.2f} s; invariants hold ({checks:.1f} s: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in self.last_phases.items()) + ")")

    def recover(self, node: TestNode, ledger: Ledger, target: str, pids: dict[str, int],
                work: Workload | None) -> float:
        """After the kill of `target`: the offline checks (all processes gone) and a restart,
        or (a killed wallet process) its restart by the node; seconds until it serves. The
        workload, if any, is stopped on the way."""
        t0 = time.monotonic()
        stop = work.stop if work is not None else threading.Event()
        thread = work.thread if work is not None else None
        if target == "wallet":
            # CleanCoin-node restarts its wallet process; the node itself stays up. Its
            # files can be scanned for secrets at once (a concurrent restart cannot add one).
            wait_gone(pids["wallet"], RESTART_TIMEOUT)
            self.secrets_check(node, ledger)
            stop.set()
            if thread is not None:
                thread.join(RESTART_TIMEOUT)
            wait_until(lambda: self.wallet_back(node, pids["wallet"], ledger.reloading), RESTART_TIMEOUT,
                       what="the wallet process to come back")
            recovery = time.monotonic() - t0
            if ledger.reloading is not None and ledger.reloading not in node.rpc.listwallets():
                node.rpc.loadwallet(ledger.reloading)      # the kill cut its unload/load
        else:
            if node.process is not None:
                # The zygote died: the node ends itself with status 1 and says why (so that a
                # supervisor restarts it; docs/multiprocess.md), whether or not a stop races it.
                stop.set()
                try:
                    node.rpc.stop()
                except (RpcTransportError, RpcError, OSError):
                    pass
                code = node.process.wait(RESTART_TIMEOUT)
                node.process = None
                gone = "the wallet launcher (zygote" in node.debug_log()
                if code not in (0, 1) or (code == 1 and not gone):
                    raise InvariantBroken(f"stop after a dead {target} exited with {code}"
                                          + ("" if gone else " without saying the zygote is gone"))
            for pid in pids.values():
                wait_gone(pid, RESTART_TIMEOUT)
            stop.set()
            if thread is not None:
                thread.join(RESTART_TIMEOUT)
            self.offline_checks(node, ledger)
            node.start(["-wallet=alice", "-wallet=bob"], wait=True)
            recovery = time.monotonic() - t0
        return recovery

    def tree(self, node: TestNode) -> dict[str, int]:
        assert node.process is not None
        pids = {"node": node.process.pid}
        if is_multiprocess():
            procs = node.rpc.getprocessinfo()["processes"]
            pids["wallet"] = int([p for p in procs if p["name"] == "CleanCoin-wallet"][0]["pid"])
            children = child_pids(node.process.pid)
            if len(children) != 1:
                raise InvariantBroken(f"expected one zygote below the node, found {children}")
            pids["zygote"] = children[0]
        return pids

    def kill(self, node: TestNode, target: str, pids: dict[str, int]) -> None:
        if target == "group":
            node.kill_group()
        elif target == "node":
            node.kill()
        else:
            os.kill(pids[target], signal.SIGKILL)

    def wallet_back(self, node: TestNode, old: int, reloading: str | None) -> bool:
        try:
            procs = node.rpc.getprocessinfo()["processes"]
            wallet = [p for p in procs if p["name"] == "CleanCoin-wallet"][0]
            return (bool(wallet["pid"]) and int(wallet["pid"]) != old
                    and {"alice", "bob"} - {reloading} <= set(node.rpc.listwallets()))
        except (RpcError, RpcTransportError, OSError, IndexError):
            return False

    # ------------------------------------------------------------------ invariants

    def offline_checks(self, node: TestNode, ledger: Ledger) -> None:
        """With every process of the node gone: the files as the kill left them."""
        scratch = self.base / "scratch"
        chain = [p for p in node.netdatadir.glob("*.sqlite")]
        if not chain:
            raise InvariantBroken("no chain database in the datadir")
        chainwork: dict[bytes, int] = {}
        for db in chain:
            integrity_ok(db, scratch)
            problems, work = chain_files(db, scratch)
            if problems:
                raise InvariantBroken(f"{db.name}: " + "; ".join(problems[:5]))
            chainwork.update(work)
        wallets = node.netdatadir / "wallets"
        all_needles: list[bytes] = []
        for d in sorted(p for p in wallets.iterdir() if (p / "wallet.sqlite").is_file()):
            integrity_ok(d / "wallet.sqlite", scratch)
            problems = wallet_headers(d.name, read_wallet(d / "wallet.sqlite", scratch), chainwork)
            if problems:
                raise InvariantBroken("; ".join(problems))
            encrypted, _ = committed_state(d, scratch)
            if d.name in ledger.encrypted and not encrypted:
                raise InvariantBroken(f"wallet {d.name}: encryptwallet returned, files say "
                                      "not encrypted")
            if d.name in ledger.born_encrypted and not encrypted:
                raise InvariantBroken(f"wallet {d.name}: created with a passphrase, files say "
                                      "not encrypted")
            if encrypted and d.name in ledger.seeds:
                all_needles += secrets_of(ledger.seeds[d.name])
            copy = scratch / "wallet-copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(d, copy / "wallets" / d.name)
            with WalletStore.open(copy, d.name, "regtest") as store:
                problems = store.check()
            shutil.rmtree(copy, ignore_errors=True)
            if problems:
                raise InvariantBroken(f"wallet {d.name}: {problems}")
        if all_needles:
            leaks = files_holding(node.datadir, all_needles)
            if leaks:
                raise InvariantBroken(f"plaintext key material of an encrypted wallet in {leaks}")
        for backup in ledger.backups:
            integrity_ok(backup, scratch)

    def secrets_check(self, node: TestNode, ledger: Ledger) -> None:
        """No file of the datadir holds key material of a wallet encryptwallet finished."""
        needles = [n for name in ledger.encrypted if name in ledger.seeds
                   for n in secrets_of(ledger.seeds[name])]
        if needles and (leaks := files_holding(node.datadir, needles)):
            raise InvariantBroken(f"plaintext key material of an encrypted wallet in {leaks}")

    def online_checks(self, node: TestNode, ledger: Ledger, reorged: bool = False) -> None:
        """With the node (and wallets) back: nothing committed is lost, the chain verifies,
        the wallets' header chains are the node's and a fresh rescan agrees with them.
        `reorged`: the life ran a reorganisation or rewind (bob may have lost a payment
        whose input became immature again; the wallets must still agree with a rescan)."""
        phase = Phases()
        self.wait_synced(node)
        phase("sync")
        if node.rpc.verifychain() is not True:
            raise InvariantBroken("verifychain failed (the node's debug.log says why)")
        phase("verifychain")
        # Batched: a call each costs some 25 ms on a busy machine, and there are hundreds.
        blocks = list(ledger.blocks)
        tip_work = int(node.rpc.getblockheader(node.rpc.getbestblockhash())["chainwork"], 16)
        for block, header in zip(blocks, node.client.batch([("getblockheader", [b]) for b in blocks]),
                                 strict=True):
            if isinstance(header, RpcError):
                raise InvariantBroken(f"block {block} lost: {header}")
            if header["confirmations"] >= 1:
                continue
            # Off the active chain: still stored, and either moved off by the workload's own
            # invalidateblock or outweighed (a reconsiderblock may revive a heavier branch an
            # earlier, killed operation had invalidated).
            try:
                node.rpc.getblock(block, 0)
            except RpcError as exc:
                raise InvariantBroken(f"block {block} off the active chain and lost: {exc}") from None
            if block not in ledger.displaced and int(header["chainwork"], 16) > tip_work:
                raise InvariantBroken(f"block {block} left the active chain for one with less "
                                      f"work ({header['chainwork']} > {tip_work:#x})")
        phase("blocks")
        txs = node.client.batch([("gettransaction", [t]) for t, _ in ledger.sends], wallet="alice")
        for (txid, epoch), tx in zip(ledger.sends, txs, strict=True):
            if isinstance(tx, RpcError):
                raise InvariantBroken(f"sent transaction {txid} lost from alice: {tx}")
            if tx["confirmations"] < 1 and epoch == ledger.reorgs:
                wait_until(lambda t=txid: t in set(node.rpc.getrawmempool()) or
                           node.client.call("gettransaction", t, wallet="alice")["confirmations"] >= 1,
                           RESTART_TIMEOUT, what=f"sent transaction {txid} back in the mempool")
        if not reorged and self.bob_total(node) < ledger.bob_floor:
            raise InvariantBroken(f"bob's balance fell from {ledger.bob_floor} to "
                                  f"{self.bob_total(node)}")
        phase("sends")
        # The mempool into a block, so that a fresh rescan can see every payment.
        # To a new address: a block like one a rewind invalidated (same height, second and
        # coinbase) would be that block again, refused as duplicate-invalid.
        node.rpc.generatetoaddress(1, node.client.call("getnewaddress", wallet="alice"))
        self.wait_synced(node)
        phase("sync2")
        self.header_checks(node, ledger)
        phase("headers")
        self.last_phases = phase.seconds
        for name in ledger.encrypted[-2:]:       # the newest ones: a full load each costs time
            try:
                node.rpc.loadwallet(name)
            except RpcError as exc:
                # Killed between encryptwallet and unloadwallet: a wallet process the node
                # restarted loads again what was loaded, so the wallet may still be loaded.
                if exc.code != -35:
                    raise
            info = node.client.call("getwalletinfo", wallet=name)
            if "unlocked_until" not in info:
                raise InvariantBroken(f"wallet {name} lost its encryption")
            node.client.call("walletpassphrase", PASSPHRASE, 5, wallet=name)
            node.rpc.unloadwallet(name)


def summary(records: list[KillRecord], seconds: float, kind: str, seed: int) -> str:
    targets = collections.Counter(r.target for r in records)
    during = collections.Counter(r.during for r in records)
    wallet_back = [r.recovery_seconds for r in records if r.target == "wallet" and r.recovery_seconds]
    lines = [f"{kind}: {len(records)} kills in {seconds:.0f} s (seed {seed}), every invariant held",
             "  killed: " + ", ".join(f"{k} {v}" for k, v in sorted(targets.items())),
             "  during: " + ", ".join(f"{k} {v}" for k, v in sorted(during.items())),
             f"  operations completed before the kills: {sum(r.operations for r in records)}"]
    if wallet_back:
        lines.append(f"  wallet process back in {statistics.median(wallet_back):.2f} s (median), "
                     f"{max(wallet_back):.2f} s (max)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=160, help="kills in all (default 160)")
    parser.add_argument("--per-datadir", type=int, default=10,
                        help="kills before a datadir is replaced (default 10)")
    parser.add_argument("--max-seconds", type=float, default=1200,
                        help="stop starting new kills after this long (default 1200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--targets", default=",".join(TARGETS_MULTI),
                        help="processes to kill, of node,wallet,zygote,group (those the "
                             "executable has; default all)")
    parser.add_argument("--keep", action="store_true", help="keep the datadirs")
    parser.add_argument("--sync-every", type=int, default=3,
                        help="every this-many datadirs one syncs headers-first from a source "
                             "node below -minimumchainwork instead (0: none; default 3)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a broken invariant go on in a new datadir (all are kept); "
                             "exit status 1 at the end")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    base = Path(tempfile.mkdtemp(prefix="cleancoin-crash-"))
    t0 = time.monotonic()
    campaign = Campaign(base, args.kills, args.per_datadir, seed, t0 + args.max_seconds,
                        targets=tuple(args.targets.split(",")), keep_going=args.keep_going,
                        sync_every=args.sync_every)
    print(f"crash campaign: {campaign.kind}, up to {args.kills} kills, {args.per_datadir} per "
          f"datadir, seed {seed}, datadirs in {base}", flush=True)
    try:
        campaign.run()
    except (InvariantBroken, AssertionError) as exc:
        campaign.close()
        print(f"FAILED after {len(campaign.records)} kills (seed {seed}; datadirs kept in "
              f"{base}): {exc}", flush=True)
        return 1
    campaign.close()
    if campaign.failures:
        print(f"FAILED: {len(campaign.failures)} broken invariants in {len(campaign.records)} kills "
              f"(seed {seed}; datadirs kept in {base}):", flush=True)
        for failure in campaign.failures:
            print(f"  {failure}", flush=True)
        return 1
    print(summary(campaign.records, time.monotonic() - t0, campaign.kind, seed), flush=True)
    print(json.dumps({"kills": len(campaign.records), "seed": seed}), flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
