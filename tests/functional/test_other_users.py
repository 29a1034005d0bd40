"""Functional: another local user against the operator's node and CleanCoin-cli (both node
executables). The attacker is a real second uid (setpriv to nobody); the operator runs the
real executables. A data directory that another user owns or may write is a directory whose
files (CleanCoin.conf, the cookie) that user chooses: it is refused before anything in it is
believed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.rpc.client import RpcClient
from cleancoin.components.rpc.errors import RpcError
from framework import TestNode, free_port, is_multiprocess, node_command, wait_until

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as a second user")
CLI = str(Path(sys.executable).parent / "CleanCoin-cli")


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A world-writable sticky directory outside /tmp (as /tmp and /var/tmp are)."""
    path = Path(tempfile.mkdtemp(prefix=f"cleancoin-shared-{uuid.uuid4().hex[:6]}-", dir="/var/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: A group the attacker is in and the operator's directory belongs to (no entry in /etc/group:
#: the kernel needs none, and CleanCoin must count such a group as not the operator's alone).
TEAM_GID = 54321


def as_team_member(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={TEAM_GID}", *command],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def team(shared: Path) -> Path:
    """The operator's directory, 0775, of a group the attacker is in (usergroups' umask 002 on
    a shared project group)."""
    path = shared / "team"
    path.mkdir()
    os.chown(path, 0, TEAM_GID)
    path.chmod(0o775)
    return path


def plant_network_datadir(datadir: Path) -> Path:
    """The attacker makes `<datadir>/regtest`, 0777, while they can write `datadir`."""
    netdir = datadir / "regtest"
    made = as_team_member(sys.executable, "-c", f"import os; os.mkdir({str(netdir)!r}); os.chmod({str(netdir)!r}, 0o777)")
    assert made.returncode == 0, made.stderr
    assert netdir.stat().st_uid == NOBODY
    return netdir


def start_or_report(datadir: Path, netdir: Path) -> subprocess.CompletedProcess[str]:
    """The node's start in `datadir`; a node that runs in the attacker's `netdir` is a failure,
    with what the attacker then did to its files."""
    started = subprocess.Popen([*node_command("-regtest", f"-datadir={datadir}", f"-rpcport={free_port()}",
                                              f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = started.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        # It runs, its files in a directory the attacker owns: they remove them.
        script = (f"import os; names = sorted(os.listdir({str(netdir)!r})); "
                  f"[os.rename(os.path.join({str(netdir)!r}, n), os.path.join({str(netdir)!r}, n + '.gone')) "
                  "for n in names]; print(names)")
        taken = as_team_member(sys.executable, "-c", script)
        started.kill()
        started.communicate()
        pytest.fail(f"the node runs in a network datadir owned by uid {NOBODY}; the attacker renamed its files: "
                    f"{taken.stdout.strip() or taken.stderr.strip()[-300:]}")
    return subprocess.CompletedProcess(started.args, started.returncode, out, err)


def test_a_datadir_a_group_with_another_member_may_write_is_refused(team: Path) -> None:
    """Attack: the data directory is group-writable (0775) for a group the attacker is in; the
    attacker makes its regtest/ directory before the operator's start. Before 12-06 the group
    was trusted and the network datadir was not checked: the node kept its chain, wallets and
    logs in the attacker's directory (the attacker renamed them all). Now a group-writable
    directory is refused unless its group is the operator's alone (Debian's OpenSSH
    StrictModes rule), naming the fix; CleanCoin-cli refuses it too."""
    netdir = plant_network_datadir(team)
    done = start_or_report(team, netdir)
    assert done.returncode == 1, done.stderr
    assert f"{team} is writable by group gid {TEAM_GID}" in done.stderr and f"chmod g-w {team}" in done.stderr, \
        done.stderr
    assert os.listdir(netdir) == []
    cli = subprocess.run([CLI, "-regtest", f"-datadir={team}", "getblockcount"], capture_output=True, text=True,
                         timeout=30)
    assert cli.returncode != 0 and f"chmod g-w {team}" in cli.stderr, cli.stderr


def test_a_network_datadir_another_user_planted_earlier_is_refused(team: Path) -> None:
    """Attack: the attacker made regtest/ while the group could write the data directory; the
    operator has since made it private (chmod g-w), which does not undo what is in it. Before
    12-06 only the data directory was checked, and the node ran in the attacker's regtest/.
    Now the directories CleanCoin makes in it (the network datadir, wallets/) are made and
    checked on descriptors, and an existing one of another user is refused."""
    netdir = plant_network_datadir(team)
    team.chmod(0o755)
    done = start_or_report(team, netdir)
    assert done.returncode == 1, done.stderr
    assert f"{netdir} is owned by uid {NOBODY}" in done.stderr, done.stderr
    assert os.listdir(netdir) == []


RACER = r'''
import os, sys, time
target, stop = sys.argv[1:3]
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not os.path.exists(stop):
    try:
        if os.stat(target).st_uid != os.getuid():      # the operator's first start made it
            os.rename(target, target + ".operator")
            os.mkdir(target, 0o777)
            os.chmod(target, 0o777)
            os.mkdir(os.path.join(target, "regtest"))
            os.chmod(os.path.join(target, "regtest"), 0o777)
            print("swapped", flush=True)
            break
    except OSError:
        pass
'''


def test_the_first_start_does_not_race_another_user_for_the_default_datadir(team: Path) -> None:
    """Attack: the operator's home (here `team`) is writable by a group the attacker is in,
    and the default data directory ~/.cleancoin does not exist yet. It was checked from its
    parent and then made by name: the attacker waits for it to appear and puts a directory of
    their own in its place. Before 12-06 the node went on in the attacker's directory (its
    network datadir and every file in it the attacker's to rename). Now the check and the
    creation are one walk on descriptors from a directory no other user can write, and this
    home is refused before anything is made in it."""
    stop = team.parent / "stop-racer"
    racer = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={TEAM_GID}",
                              sys.executable, "-c", RACER, str(team / ".cleancoin"), str(stop)],
                             stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)             # the racer's interpreter is up
        node = subprocess.Popen([*node_command("-regtest", f"-rpcport={free_port()}", f"-port={free_port()}",
                                               "-bind=127.0.0.1", "-printtoconsole=0")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "HOME": str(team)})
        try:
            _, err = node.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
            node.communicate()
            netdir = team / ".cleancoin" / "regtest"
            owner = netdir.stat().st_uid if netdir.exists() else None
            pytest.fail(f"the node started; its network datadir {netdir} is owned by uid {owner}, holding "
                        f"{sorted(os.listdir(netdir)) if netdir.exists() else []}")
        assert node.returncode == 1 and f"chmod g-w {team}" in err, err
        assert not (team / ".cleancoin").exists()
    finally:
        stop.touch()
        racer.wait(25)


def planted_datadir(shared: Path, conf: str) -> Path:
    """The attacker makes the directory the operator will name, 0777, with a conf of theirs."""
    datadir = shared / "cleancoin"
    script = (f"import os; os.mkdir({str(datadir)!r}, 0o777); os.chmod({str(datadir)!r}, 0o777); "
              f"open({str(datadir / 'CleanCoin.conf')!r}, 'w').write({conf!r})")
    made = as_nobody(sys.executable, "-c", script)
    assert made.returncode == 0, made.stderr
    assert datadir.stat().st_uid == NOBODY
    return datadir


def test_a_datadir_another_user_planted_is_refused_by_the_node(shared: Path) -> None:
    """Attack: the attacker creates the data directory before the operator's first start, with
    a CleanCoin.conf that sets the RPC credentials. Before 12-06 the node started and the
    attacker (uid nobody) called its RPC with them: 'stop' went through."""
    rpc_port = free_port()
    datadir = planted_datadir(shared, "rpcuser=attacker\nrpcpassword=attackerpw\n")
    started = subprocess.Popen([*node_command("-regtest", f"-datadir={datadir}", f"-rpcport={rpc_port}",
                                              f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = started.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        # It runs: the attacker's credentials are the node's.
        call = ("from cleancoin.components.rpc.client import RpcClient; "
                f"print(RpcClient('127.0.0.1', {rpc_port}, user='attacker', password='attackerpw').call('stop'))")
        stolen = as_nobody(sys.executable, "-c", call)
        started.kill()
        started.communicate()
        pytest.fail(f"the node started in a datadir owned by another user; the attacker's RPC call: "
                    f"{stolen.stdout.strip() or stolen.stderr.strip()[-300:]}")
    assert started.returncode == 1, err
    assert "owned by uid 65534" in err and str(datadir) in err, err
    assert not (datadir / "regtest").exists()        # nothing was written there


def test_a_datadir_another_user_planted_is_refused_by_the_cli(shared: Path, tmp_path: Path) -> None:
    """Attack: the conf the attacker planted sends the operator's CleanCoin-cli to the
    attacker's port and names the operator's real cookie file as its cookie. Before 12-06 the
    CLI read the cookie and sent it to the attacker's listener."""
    cookie = tmp_path / "real.cookie"
    cookie.write_text("__cookie__:" + "ab" * 32)
    cookie.chmod(0o600)
    ports: list[int] = []
    heard: list[bytes] = []
    listener, thread = _listen_once(ports, heard)
    port = ports[0]
    datadir = planted_datadir(shared, f"[regtest]\nrpcport={port}\nrpccookiefile={cookie}\n")
    result = subprocess.run([CLI, "-regtest", f"-datadir={datadir}", "-rpcclienttimeout=3", "getblockcount"],
                            capture_output=True, text=True, timeout=30)
    listener.close()
    thread.join(5)
    leaked = [h for h in heard if b"Authorization" in h]
    assert not leaked, f"the CLI sent its credentials to the attacker's port: {leaked[0][:300]!r}"
    assert result.returncode != 0 and "owned by uid 65534" in result.stderr, result.stderr


def test_a_conf_file_others_may_write_is_refused(shared: Path, tmp_path: Path) -> None:
    """A conf file that every user may write (or that lies in a directory they may write and
    that is not sticky) is the attacker's: refused by both, with the reason."""
    datadir = tmp_path / "data"
    datadir.mkdir()
    conf = tmp_path / "open.conf"
    conf.write_text("")
    conf.chmod(0o666)
    ports = (f"-rpcport={free_port()}", f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0")
    node = subprocess.run([*node_command("-regtest", f"-datadir={datadir}", f"-conf={conf}", *ports)],
                          capture_output=True, text=True, timeout=30)
    assert node.returncode == 1 and "writable by other users" in node.stderr, node.stderr
    cli = subprocess.run([CLI, "-regtest", f"-datadir={datadir}", f"-conf={conf}", "getblockcount"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode != 0 and "writable by other users" in cli.stderr, cli.stderr
    open_dir = shared / "notsticky"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "CleanCoin.conf").write_text("")
    node = subprocess.run([*node_command("-regtest", f"-datadir={datadir}", f"-conf={open_dir / 'CleanCoin.conf'}",
                                         *ports)], capture_output=True, text=True, timeout=30)
    assert node.returncode == 1 and "writable by other users" in node.stderr, node.stderr


def _cmdline_as_nobody(pid: int) -> str:
    read = as_nobody("cat", f"/proc/{pid}/cmdline")
    assert read.returncode == 0, read.stderr
    return read.stdout.replace("\0", " ")


def test_secrets_on_the_command_line_are_not_shown_to_other_users(tmp_path: Path) -> None:
    """Attack: another user reads the node's command line (ps, /proc/PID/cmdline; no hidepid
    here, as on most hosts). Before 12-06 it showed -rpcpassword's value for as long as the
    node ran, and with it the node's whole RPC (its wallets). Now the title shows ***, in the
    node and in CleanCoin-cli. (Between exec and the parse of the options, the value is there:
    docs/node.md says to keep it in the conf file.)"""
    datadir = tmp_path / "data"
    datadir.mkdir()
    os.chmod(tmp_path, 0o755)          # nobody may look up the node's files; not read them
    secret = "hunter2-" + uuid.uuid4().hex
    rpc_port = free_port()
    node = subprocess.Popen([*node_command("-regtest", f"-datadir={datadir}", f"-rpcport={rpc_port}",
                                           f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0",
                                           "-rpcuser=op", f"-rpcpassword={secret}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = RpcClient("127.0.0.1", rpc_port, user="op", password=secret, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.call("getblockcount")
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert node.poll() is None and time.monotonic() < deadline, node.stderr.read()[-2000:] if node.stderr else ""
                time.sleep(0.1)
        seen = _cmdline_as_nobody(node.pid)
        assert "-rpcpassword=***" in seen and secret not in seen, seen
        # CleanCoin-cli with the password on its command line, while it waits (-rpcwait) for
        # a server on a port where none listens.
        cli = subprocess.Popen([CLI, "-regtest", f"-datadir={datadir}", f"-rpcport={free_port()}", "-rpcuser=op",
                                f"-rpcpassword={secret}", "-rpcwait", "-rpcwaittimeout=10", "getblockcount"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert cli.poll() is None, cli.communicate()
        seen = _cmdline_as_nobody(cli.pid)
        cli.kill()
        cli.communicate()
        assert secret not in seen and "-rpcpassword=***" in seen, seen
    finally:
        node.terminate()
        node.wait(30)


#: Another user who watches one process's command line from its exec on (pid on stdin):
#: prints how many reads showed the secret (argv[1]) and the process's resident memory (KiB,
#: /proc/PID/status, which every user may read) at the last read that still showed it.
#: Memory, not time: it grows with what the process has imported, whatever the machine's load.
WATCHER = r'''
import sys, time
secret = sys.argv[1].encode()
print("ready", flush=True)
pid = int(sys.stdin.readline())
seen, rss, hidden = 0, 0, False
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        break
    if secret in command:
        seen += 1
        rss = int(status.split(b"VmRSS:")[1].split()[0]) if b"VmRSS:" in status else 0
    elif seen and command:
        hidden = True
        break
print(seen, rss, int(hidden))
'''


#: The watcher's interpreter: one every user may run (the tests' own may lie below /root).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"


def _watched(command: list[str], secret: str) -> tuple[int, int, bool]:
    """Start `command` under another user's watch (WATCHER, as nobody, started first): the
    reads that showed `secret`, the resident KiB at the last of them, and whether the command
    line then showed it no more."""
    watcher = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                SYSTEM_PYTHON, "-c", WATCHER, secret],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert watcher.stdin is not None and watcher.stdout is not None
    assert watcher.stdout.readline() == "ready\n"      # watching before the exec, as an attacker would
    target = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        watcher.stdin.write(f"{target.pid}\n")
        watcher.stdin.flush()
        out = watcher.communicate(timeout=60)[0]
    finally:
        target.kill()
        target.wait(30)
    seen, rss, hidden = out.split()
    return int(seen), int(rss), hidden == "1"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs a system python3 for the other user")
def test_the_secret_window_on_the_command_line_is_the_interpreters_start(tmp_path: Path) -> None:
    """Attack: another user reads the command line of a process started with a secret on it,
    in a loop from its exec on. Until 12-07 the executables hid -rpcpassword once their
    modules were imported: the node's value was still there with 13.5-14.2 MiB resident, 4.3
    to 5 MiB more than a bare interpreter that hides it at its first line (9.1-9.3 MiB; 42-63
    ms of CPU after exec against 20-26), CleanCoin-cli's with 23.3-23.9 MiB (73-110 ms), and a
    wallet passphrase given to CleanCoin-cli as a parameter (walletpassphrase PASS 60) was
    never hidden. Now each entry point hides them before its first import (cli/entry.py): at
    most 1.5 MiB more than the bare interpreter (the console script's own `import re`, the
    package lookup); the bound allows 2.5."""
    datadir = tmp_path / "data"
    datadir.mkdir()
    os.chmod(tmp_path, 0o755)
    secret = "hunter2-" + uuid.uuid4().hex
    bare = [sys.executable, "-c", "from cleancoin.components.common.command_line_secrets import hide_from_ps\n"
            "hide_from_ps()\nimport time\ntime.sleep(30)", f"-rpcpassword={secret}"]
    node = node_command("-regtest", f"-datadir={datadir}", f"-rpcport={free_port()}", f"-port={free_port()}",
                        "-bind=127.0.0.1", "-printtoconsole=0", "-rpcuser=op", f"-rpcpassword={secret}")
    cli = [CLI, "-regtest", f"-datadir={datadir}", f"-rpcport={free_port()}", "-rpcwait", "-rpcwaittimeout=20",
           "walletpassphrase", secret, "60"]
    seen, floor, hidden = _watched(bare, secret)
    assert seen and hidden, (seen, floor)
    for name, command in (("node", node), ("cli", cli)):
        seen, rss, hidden = _watched(command, secret)
        assert seen and hidden, (name, seen, rss)
        assert rss <= floor + 2560, (name, rss, floor)


#: Another user who watches one process's command line (pid on stdin) until it is reaped, or
#: for 20 s: prints how many reads showed it without the secret (argv[1]), and how many times the
#: secret appeared again after such a read.
REAPPEARANCES = r'''
import sys, time
secret = sys.argv[1].encode()
print("ready", flush=True)
pid = int(sys.stdin.readline())
hidden, again, shown = 0, 0, True
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        break               # reaped
    if not command:
        continue            # between an exec's old and new memory, or a zombie
    now = secret in command
    hidden += not now
    again += now and not shown and hidden > 0
    shown = now
print(hidden, again)
'''


def _reappearances(command: list[str], secret: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[str]]:
    """Start `command` under another user's watch (REAPPEARANCES, started first); returns the
    process and the watcher (read its answer with `_answer`)."""
    watcher = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                SYSTEM_PYTHON, "-c", REAPPEARANCES, secret],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert watcher.stdin is not None and watcher.stdout is not None
    assert watcher.stdout.readline() == "ready\n"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher.stdin.write(f"{process.pid}\n")
    watcher.stdin.flush()
    return process, watcher


def _answer(watcher: subprocess.Popen[str]) -> tuple[int, int]:
    hidden, again = watcher.communicate(timeout=30)[0].split()
    return int(hidden), int(again)


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs a system python3 for the other user")
def test_the_wrapper_shows_the_secret_no_second_time(tmp_path: Path) -> None:
    """Attack: another user reads the command line of `CleanCoin node -rpcpassword=...` (and
    `CleanCoin rpc -rpcpassword=...`) in a loop. The wrapper hides it at its first line, then
    execs the executable; until 12-07 it passed the option on in that exec's argv, so the
    secret appeared a second time, until the executable's entry point hid it again (seen on
    2 appearances in each of three runs). Now the wrapper hands the secret options over in a
    pipe (-optionsfd): the operator's own typing is the one appearance, and the executable
    still gets them (the node takes the password, CleanCoin-cli logs in with it). The same
    for a wallet passphrase given as a method's parameter (`CleanCoin rpc walletpassphrase
    PASS 60`): until 12-07 the wrapper passed the method and its parameters on in the exec's
    argv, and the passphrase appeared a second time; now they go through the pipe too, and
    the wallet unlocks with it."""
    datadir = tmp_path / "data"
    datadir.mkdir()
    os.chmod(tmp_path, 0o755)
    secret = "hunter2-" + uuid.uuid4().hex
    wrapper = str(Path(sys.executable).parent / "CleanCoin")
    rpc_port = free_port()
    node, watcher = _reappearances([wrapper, "node", "-regtest", f"-datadir={datadir}", f"-rpcport={rpc_port}",
                                          f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0", "-rpcuser=op",
                                          f"-rpcpassword={secret}"], secret)
    try:
        rpc = [wrapper, "rpc", "-regtest", f"-datadir={datadir}", f"-rpcport={rpc_port}", "-rpcuser=op",
               f"-rpcpassword={secret}", "-rpcwait", "-rpcwaittimeout=30", "getblockcount"]
        done = subprocess.run(rpc, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr[-2000:]
        # A wallet encrypted with the secret, unlocked through the wrapper under another
        # user's watch: the passphrase reaches the node (unlocked) and is shown once only.
        client = RpcClient("127.0.0.1", rpc_port, user="op", password=secret, timeout=60)
        client.call("createwallet", "w", False, False, secret)
        assert client.call("getwalletinfo", wallet="w")["unlocked_until"] == 0
        cli, cli_watcher = _reappearances([*rpc[:-1], "walletpassphrase", secret, "60"], secret)
        assert cli.wait(60) == 0
        cli_hidden, cli_again = _answer(cli_watcher)
        assert cli_hidden and cli_again == 0, \
            f"walletpassphrase: {cli_hidden} reads without the passphrase, then it appeared {cli_again} times again"
        assert client.call("getwalletinfo", wallet="w")["unlocked_until"] > 0
        node.terminate()
        node.wait(30)
        hidden, again = _answer(watcher)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(30)
        if watcher.poll() is None:
            watcher.kill()
    assert hidden and again == 0, f"node: {hidden} reads without the secret, then it appeared {again} times again"
    # CleanCoin-cli through the wrapper, waiting (-rpcwait) where no server listens.
    cli, watcher = _reappearances([wrapper, "rpc", "-regtest", f"-datadir={datadir}", f"-rpcport={free_port()}",
                                         "-rpcuser=op", f"-rpcpassword={secret}", "-rpcwait", "-rpcwaittimeout=3",
                                         "getblockcount"], secret)
    cli.wait(60)
    hidden, again = _answer(watcher)
    assert hidden and again == 0, f"cli: {hidden} reads without the secret, then it appeared {again} times again"


SQUATTER = r'''
import os, socket, sys
kind, where, out = sys.argv[1:4]
if kind == "unix":          # listen at the path `where`, for everyone
    server = socket.socket(socket.AF_UNIX)
    server.bind(where)
    os.chmod(where, 0o777)
elif kind == "tcpport":     # listen on the loopback port `where` (a node's, while it is down)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(where)))
else:                       # listen on a free loopback port, written to the file `where`
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    open(where + ".tmp", "w").write(str(server.getsockname()[1]))
    os.rename(where + ".tmp", where)
server.listen(4)
server.settimeout(15)
got = b""
try:
    conn, _ = server.accept()
    open(out + ".accepted", "w").close()
    conn.settimeout(3)
    try:
        while len(got) < 65536:
            data = conn.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
except OSError:
    pass
open(out, "wb").write(got)
'''


#: name_swapper.py: the attacker's watcher that renames a file of its own over each new name.
SWAPPER = str(Path(__file__).with_name("name_swapper.py"))
#: Backups taken while it watches: before 12-07, 23 to 37 of 100 reached the attacker's file
#: on a loaded 2-core machine (three runs); each costs a few ms.
BACKUP_ROUNDS = 50


def _readable_as_team_member(directory: Path, prefix: str) -> dict[str, list[Any]]:
    """What the attacker can read of each file named `prefix`* in `directory`: its size and,
    for a wallet database, the hex of the plaintext seed in its `secrets` table."""
    script = (f"import json, os, sqlite3; d = {str(directory)!r}; found = {{}}\n"
              f"for name in sorted(os.listdir(d)):\n"
              f"    if name.startswith({prefix!r}):\n"
              f"        try: data = open(os.path.join(d, name), 'rb').read()\n"
              f"        except OSError: continue\n"
              f"        seed = None\n"
              f"        if data.startswith(b'SQLite format 3'):\n"
              f"            db = sqlite3.connect(':memory:'); db.deserialize(data)\n"
              f"            seed = db.execute('SELECT hex(plaintext) FROM secrets').fetchone()[0]\n"
              f"        found[name] = [len(data), seed]\n"
              f"print(json.dumps(found))")
    done = as_team_member(sys.executable, "-I", "-c", script)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_backup_in_a_directory_another_user_writes_never_reaches_their_file(team: Path, node) -> None:
    """Attack: the operator backs up into a directory a group they share with the attacker may
    write; the attacker watches it (inotify) and renames a world-readable file of theirs over
    each new name. Before 12-07 backupwallet created the file (O_EXCL), closed it and let
    SQLite open the name again: 23 to 37 of 100 backups went into the attacker's file, which
    then held the whole wallet, its plaintext seed included (a link there instead: any file
    the node may write, overwritten). Now the copy is written through the descriptor that created the
    file, so the attacker reads nothing of it; a backup whose name was taken over says so
    (-4) rather than reporting success. CleanCoin-node's wallet process may not write there at
    all (multiprocess.md)."""
    n = node()
    n.start()
    n.rpc.createwallet("w")
    swapper = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={TEAM_GID}",
                                sys.executable, "-I", SWAPPER, str(team), "backup-"],
                               stdout=subprocess.PIPE, text=True)
    outcomes: dict[str, int] = {}
    strange: list[tuple[str, int, str, int]] = []
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        for i in range(BACKUP_ROUNDS):
            path = team / f"backup-{i}.sqlite"
            try:
                n.rpc.backupwallet(str(path))
                outcome = "written"
            except RpcError as exc:
                # CleanCoin-node's wallet process does not see the directory (FileNotFoundError)
                # or may not write it (Permission denied).
                outcome = ("replaced" if "replaced while it was written" in exc.message
                           else "refused" if "Permission denied" in exc.message or "FileNotFound" in exc.message
                           else f"{exc.code} {exc.message}")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "written":
                # Ours, unless the attacker's rename came after the call's last look: then
                # the name holds their empty file (they may remove names there at any time).
                info = path.lstat()
                if not ((info.st_uid, info.st_mode & 0o777) == (0, 0o600) and info.st_size > 0
                        or (info.st_uid, info.st_size) == (NOBODY, 0)):
                    strange.append((path.name, info.st_uid, oct(info.st_mode), info.st_size))
    finally:
        swapper.kill()
        swapper.wait()
    got = {name: read for name, read in _readable_as_team_member(team, "backup-").items() if read[0]}
    assert got == {}, f"the attacker read these backups (size, seed): {got} (outcomes {outcomes})"
    assert strange == [], strange
    if is_multiprocess():
        assert outcomes == {"refused": BACKUP_ROUNDS}, outcomes
        return
    assert set(outcomes) <= {"written", "replaced"}, outcomes
    # With no one renaming over it, the same backup is written, private, and opens as a wallet.
    path = team / "backup-last.sqlite"
    n.rpc.backupwallet(str(path))
    assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (0, 0o600)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as copy:
        assert copy.execute("SELECT COUNT(*) FROM secrets").fetchone() == (1,)


def test_a_backup_another_user_could_have_replaced_is_not_restored(team: Path, shared: Path, node) -> None:
    """Attack: the operator's backup lies in a directory a group they share with the attacker
    may write; the attacker renames a wallet of their own over it (no race: any time before
    the restore). Before 12-07 restorewallet loaded it: the operator's restored wallet held
    the attacker's seed (its addresses the attacker's, so every payment to it theirs). Now a
    backup file another user owns, or could have replaced (a directory on the way they may
    write, unless sticky and the file ours; a link of theirs), is refused (-4) naming why;
    the operator's own backup in a sticky /tmp-like directory is restored, and a FIFO there
    is refused at once, not read."""
    n = node()
    n.start()

    def backup_of(wallet: str, where: Path) -> Path:
        # Made in wallets/, where CleanCoin-node's wallet process may write, then moved.
        made = n.netdatadir / "wallets" / f"{wallet}.bak"
        n.client.call("backupwallet", str(made), wallet=wallet)
        return Path(shutil.move(made, where / f"{wallet}.sqlite"))

    n.rpc.createwallet("mallory")
    stolen = n.client.call("getnewaddress", wallet="mallory")
    theirs = backup_of("mallory", team)
    os.chown(theirs, NOBODY, NOBODY)          # the attacker's own wallet file
    n.rpc.unloadwallet("mallory")
    n.rpc.createwallet("w")
    backup = backup_of("w", team)
    swapped = as_team_member(sys.executable, "-c", f"import os; os.rename({str(theirs)!r}, {str(backup)!r})")
    assert swapped.returncode == 0, swapped.stderr
    try:
        n.rpc.restorewallet("restored", str(backup))
    except RpcError as exc:
        refusal = exc
    else:
        mine = n.client.call("getaddressinfo", stolen, wallet="restored")["ismine"]
        pytest.fail(f"restored the attacker's wallet (their address {stolen} is ours: {mine})")
    assert "restored" not in n.rpc.listwallets()
    if is_multiprocess():
        # The wallet process's view holds no directory of the attacker's at all.
        assert "Backup file does not exist" in refusal.message, refusal.message
        return
    assert refusal.code == -4 and f"{backup} is owned by uid {NOBODY}" in refusal.message, refusal.message
    own = backup_of("w", shared)
    os.mkfifo(shared / "fifo.sqlite")
    with pytest.raises(RpcError, match="Backup file does not exist"):
        n.rpc.restorewallet("fifo", str(shared / "fifo.sqlite"))
    assert n.rpc.restorewallet("restored", str(own))["name"] == "restored"


def _start_or_refusal(base: Path, extra: list[str], while_running: Callable[[], str]) -> tuple[int, str] | str:
    """A node started with `extra` under `base`: its exit status and stderr when it refused to
    start, or, when it ran, what `while_running` found (the node stopped again here)."""
    n = TestNode(0, base, extra)
    n.start(wait=False)
    try:
        assert n.process is not None
        wait_until(lambda: n.process.poll() is not None or n.cookie_path.exists(), timeout=15)
        if n.process.poll() is not None:
            return n.process.returncode, (n.datadir / "stderr.txt").read_text()
        n.wait_for_rpc()
        return while_running()
    finally:
        n.cleanup()


def _start_with_pid_file(base: Path, pid_file: Path) -> tuple[int, str] | str:
    """_start_or_refusal with `-pid=<pid_file>`: when it ran, what the file held and its mode."""
    return _start_or_refusal(base, [f"-pid={pid_file}"],
                             lambda: f"{pid_file.read_text().strip()} {oct(pid_file.stat().st_mode & 0o777)}")


def test_a_pid_file_another_user_planted_is_neither_followed_nor_taken(team: Path, shared: Path,
                                                                       tmp_path: Path) -> None:
    """Attack: the operator's -pid names a file in a directory the attacker may write. Before
    12-07 the node opened it with open(path, "w"): a link the attacker planted there (a
    group-writable directory: fs.protected_symlinks does not apply) was followed, and the
    file it led to, one only the operator may write, was truncated and given the node's pid;
    a file of the attacker's own there (a sticky /tmp) took the pid, which they could then
    change for an init script to signal as root; a FIFO there hung the start. Now each is
    refused, naming the file and why, and the file a link leads to is untouched; a pid file
    in the sticky directory with nothing planted is written, private, and removed at stop.
    CleanCoin-node writes its pid file confined, seeing only its datadir: a -pid outside it
    is "No such file or directory" there, before and after."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    plant = (f"import os, sys; kind, path = sys.argv[1:]\n"
             f"if kind == 'link': os.symlink({str(victim)!r}, path)\n"
             f"elif kind == 'fifo': os.mkfifo(path, 0o666)\n"
             f"else: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666)); os.chmod(path, 0o666)")
    cases = [("link", team / "cc.pid", "symbolic link"), ("file", shared / "theirs.pid", f"owned by uid {NOBODY}"),
             ("fifo", shared / "fifo.pid", "FIFO")]
    for kind, pid_file, why in cases:
        planted = as_team_member(sys.executable, "-c", plant, kind, str(pid_file))
        assert planted.returncode == 0, planted.stderr
        done = _start_with_pid_file(tmp_path / kind, pid_file)
        assert victim.read_text() == "precious\n", f"{kind}: the node wrote through the link: {victim.read_text()!r}"
        assert not isinstance(done, str), f"{kind}: the node started with -pid={pid_file}, a {kind} of uid {NOBODY}"
        status, stderr = done
        # CleanCoin-node writes it confined, where its view holds no such directory at all.
        why = "No such file or directory" if is_multiprocess() else why
        assert status == 1 and why in stderr and str(pid_file) in stderr, (kind, stderr[-800:])
    if is_multiprocess():
        return
    own = shared / "own.pid"
    held = _start_with_pid_file(tmp_path / "own", own)
    assert isinstance(held, str) and held.split()[0].isdigit() and held.endswith("0o600"), held
    assert not own.exists()


def test_a_log_file_another_user_made_is_not_written(shared: Path, tmp_path: Path) -> None:
    """Attack: -debuglogfile names a file in a sticky shared directory, and the attacker made
    it first (0666, theirs). Before 12-07 the node appended its log to it (open_log refused
    links and FIFOs, not another user's file): the attacker read the node's log as it was
    written. Now a log file another user owns, or one with a second name, is refused,
    naming why; the operator's own log there is written, 0600."""
    log = shared / "node.log"
    made = as_team_member(sys.executable, "-c", f"import os; os.close(os.open({str(log)!r}, os.O_CREAT | os.O_WRONLY, 0o666)); "
                                                f"os.chmod({str(log)!r}, 0o666)")
    assert made.returncode == 0, made.stderr
    done = _start_or_refusal(tmp_path / "theirs", [f"-debuglogfile={log}"], lambda: "ran")
    read = as_team_member(sys.executable, "-c", f"print(len(open({str(log)!r}).read()))")
    assert read.stdout.strip() == "0", f"the attacker read {read.stdout.strip()} bytes of the node's log"
    assert not isinstance(done, str) and done[0] == 1, done
    assert f"{log}" in done[1] and f"owned by uid {NOBODY}" in done[1], done[1][-800:]
    own = shared / "own.log"
    held = _start_or_refusal(tmp_path / "own", [f"-debuglogfile={own}"],
                             lambda: f"{oct(own.stat().st_mode & 0o777)} {own.stat().st_size > 0}")
    assert held == "0o600 True", held


def test_a_dump_another_user_could_have_replaced_is_not_made_a_wallet(team: Path, tmp_path: Path) -> None:
    """Attack: the offline tool's dump of the operator's wallet lies in a directory a group
    they share with the attacker may write; the attacker renames a dump of their own wallet
    over it. Before 12-07 `CleanCoin-wallet createfromdump` made the wallet from it: it held
    the attacker's seed. Now a dump another user could have chosen is refused, naming why
    (the same rule as restorewallet's backup file); the operator's own dump is taken."""
    tool = str(Path(sys.executable).parent / "CleanCoin-wallet")

    def wallet_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "-regtest", f"-datadir={tmp_path}", f"-wallet={name}", *args],
                              capture_output=True, text=True, timeout=60)

    def seed(name: str) -> bytes:
        with contextlib.closing(sqlite3.connect(tmp_path / "regtest" / "wallets" / name / "wallet.sqlite")) as db:
            return db.execute("SELECT plaintext FROM secrets").fetchone()[0]

    for name in ("mallory", "w"):
        assert wallet_tool(name, "create").returncode == 0
        assert wallet_tool(name, f"-dumpfile={team / name}.dump", "dump").returncode == 0
    os.chown(team / "mallory.dump", NOBODY, NOBODY)       # the attacker's own dump
    swapped = as_team_member(sys.executable, "-c", f"import os; os.rename({str(team / 'mallory.dump')!r}, "
                                                   f"{str(team / 'w.dump')!r})")
    assert swapped.returncode == 0, swapped.stderr
    made = wallet_tool("restored", f"-dumpfile={team / 'w.dump'}", "createfromdump")
    assert made.returncode != 0, f"made a wallet from the attacker's dump (their seed: {seed('restored') == seed('mallory')})"
    assert f"{team / 'w.dump'} is owned by uid {NOBODY}" in made.stderr, made.stderr
    assert not (tmp_path / "regtest" / "wallets" / "restored" / "wallet.sqlite").exists()
    own = tmp_path / "w.dump"
    assert wallet_tool("w", f"-dumpfile={own}", "dump").returncode == 0
    assert wallet_tool("restored", f"-dumpfile={own}", "createfromdump").returncode == 0
    assert seed("restored") == seed("w")


def test_a_unix_socket_another_user_listens_on_is_not_a_node(shared: Path, tmp_path: Path) -> None:
    """Attack: another user listens first on the -ipcconnect=unix:PATH the operator uses in a
    shared directory. Before 12-06 the operator's CleanCoin-wallet connected and spoke Cap'n
    Proto to it: an impersonated node feeds the wallet its chain and takes its registrations
    (a GUI would send it the passphrases typed into it). Now the client reads the listener's
    uid (SO_PEERCRED) and refuses one that is not its own, before sending a byte."""
    sock = shared / "node.sock"
    out = shared / "heard"
    squatter = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                 sys.executable, "-c", SQUATTER, "unix", str(sock), str(out)])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and squatter.poll() is None
            time.sleep(0.05)
        datadir = tmp_path / "wallet"
        datadir.mkdir()
        wallet = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest",
                                   f"-datadir={datadir}", f"-ipcconnect=unix:{sock}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = wallet.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            wallet.kill()
            _, err = wallet.communicate()
        squatter.wait(20)
        heard = len(out.read_bytes())
        assert heard == 0, f"the wallet spoke {heard} bytes to another user's listener"
        assert wallet.returncode == 1 and "uid 65534" in err, err[-2000:]
    finally:
        if squatter.poll() is None:
            squatter.kill()


GUIS = [str(Path(sys.executable).parent / name) for name in ("CleanCoin-gui", "CleanCoin-qt")]


def _gui_or_report(gui: str, datadir: Path, netdir: Path) -> subprocess.CompletedProcess[str]:
    """The GUI's start in `datadir`, on no display (none is needed to refuse a datadir): what it
    said, or a failure naming what it wrote into the attacker's `netdir`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # Not the operator's own settings; made first (private) since the shared directory around
    # it is world-writable, where the GUIs would refuse to make their settings directory.
    config_home = datadir.parent / "gui-settings"
    config_home.mkdir(mode=0o700, exist_ok=True)
    env["XDG_CONFIG_HOME"] = str(config_home)
    attach = ["-noipcconnect"] if gui.endswith("-gui") else []
    done = subprocess.run([gui, "-regtest", f"-datadir={datadir}", *attach, "-printtoconsole=0",
                           f"-rpcport={free_port()}", f"-port={free_port()}", "-bind=127.0.0.1"],
                          capture_output=True, text=True, timeout=60, env=env)
    written = sorted(os.listdir(netdir))
    assert not written, f"{Path(gui).name} wrote {written} into the network datadir uid {NOBODY} owns: {done.stderr[-1500:]}"
    return done


@pytest.mark.parametrize("gui", GUIS, ids=lambda g: Path(g).name)
def test_the_gui_refuses_a_datadir_another_user_may_write_or_planted(team: Path, gui: str) -> None:
    """Attack: as for the node above, the attacker (in the group that may write the data
    directory) makes its regtest/ before the operator's CleanCoin-gui or CleanCoin-qt starts.
    Before 12-06 (h28) the GUIs made the network datadir with os.makedirs and checked nothing:
    CleanCoin-qt wrote its log (debug.log) into the attacker's directory (CleanCoin-gui's node
    refused it, after the window had begun). Now both make and check it as CleanCoind does
    (conf.make_dirs): the group-writable datadir is refused, and so is the planted regtest/
    once the datadir is private again."""
    netdir = plant_network_datadir(team)
    done = _gui_or_report(gui, team, netdir)
    assert done.returncode == 1 and f"chmod g-w {team}" in done.stderr, done.stderr[-1500:]
    team.chmod(0o755)
    done = _gui_or_report(gui, team, netdir)
    assert done.returncode == 1 and f"{netdir} is owned by uid {NOBODY}" in done.stderr, done.stderr[-1500:]


def _listen_once(port_holder: list[int], heard: list[bytes]) -> tuple[socket.socket, threading.Thread]:
    """A listener (the attacker's, on the port the operator's conf names while its node is
    down) that keeps the first request it is sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port_holder.append(listener.getsockname()[1])

    def listen() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            heard.append(conn.recv(65536))
            conn.close()
        except OSError:
            pass
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    return listener, thread


def test_the_cli_refuses_a_network_datadir_another_user_planted(team: Path, tmp_path: Path) -> None:
    """Attack: while the group could write the operator's data directory, the attacker made its
    regtest/ a symbolic link to the network datadir of the operator's other node (here the
    mainnet one, with its cookie). The operator has since made the datadir private (chmod g-w),
    so the datadir check passes. The operator's CleanCoin-cli -regtest reads its cookie from
    <datadir>/regtest/.cookie and sends it to the regtest port, where no regtest node runs and
    the attacker listens. Before 12-06 (h28) the CLI checked the datadir only: it sent the other
    node's cookie (the whole RPC of that node, its wallets) to the attacker's port. Now the
    network datadir, and a link to it, is checked as the datadir is, and the cookie file in it."""
    other = tmp_path / "mainnet"
    other.mkdir(mode=0o700)
    secret = "__cookie__:" + uuid.uuid4().hex * 2
    (other / ".cookie").write_text(secret)
    (other / ".cookie").chmod(0o600)
    netdir = team / "regtest"
    made = as_team_member(sys.executable, "-c", f"import os; os.symlink({str(other)!r}, {str(netdir)!r})")
    assert made.returncode == 0, made.stderr
    team.chmod(0o755)
    ports: list[int] = []
    heard: list[bytes] = []
    listener, thread = _listen_once(ports, heard)
    result = subprocess.run([CLI, "-regtest", f"-datadir={team}", f"-rpcport={ports[0]}", "-rpcclienttimeout=3",
                             "getblockcount"], capture_output=True, text=True, timeout=30)
    listener.close()
    thread.join(5)
    import base64
    stolen = [h for h in heard if base64.b64encode(secret.encode()) in h]
    assert not stolen, f"the CLI sent another node's cookie to the attacker's port: {stolen[0][:300]!r}"
    # conf's walk meets the link first (a link another user owns, wherever it leads).
    assert result.returncode != 0 and f"{netdir} is a symbolic link owned by uid {NOBODY}" in result.stderr, \
        result.stderr
    # A real directory the attacker made (with a cookie of theirs in it): refused the same way.
    netdir.unlink()
    team.chmod(0o775)
    planted = plant_network_datadir(team)
    (planted / ".cookie").write_text("__cookie__:" + "ee" * 32)
    team.chmod(0o755)
    result = subprocess.run([CLI, "-regtest", f"-datadir={team}", f"-rpcport={free_port()}", "-rpcclienttimeout=3",
                             "getblockcount"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and f"{planted} is owned by uid {NOBODY}" in result.stderr, result.stderr


@pytest.mark.parametrize("gui", GUIS, ids=lambda g: Path(g).name)
def test_the_gui_refuses_a_settings_directory_another_user_planted(shared: Path, team: Path, gui: str) -> None:
    """Attack: the GUIs keep CleanCoin-Qt.ini in $XDG_CONFIG_HOME/CleanCoin, and the datadir it
    remembers (-choosedatadir) decides the conf file, and so whether the node is confined. The
    attacker, in the group that may write the operator's config home, makes CleanCoin/ there
    with a CleanCoin-Qt.ini naming a directory of the attacker's choosing (here one of the
    operator's own, as their other node's). The operator then makes the config home private.
    Before 12-06 the GUIs read the file and started there; now they refuse the settings
    directory, naming what another user owns in it (components/gui/settings.py)."""
    chosen = shared / "operators-other-node"
    chosen.mkdir(mode=0o755)
    planted = team / "CleanCoin"
    made = as_team_member(sys.executable, "-c",
                          f"import os; os.mkdir({str(planted)!r}, 0o755); "
                          f"open({str(planted / 'CleanCoin-Qt.ini')!r}, 'w').write('[General]\\ndatadir={chosen}\\n')")
    assert made.returncode == 0, made.stderr
    team.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(team)
    env["QT_QPA_PLATFORM"] = "offscreen"
    attach = ["-noipcconnect"] if gui.endswith("-gui") else []
    proc = subprocess.Popen([gui, "-regtest", *attach, "-printtoconsole=0", f"-rpcport={free_port()}",
                             f"-port={free_port()}", "-bind=127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    started_there = (chosen / "regtest").exists()
    assert not started_there, f"{Path(gui).name} started in the datadir another user's settings chose"
    assert proc.returncode == 1 and f"{planted} is owned by uid {NOBODY}" in err, err[-1500:]


@pytest.mark.parametrize("gui", GUIS, ids=lambda g: Path(g).name)
def test_a_planted_file_name_reaches_the_operators_terminal_escaped(team: Path, gui: str) -> None:
    """The GUIs refuse a settings directory holding another user's entry, naming it, on the
    operator's terminal. The name is the other user's choice: while the group could write the
    directory, they made a file called ESC ] 52 ; c ; ... BEL ESC [ 2 J U+202E. Before 12-06
    the refusal wrote it raw (OSC 52 sets the operator's clipboard to what the attacker chose,
    CSI 2J clears the screen); now the executables' stdout and stderr show others' text
    escaped (cli/terminal.py), and the refusal still names the file."""
    settings = team / "CleanCoin"
    settings.mkdir()
    os.chown(settings, 0, TEAM_GID)
    settings.chmod(0o775)
    name = "x\x1b]52;c;cGF5IHRvIGV2aWw=\x07\x1b[2J\u202e"
    made = as_team_member(sys.executable, "-c", f"open({str(settings / name)!r}, 'w').close()")
    assert made.returncode == 0, made.stderr
    settings.chmod(0o700)
    team.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(team)
    env["QT_QPA_PLATFORM"] = "offscreen"
    attach = ["-noipcconnect"] if gui.endswith("-gui") else []
    result = subprocess.run([gui, "-regtest", *attach, "-printtoconsole=0", f"-rpcport={free_port()}",
                             f"-port={free_port()}", "-bind=127.0.0.1"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == 1 and f"is owned by uid {NOBODY}" in result.stderr, result.stderr[-1500:]
    assert not [c for c in result.stderr + result.stdout if c in "\x1b\x07\u202e"], repr(result.stderr[-1500:])
    assert "x\\u001b]52;c;cGF5IHRvIGV2aWw=\\u0007\\u001b[2J\\u202e" in result.stderr, result.stderr[-1500:]


def _tcp_squatter(where: Path, as_other_user: bool) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A listener on a free loopback port that keeps what it is sent: the attacker's, as nobody,
    on the port of a node that is down; or (as_other_user=False) the operator's own."""
    portfile, out = where / "port", where / "heard"
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_other_user else []
    squatter = subprocess.Popen([*prefix, sys.executable, "-c", SQUATTER, "tcp", str(portfile), str(out)])
    deadline = time.monotonic() + 10
    while not portfile.exists():
        assert time.monotonic() < deadline and squatter.poll() is None
        time.sleep(0.05)
    return squatter, int(portfile.read_text()), out


@pytest.mark.parametrize("client", ["CleanCoin-cli", "CleanCoin-wallet", "CleanCoin-node"])
def test_a_tcp_port_another_user_listens_on_gets_no_credentials(shared: Path, tmp_path: Path, client: str) -> None:
    """Attack: while the node is down, another user listens on its RPC port (or its TCP IPC
    port) on 127.0.0.1. Before 12-06 the operator's CleanCoin-cli sent it the rpcpassword of
    its conf file (here on the command line) in the first request, and CleanCoin-wallet
    -ipcconnect=tcp:... its -ipcauth password in the login: good against the real node once
    it runs. Now a client reads who owns the socket that accepted it (the kernel's socket
    table) and sends nothing to a listener of another user; to one of its own it still sends.
    CleanCoin-node -ipcconnect=tcp (the same for a wallet process's port) is confined in a
    network namespace of its own: its connect broker connects and checks (since 12-07)."""
    if client == "CleanCoin-node" and not is_multiprocess():
        pytest.skip("-ipcconnect on CleanCoin-node: in that pass")
    secret = "pw" + uuid.uuid4().hex
    datadir = tmp_path / "data"
    datadir.mkdir(mode=0o700)
    for as_other_user in (True, False):
        where = shared / ("other" if as_other_user else "own")
        where.mkdir()
        where.chmod(0o777)
        squatter, port, out = _tcp_squatter(where, as_other_user)
        try:
            if client == "CleanCoin-cli":
                command = [CLI, "-regtest", f"-datadir={datadir}", f"-rpcport={port}", "-rpcuser=op",
                           f"-rpcpassword={secret}", "-rpcclienttimeout=3", "getblockcount"]
            elif client == "CleanCoin-node":
                command = [*node_command("-regtest", f"-datadir={datadir}", f"-port={free_port()}",
                                         f"-rpcport={free_port()}", "-printtoconsole=0",
                                         f"-ipcconnect=tcp:127.0.0.1:{port}", f"-ipcauth=op:{secret}")]
            else:
                command = [str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest", f"-datadir={datadir}",
                           f"-ipcconnect=tcp:127.0.0.1:{port}", f"-ipcauth=op:{secret}"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
            squatter.wait(20)
        finally:
            if squatter.poll() is None:
                squatter.kill()
        heard = out.read_bytes()
        if as_other_user:
            assert heard == b"", f"{client} sent {len(heard)} bytes to another user's listener: {heard[:200]!r}"
            assert result.returncode != 0 and f"belongs to uid {NOBODY}" in result.stderr, result.stderr[-2000:]
        else:       # the same client, the operator's own listener: the credentials go out
            import base64
            assert secret.encode() in heard or base64.b64encode(f"op:{secret}".encode()) in heard, heard[:300]


@pytest.mark.skipif(not is_multiprocess(), reason="attaches CleanCoin-gui to a CleanCoin-node: in that pass")
def test_an_attached_guis_connector_gives_another_users_listener_nothing(shared: Path) -> None:
    """Attack: CleanCoin-gui is attached to its node over TCP without -ipcauth (the login is
    the node's cookie, which the window's connector helper reads anew for each connection and
    sends with the socket). The node stops; another user listens on its port first. The
    connector checks who listens (common/local_listener.py), as CleanCoin-cli and the TCP IPC
    clients do: it hands the window no socket, so nothing (no cookie) reaches that listener,
    and the window logs in to the node once it is back on that port."""
    pytest.importorskip("PySide6")
    base = Path.home() / ".cache" / "cleancoin-gui-tests" / uuid.uuid4().hex[:12]     # outside /tmp
    datadir, config = base / "data", base / "config"
    datadir.mkdir(parents=True, mode=0o700)
    port = free_port()
    node_args = [*node_command("-regtest", f"-datadir={datadir}", f"-port={free_port()}", f"-rpcport={free_port()}",
                               f"-ipcbind=tcp:127.0.0.1:{port}", "-printtoconsole=0", "-disablewallet")]
    gui_log = config / "CleanCoin" / "CleanCoin-gui-regtest.log"

    def logged(text: str) -> bool:
        return gui_log.exists() and text in gui_log.read_text()

    def wait(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, f"timed out: {what}\n" + (gui_log.read_text()[-3000:] if gui_log.exists() else "")
            time.sleep(0.1)
    node = subprocess.Popen(node_args)
    gui = squatter = None
    try:
        wait(lambda: (datadir / "regtest" / ".ipccookie").exists(), "the node's cookie")
        gui = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}",
                                f"-ipcconnect=tcp:127.0.0.1:{port}"],
                               env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(config)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: logged("window ready") or gui.poll() is not None, "the window ready")
        assert gui.poll() is None
        node.terminate()
        assert node.wait(60) == 0
        out = shared / "heard"
        squatter = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                     sys.executable, "-c", SQUATTER, "tcpport", str(port), str(out)])
        # The squatter keeps what its first client sends within 3 s, then ends (15 s with none).
        squatter.wait(30)
        assert Path(f"{out}.accepted").exists(), "the GUI's connector never reached the squatter"
        heard = out.read_bytes()
        assert heard == b"", f"the GUI sent {len(heard)} bytes to another user's listener: {heard[:200]!r}"
        assert gui.poll() is None and not logged("reconnected to the node")
        node = subprocess.Popen(node_args)
        wait(lambda: logged("reconnected to the node"), "the GUI reconnected to its node")
    finally:
        for proc in (squatter, gui, node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(base, ignore_errors=True)


#: Another user who watches every process's command line (ps, /proc/*/cmdline) until a line
#: comes on stdin: prints, per pid whose command line showed the secret (argv[1]), how many
#: reads did and the first words of that command line (JSON).
SCANNER = r'''
import json, os, select, sys
secret = sys.argv[1].encode()
print("ready", flush=True)
found = {}
while not select.select([sys.stdin], [], [], 0)[0]:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if secret in command:
            count, _ = found.get(name, (0, ""))
            found[name] = (count + 1, command.replace(b"\0", b" ")[:160].decode(errors="replace"))
print(json.dumps(found), flush=True)
'''


@pytest.mark.skipif(not is_multiprocess(), reason="CleanCoin-gui starts CleanCoin-node: in that pass")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs a system python3 for the other user")
def test_the_node_the_gui_starts_shows_no_secret_on_its_command_line() -> None:
    """Attack: another user reads every process's command line while the operator's
    CleanCoin-gui, given -rpcpassword (and -ipcauth), starts its CleanCoin-node. Before 12-07
    the GUI passed them on in the node's argv: readable in /proc/PID/cmdline from the node's
    exec until its options were parsed (its imports: the attacker read it there in about 40
    scans of every process). The GUI's own command line is the operator's (hidden at its
    entry point's first line, the known window); the node's must never show them: now the GUI
    hands them over through an inherited pipe (-optionsfd, docs/node.md)."""
    pytest.importorskip("PySide6")
    base = Path.home() / ".cache" / "cleancoin-gui-tests" / uuid.uuid4().hex[:12]     # outside /tmp
    datadir, config = base / "data", base / "config"
    datadir.mkdir(parents=True, mode=0o700)
    secret = "hunter2-" + uuid.uuid4().hex
    scanner = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                SYSTEM_PYTHON, "-c", SCANNER, secret],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert scanner.stdin is not None and scanner.stdout is not None
    assert scanner.stdout.readline() == "ready\n"
    gui = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-gui"), "-regtest", f"-datadir={datadir}",
                            "-noipcconnect", f"-port={free_port()}", f"-rpcport={free_port()}", "-bind=127.0.0.1",
                            "-rpcuser=op", f"-rpcpassword={secret}", f"-ipcauth=ipcop:{secret}"],
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(config)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    debug_log = datadir / "regtest" / "debug.log"
    try:
        deadline = time.monotonic() + 90
        while not (debug_log.exists() and "Node started" in debug_log.read_text()):
            assert gui.poll() is None and time.monotonic() < deadline, gui.communicate()[1][-2000:]
            time.sleep(0.1)
        # The node took the secrets: the operator's RPC password logs in.
        port = next(a.split("=")[1] for a in gui.args if a.startswith("-rpcport="))   # type: ignore[union-attr]
        assert RpcClient("127.0.0.1", int(port), user="op", password=secret, timeout=10).call("getblockcount") == 0
        out = scanner.communicate("stop\n", timeout=30)[0]
        assert secret not in debug_log.read_text()
    finally:
        if scanner.poll() is None:
            scanner.kill()
        gui.terminate()
        try:
            gui.wait(60)
        except subprocess.TimeoutExpired:
            gui.kill()
        shutil.rmtree(base, ignore_errors=True)
    seen = json.loads(out.strip().splitlines()[-1])
    others = {pid: what for pid, what in seen.items() if int(pid) not in (gui.pid, scanner.pid)}
    assert not others, f"another user read the secret on these command lines: {others}"


#: The attacker's cookie: a well-formed one, so clients read it as the node's.
THEIR_COOKIE = "__cookie__:" + "ab" * 32


def test_a_cookie_another_user_could_replace_is_not_written(team: Path, shared: Path, tmp_path: Path) -> None:
    """Attack: -rpccookiefile names a file in a directory a group the attacker is in may write.
    Before 12-07 the node removed the attacker's file at `<cookie>.tmp`, wrote its cookie and
    renamed it into place, and the attacker then renamed a cookie of their own over it: the
    operator's clients read the attacker's cookie (and trust a listener of its owner), and at
    stop the node removed the attacker's file. Now the node refuses such a cookie path at start,
    naming it and why, and leaves the attacker's file alone; the operator's own cookie in a
    sticky shared directory is written, read by CleanCoin-cli, and removed at stop.
    (CleanCoin-node sees only its datadir: there a cookie outside it is refused, before too.)"""
    cookie = team / "cc.cookie"
    swap = (f"import os; path = {str(cookie)!r}; open(path + '.theirs', 'w').write({THEIR_COOKIE!r}); "
            "os.rename(path + '.theirs', path)")
    planted = as_team_member(sys.executable, "-c", f"open({str(cookie) + '.tmp'!r}, 'w').write('theirs')")
    assert planted.returncode == 0, planted.stderr
    n = TestNode(0, tmp_path, [f"-rpccookiefile={cookie}"])
    n.start(wait=False)
    assert n.process is not None
    try:
        wait_until(lambda: n.process.poll() is not None or cookie.exists(), timeout=30)
        ran = n.process.poll() is None
        if ran:
            swapped = as_team_member(sys.executable, "-c", swap)
            read = cookie.read_text() if swapped.returncode == 0 else swapped.stderr[-300:]
            n.process.terminate()
            n.process.wait(30)
    finally:
        if n.process.poll() is None:
            n.process.kill()
            n.process.wait(10)
    tmp_left = Path(str(cookie) + ".tmp").exists()
    assert not ran, (f"the node wrote its cookie where uid {NOBODY} may rename over it: their .tmp there "
                     f"{'survived' if tmp_left else 'was removed'}; after their rename the cookie read "
                     f"{read!r}; after the stop it {'still exists' if cookie.exists() else 'was removed'}")
    stderr = (n.datadir / "stderr.txt").read_text()
    assert n.process.returncode == 1 and str(cookie) in stderr, stderr[-800:]
    assert tmp_left and Path(str(cookie) + ".tmp").read_text() == "theirs"
    if is_multiprocess():
        return
    assert "in the way of the RPC cookie" in stderr and f"owner uid {NOBODY}" in stderr, stderr[-800:]
    # Without their file in the way, the directory itself is refused, and nothing is left there.
    removed = as_team_member(sys.executable, "-c", f"import os; os.unlink({str(cookie) + '.tmp'!r})")
    assert removed.returncode == 0, removed.stderr
    status, stderr = _start_or_refusal(tmp_path / "again", [f"-rpccookiefile={cookie}"], lambda: "ran")
    assert status == 1 and f"{team} is writable by group gid {TEAM_GID}" in stderr, stderr[-800:]
    assert list(team.iterdir()) == []
    own = shared / "own.cookie"
    n = TestNode(1, tmp_path, [f"-rpccookiefile={own}"])
    n.start(wait=False)
    try:
        wait_until(lambda: n.process.poll() is not None or own.exists(), timeout=30)
        assert n.process.poll() is None, (n.datadir / "stderr.txt").read_text()[-800:]
        count = subprocess.run([CLI, "-regtest", f"-datadir={n.datadir}", f"-rpcport={n.rpc_port}",
                                f"-rpccookiefile={own}", "-rpcwait", "getblockcount"],
                               capture_output=True, text=True, timeout=60)
        assert count.returncode == 0 and count.stdout.strip() == "0", count.stderr[-800:]
        assert own.stat().st_mode & 0o777 == 0o600
        n.process.terminate()
        n.process.wait(30)
    finally:
        n.cleanup()
    assert not own.exists()


def test_the_cli_refuses_a_cookie_another_user_could_have_chosen(team: Path, shared: Path, tmp_path: Path) -> None:
    """Attack: while the node is down, the attacker puts a cookie of their own where
    -rpccookiefile points (a directory their group may write) and listens on the RPC port.
    Before 12-07 CleanCoin-cli read that cookie, so trusted a listener of its owner, and sent
    them the request: `walletpassphrase` with the passphrase. Now a cookie that another user
    could have chosen is refused wherever it lies (conf.refuse_others), and nothing is sent."""
    cookie = team / "cc.cookie"
    made = as_team_member(sys.executable, "-c", f"open({str(cookie)!r}, 'w').write({THEIR_COOKIE!r})")
    assert made.returncode == 0, made.stderr
    datadir = tmp_path / "data"
    datadir.mkdir(mode=0o700)
    where = shared / "squat"
    where.mkdir()
    where.chmod(0o777)
    secret = "pass" + uuid.uuid4().hex
    squatter, port, out = _tcp_squatter(where, as_other_user=True)
    try:
        result = subprocess.run([CLI, "-regtest", f"-datadir={datadir}", f"-rpcport={port}", f"-rpccookiefile={cookie}",
                                 "-rpcclienttimeout=3", "walletpassphrase", secret, "60"],
                                capture_output=True, text=True, timeout=30)
        squatter.wait(20)
    finally:
        if squatter.poll() is None:
            squatter.kill()
    heard = out.read_bytes()
    assert secret.encode() not in heard, f"uid {NOBODY} heard the passphrase: {heard[:300]!r}"
    assert heard == b"", heard[:300]
    assert result.returncode != 0 and str(cookie) in result.stderr and f"owned by uid {NOBODY}" in result.stderr, \
        result.stderr[-800:]
