"""CleanCoin-node's wallet process on first use (issue #16; docs/multiprocess.md, "The wallet
process on first use"): what a start with no wallet to load saves, and what the first wallet
call then pays, against the same build starting its wallet process with the node.

Both in the same run, interleaved: "on first use" is a fresh regtest datadir; "at start" is
one whose wallets/settings.json holds an empty start-up list, which makes the node start its
wallet process with itself as before (wallet_component.wallet_at_start) and loads nothing.
Per start: exec to the first RPC answer, the CPU of the whole tree by then, a first
`createwallet`'s latency and the tree's CPU after it. FIRST_USE_ROUNDS (default 6) rounds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import median, out
from proc_tree import tree_cpu_seconds, wait_for_first_answer

from cleancoin.components.rpc.client import RpcClient

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("FIRST_USE_ROUNDS", "6"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(at_start: bool, base: str) -> tuple[float, float, float, float]:
    """(ms to the first answer, tree CPU ms then, ms of a first createwallet, tree CPU ms after)."""
    datadir = tempfile.mkdtemp(dir=base)
    if at_start:
        walletdir = Path(datadir, "regtest", "wallets")
        walletdir.mkdir(parents=True, mode=0o700)
        (walletdir / "settings.json").write_text(json.dumps({"wallet": []}))
    rpc_port, p2p_port = _free_port(), _free_port()
    args = [str(BIN / "CleanCoin-node"), "-regtest", f"-datadir={datadir}", f"-port={p2p_port}",
            f"-rpcport={rpc_port}", "-bind=127.0.0.1", "-printtoconsole=0"]
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = RpcClient("127.0.0.1", rpc_port, timeout=60, cookie_path=os.path.join(datadir, "regtest", ".cookie"))
    try:
        wait_for_first_answer("CleanCoin-node", process, client)
        ready = (time.monotonic() - started) * 1000
        cpu_ready = tree_cpu_seconds(process.pid) * 1000
        before = time.monotonic()
        client.call("createwallet", "w")
        first = (time.monotonic() - before) * 1000
        cpu_after = tree_cpu_seconds(process.pid) * 1000
        client.call("stop")
        process.wait(30)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(10)
    return ready, cpu_ready, first, cpu_after


def test_wallet_process_on_first_use() -> None:
    runs: dict[str, list[tuple[float, float, float, float]]] = {"on first use": [], "at start": []}
    with tempfile.TemporaryDirectory() as base:
        _start(False, base)                 # warm-up
        _start(True, base)
        for i in range(ROUNDS):
            for label in (("on first use", "at start") if i % 2 == 0 else ("at start", "on first use")):
                runs[label].append(_start(label == "at start", base))
    load = open("/proc/loadavg").read().split()[:3]
    out("")
    out(f"WALLET PROCESS ON FIRST USE (CleanCoin-node, medians of {ROUNDS} interleaved rounds, load {' '.join(load)})")
    out(f"  {'':34}{'on first use':>14}{'at start':>14}")
    for index, name in enumerate(("first RPC answer, ms", "tree CPU then, ms", "first createwallet, ms",
                                  "tree CPU after it, ms")):
        out(f"  {name:34}" + "".join(f"{median([r[index] for r in runs[label]]):14.0f}" for label in runs))
