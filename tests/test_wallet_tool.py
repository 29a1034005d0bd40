"""CleanCoin-wallet, the offline tool: the installed script run as a subprocess on a temporary
regtest datadir, no node anywhere."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleancoin.components.wallet.store import WalletStore

TOOL = Path(sys.executable).with_name("CleanCoin-wallet")

pytestmark = pytest.mark.skipif(not TOOL.exists(), reason="CleanCoin-wallet is not installed")


def run(datadir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOL), f"-datadir={datadir}", "-regtest", *args],
                          capture_output=True, text=True, timeout=30)


def info_fields(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line
                and not line.startswith("  "))


def addresses(datadir: Path, name: str, n: int = 5) -> list[tuple[bool, int, str]]:
    with WalletStore.open(datadir / "regtest", name, "regtest") as store:
        return [(k.internal, k.index, k.address) for k in store.keys()
                if k.index < n]


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def created(datadir: Path) -> Path:
    r = run(datadir, "-wallet=alice", "create")
    assert r.returncode == 0, r.stderr
    return datadir


def test_create_then_info(datadir: Path) -> None:
    r = run(datadir, "-wallet=alice", "create")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Topping up keypool...")
    assert (datadir / "regtest" / "wallets" / "alice" / "wallet.sqlite").is_file()
    r = run(datadir, "-wallet=alice", "info")
    assert r.returncode == 0, r.stderr
    f = info_fields(r.stdout)
    assert f["Name"] == "alice"
    assert f["Format"] == "sqlite"
    assert f["Encrypted"] == "no"
    assert f["HD (hd seed available)"] == "yes"
    assert int(f["Keypool Size"]) > 0
    assert f["Transactions"] == "0"
    assert f["Address Book"] == "0"
    assert f["Check"] == "ok"
    # Creating it again is refused.
    r = run(datadir, "-wallet=alice", "create")
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "exists" in r.stderr


def test_dump_and_createfromdump_round_trip(created: Path) -> None:
    dump = created / "alice.dump"
    r = run(created, "-wallet=alice", f"-dumpfile={dump}", "dump")
    assert r.returncode == 0, r.stderr
    assert dump.is_file() and (dump.stat().st_mode & 0o777) == 0o600
    r = run(created, "-wallet=bob", f"-dumpfile={dump}", "createfromdump")
    assert r.returncode == 0, r.stderr
    a = info_fields(run(created, "-wallet=alice", "info").stdout)
    b = info_fields(run(created, "-wallet=bob", "info").stdout)
    assert a.pop("Name") == "alice" and b.pop("Name") == "bob"
    assert a == b
    assert addresses(created, "alice") == addresses(created, "bob")
    assert len(addresses(created, "bob")) == 10
    with (WalletStore.open(created / "regtest", "alice", "regtest") as sa,
          WalletStore.open(created / "regtest", "bob", "regtest") as sb):
        assert sa.keys() == sb.keys()
        assert bytes(sa.seed().get()) == bytes(sb.seed().get())


def test_dump_refuses_existing_file(created: Path) -> None:
    dump = created / "exists.dump"
    dump.write_text("keep me\n")
    r = run(created, "-wallet=alice", f"-dumpfile={dump}", "dump")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: ") and "already exists" in r.stderr
    assert dump.read_text() == "keep me\n"
    r = run(created, "-wallet=alice", "dump")
    assert r.returncode == 1 and "-dumpfile" in r.stderr


def test_createfromdump_refusals(created: Path) -> None:
    dump = created / "alice.dump"
    assert run(created, "-wallet=alice", f"-dumpfile={dump}", "dump").returncode == 0
    # An existing wallet name.
    r = run(created, "-wallet=alice", f"-dumpfile={dump}", "createfromdump")
    assert r.returncode == 1 and "already exists" in r.stderr
    # One edited line: the checksum no longer matches, and no wallet is left behind.
    lines = dump.read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("keys="))
    lines[i] = lines[i].replace('"used":0', '"used":1', 1)
    bad = created / "bad.dump"
    bad.write_text("".join(lines))
    r = run(created, "-wallet=carol", f"-dumpfile={bad}", "createfromdump")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: ") and "checksum" in r.stderr
    assert not (created / "regtest" / "wallets" / "carol" / "wallet.sqlite").exists()
    # A missing dump file.
    r = run(created, "-wallet=carol", f"-dumpfile={created / 'nope'}", "createfromdump")
    assert r.returncode == 1 and "does not exist" in r.stderr
    # A record nested deeper than the JSON parser recurses, with a checksum that matches (a
    # dump is a file from elsewhere): an error, not a traceback.
    lines[i] = "keys=" + "[" * 100_000 + "\n"
    body = "".join(lines[:-1])
    deep = created / "deep.dump"
    deep.write_text(body + f"checksum={hashlib.sha256(body.encode()).hexdigest()}\n")
    r = run(created, "-wallet=carol", f"-dumpfile={deep}", "createfromdump")
    assert r.returncode == 1 and r.stderr.startswith("Error: Malformed record"), r.stderr[-300:]
    assert "Traceback" not in r.stderr


def test_errors(datadir: Path) -> None:
    r = run(datadir, "create")
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "-wallet" in r.stderr
    r = run(datadir, "-wallet=x", "frobnicate")
    assert r.returncode == 1 and r.stderr.startswith("Error: Invalid command")
    r = run(datadir, "-wallet=x", "-bogus", "info")
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "-bogus" in r.stderr
    r = run(datadir, "-wallet=x")
    assert r.returncode == 1 and "No method" in r.stderr
    r = run(datadir, "-wallet=x", "info")
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_help_lists_commands(datadir: Path) -> None:
    r = run(datadir, "-help")
    assert r.returncode == 0
    for word in ("create", "info", "dump", "createfromdump", "-wallet", "-dumpfile",
                 "-datadir", "-regtest"):
        assert word in r.stdout


HOLDER = """
import sys, time
from cleancoin.components.wallet.store import WalletStore
store = WalletStore.open(sys.argv[1], sys.argv[2], "regtest")
print("open", flush=True)
sys.stdin.read()          # until the test closes our stdin
store.close()
"""


def test_refuses_a_wallet_another_process_has_open(created: Path) -> None:
    """The wallet's own lock (<wallet dir>/.lock) protects it, not the node's datadir lock:
    a wallet open in another process (a node or a wallet process) is refused, with bitcoind's
    kind of message; a node merely running on the datadir is no reason to refuse."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(created / "regtest"), "alice"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        for args in (("info",), (f"-dumpfile={created / 'x.dump'}", "dump")):
            r = run(created, "-wallet=alice", *args)
            assert r.returncode == 1
            assert "Wallet is already in use by another process" in r.stderr, r.stderr
        assert not (created / "x.dump").exists()
        # Another wallet of the same datadir is free meanwhile.
        assert run(created, "-wallet=bob", "create").returncode == 0
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert (created / "regtest" / "wallets" / "alice" / ".lock").is_file()
    # The holder is gone (its lock with it); the node's datadir lock no longer matters.
    lock = open(created / "regtest" / "chainstate.sqlite.lock", "a")  # noqa: SIM115
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run(created, "-wallet=alice", "info")
        assert r.returncode == 0, r.stderr
    finally:
        lock.close()
    os.unlink(created / "regtest" / "chainstate.sqlite.lock")


