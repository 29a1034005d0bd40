"""kill -9 at every step of encryptwallet: no plaintext key material in any file afterwards.

The attack (issue #11 item 9): a wallet process dies late in `encryptwallet`. What it leaves
behind must never hold the plaintext seed (or a key derived from it) in any file of the
wallet's directory -- database, `-wal`, `-shm`, journals, leftovers -- once the encryption is
committed, and the wallet must open again in exactly one of the two states (unencrypted with
its seed, or encrypted under the passphrase).

How the kill points are chosen: a real child process (forked from the test, so that each of
the ~45 kill points does not pay for an interpreter start) opens the wallet and calls
`encrypt_wallet`. An audit hook (`sys.addaudithook`: file opens, renames, removals, SQLite
connections) and SQLite's statement trace (set on every connection the store opens) make the
child stop before each of those steps,
print what it is about to do and wait for a line on stdin. The parent counts the steps of one
full run, then, for every step k, starts a fresh copy of the wallet, lets the child go k
steps and SIGKILLs it while it waits before step k+1. Nothing in the store is mocked: the
child runs the real code on a real file, and the kill is a real SIGKILL.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from cleancoin.components.wallet import hd
from cleancoin.components.wallet.store import WalletStore
from functional.wallet_secrets import committed_state, files_holding, secrets_of

SEED = bytes(range(100, 132))
PASSPHRASE = "kill me while I encrypt"
FAST_N = 2 ** 10                  # the scrypt cost does not matter here; the steps do
STEP_TIMEOUT = 20.0

_EVENTS = ("open", "os.rename", "os.replace", "os.remove", "os.unlink", "os.truncate",
           "os.rmdir", "sqlite3.connect")


def _child(control: Connection, netdatadir: str, passphrase: str, mode: str) -> None:
    """The stepped process (forked from the test: no interpreter start-up per kill point)."""
    store = WalletStore.open(netdatadir, "w", "regtest")
    state = {"armed": False, "busy": False}

    def pause(what: str) -> None:
        state["busy"] = True
        try:
            control.send("step " + what.replace("\n", " ")[:200])
            control.recv()                # the parent kills us here, or lets us go on
        finally:
            state["busy"] = False

    def traced(sql: str) -> None:
        if state["armed"] and not state["busy"]:
            pause("sql " + sql)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if state["armed"] and not state["busy"] and event in _EVENTS:
            pause(event + " " + repr(args[:1]))

    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        # Every connection the store opens from now on is traced too.
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(traced)
        return conn

    sys.addaudithook(hook)                # this process only: it is killed or exits
    sqlite3.connect = connect             # type: ignore[assignment]
    store._conn.set_trace_callback(traced)
    control.send("ready")
    control.recv()
    state["armed"] = True
    if mode == "encrypt":
        store.encrypt_wallet(passphrase, scrypt_n=FAST_N)
    elif mode == "create":
        WalletStore.create(netdatadir, "c", "regtest", seed=SEED)
    else:
        store.change_passphrase(passphrase, passphrase + " 2", scrypt_n=FAST_N)
    state["armed"] = False
    control.send("done")
    control.recv()


@dataclass
class Stepper:
    """The child process, driven one step at a time."""

    proc: multiprocessing.process.BaseProcess
    control: Connection

    @classmethod
    def start(cls, netdatadir: Path, passphrase: str, mode: str) -> Stepper:
        return cls.spawn(_child, str(netdatadir), passphrase, mode)

    @classmethod
    def spawn(cls, target: Callable[..., None], *args: object) -> Stepper:
        """Fork `target(control, *args)`, a child that says "ready", waits for "go", then
        says "step ..." and waits before each step, and "done" at the end (as `_child`;
        tests/test_wallet_reorg_crash.py has another)."""
        ours, theirs = multiprocessing.Pipe()
        proc = multiprocessing.get_context("fork").Process(target=target, args=(theirs, *args), daemon=True)
        proc.start()
        theirs.close()
        stepper = cls(proc, ours)
        assert stepper.line() == "ready"
        stepper.go()
        return stepper

    def line(self) -> str:
        if not self.control.poll(STEP_TIMEOUT):
            raise AssertionError("the child did not reach its next step")
        try:
            return str(self.control.recv())
        except EOFError:
            raise AssertionError(f"child ended early (exit code {self.proc.exitcode})") from None

    def go(self) -> None:
        self.control.send("go")

    def kill(self) -> None:
        if self.proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)
        self.control.close()


def make_wallet(netdatadir: Path) -> None:
    """A small wallet with some history (keys, a label), so the file has several pages."""
    store = WalletStore.create(netdatadir, "w", "regtest", seed=SEED)
    master = hd.master_key(SEED)
    for internal in (False, True):
        store.add_keys(internal, 0, [hd.derive_path(master, hd.wallet_key_path(i, internal))
                                     .public_key for i in range(30)])
    store.set_label(store.keys(False)[0].address, "first")
    store.close()


def warm_up(template: Path, scratch: Path, passphrase: str, mode: str) -> None:
    """The operation once in this process, before any child is forked, so that every child
    inherits what its first run in a process leaves behind: lazy imports (crypto.py imports
    `cryptography` on first use, issue #16) and, under pytest-qt, the source lines PySide6's
    import hook reads through linecache for each import statement. Without it the counting
    child opened aead.py, this process then cached it in its own checks, and every later child
    reached its end one step before the last counted one (the test failed every run)."""
    shutil.copytree(template, scratch)
    with WalletStore.open(scratch, "w", "regtest") as store:
        if mode == "encrypt":
            store.encrypt_wallet(passphrase, scrypt_n=FAST_N)
        elif mode == "create":
            WalletStore.create(scratch, "c", "regtest", seed=SEED).close()
        else:
            store.change_passphrase(passphrase, passphrase + " 2", scrypt_n=FAST_N)
    shutil.rmtree(scratch)


def count_steps(netdatadir: Path, passphrase: str, mode: str) -> list[str]:
    stepper = Stepper.start(netdatadir, passphrase, mode)
    steps = []
    try:
        while (line := stepper.line()) != "done":
            assert line.startswith("step "), line
            steps.append(line[5:])
            stepper.go()
    finally:
        stepper.kill()
    return steps


def kill_at_each_step(tmp_path: Path, mode: str) -> list[str]:
    """Run the campaign; returns the steps (for the log). Asserts the invariants."""
    template = tmp_path / "template"
    make_wallet(template)
    old_pass = PASSPHRASE
    if mode == "change":
        with WalletStore.open(template, "w", "regtest") as store:
            store.encrypt_wallet(old_pass, scrypt_n=FAST_N)
    warm_up(template, tmp_path / "warm", old_pass, mode)
    probe_dir = tmp_path / "count"
    shutil.copytree(template, probe_dir)
    steps = count_steps(probe_dir, old_pass, mode)
    assert len(steps) >= 5, steps
    needles = secrets_of(SEED)
    failures = []
    for k in range(len(steps) + 1):
        run = tmp_path / f"kill{k}"
        shutil.copytree(template, run)
        wallet_dir = run / "wallets" / "w"
        stepper = Stepper.start(run, old_pass, mode)
        try:
            for i in range(k):
                line = stepper.line()
                assert line.startswith("step "), (f"kill point {k}: {line!r} where the count saw "
                                                  f"step {i} of {len(steps)}: {steps[i]!r}")
                stepper.go()
            stepper.line()                    # waiting before step k+1 (or done)
        finally:
            stepper.kill()
        where = steps[k] if k < len(steps) else "after the last step"
        encrypted, blob = committed_state(wallet_dir, tmp_path / "scratch")
        if encrypted:
            leaks = files_holding(wallet_dir, needles)
            if leaks:
                failures.append(f"kill before step {k} ({where}): encrypted, but plaintext "
                                f"key material in {leaks}")
        # The restarted wallet: one of the two states, sound, and still no plaintext.
        with WalletStore.open(run, "w", "regtest") as store:
            assert store.check() == [], (k, where)
            assert not (wallet_dir / "wallet.sqlite.rewrite").exists(), (k, where)
            assert store.encrypted == encrypted, (k, where)
            if mode == "change":
                assert blob is not None
                opened = []
                for phrase in (old_pass, old_pass + " 2"):
                    try:
                        opened.append(store.unlock(phrase).get())
                    except Exception:
                        pass
                assert opened == [SEED], (k, where)          # exactly one passphrase works
            elif encrypted:
                assert store.unlock(old_pass).get() == SEED
            else:
                assert store.seed().get() == SEED
                store.encrypt_wallet(old_pass, scrypt_n=FAST_N)     # the user tries again
            leaks = files_holding(wallet_dir, needles)
            if leaks:
                failures.append(f"kill before step {k} ({where}): after reopening, plaintext "
                                f"key material in {leaks}")
        leaks = files_holding(wallet_dir, needles)
        if leaks:
            failures.append(f"kill before step {k} ({where}): after closing, plaintext in {leaks}")
        shutil.rmtree(run)
    assert not failures, "\n".join(failures)
    return steps


def test_kill_9_at_every_step_of_encryptwallet_leaves_no_plaintext(tmp_path: Path) -> None:
    steps = kill_at_each_step(tmp_path, "encrypt")
    print(f"{len(steps) + 1} kill points:", steps)


def test_kill_9_at_every_step_of_walletpassphrasechange_keeps_one_passphrase(tmp_path: Path) -> None:
    steps = kill_at_each_step(tmp_path, "change")
    print(f"{len(steps) + 1} kill points:", steps)


def test_the_scan_finds_plaintext_where_there_is_some(tmp_path: Path) -> None:
    """The scan is able to fail: an unencrypted wallet's files hold the seed."""
    make_wallet(tmp_path)
    assert files_holding(tmp_path / "wallets" / "w", secrets_of(SEED)) == ["wallet.sqlite"]


_OLD_IN_PLACE = textwrap.dedent('''
    # What versions before the rewrite did, up to a kill after their scrub's VACUUM and
    # "scrub_pending = 0" commit, before the TRUNCATE checkpoint.
    import os, signal, sqlite3, sys
    from cleancoin.components.wallet.crypto import SEED_PURPOSE, encrypt
    c = sqlite3.connect(sys.argv[1], isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA secure_delete=ON")
    (plain,) = c.execute("SELECT plaintext FROM secrets WHERE name = 'seed'").fetchone()
    blob = encrypt(plain, sys.argv[2], purpose=SEED_PURPOSE, n=1024).to_bytes()
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE secrets SET plaintext = zeroblob(length(plaintext)) WHERE name = 'seed'")
    c.execute("UPDATE secrets SET plaintext = NULL, encrypted = ? WHERE name = 'seed'", (blob,))
    c.execute("INSERT OR REPLACE INTO meta VALUES ('encrypted', 1)")
    c.execute("COMMIT")
    c.execute("VACUUM")
    os.kill(os.getpid(), signal.SIGKILL)
''')


def test_a_wallet_left_by_the_old_in_place_encryption_is_cleaned_on_open(tmp_path: Path) -> None:
    """A wallet killed late in the old in-place encryption (committed, WAL not truncated) has
    its plaintext seed on disk; loading it with this version removes it."""
    make_wallet(tmp_path)
    wallet_dir = tmp_path / "wallets" / "w"
    proc = subprocess.run([sys.executable, "-c", _OLD_IN_PLACE, str(wallet_dir / "wallet.sqlite"),
                           PASSPHRASE], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert committed_state(wallet_dir, tmp_path / "scratch")[0] is True
    assert files_holding(wallet_dir, secrets_of(SEED)) != []        # the state of issue #11
    with WalletStore.open(tmp_path, "w", "regtest") as store:
        assert store.encrypted and store.unlock(PASSPHRASE).get() == SEED
        assert files_holding(wallet_dir, secrets_of(SEED)) == []    # while it stays loaded
        store.set_label(store.keys(False)[1].address, "later write")
        assert files_holding(wallet_dir, secrets_of(SEED)) == []


def test_kill_9_at_every_step_of_createwallet_leaves_no_half_made_wallet(tmp_path: Path) -> None:
    """Before: create() made an empty wallet.sqlite first, and a kill before its first commit
    left a file without tables: loading failed and the name was taken for good."""
    template = tmp_path / "template"
    make_wallet(template)
    warm_up(template, tmp_path / "warm", PASSPHRASE, "create")
    probe_dir = tmp_path / "count"
    shutil.copytree(template, probe_dir)
    steps = count_steps(probe_dir, PASSPHRASE, "create")
    assert len(steps) >= 3, steps
    failures = []
    for k in range(len(steps) + 1):
        run = tmp_path / f"kill{k}"
        shutil.copytree(template, run)
        stepper = Stepper.start(run, PASSPHRASE, "create")
        try:
            for i in range(k):
                line = stepper.line()
                assert line.startswith("step "), (f"kill point {k}: {line!r} where the count saw "
                                                  f"step {i} of {len(steps)}: {steps[i]!r}")
                stepper.go()
            stepper.line()
        finally:
            stepper.kill()
        where = steps[k] if k < len(steps) else "after the last step"
        try:
            if (run / "wallets" / "c" / "wallet.sqlite").exists():
                store = WalletStore.open(run, "c", "regtest")          # complete, or not there
            else:
                store = WalletStore.create(run, "c", "regtest", seed=SEED)   # the name is free
            with store:
                assert store.check() == [] and store.seed().get() == SEED
            assert sorted(p.name for p in (run / "wallets" / "c").iterdir()) == [
                ".lock", "wallet.sqlite"], where
        except Exception as exc:                               # noqa: BLE001 - collected
            failures.append(f"kill before step {k} ({where}): {type(exc).__name__}: {exc}")
        shutil.rmtree(run)
    assert not failures, "\n".join(failures)
