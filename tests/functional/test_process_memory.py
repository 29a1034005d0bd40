"""Functional: the unconfined executables that hold secrets keep their memory from the same
user's other processes and from core files, as the confined ones do by their policies.

The attacker is another process of the operator's own uid (a real second process through
setpriv, both as nobody): it opens /proc/PID/mem of the operator's CleanCoind (an encrypted
wallet just unlocked with walletpassphrase) and of a CleanCoin-cli waiting for its answer
(the RPC password, the -stdinwalletpassphrase line), and looks for the secrets. The same
reader on a dumpable process of that uid (a plain `sleep`) must work, so that a refusal is
the executable's doing. A crash could not write them to a core file either: the core size
is 0 and cannot be raised (/proc/PID/limits).

CleanCoin-node and its wallet process are confined and not dumpable by their policies
(policies/node.toml, wallet.toml; docs/multiprocess.md): the CleanCoind test skips there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.rpc.client import RpcClient
from framework import free_port, is_multiprocess, node_command, resolve_executable, wait_until

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run the operator and the attacker as one other uid")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

#: Run as nobody: whether /proc/PID/mem opens, and how often each needle is in the memory.
READER = r"""
import json, sys
pid, needles = int(sys.argv[1]), [n.encode() for n in sys.argv[2:]]
found = {n.decode(): 0 for n in needles}
try:
    mem = open(f"/proc/{pid}/mem", "rb")
except OSError as exc:
    print(json.dumps({"opened": False, "error": exc.strerror, "found": found}))
    sys.exit(0)
with open(f"/proc/{pid}/maps") as maps:
    ranges = [line.split()[:2] for line in maps]
for span, perms in ranges:
    if not perms.startswith("r"):
        continue
    start, end = (int(x, 16) for x in span.split("-"))
    try:
        mem.seek(start)
        data = mem.read(end - start)
    except (OSError, OverflowError, ValueError):
        continue
    for n in needles:
        found[n.decode()] += data.count(n)