def test_dump_of_an_encrypted_wallet_needs_no_passphrase(created: Path) -> None:
    with WalletStore.open(created / "regtest", "alice", "regtest") as store:
        seed_hex = bytes(store.seed().get()).hex()
        store.encrypt_wallet("correct horse", scrypt_n=2 ** 10)
    dump = created / "enc.dump"
    r = run(created, "-wallet=alice", f"-dumpfile={dump}", "dump")
    assert r.returncode == 0, r.stderr
    assert seed_hex not in dump.read_text()
    r = run(created, "-wallet=bob", f"-dumpfile={dump}", "createfromdump")
    assert r.returncode == 0, r.stderr
    assert info_fields(r.stdout)["Encrypted"] == "yes"
    with WalletStore.open(created / "regtest", "bob", "regtest") as store:
        assert bytes(store.unlock("correct horse").get()).hex() == seed_hex


def test_a_dump_files_text_reaches_the_terminal_escaped(datadir: Path) -> None:
    """createfromdump names the network a dump is for when it is not this one. A dump is
    another party's file; before 12-06 an escape sequence in its network line reached the
    terminal raw (OSC 52 writes the clipboard, CSI 2J clears the screen; seen on the old
    code). Now every message of the tool shows it as \\uXXXX, as CleanCoin-sandbox shows
    others' text, and the tool's own output is unchanged."""
    payload = "\x1b]52;c;cGF5IHRvIGV2aWw=\x07\x1b[2J\u202e"
    dump = datadir / "network.dump"
    dump.write_text(f"CLEANCOIN_WALLET_DUMP=1\nnetwork=main{payload}\n")
    result = run(datadir, "-wallet=evil", f"-dumpfile={dump}", "createfromdump")
    assert result.returncode == 1 and "Dump file is for network" in result.stderr, result.stderr
    assert not [c for c in result.stderr if c in "\x1b\x07\u202e"], repr(result.stderr)
    assert "'main\\u001b]52;c;cGF5IHRvIGV2aWw=\\u0007\\u001b[2J\\u202e', not 'regtest'" in result.stderr, result.stderr
    honest = run(datadir, "-wallet=w", "create")
    assert honest.returncode == 0 and "Topping up keypool...\nWallet info\n===========\nName: w\n" in honest.stdout
