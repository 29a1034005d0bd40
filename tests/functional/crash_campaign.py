#!/usr/bin/env python3
"""A kill -9 campaign against real nodes: random process, random moment, reused datadirs.

    tests/functional/crash_campaign.py --kills 160 --max-seconds 1200      # make crashtest
    tests/functional/crash_campaign.py --kills 3 --per-datadir 3           # the make test one

Each datadir gets a node (CleanCoind, or CleanCoin-node with its wallet process) with two
wallets, alice (funded by mining) and bob, and lives through `--per-datadir` kills. In each
life a workload thread runs random operations over RPC: alice sends to bob, a block is mined,
a fresh wallet is created and encrypted (by encryptwallet, or at once by createwallet with a
passphrase), alice is backed up. After a random delay one process is SIGKILLed: CleanCoind or
its whole process group; or, with CleanCoin-node, the node, its wallet process, its zygote or
the whole group. Then the invariants:

- integrity: the chain database and every wallet database pass `PRAGMA integrity_check`
  (on copies, so the check cannot repair what it looks at), and every wallet passes the
  store's own consistency check;
- secrets: no file anywhere in the datadir holds the seed (raw, hex), master key or first
  derived keys of a wallet whose files say it is encrypted;
- nothing committed is lost: every block hash `generatetoaddress` returned is in the active
  chain; every txid `sendtoaddress` returned is still in alice's wallet and in the mempool or a
  block; every wallet whose encryption returned is encrypted and opens with its passphrase,
  and a wallet asked to be created with a passphrase is absent or encrypted; every backup
  `backupwallet` wrote passes integrity_check; bob (who only receives) has at least the
  balance he had when the life began;
- recovery: a killed wallet process is restarted by the node (CleanCoin-node) and serves
  again; otherwise the node is stopped if alive (`stop`, exit status 0 expected) and started
  again on the same datadir, and serves.

A line per kill, then a summary; exit status 0 when every invariant held. The same module is
driven by tests/functional/test_crash_campaign.py with a few kills inside `make test`.
"""

from __future__ import annotations

import argparse
import collections
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

from framework import (  # noqa: E402
    NODE_EXECUTABLE, TestNode, child_pids, is_multiprocess, wait_gone, wait_until,
)
from wallet_secrets import committed_state, files_holding, read_seed, secrets_of  # noqa: E402

from cleancoin.components.rpc.client import RpcTransportError  # noqa: E402
from cleancoin.components.rpc.errors import RpcError  # noqa: E402
from cleancoin.components.wallet.store import WalletStore  # noqa: E402

PASSPHRASE = "crash campaign passphrase"
MAX_LIFE_SECONDS = 1.5          # kill at a random moment of the first this-many seconds
RESTART_TIMEOUT = 30.0
TARGETS_MONO = ("node", "group")
TARGETS_MULTI = ("node", "wallet", "zygote", "group")


class InvariantBroken(AssertionError):
    """One of the campaign's invariants did not hold."""


@dataclass
class Ledger:
    """What the node said was done (the RPC returned), so it must survive any kill."""

    blocks: dict[str, int] = field(default_factory=dict)       # hash -> height
    sends: list[str] = field(default_factory=list)             # txids alice sent
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
                # Weighed so that the time goes about evenly to encryption (one op takes
                # ~250 ms: createwallet, keypool, scrypt) and the rest (~10-20 ms each).
                op = self.rng.choices(["send", "mine", "encrypt", "backup"], [10, 6, 1, 3])[0]
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
            if exc.code in (-6, -4):        # insufficient funds until a block matures more
                return
            raise
        self.ledger.sends.append(txid)

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