print(json.dumps({"opened": True, "found": found}))
"""


def read_as_nobody(pid: int, *needles: str) -> dict:
    out = subprocess.run([*AS_NOBODY, sys.executable, "-I", "-c", READER, str(pid), *needles],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def core_limit(pid: int) -> list[str]:
    """Soft and hard "Max core file size" of `pid`."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A directory of nobody's own, 0700, outside /tmp."""
    path = Path(tempfile.mkdtemp(prefix="cleancoin-memory-", dir="/var/tmp"))
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_reader_reads_a_dumpable_process_of_the_same_user() -> None:
    """The control: the same reader, as the same uid, opens an ordinary process's memory."""
    sleeper = subprocess.Popen([*AS_NOBODY, "sleep", "30"])
    try:
        wait_until(lambda: Path(f"/proc/{sleeper.pid}/status").read_text().count(f"\t{NOBODY}\t") >= 1, 10,
                   what="sleep running as nobody")
        assert read_as_nobody(sleeper.pid, "nothing")["opened"] is True
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(is_multiprocess(), reason="CleanCoin-node's processes are not dumpable by their policies")
def test_an_unlocked_cleancoind_is_not_readable_by_the_same_user(nobodys_dir: Path) -> None:
    passphrase = f"PlantedMemoryPass{os.urandom(6).hex()}"
    rpcport = free_port()
    node = subprocess.Popen([*AS_NOBODY, *node_command("-regtest", f"-datadir={nobodys_dir}", f"-port={free_port()}",
                                                       f"-rpcport={rpcport}", "-bind=127.0.0.1", "-printtoconsole=0")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = RpcClient("127.0.0.1", rpcport, cookie_path=str(nobodys_dir / "regtest" / ".cookie"), timeout=60)
        wait_until(lambda: _answers(client, node), 30, what="CleanCoind as nobody")
        client.call("createwallet", "w")
        client.call("encryptwallet", passphrase, wallet="w")
        client.call("walletpassphrase", passphrase, 600, wallet="w")
        seen = read_as_nobody(node.pid, passphrase)
        assert seen["opened"] is False and seen["error"] == "Permission denied", seen
        assert core_limit(node.pid) == ["0", "0"]
        client.call("stop")
        assert node.wait(30) == 0, node.stderr.read() if node.stderr else ""
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_a_waiting_cli_is_not_readable_by_the_same_user(nobodys_dir: Path) -> None:
    """CleanCoin-cli with -rpcpassword from its conf and -stdinwalletpassphrase, waiting for a
    server that never answers (it holds both secrets then)."""
    passphrase, password = f"PlantedCliPass{os.urandom(6).hex()}", f"PlantedCliRpcPw{os.urandom(6).hex()}"
    conf = nobodys_dir / "CleanCoin.conf"
    conf.write_text(f"rpcpassword={password}\n")
    os.chown(conf, NOBODY, NOBODY)
    conf.chmod(0o600)
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        cli = subprocess.Popen([*AS_NOBODY, resolve_executable("CleanCoin-cli"), "-regtest", f"-datadir={nobodys_dir}",
                                f"-rpcport={silent.getsockname()[1]}", "-rpcclienttimeout=60",
                                "-stdinwalletpassphrase", "walletpassphrase", "60"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert cli.stdin is not None
            cli.stdin.write(f"{passphrase}\n".encode())
            cli.stdin.flush()
            silent.settimeout(30)
            connection, _ = silent.accept()        # it has read both secrets and sent its call
            with connection:
                time.sleep(0.2)
                seen = read_as_nobody(cli.pid, passphrase, password)
                assert seen["opened"] is False and seen["error"] == "Permission denied", seen
                assert core_limit(cli.pid) == ["0", "0"]
        finally:
            cli.kill()
            cli.wait()
    finally:
        silent.close()


def test_the_offline_wallet_tool_loading_a_dump_is_not_readable_by_the_same_user(nobodys_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """CleanCoin-wallet createfromdump of an unencrypted wallet's dump (its seed in plain),
    held at its next line of output (its stdout a full pipe) with the new wallet open."""
    tool = resolve_executable("CleanCoin-wallet")
    made = subprocess.run([tool, "-regtest", f"-datadir={tmp_path}", "-wallet=a", "create"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    dump = tmp_path / "a.dump"
    out = subprocess.run([tool, "-regtest", f"-datadir={tmp_path}", "-wallet=a", f"-dumpfile={dump}", "dump"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seed = next(json.loads(line.partition("=")[2])["plaintext"][2:] for line in dump.read_text().splitlines()
                if line.startswith("secrets=") and '"s:seed"' in line)
    theirs = nobodys_dir / "a.dump"
    shutil.copy(dump, theirs)
    os.chown(theirs, NOBODY, NOBODY)
    full, stuffed = os.pipe()
    os.set_blocking(stuffed, False)
    try:
        while True:
            os.write(stuffed, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(stuffed, True)
    loader = subprocess.Popen([*AS_NOBODY, tool, "-regtest", f"-datadir={nobodys_dir}", "-wallet=b",
                               f"-dumpfile={theirs}", "createfromdump"], stdout=stuffed, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(stuffed)
    try:
        wait_until(lambda: Path(f"/proc/{loader.pid}/wchan").read_text().endswith("pipe_write"), 30,
                   what="the tool waiting to print, its new wallet made")
        seen = read_as_nobody(loader.pid, seed)
        assert seen["opened"] is False and seen["error"] == "Permission denied", seen
        assert core_limit(loader.pid) == ["0", "0"]
    finally:
        loader.kill()
        loader.wait()
        os.close(full)


def _answers(client: RpcClient, node: subprocess.Popen[bytes]) -> bool:
    if node.poll() is not None:
        raise AssertionError(f"CleanCoind exited with {node.returncode}: {node.stderr.read() if node.stderr else ''}")
    try:
        client.call("getblockcount")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
