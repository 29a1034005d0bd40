"""A real CleanCoin-node for the GUI tests and benchmarks: started with -ipcbind=unix so that
CleanCoin-gui can attach, reached over JSON-RPC with its cookie."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cleancoin.components.rpc.client import RpcClient, RpcTransportError
from cleancoin.components.rpc.errors import RpcError

BIN = Path(sys.executable).parent


@dataclass
class RunningNode:
    process: subprocess.Popen[bytes]
    rpc: RpcClient
    datadir: Path

    @property
    def socket(self) -> Path:
        return self.datadir / "regtest" / "node.sock"


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


@contextmanager
def cleancoin_node(datadir: Path, *extra: str) -> Iterator[RunningNode]:
    """CleanCoin-node -regtest -ipcbind=unix in `datadir`, until the block ends."""
    from .conftest import free_port
    datadir.mkdir(parents=True, exist_ok=True)
    rpcport = free_port()
    process = subprocess.Popen([str(BIN / "CleanCoin-node"), "-regtest", f"-datadir={datadir}",
                                f"-port={free_port()}", f"-rpcport={rpcport}", "-ipcbind=unix",
                                "-printtoconsole=0", *extra])
    rpc = RpcClient("127.0.0.1", rpcport, cookie_path=str(datadir / "regtest" / ".cookie"), timeout=60)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"CleanCoin-node exited with status {process.returncode}")
        try:
            rpc.call("getblockcount")
            return True
        except (RpcTransportError, RpcError, OSError):
            return False
    try:
        wait_until(answers, 60, "CleanCoin-node's RPC")
        node = RunningNode(process, rpc, datadir)
        wait_until(node.socket.exists, 30, "node.sock")
        yield node
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
