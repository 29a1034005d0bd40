"""Functional, CleanCoin-node only: the standalone CleanCoin-wallet's own RPC server (-server)
takes -rpcwhitelist and -rpcwhitelistdefault as CleanCoind does (components/rpc/whitelist.py).

Attack: the operator's conf gives a monitoring user its own rpcauth and whitelists it to one
read-only method. Before 12-06 (h28) CleanCoin-wallet ignored rpcwhitelist in its conf file
(a warning in its log, "Ignoring unknown configuration value") and refused it on the command
line: its -server port let the monitoring user call every wallet method (here getnewaddress;
sendtoaddress and walletpassphrase as well). Now the call is refused with HTTP 403 and
bitcoind's log line, and the whitelisted method still answers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cleancoin.components.rpc.client import RpcError
from framework import (
    WATCHER, WATCHER_PASSWORD as PASSWORD, WATCHER_RPCAUTH as RPCAUTH, TestNode, end_process, free_port, is_multiprocess,
    post_json_rpc, wait_until,
)

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")


def _post(port: int, method: str, user: str, password: str, wallet: str = "") -> tuple[int, bytes]:
    return post_json_rpc(port, {"jsonrpc": "1.0", "id": 1, "method": method, "params": []}, user, password, wallet)


def test_the_wallets_own_server_keeps_the_whitelist_of_its_conf(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n: TestNode = node("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1")
    n.start()
    conf = tmp_path / "wallet.conf"
    conf.write_text(f"[regtest]\nrpcauth={RPCAUTH}\nrpcwhitelist={WATCHER}:getwalletinfo\n")
    conf.chmod(0o600)
    port = free_port()
    stderr = open(tmp_path / "wallet-stderr.txt", "w+b")
    wallet = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest",
                               f"-datadir={n.datadir}", f"-conf={conf}", "-ipcconnect=unix", "-server",
                               f"-rpcport={port}", "-printtoconsole=1"], stderr=stderr)
    try:
        def registered() -> bool:
            try:
                n.rpc.listwallets()
                return True
            except RpcError:
                return False
        wait_until(registered, what="the wallet registered with the node")
        n.rpc.createwallet("w")
        wait_until(lambda: _post(port, "getwalletinfo", WATCHER, PASSWORD, "w")[0] != 0,
                   what="the wallet's own server answers")
        status, _ = _post(port, "getwalletinfo", WATCHER, PASSWORD, "w")
        assert status == 200, "the whitelisted method answers"
        status, body = _post(port, "getnewaddress", WATCHER, PASSWORD, "w")
        assert status == 403, f"the monitoring user got a new address of the wallet: {status} {body[:200]!r}"
        assert body == b""
        wallet.send_signal(signal.SIGTERM)
        assert wallet.wait(20) == 0
        stderr.seek(0)
        said = stderr.read().decode(errors="replace")
        assert f"RPC User {WATCHER} not allowed to call method getnewaddress" in said, said[-3000:]
        assert "Ignoring unknown configuration value rpcwhitelist" not in said
    finally:
        if wallet.poll() is None:
            wallet.kill()
            wallet.wait()
        stderr.close()


def test_rpcwhitelistdefault_locks_out_every_user_of_the_wallets_own_server(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """-rpcwhitelistdefault=1 and no list, on the command line: every user, the cookie's too,
    may call nothing (bitcoind's rule)."""
    n: TestNode = node("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1")
    n.start()
    port = free_port()
    wallet = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest",
                               f"-datadir={n.datadir}", "-ipcconnect=unix", "-server", f"-rpcport={port}",
                               "-rpcwhitelistdefault=1"], stderr=subprocess.PIPE)
    try:
        cookie = n.netdatadir / "wallets" / ".cookie"
        wait_until(lambda: cookie.exists() or wallet.poll() is not None, what="the wallet's own RPC cookie")
        assert wallet.poll() is None, wallet.communicate()[1].decode()[-2000:]
        user, _, password = cookie.read_text().strip().partition(":")
        assert _post(port, "listwallets", user, password)[0] == 403
    finally:
        end_process(wallet)
