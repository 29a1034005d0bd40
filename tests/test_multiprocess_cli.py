"""The multiprocess executables without pycapnp: a clear message; CleanCoind unaffected."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cleancoin.components.rpc.client import RpcClient, RpcTransportError

# Run `main` with the capnp import made to fail, as on a system without the extra.
BLOCK_CAPNP = "import sys; sys.modules['capnp'] = None\n"


def run_main(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    code = BLOCK_CAPNP + f"from cleancoin.cli.{module} import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_multiprocess_executables_name_the_extra_without_pycapnp(tmp_path: Path) -> None:
    node = run_main("mp_node_main", "-regtest", f"-datadir={tmp_path}")
    assert node.returncode == 1
    assert "pip install 'cleancoin[multiprocess]'" in node.stderr and "CleanCoind works" in node.stderr
    assert not (tmp_path / "regtest").exists()        # stopped before touching anything
    wallet = run_main("wallet_main", "-ipcconnect=unix")
    assert wallet.returncode == 1 and "'multiprocess' extra" in wallet.stderr


def test_cleancoind_and_the_offline_wallet_tool_work_without_pycapnp(tmp_path: Path) -> None:
    tool = run_main("wallet_main", "-regtest", f"-datadir={tmp_path}", "-wallet=w", "create")
    assert tool.returncode == 0, tool.stderr
    from socket import socket
    with socket() as s:
        s.bind(("127.0.0.1", 0))
        rpc_port = s.getsockname()[1]
    code = (BLOCK_CAPNP + "from cleancoin.cli.node_main import main\n"
            f"sys.exit(main(['-regtest', '-datadir={tmp_path}', '-rpcport={rpc_port}', '-listen=0', "
            "'-printtoconsole=0', '-wallet=w']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    client = RpcClient("127.0.0.1", rpc_port, cookie_path=str(tmp_path / "regtest" / ".cookie"))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                assert client.call("listwallets") == ["w"]
                break
            except (RpcTransportError, OSError):
                assert time.monotonic() < deadline, "CleanCoind did not answer"
                time.sleep(0.05)
        client.call("stop")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
