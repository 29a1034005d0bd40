"""A small functional-test framework: real CleanCoind processes on regtest.

    node = TestNode(0, tmp_path)            # its own datadir, free P2P and RPC ports
    node.start()                            # waits until RPC answers
    node.rpc.getblockcount()                # any RPC method, via the cookie
    node.stop()                             # `stop` RPC, then waits for exit status 0
    node.kill()                             # SIGKILL (crash tests)

Nodes are started as `python -m cleancoin.cli.node_main` with the running interpreter, so
the installed package under test is what runs, whatever PATH holds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cleancoin.components.node.chainparams import REGTEST
from cleancoin.components.node.keys import PrivateKey, sign_transaction
from cleancoin.components.node.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.rpc.client import RpcClient, RpcTransportError

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

#: A key the tests mine to, so they can spend what they mined.
TEST_KEY = PrivateKey(hashlib.sha256(b"functional test key").digest())
TEST_ADDRESS = TEST_KEY.public_key.address(REGTEST)
OTHER_KEY = PrivateKey(hashlib.sha256(b"functional test key 2").digest())
OTHER_ADDRESS = OTHER_KEY.public_key.address(REGTEST)


def free_port() -> int:
    """A TCP port free right now (the OS picks it; a race is possible but rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class _Rpc:
    """Attribute-style RPC: node.rpc.getblock(h, 2)."""

    def __init__(self, client: RpcClient) -> None:
        self._client = client

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **named: Any) -> Any:
            return self._client.call(method, *args, **named)
        return call


class TestNode:
    """One CleanCoind process with its own datadir under `base`."""

    __test__ = False       # not a pytest test class

    def __init__(self, index: int, base: Path, extra_args: Sequence[str] = ()) -> None:
        self.index = index
        self.datadir = base / f"node{index}"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.p2p_port = free_port()
        self.rpc_port = free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.client = RpcClient("127.0.0.1", self.rpc_port, cookie_path=str(self.cookie_path),
                                timeout=60)
        self.rpc = _Rpc(self.client)

    @property
    def netdatadir(self) -> Path:
        return self.datadir / "regtest"

    @property
    def cookie_path(self) -> Path:
        return self.netdatadir / ".cookie"

    @property
    def p2p_addr(self) -> str:
        return f"127.0.0.1:{self.p2p_port}"

    def args(self, extra: Sequence[str] = ()) -> list[str]:
        return [sys.executable, "-m", "cleancoin.cli.node_main", "-regtest",
                f"-datadir={self.datadir}", f"-port={self.p2p_port}", f"-rpcport={self.rpc_port}",
                "-bind=127.0.0.1", "-printtoconsole=0", *self.extra_args, *extra]

    def start(self, extra: Sequence[str] = (), wait: bool = True) -> None:
        assert self.process is None, "already running"
        log = open(self.datadir / "stderr.txt", "ab")
        self.process = subprocess.Popen(self.args(extra), stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        if wait:
            self.wait_for_rpc()

    def wait_for_rpc(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"node{self.index} exited with {self.process.returncode}: "
                                     f"{(self.datadir / 'stderr.txt').read_text()[-2000:]}")
            if self.cookie_path.exists():
                try:
                    self.client.call("getblockcount")
                    return
                except (RpcTransportError, OSError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node{self.index}: RPC not up after {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """`stop` RPC, then wait; returns the exit status."""
        assert self.process is not None
        try:
            self.rpc.stop()
        except (RpcTransportError, OSError):
            pass
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def cleanup(self) -> None:
        """Stop if still running (teardown); kill when it does not stop."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.stop(10)
                return
            except Exception:
                self.kill()
        self.process = None

    def debug_log(self) -> str:
        path = self.netdatadir / "debug.log"
        return path.read_text() if path.exists() else ""


def connect_nodes(a: TestNode, b: TestNode) -> None:
    """a dials b (addnode onetry) and both see the connection."""
    before_a, before_b = a.rpc.getconnectioncount(), b.rpc.getconnectioncount()
    a.rpc.addnode(b.p2p_addr, "onetry")
    wait_until(lambda: a.rpc.getconnectioncount() > before_a and b.rpc.getconnectioncount() > before_b,
               what="connection")


def sync_blocks(nodes: Sequence[TestNode], timeout: float = 30.0) -> str:
    """Wait until every node has the same tip; returns it."""
    def same() -> Any:
        tips = {n.rpc.getbestblockhash() for n in nodes}
        return tips.pop() if len(tips) == 1 else None
    return wait_until(same, timeout, what="block sync")


def spend_coinbase(node: TestNode, height: int, to_address_pkh: bytes, fee: int = 10_000,
                   key: PrivateKey = TEST_KEY) -> Transaction:
    """A signed transaction spending the coinbase of the block at `height` (which paid to
    `key`) to `to_address_pkh`, all but `fee`."""
    block = node.rpc.getblock(node.rpc.getblockhash(height), 2)
    cb = block["tx"][0]
    value = int(cb["vout"][0]["value"] * 100_000_000)
    prev = OutPoint(bytes.fromhex(cb["txid"])[::-1], 0)
    tx = Transaction(2, (TxIn(prev),), (TxOut(value - fee, to_address_pkh),), 0)
    return sign_transaction(tx, [key])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
