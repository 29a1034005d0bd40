"""Functional: what a node leaves in its datadir is private, and its logs hold no secret
(issue 11, item 8). The same for CleanCoind and CleanCoin-node (and its wallet process).

Nodes are started under umask 022, as a shell usually has it; every file and directory the
node creates must still be 0600/0700, unless -sysperms asks for the system's defaults (then
still not the secrets). Secrets planted in every way a user hands them over (RPC password,
-rpcauth password, cookies, -ipcauth password, wallet passphrases, the HD seed and the keys
derived from it) must appear in no log at any debug level.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cleancoin.components.rpc.client import RpcClient, RpcError
from framework import TEST_ADDRESS, TestNode, free_port, is_multiprocess, wait_until


def start_under_umask(n: TestNode, extra: list[str] = (), umask: int = 0o022, wait: bool = True) -> None:
    old = os.umask(umask)
    try:
        n.start(list(extra), wait=wait)
    finally:
        os.umask(old)


def created(n: TestNode) -> dict[str, int]:
    """Every path under the network datadir (the node made it all), with its permission bits."""
    found = {str(n.netdatadir): stat.S_IMODE(os.lstat(n.netdatadir).st_mode)}
    for root, dirs, files in os.walk(n.netdatadir):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[path] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def too_open(modes: dict[str, int]) -> dict[str, str]:
    return {p: oct(m) for p, m in modes.items() if m & 0o077}


def test_datadir_files_are_private_whatever_the_umask(node) -> None:
    """Under umask 022: the network datadir, debug.log, the chain database and its -wal/-shm,
    the pid file, the cookies, node.sock and the wallet files are 0700/0600, while the node
    runs and after it stopped."""
    extra = ["-ipcbind=unix", f"-ipcbind=tcp:127.0.0.1:{free_port()}"] if is_multiprocess() else []
    n = node(*extra)
    start_under_umask(n)
    n.rpc.createwallet("w")
    n.rpc.generatetoaddress(2, TEST_ADDRESS)
    running = created(n)
    names = {Path(p).name for p in running}
    assert {"debug.log", "chainstate.sqlite", ".cookie", "CleanCoind.pid", "wallets"} <= names, names
    if is_multiprocess():
        assert {"node.sock", ".ipccookie"} <= names
    assert too_open(running) == {}
    assert n.stop() == 0
    assert too_open(created(n)) == {}


def test_sysperms_keeps_the_umask_for_ordinary_files_but_not_for_secrets(node) -> None:
    """-sysperms (bitcoind's): files get the system's default permissions (umask 022: 0644),
    but the cookie and the wallets stay private."""
    n = node("-sysperms")
    start_under_umask(n)
    n.rpc.createwallet("w")
    modes = created(n)
    net = n.netdatadir
    assert modes[str(net / "debug.log")] == 0o644 and modes[str(net / "chainstate.sqlite")] == 0o644
    assert modes[str(net)] == 0o755
    assert modes[str(net / ".cookie")] == 0o600
    assert modes[str(net / "wallets")] == 0o700
    assert too_open({p: m for p, m in modes.items() if "/wallets/" in p and not p.endswith("debug.log")}) == {}


def _rpcauth_line(user: str, password: str) -> str:
    salt = "00112233445566778899aabbccddeeff"
    return f"{user}:{salt}${hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()}"


def _ipc_logins(port: int, good: str, bad: str, passphrase: str) -> None:
    """Log in over TCP IPC with the right and a wrong password, and unlock the wallet through
    makeNode (the passphrase travels over IPC to the wallet process)."""
    import capnp

    from cleancoin.components.interfaces.chain import RpcRequest
    from cleancoin.components.ipc.address import parse
    from cleancoin.components.ipc.auth import Credentials
    from cleancoin.components.ipc.errors import IpcError
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import connect

    async def go() -> None:
        address = parse(f"tcp:127.0.0.1:{port}", "")
        me = IpcPeer("secret-test", os.getpid())
        with pytest.raises(IpcError):
            await connect(address, me, True, Credentials("gui", bad))
        connection = await connect(address, me, True, Credentials("gui", good))
        try:
            front = await connection.init.make_node()
            answer = await front.execute_rpc(RpcRequest("walletpassphrase", f'["{passphrase}", 60]', "w"))
            assert answer.ok, answer
        finally:
            connection.close()

    asyncio.run(capnp.run(go()))


def test_no_secret_in_any_log_at_any_debug_level(node) -> None:
    """Plant every kind of secret, at -debug=1, -debug=all and -debug=rpc + -debug=ipc, then
    grep every log the node (and its wallet process) wrote. (Without -debug a process logs
    the same INFO lines and no DEBUG ones: a subset of these runs.)"""
    planted: list[str] = []

    def secret(label: str) -> str:
        value = f"Planted{label}{os.urandom(6).hex()}"
        planted.append(value)
        return value

    ipc_port = free_port()
    ipc = [f"-ipcbind=tcp:127.0.0.1:{ipc_port}"] if is_multiprocess() else []
    n = node()
    passphrase = secret("Passphrase")
    sessions = [["-debug=1"], ["-debug=all"], ["-debug=rpc", "-debug=ipc"]]
    for number, debug in enumerate(sessions):
        rpc_password, rpcauth_password, ipc_password = secret("RpcPw"), secret("RpcAuthPw"), secret("IpcPw")
        extra = [*debug, f"-rpcauth={_rpcauth_line('carol', rpcauth_password)}", *ipc,
                 *([f"-ipcauth=gui:{ipc_password}"] if ipc else [])]
        if number == 0:
            extra += ["-rpcuser=alice", f"-rpcpassword={rpc_password}"]
            start_under_umask(n, extra, wait=False)
            client = RpcClient("127.0.0.1", n.rpc_port, user="alice", password=rpc_password, timeout=60)
            wait_until(lambda: _answers(client), 20, what="RPC with -rpcpassword")
        else:
            start_under_umask(n, extra)
            client = n.client
            planted.append(n.cookie_path.read_text().strip().partition(":")[2])
        if ipc:
            planted.append((n.netdatadir / ".ipccookie").read_text().strip().partition(":")[2])
        carol = RpcClient("127.0.0.1", n.rpc_port, user="carol", password=rpcauth_password, timeout=60)
        assert carol.call("getblockcount") >= 0
        with pytest.raises(Exception):
            RpcClient("127.0.0.1", n.rpc_port, user="carol", password=secret("WrongRpcPw")).call("getblockcount")
        if number == 0:
            client.call("createwallet", "w")
            client.call("createwallet", "plain")
            client.call("encryptwallet", passphrase, wallet="w")
            client.call("generatetoaddress", 101, client.call("getnewaddress", wallet="plain"))
        else:
            client.call("loadwallet", "w")
            client.call("loadwallet", "plain")
        client.call("walletpassphrase", passphrase, 60, wallet="w")
        with pytest.raises(RpcError):
            client.call("walletpassphrase", secret("WrongPassphrase"), 60, wallet="w")
        new_passphrase = secret("Passphrase")
        client.call("walletpassphrasechange", passphrase, new_passphrase, wallet="w")
        passphrase = new_passphrase
        # Parameters and results of ordinary calls are not secrets, but bitcoind logs none of
        # them (only the method and the user): neither may we.
        address = client.call("getnewaddress", wallet="plain")
        message = secret("Message")
        signature = client.call("signmessage", address, message, wallet="plain")
        payee = client.call("getnewaddress", wallet="w")
        client.call("sendtoaddress", payee, 1, wallet="plain")
        planted += [address[-16:], signature[-16:], payee[-16:]]
        if ipc:
            _ipc_logins(ipc_port, ipc_password, secret("WrongIpcPw"), passphrase)
        client.call("stop")
        assert n.process.wait(20) == 0
        n.process = None
    planted += _wallet_secrets(n.netdatadir / "wallets" / "plain" / "wallet.sqlite")
    logs = {p: p.read_text(errors="replace") for p in (n.netdatadir / "debug.log",
                                                        n.netdatadir / "wallets" / "debug.log",
                                                        n.datadir / "stderr.txt") if p.exists()}
    assert "DEBUG" in logs[n.netdatadir / "debug.log"]          # the debug levels did log
    # Not even a part: any 8 characters of a secret's random part (a log line cut short
    # must not show the start of a passphrase either).
    leaks = {(path.name, s, line.strip()[:200]) for path, text in logs.items() for line in text.splitlines()
             for s in planted if _shares_a_piece(s, line)}
    assert leaks == set(), "\n".join(map(str, sorted(leaks)))


def _shares_a_piece(secret: str, text: str, piece: int = 8) -> bool:
    core = secret[-12:] if secret.startswith("Planted") else secret
    return any(core[i:i + piece] in text for i in range(len(core) - piece + 1))


def _answers(client: RpcClient) -> bool:
    try:
        client.call("getblockcount")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _wallet_secrets(path: Path) -> list[str]:
    """The unencrypted wallet's seed and the first keys derived from it, as hex (and the
    master key as xprv): what a log must never show."""
    from cleancoin.components.wallet import hd

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (seed,) = db.execute("SELECT plaintext FROM secrets WHERE name = 'seed'").fetchone()
    master = hd.master_key(bytes(seed))
    keys = [hd.wallet_key(master, i, internal).secret.hex() for i in range(3) for internal in (False, True)]
    return [bytes(seed).hex(), master.serialize(), *keys]


@pytest.mark.parametrize("sysperms", [False, True])
def test_a_wallet_process_started_on_its_own_keeps_its_files_private(tmp_path: Path, sysperms: bool) -> None:
    """CleanCoin-wallet -ipcconnect under umask 022 with no node to join: it stops with an
    error, but the log it created is 0600 (0644 with -sysperms), its directories 0700."""
    import subprocess
    import sys

    wallet = Path(sys.executable).parent / "CleanCoin-wallet"
    args = [str(wallet), "-regtest", f"-datadir={tmp_path}", "-ipcconnect=unix", *(["-sysperms"] if sysperms else [])]
    old = os.umask(0o022)
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    finally:
        os.umask(old)
    assert done.returncode == 1 and "cannot connect to the node" in done.stderr
    log = tmp_path / "regtest" / "wallets" / "debug.log"
    assert stat.S_IMODE(log.stat().st_mode) == (0o644 if sysperms else 0o600)
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_a_debug_log_that_is_a_link_is_not_followed(node, tmp_path: Path) -> None:
    """A debug.log that is a link (planted by a confined node whose policy let it make one)
    would have the next start append its log to a file of the attacker's choice, as the
    node's user, before any sandbox is up. Both executables refuse to start; -debuglogfile
    with an absolute path is the way to log elsewhere."""
    n = node()
    n.netdatadir.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (n.netdatadir / "debug.log").symlink_to(victim)
    n.start(wait=False)
    assert n.process is not None and n.process.wait(30) == 1
    assert "debug.log is a symbolic link" in (n.datadir / "stderr.txt").read_text()
    assert victim.read_text() == "untouched\n"
    n.process = None
    elsewhere = tmp_path / "node.log"
    n.start(extra=[f"-debuglogfile={elsewhere}"])
    assert n.stop() == 0
    assert "starting" in elsewhere.read_text() and victim.read_text() == "untouched\n"


def test_a_datadir_reached_through_a_symlink_starts(tmp_path: Path) -> None:
    """An operator's link on the way to the datadir (~/.cleancoin -> /mnt/disk/cleancoin) is
    followed: the node starts, confined on CleanCoin-node, with its wallet, and logs in the
    real directory. Before, CleanCoin-node did not start there ("denial log ...: Too many
    levels of symbolic links": the log is opened with RESOLVE_NO_SYMLINKS), and once confined
    it would not have found its files by the linked path (its view holds real paths only).
    A link inside the datadir stays refused: test_a_debug_log_that_is_a_link_is_not_followed."""
    real = tmp_path / "disk"
    real.mkdir()
    link = tmp_path / "home-link"
    link.symlink_to(real)
    n = TestNode(0, link)
    n.start()
    try:
        n.rpc.createwallet("w")
        assert n.rpc.getblockcount() == 0
    finally:
        assert n.stop() == 0
    assert "Shutdown: done" in (real / "node0" / "regtest" / "debug.log").read_text()
