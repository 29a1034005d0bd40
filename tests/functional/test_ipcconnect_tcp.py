"""Functional, CleanCoin-node only: -ipcconnect=tcp:HOST:PORT under the sandbox.

A CleanCoin-node that uses a running `CleanCoin-wallet -ipcbind=tcp:...` (with -ipcauth)
reaches it through its connect broker (components/node/connect_broker.py), a process in the
host's network that connects to the one -ipcconnect address and checks who listens there
(common/local_listener.py) before the node sends its login. Until 12-07 the confined node
connected itself and could not read the host's socket table: it refused the wallet ("cannot
tell who listens there"), and for this case it kept the host's network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cleancoin.components.rpc.client import RpcError

from framework import TestNode, free_port, is_multiprocess, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

WALLET = str(Path(sys.executable).parent / "CleanCoin-wallet")


def _listwallets(n: TestNode) -> list[str] | None:
    try:
        return n.rpc.listwallets()
    except RpcError:
        return None


def test_a_confined_node_uses_a_wallet_process_on_tcp_and_reconnects(node, tmp_path: Path) -> None:
    """The node (sandboxed, a network namespace of its own) uses the wallet process on its TCP
    port, serves a wallet RPC through it, reconnects when that process restarts, and leaves it
    running when it stops."""
    n = node()
    port, secret = free_port(), "pw" + uuid.uuid4().hex
    wallet_dir = tmp_path / "wallet-data"
    wallet_dir.mkdir(mode=0o700)
    base = [WALLET, "-regtest", f"-datadir={wallet_dir}", f"-ipcbind=tcp:127.0.0.1:{port}", f"-ipcauth=node:{secret}"]
    log = open(tmp_path / "wallet-stderr.txt", "ab")
    wallet = subprocess.Popen(base, stderr=log)
    try:
        wait_until(lambda: _listening(port), what="the wallet's TCP port")
        n.start([f"-ipcconnect=tcp:127.0.0.1:{port}", f"-ipcauth=node:{secret}"])
        n.rpc.createwallet("w")
        assert _listwallets(n) == ["w"]
        info = n.rpc.getprocessinfo()["processes"]
        assert [p["pid"] for p in info if p["name"] == "CleanCoin-wallet"] == [wallet.pid]
        # The node keeps a network namespace of its own (node.toml), not the host's.
        assert os.readlink(f"/proc/{n.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        wallet.send_signal(signal.SIGTERM)
        assert wallet.wait(20) == 0
        wallet = subprocess.Popen(base, stderr=log)
        wait_until(lambda: _listwallets(n) == ["w"], timeout=30, what="the reconnect (wallets loaded again)")
        assert n.stop() == 0
        assert wallet.poll() is None                          # it waits for the next node
    finally:
        if wallet.poll() is None:
            wallet.send_signal(signal.SIGTERM)
            wallet.wait(20)
        log.close()


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_confined_node_uses_a_wallet_process_on_tls(node, tmp_path: Path) -> None:
    """With -ipccert the node does TLS (pinned to the wallet's certificate) on the socket its
    connect broker hands it: the broker only connects and checks who listens."""
    from tls_certs import make_self_signed
    n = node()
    port, secret = free_port(), "pw" + uuid.uuid4().hex
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    make_self_signed(cert, key)
    wallet_dir = tmp_path / "wallet-data"
    wallet_dir.mkdir(mode=0o700)
    log = open(tmp_path / "wallet-stderr.txt", "ab")
    wallet = subprocess.Popen([WALLET, "-regtest", f"-datadir={wallet_dir}", f"-ipcbind=tcp:127.0.0.1:{port}",
                               f"-ipcauth=node:{secret}", f"-ipccert={cert}", f"-ipckey={key}"], stderr=log)
    try:
        wait_until(lambda: _listening(port), what="the wallet's TCP port")
        n.start([f"-ipcconnect=tcp:127.0.0.1:{port}", f"-ipcauth=node:{secret}", f"-ipccert={cert}"])
        n.rpc.createwallet("w")
        assert _listwallets(n) == ["w"]
        assert n.stop() == 0
    finally:
        wallet.send_signal(signal.SIGTERM)
        wallet.wait(20)
        log.close()
