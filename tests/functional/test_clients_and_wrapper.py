"""Functional: the `CleanCoin` wrapper command and bitcoind's client libraries (issue 15,
items 12 and 13), against CleanCoind and CleanCoin-node (framework.NODE_EXECUTABLE).

- `CleanCoin node` starts the executable under test: `CleanCoin node` for CleanCoind;
  `CleanCoin -m node` and `CleanCoin node` with an IPC option in the conf file for
  CleanCoin-node. `CleanCoin rpc` is CleanCoin-cli -named.
- python-bitcoinrpc (calls, wallet URLs, errors; and its batch_, which fails against bitcoind
  >= 28 and fails here the same way, because the replies are bitcoind's), python-bitcoinlib
  (which finds the node through the conf file: -conf alone, datadir= and rpcport= in it) and
  the async `bitcoinrpc` client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from framework import NODE_EXECUTABLE, TestNode, free_port, is_multiprocess, resolve_executable, wait_until

WRAPPER = resolve_executable("CleanCoin")


def wrapper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WRAPPER, *args], capture_output=True, text=True, timeout=30)


def start_through_wrapper(node: TestNode, *wrapper_args: str, extra: tuple[str, ...] = ()) -> None:
    """Start `node` as `CleanCoin <wrapper_args> <node's usual arguments>`."""
    log = open(node.datadir / "stderr.txt", "ab")
    node.process = subprocess.Popen([WRAPPER, *wrapper_args, *node.args(extra)[1:]],
                                    stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    node.wait_for_rpc()


def executable_of(node: TestNode) -> str:
    """The node script the process runs (the wrapper replaced itself with it)."""
    assert node.process is not None
    argv = Path(f"/proc/{node.process.pid}/cmdline").read_bytes().split(b"\0")
    names = {os.path.basename(a.decode()) for a in argv}
    return "CleanCoin-node" if "CleanCoin-node" in names else "CleanCoind" if "CleanCoind" in names else "?"


# -- item 12 ---------------------------------------------------------------------------------

def test_wrapper_help_version_and_errors() -> None:
    helped = wrapper("-h")
    assert helped.returncode == 0 and "node [ARGS]" in helped.stdout and "-m, --multiprocess" in helped.stdout
    bare = wrapper()
    assert bare.returncode == 1 and "Usage: CleanCoin [OPTIONS] COMMAND..." in bare.stdout
    version = wrapper("-v")
    assert version.returncode == 0 and version.stdout.startswith("CleanCoin version v")
    assert wrapper("bogus").stderr.startswith("Error: Unrecognized command: 'bogus'\n")
    assert wrapper("-x", "node").stderr.startswith("Error: Unknown option: -x\n")
    for args, name in ((("gui",), "CleanCoin-qt"), (("-m", "gui"), "CleanCoin-gui")):
        gui = wrapper(*args, "-version")
        assert gui.returncode == 0 and gui.stdout.startswith(f"{name} version v"), gui.stdout + gui.stderr
    wallet_version = wrapper("wallet", "-version")
    assert wallet_version.returncode == 0 and "CleanCoin-wallet utility version v" in wallet_version.stdout


def test_wrapper_starts_the_node_and_rpc_is_cli_named(tmp_path: Path) -> None:
    node = TestNode(0, tmp_path)
    expected = "CleanCoin-node" if is_multiprocess() else "CleanCoind"
    try:
        if is_multiprocess():
            start_through_wrapper(node, "-m", "node")
        else:
            start_through_wrapper(node, "node")
        assert executable_of(node) == expected
        best = node.rpc.getbestblockhash()
        cli = wrapper("rpc", "-regtest", f"-datadir={node.datadir}", f"-rpcport={node.rpc_port}",
                      "getblockheader", f"blockhash={best}", "verbose=false")
        assert cli.returncode == 0 and cli.stdout.strip() == node.rpc.getblockheader(best, False)
        # A method with a passphrase goes to CleanCoin-cli through a pipe (-optionsfd, last),
        # with its parameters, named or not: they reach the node as given (since 12-07).
        node.rpc.createwallet("w", False, False, "pass phrase")
        for params in (("pass phrase", "60"), ("passphrase=pass phrase", "timeout=60")):
            if node.rpc.getwalletinfo()["unlocked_until"]:
                node.rpc.walletlock()
            cli = wrapper("rpc", "-regtest", f"-datadir={node.datadir}", f"-rpcport={node.rpc_port}",
                          "walletpassphrase", *params)
            assert cli.returncode == 0, cli.stderr
            assert node.rpc.getwalletinfo()["unlocked_until"] > 0
        wrong = wrapper("rpc", "-regtest", f"-datadir={node.datadir}", f"-rpcport={node.rpc_port}",
                        "walletpassphrase", "wrong", "60")
        assert wrong.returncode != 0 and "passphrase entered was incorrect" in wrong.stderr, wrong.stderr
        assert node.stop() == 0
        if is_multiprocess():
            # No -m: an IPC option, here in the conf file, selects the multiprocess node.
            (node.datadir / "CleanCoin.conf").write_text("[regtest]\nipcbind=unix\n")
            start_through_wrapper(node, "node")
            assert executable_of(node) == "CleanCoin-node"
            assert node.stop() == 0
        else:
            # -M keeps the monolithic node even with an IPC option, which CleanCoind refuses.
            refused = wrapper("-M", "node", *node.args(("-ipcbind=unix",))[1:])
            assert refused.returncode == 1 and "Invalid parameter -ipcbind" in refused.stderr
    finally:
        node.cleanup()


# -- item 13 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    n = TestNode(0, tmp_path_factory.mktemp("clients"))
    try:
        n.start()
        n.rpc.createwallet("w")
        n.rpc.generatetoaddress(101, n.client.call("getnewaddress", wallet="w"))
        n.rpc.syncwithvalidationinterfacequeue()
        yield n
    finally:
        n.cleanup()


def _cookie(node: TestNode) -> str:
    return node.cookie_path.read_text()


def test_python_bitcoinrpc(node: TestNode) -> None:
    from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

    url = f"http://{_cookie(node)}@127.0.0.1:{node.rpc_port}"
    proxy = AuthServiceProxy(url)
    assert proxy.getblockcount() == 101
    assert proxy.getblock(proxy.getbestblockhash())["height"] == 101
    balance = AuthServiceProxy(url + "/wallet/w").getbalance()
    assert isinstance(balance, Decimal) and balance == Decimal(50)
    with pytest.raises(JSONRPCException) as info:
        proxy.getblockhash(1000)
    assert info.value.error["code"] == -8
    # batch_ sends JSON-RPC 2.0 members and then reads reply["error"] of each: bitcoind >= 28
    # leaves "error" out of a 2.0 success (only one of result/error), and so does CleanCoin.
    with pytest.raises(KeyError, match="error"):
        AuthServiceProxy(url).batch_([["getblockcount"], ["getbestblockhash"]])


def test_batch_replies_are_bitcoind_28s(node: TestNode) -> None:
    """The evidence for the above: bitcoind's JSONRPCReplyObj per member version. 2.0 members
    get "jsonrpc" and only one of result/error; 1.0 members (no "jsonrpc") get both, so a
    1.0 batch is the one old clients can read."""
    def post(body: Any) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{node.rpc_port}/", data=json.dumps(body).encode(),
                                         headers={"Authorization": "Basic " + base64.b64encode(
                                             _cookie(node).encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    replies = post([{"jsonrpc": "2.0", "method": "getblockcount", "id": 1},
                    {"jsonrpc": "2.0", "method": "nope", "id": 2},
                    {"method": "getblockcount", "id": 3},
                    {"method": "nope", "id": 4}])
    assert replies == [
        {"jsonrpc": "2.0", "result": 101, "id": 1},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 2},
        {"result": 101, "error": None, "id": 3},
        {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 4},
    ]


def test_python_bitcoinlib_finds_the_node_through_its_conf_file(tmp_path: Path) -> None:
    """python-bitcoinlib reads the conf file for rpcport and datadir (cookie in
    <datadir>/regtest/.cookie). The node is started with -conf alone: datadir= in the file is
    the data directory, as bitcoind's."""
    import bitcoin
    import bitcoin.rpc

    datadir = tmp_path / "data"
    datadir.mkdir()
    conf = tmp_path / "CleanCoin.conf"
    rpcport, port = free_port(), free_port()
    conf.write_text(f"regtest=1\ndatadir={datadir}\nprinttoconsole=0\n"
                    f"[regtest]\nrpcport={rpcport}\nport={port}\nbind=127.0.0.1\n")
    process = subprocess.Popen([NODE_EXECUTABLE, f"-conf={conf}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (datadir / "regtest" / ".cookie").exists() or process.poll() is not None,
                   what="cookie")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        bitcoin.SelectParams("regtest")
        # A fresh Proxy per attempt: python-bitcoinlib keeps one HTTP connection, which stays
        # unusable after a request that failed while the node was still starting.
        wait_until(lambda: _answers(bitcoin.rpc.Proxy(btc_conf_file=str(conf))), what="RPC")
        proxy = bitcoin.rpc.Proxy(btc_conf_file=str(conf))
        assert proxy.getblockcount() == 0
        assert proxy.call("getblockchaininfo")["chain"] == "regtest"
        cli = subprocess.run([resolve_executable("CleanCoin-cli"), f"-conf={conf}", "getblockcount"],
                             capture_output=True, text=True, timeout=30)
        assert (cli.returncode, cli.stdout) == (0, "0\n")
        proxy.call("stop")
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        bitcoin.SelectParams("mainnet")


def _answers(proxy: Any) -> bool:
    try:
        proxy.getblockcount()
        return True
    except Exception:  # noqa: BLE001 - warming up
        return False


def test_async_bitcoinrpc_client(node: TestNode) -> None:
    # The async client and python-bitcoinrpc share the `bitcoinrpc` package directory; import
    # the module itself so that whichever __init__.py won does not matter.
    from bitcoinrpc._exceptions import RPCError
    from bitcoinrpc.bitcoin_rpc import BitcoinRPC

    user, password = _cookie(node).split(":", 1)

    async def main() -> None:
        async with BitcoinRPC.from_config(f"http://127.0.0.1:{node.rpc_port}", (user, password)) as rpc:
            assert await rpc.getblockcount() == 101
            assert (await rpc.getblockchaininfo())["chain"] == "regtest"
            with pytest.raises(RPCError) as info:
                await rpc.acall("getblockhash", [1000])
            assert info.value.error["code"] == -8
        async with BitcoinRPC.from_config(f"http://127.0.0.1:{node.rpc_port}/wallet/w", (user, password)) as rpc:
            assert await rpc.acall("getbalance", []) == 50

    asyncio.run(main())
