"""CleanCoin-cli as a user runs it: the installed executable against a real RPC server.

The server (a small test registry, not the node) runs in this process on a background thread;
the cli is a separate process that finds the cookie in <datadir>/regtest/.cookie.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cleancoin.components.rpc.registry import ANY, INT, NUM, STR, CallContext, Param, Registry, loaded_wallets_resolver
from cleancoin.components.rpc.errors import RpcError
from cleancoin.components.rpc.server import RpcAuth
from rpc_thread import ThreadedRpcServer
from ports import free_port

CLI = os.path.join(os.path.dirname(sys.executable), "CleanCoin-cli")
WALLETS = ["w1", "w2"]


def make_registry() -> Registry:
    reg = Registry(wallet_resolver=loaded_wallets_resolver(lambda: WALLETS))

    async def echo(ctx: CallContext, **args: Any) -> list[Any]:
        values = [args[f"arg{i}"] for i in range(10)]
        while values and values[-1] is None:
            values.pop()
        return values

    params = [Param(f"arg{i}", ANY, None) for i in range(10)]
    reg.add("echo", echo, params, category="test", help="Echo the arguments.")
    reg.add("echojson", echo, params, category="test", help="Echo the arguments, given as JSON.")

    async def add(ctx: CallContext, a: float, b: float) -> float:
        return a + b

    reg.add("add", add, [("a", NUM), ("b", NUM)], category="test", help="Add two numbers.")

    async def getblockhash(ctx: CallContext, height: int) -> str:
        return f"hash-at-{height}"

    reg.add("getblockhash", getblockhash, [Param("height", INT, help="The height index")], category="blockchain")

    async def generatetoaddress(ctx: CallContext, nblocks: int, address: str, maxtries: int) -> dict[str, Any]:
        return {"nblocks": nblocks, "address": address, "maxtries": maxtries}

    reg.add("generatetoaddress", generatetoaddress,
            [("nblocks", INT), ("address", STR), ("maxtries", INT, 1000000)], category="generating")

    async def fail(ctx: CallContext) -> None:
        raise RuntimeError("boom")

    reg.add("fail", fail, category="test")

    async def nothing(ctx: CallContext) -> None:
        return None

    reg.add("nothing", nothing, category="test")

    async def walletpassphrase(ctx: CallContext, passphrase: str, timeout: int) -> list[Any]:
        return [passphrase, timeout]       # what reached the server, to check

    reg.add("walletpassphrase", walletpassphrase, [("passphrase", STR), ("timeout", INT)], category="wallet")

    async def getwalletinfo(ctx: CallContext) -> dict[str, Any]:
        return {"walletname": ctx.wallet}

    reg.add("getwalletinfo", getwalletinfo, category="wallet", wallet=True)

    # What a compromised node could answer: escape sequences in a string and in an error.
    async def hostile(ctx: CallContext) -> str:
        return HOSTILE

    async def hostileerror(ctx: CallContext) -> None:
        raise RpcError(-5, HOSTILE)

    reg.add("hostile", hostile, category="test")
    reg.add("hostileerror", hostileerror, category="test")
    return reg


HOSTILE = "\x1b]0;pwn\x07\x1b[2J\rbcrt1qsafe\x9b31m\nline two\tend"


@pytest.fixture
def node(tmp_path):
    """A server with cookie and rpcuser auth; `node.datadir` holds regtest/.cookie."""
    (tmp_path / "regtest").mkdir()
    auth = RpcAuth(cookie_path=str(tmp_path / "regtest" / ".cookie"), user="alice", password="s3cret")
    with ThreadedRpcServer(make_registry(), auth) as srv:
        srv.datadir = str(tmp_path)
        yield srv


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=30,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def base(node: Any) -> list[str]:
    return [f"-datadir={node.datadir}", "-regtest", f"-rpcport={node.port}"]



def test_results_strings_raw_and_json_indented(node) -> None:
    out = cli(*base(node), "echo", "hello", "a b", "5")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == '[\n  "hello",\n  "a b",\n  "5"\n]\n'           # parameters default to strings
    out = cli(*base(node), "getblockhash", "7")                          # height is converted to a number
    assert (out.returncode, out.stdout) == (0, "hash-at-7\n")
    out = cli(*base(node), "echojson", '{"a": [1, 2.5]}', "true", "null", '"s"')
    assert out.stdout == '[\n  {\n    "a": [\n      1,\n      2.5\n    ]\n  },\n  true,\n  null,\n  "s"\n]\n'
    out = cli(*base(node), "nothing")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_rpc_errors_go_to_stderr_with_bitcoin_clis_format_and_exit_status(node) -> None:
    out = cli(*base(node), "add", "1", "2")                              # "add" is not in the table
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.startswith("error code: -3\nerror message:\nWrong type passed:\n{\n")
    assert '"Position 1 (a)": "JSON value of type string is not of expected type number"' in out.stderr
    out = cli(*base(node), "nosuchmethod")
    assert out.stderr == "error code: -32601\nerror message:\nMethod not found\n"
    assert out.returncode == 32601 % 256                                 # abs(code), as the OS keeps it
    out = cli(*base(node), "fail")
    assert out.stderr == "error code: -32603\nerror message:\nInternal error (the details are in the server's log)\n"
    assert out.returncode == 32603 % 256
    out = cli(*base(node), "getblockhash")
    assert out.returncode == 1 and out.stderr.startswith("error code: -1\nerror message:\ngetblockhash height\n")
    out = cli(*base(node), "getblockhash", "x")
    assert (out.returncode, out.stderr) == (1, "error: Error parsing JSON: x\n")
    # The server is still there.
    assert cli(*base(node), "getblockhash", "1").returncode == 0


def test_named_arguments(node) -> None:
    out = cli(*base(node), "-named", "generatetoaddress", "address=abc", "nblocks=3")
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{\n  "nblocks": 3,\n  "address": "abc",\n  "maxtries": 1000000\n}\n'
    out = cli(*base(node), "-named", "generatetoaddress", "2", "address=x=y", "maxtries=5")
    assert '"nblocks": 2' in out.stdout and '"address": "x=y"' in out.stdout and '"maxtries": 5' in out.stdout
    out = cli(*base(node), "-named", "generatetoaddress", "nblocks=1", "adress=x")
    assert out.returncode == 8
    assert out.stderr == "error code: -8\nerror message:\nUnknown named parameter adress\n"


def test_stdin_arguments_and_password(node) -> None:
    out = cli(*base(node), "-stdin", "echo", "first", stdin="second line\n\nthird\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == '[\n  "first",\n  "second line",\n  "",\n  "third"\n]\n'
    out = cli(*base(node), "-stdin", "-named", stdin="generatetoaddress\nnblocks=4\naddress=a b\n")
    assert '"nblocks": 4' in out.stdout and '"address": "a b"' in out.stdout
    out = cli(*base(node), "-rpcuser=alice", "-stdinrpcpass", "getblockhash", "2", stdin="s3cret\n")
    assert (out.returncode, out.stdout) == (0, "hash-at-2\n")
    out = cli(*base(node), "-rpcuser=alice", "-stdinrpcpass", "-stdin", "echo", stdin="s3cret\nsecret arg\n")
    assert out.stdout == '[\n  "secret arg"\n]\n'


def test_a_wallet_passphrase_from_standard_input_as_bitcoin_cli_reads_it(node) -> None:
    """-stdinwalletpassphrase: the passphrase is not an argument (shell history, and every
    local user's /proc/PID/cmdline while the call runs) but the next line of standard input,
    after -stdinrpcpass's and before -stdin's."""
    out = cli(*base(node), "-stdinwalletpassphrase", "walletpassphrase", "60", stdin="pass phrase\n")
    assert (out.returncode, out.stdout) == (0, '[\n  "pass phrase",\n  60\n]\n'), out.stderr
    out = cli(*base(node), "-rpcuser=alice", "-stdinrpcpass", "-stdinwalletpassphrase", "-stdin",
              "walletpassphrase", stdin="s3cret\npass phrase\n60\n")
    assert (out.returncode, out.stdout) == (0, '[\n  "pass phrase",\n  60\n]\n'), out.stderr
    out = cli(*base(node), "-stdinwalletpassphrase", "getblockhash", "1", stdin="x\n")
    assert out.returncode == 1
    assert out.stderr == "error: -stdinwalletpassphrase is only applicable for walletpassphrase(change)\n"
    out = cli(*base(node), "-stdinwalletpassphrase", "walletpassphrase", "60", stdin="")
    assert out.stderr == "error: -stdinwalletpassphrase specified but failed to read from standard input\n"


def test_a_passphrase_typed_at_a_terminal_is_not_echoed(node) -> None:
    """At a terminal, as bitcoin-cli: a prompt on stderr, echo off while the line is read (so
    the passphrase is not on the screen, nor in a recording of the session), echo back on."""
    import pty
    import select
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([CLI, *base(node), "-stdinwalletpassphrase", "walletpassphrase", "60"],
                            stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""

    def read_until(done: Callable[[], bool], seconds: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:        # EIO: the other side is closed
                    return
                if not chunk:
                    return
                seen += chunk

    try:
        read_until(lambda: b"Wallet passphrase> " in seen, 20)
        os.write(controller, b"typed secret\n")
        read_until(lambda: proc.poll() is not None, 20)
        read_until(lambda: False, 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "typed secret" in text.split("Wallet passphrase> ", 1)[1]   # the answer, echoed by the server
    assert text.count("typed secret") == 1, text                       # not also by the terminal


def test_rpcwallet_chooses_the_wallet_endpoint(node) -> None:
    out = cli(*base(node), "getwalletinfo")
    assert out.returncode == 19
    assert out.stderr.startswith("error code: -19\nerror message:\nMultiple wallets are loaded.")
    assert 'Or for the CLI, specify the "-rpcwallet=<walletname>" option before the command' in out.stderr
    out = cli(*base(node), "-rpcwallet=w2", "getwalletinfo")
    assert (out.returncode, out.stdout) == (0, '{\n  "walletname": "w2"\n}\n')
    out = cli(*base(node), "-rpcwallet=nope", "getwalletinfo")
    assert out.returncode == 18 and "Requested wallet does not exist or is not loaded" in out.stderr


def test_connection_and_authentication_failures(node, tmp_path) -> None:
    port = free_port()
    out = cli(*base(node)[:2], f"-rpcport={port}", "getblockhash", "1")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"error: Could not connect to the server 127.0.0.1:{port}")
    assert "Make sure the CleanCoind server is running and that you are connecting to the correct RPC port." in out.stderr
    out = cli(*base(node), "-rpcuser=alice", "-rpcpassword=wrong", "getblockhash", "1")
    assert (out.returncode, out.stderr) == (1, "error: Authorization failed: Incorrect rpcuser or rpcpassword\n")
    out = cli(*base(node), "-rpcuser=alice", "-rpcpassword=s3cret", "getblockhash", "1")
    assert (out.returncode, out.stdout) == (0, "hash-at-1\n")
    # -testnet looks for <datadir>/testnet/.cookie, which is not there.
    out = cli(f"-datadir={node.datadir}", "-testnet", f"-rpcport={node.port}", "getblockhash", "1")
    assert out.returncode == 1
    assert out.stderr.startswith("error: Could not locate RPC credentials. No authentication cookie could be found")


def test_conf_file_sections_and_network_only_options(node) -> None:
    conf = os.path.join(node.datadir, "CleanCoin.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("# a comment\nregtest=1\nrpcport=1\nrpcpassword=wrong\n"
                     f"[regtest]\nrpcport={node.port}\nrpcuser=alice\nrpcpassword=s3cret  # trailing\n"
                     "[main]\nrpcport=2\n")
    out = cli(f"-datadir={node.datadir}", "getblockhash", "5")
    assert out.stderr.startswith("Error reading configuration file:") and "using # in rpcpassword" in out.stderr
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("regtest=1\nrpcport=1\nrpcpassword=wrong\nsomethingunknown=1\n"
                     f"[regtest]\nrpcport={node.port}\nrpcuser=alice\nrpcpassword=s3cret\n[main]\nrpcport=2\n")
    # The chain comes from the file; the top-level rpcport applies to main only; the [regtest]
    # password wins over the top-level one; keys the cli does not know are the daemon's.
    out = cli(f"-datadir={node.datadir}", "getblockhash", "5")
    assert (out.returncode, out.stdout, out.stderr) == (0, "hash-at-5\n", "")
    # The command line wins over the file.
    out = cli(f"-datadir={node.datadir}", "-rpcpassword=nope", "getblockhash", "5")
    assert "Incorrect rpcuser or rpcpassword" in out.stderr
    out = cli(f"-datadir={node.datadir}", "-conf=other.conf", "getblockhash", "5")
    assert out.returncode == 1
    assert "specified config file" in out.stderr and "other.conf" in out.stderr


def test_option_errors_and_help(node, tmp_path) -> None:
    out = cli("-nosuchoption", "help")
    assert (out.returncode, out.stderr) == (1, "Error parsing command line arguments: Invalid parameter -nosuchoption\n")
    out = cli(f"-datadir={tmp_path / 'missing'}", "help")
    assert out.returncode == 1 and out.stderr == f'Error: Specified data directory "{tmp_path / "missing"}" does not exist.\n'
    out = cli("-regtest", "-testnet", f"-datadir={node.datadir}", "help")
    assert out.returncode == 1 and "Can use at most one" in out.stderr
    out = cli("-help")
    assert out.returncode == 0 and "Usage:  CleanCoin-cli [options] <command> [params]" in out.stdout
    assert "-rpcwallet=<walletname>" in out.stdout
    out = cli()
    assert out.returncode == 1 and "too few parameters" in out.stderr
    out = cli(*base(node), "help")
    assert out.returncode == 0
    assert out.stdout.startswith("== Blockchain ==\ngetblockhash height\n\n== Control ==\nhelp ( \"command\" )\n")
    out = cli(*base(node), "help", "getblockhash")
    assert out.stdout.startswith("getblockhash height\n\nArguments:\n1. height    (numeric, required) The height index")


def test_rpcwait_waits_out_the_warmup(node) -> None:
    node.server.registry.set_warmup("Loading block index…")
    timer = threading.Timer(0.5, node.server.registry.set_warmup, args=(None,))
    timer.start()
    started = time.monotonic()
    try:
        out = cli(*base(node), "-rpcwait", "-rpcwaittimeout=20", "getblockhash", "9")
    finally:
        timer.cancel()
    assert (out.returncode, out.stdout) == (0, "hash-at-9\n"), out.stderr
    assert time.monotonic() - started >= 0.5
    out = cli(*base(node)[:2], f"-rpcport={free_port()}", "-rpcwait", "-rpcwaittimeout=1", "getblockhash", "1")
    assert out.returncode == 1 and out.stderr.startswith("error: timeout on transient error: Could not connect")


def test_a_servers_escape_sequences_never_reach_the_terminal(node) -> None:
    """The node may be compromised: a string result or an error message holding escape
    sequences (retitle, clear the screen, a carriage return that rewrites the line, C1's CSI)
    is written with its control characters shown as \\xNN; newlines and tabs stay. Before
    12-06 they went out raw, as bitcoin-cli writes a string result."""
    out = cli(*base(node), "hostile")
    assert out.returncode == 0
    assert out.stdout == "\\x1b]0;pwn\\x07\\x1b[2J\\x0dbcrt1qsafe\\x9b31m\nline two\tend\n", repr(out.stdout)
    err = cli(*base(node), "hostileerror")
    assert err.returncode == 5
    assert "\x1b" not in err.stderr and "\x07" not in err.stderr and "\r" not in err.stderr, repr(err.stderr)
    assert "\\x1b]0;pwn\\x07" in err.stderr


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"result\": ",
    b"SSH-2.0-OpenSSH_9.2\r\n",
], ids=["cut-short", "not-http"])
def test_a_reply_that_is_cut_short_or_not_http_is_a_transport_error(reply: bytes) -> None:
    """A node killed while it writes a reply (the crash campaign's case), or a port where no
    HTTP server answers: before, http.client's IncompleteRead or BadStatusLine escaped the
    client as a traceback."""
    from cleancoin.components.rpc.client import RpcClient, RpcTransportError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.settimeout(10)
        conn.recv(65536)
        conn.sendall(reply)
        # End the reply there, then read what the client still sends until it closes: a close
        # with its request body unread would be a reset, another error than the one tested.
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
        conn.close()
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(RpcTransportError, match="No complete reply from the server 127.0.0.1"):
            RpcClient("127.0.0.1", server.getsockname()[1], user="u", password="p", timeout=10).call("getblockcount")
    finally:
        thread.join(5)
        server.close()
