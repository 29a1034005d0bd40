"""Functional, both executables: what one JSON-RPC request can make the node spend before any
method sees it. The attacker holds credentials, but only for what -rpcwhitelist lets it call
(here getblockcount): a monitoring script's leaked password. Its request is well under the
32 MiB size limit; the cost is in parsing it, on the event loop the node's P2P and every other
RPC client share.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from framework import WATCHER, WATCHER_PASSWORD as PASSWORD, WATCHER_RPCAUTH as RPCAUTH, TestNode, post_json_rpc

MIB = 1 << 20


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key}")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0      # utime, stime (clock ticks)


def test_a_request_of_many_small_values_is_refused_before_it_is_parsed(node: Callable[..., TestNode]) -> None:
    """A restricted user sends one 30 MiB call of getblockcount whose params are 8 million
    numbers `1.5`. Measured on the code before: the node spent 6 s of CPU parsing it (every
    non-integer becomes an object that keeps its text), its peak RSS grew by 900 MiB, and
    another client's getblockcount waited as long. Now it is refused (HTTP 400, -32600) after a
    count of the body's separators, in milliseconds; the other client is answered at once,
    and a call of ordinary size from the same user still works."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount", "-rpcwhitelistdefault=0")
    n.start()
    assert n.process is not None
    pid = n.process.pid
    body = ('{"id":1,"method":"getblockcount","params":[' + ",".join(["1.5"] * 8_000_000) + "]}").encode()
    assert len(body) < 32 * MIB
    peak, cpu = _status(pid, "VmHWM"), _cpu_seconds(pid)
    latencies: list[float] = []
    done = threading.Event()

    def honest() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            assert n.rpc.getblockcount() == 0
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)

    watcher = threading.Thread(target=honest, daemon=True)
    watcher.start()
    try:
        status, reply = post_json_rpc(n.rpc_port, body, WATCHER, PASSWORD)
    finally:
        done.set()
        watcher.join(30)
    spent, grown = _cpu_seconds(pid) - cpu, _status(pid, "VmHWM") - peak
    print(f"status {status}; node CPU {spent:.2f} s; peak RSS +{grown / MIB:.0f} MiB; "
          f"honest max latency {max(latencies):.3f} s")
    assert status == 400 and json.loads(reply)["error"]["code"] == -32600, (status, reply[:200])
    assert "JSON values" in json.loads(reply)["error"]["message"]
    assert spent < 1.0, spent
    assert grown < 150 * MIB, grown
    assert max(latencies) < 1.0, latencies
    # An ordinary call of the same user, numbers included, is served.
    status, reply = post_json_rpc(n.rpc_port, {"id": 2, "method": "getblockcount", "params": []}, WATCHER, PASSWORD)
    assert (status, json.loads(reply)["result"]) == (200, 0)
    assert n.stop() == 0