def integrity_ok(db: Path, scratch: Path) -> None:
    """`PRAGMA integrity_check` on a copy of `db` with its -wal (the original stays as the
    kill left it)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for suffix in ("", "-wal"):
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copyfile(src, scratch / (db.name + suffix))
    conn = sqlite3.connect(scratch / db.name)
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
                 quiet: bool = False, targets: tuple[str, ...] | None = None) -> None:
        self.base = base
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
        index = 0
        while len(self.records) < self.kills and time.monotonic() < self.deadline:
            self.datadir(index)
            index += 1
        return self.records

    def datadir(self, index: int) -> None:
        node = TestNode(index, self.base, new_session=True)
        ledger = Ledger()
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

    def wait_synced(self, node: TestNode) -> None:
        height = node.rpc.getblockcount()
        for wallet in ("alice", "bob"):
            wait_until(lambda w=wallet: node.client.call("getwalletinfo", wallet=w)
                       ["lastprocessedblock"]["height"] == height, RESTART_TIMEOUT,
                       what=f"{wallet} to sync")

    def bob_total(self, node: TestNode) -> Decimal:
        mine = node.client.call("getbalances", wallet="bob")["mine"]
        return Decimal(mine["trusted"]) + Decimal(mine["untrusted_pending"]) + Decimal(mine["immature"])

    # ------------------------------------------------------------------ one kill

    def life(self, node: TestNode, ledger: Ledger, index: int, life: int) -> None:
        ledger.bob_floor = self.bob_total(node)
        target = self.rng.choice(self.targets)
        pids = self.tree(node)
        work = Workload(node, ledger, random.Random(self.rng.getrandbits(32)))
        work.thread.start()
        delay = self.rng.uniform(0.05, MAX_LIFE_SECONDS)
        time.sleep(delay)
        during = work.current
        self.kill(node, target, pids)
        t0 = time.monotonic()
        recovery: float | None = None
        if target == "wallet":
            # CleanCoin-node restarts its wallet process; the node itself stays up. Its
            # files can be scanned for secrets at once (a concurrent restart cannot add one).
            wait_gone(pids["wallet"], RESTART_TIMEOUT)
            self.secrets_check(node, ledger)
            wait_until(lambda: self.wallet_back(node, pids["wallet"]), RESTART_TIMEOUT,
                       what="the wallet process to come back")
            recovery = time.monotonic() - t0
            work.stop.set()
            work.thread.join(RESTART_TIMEOUT)
        else:
            if node.process is not None:
                # The zygote died: the node ends itself with status 1 and says why (so that a
                # supervisor restarts it; docs/multiprocess.md), whether or not a stop races it.
                work.stop.set()
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
            work.stop.set()
            work.thread.join(RESTART_TIMEOUT)
            self.offline_checks(node, ledger)
            node.start(["-wallet=alice", "-wallet=bob"], wait=True)
            recovery = time.monotonic() - t0
        if work.error is not None:
            raise InvariantBroken(f"the workload failed: {work.error!r}")
        self.online_checks(node, ledger)
        checks = time.monotonic() - t0
        self.records.append(KillRecord(index, life, target, delay, during, checks, recovery,
                                       sum(work.done.values())))
        self.say(f"[{len(self.records)}/{self.kills}] {self.kind} datadir {index} life {life}: "
                 f"killed {target} after {delay:.2f} s ({sum(work.done.values())} operations "
                 f"done) during {during}; back in "
                 f"{recovery:.2f} s; invariants hold ({checks:.1f} s)")

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

    def wallet_back(self, node: TestNode, old: int) -> bool:
        try:
            procs = node.rpc.getprocessinfo()["processes"]
            wallet = [p for p in procs if p["name"] == "CleanCoin-wallet"][0]
            return (bool(wallet["pid"]) and int(wallet["pid"]) != old
                    and {"alice", "bob"} <= set(node.rpc.listwallets()))
        except (RpcError, RpcTransportError, OSError, IndexError):
            return False

    # ------------------------------------------------------------------ invariants

    def offline_checks(self, node: TestNode, ledger: Ledger) -> None:
        """With every process of the node gone: the files as the kill left them."""
        scratch = self.base / "scratch"
        chain = [p for p in node.netdatadir.glob("*.sqlite")]
        if not chain:
            raise InvariantBroken("no chain database in the datadir")
        for db in chain:
            integrity_ok(db, scratch)
        wallets = node.netdatadir / "wallets"
        all_needles: list[bytes] = []
        for d in sorted(p for p in wallets.iterdir() if (p / "wallet.sqlite").is_file()):
            integrity_ok(d / "wallet.sqlite", scratch)
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

    def online_checks(self, node: TestNode, ledger: Ledger) -> None:
        """With the node (and wallets) back: nothing committed is lost."""
        self.wait_synced(node)
        for block in ledger.blocks:
            header = node.rpc.getblockheader(block)
            if header["confirmations"] < 1:
                raise InvariantBroken(f"block {block} left the active chain")
        for txid in ledger.sends:
            tx = node.client.call("gettransaction", txid, wallet="alice")
            if tx["confirmations"] < 1:
                wait_until(lambda t=txid: t in set(node.rpc.getrawmempool()) or
                           node.client.call("gettransaction", t, wallet="alice")["confirmations"] >= 1,
                           RESTART_TIMEOUT, what=f"sent transaction {txid} back in the mempool")
        if self.bob_total(node) < ledger.bob_floor:
            raise InvariantBroken(f"bob's balance fell from {ledger.bob_floor} to "
                                  f"{self.bob_total(node)}")
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
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    base = Path(tempfile.mkdtemp(prefix="cleancoin-crash-"))
    t0 = time.monotonic()
    campaign = Campaign(base, args.kills, args.per_datadir, seed, t0 + args.max_seconds,
                        targets=tuple(args.targets.split(",")))
    print(f"crash campaign: {campaign.kind}, up to {args.kills} kills, {args.per_datadir} per "
          f"datadir, seed {seed}, datadirs in {base}", flush=True)
    try:
        campaign.run()
    except (InvariantBroken, AssertionError) as exc:
        print(f"FAILED after {len(campaign.records)} kills (seed {seed}; datadirs kept in "
              f"{base}): {exc}", flush=True)
        return 1
    print(summary(campaign.records, time.monotonic() - t0, campaign.kind, seed), flush=True)
    print(json.dumps({"kills": len(campaign.records), "seed": seed}), flush=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
