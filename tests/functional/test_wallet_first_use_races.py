"""Races at the wallet process's first use (CleanCoin-node, since 12-08: a node with no wallet
to load starts its wallet process at the first call that may want one, remote_wallet.py's
`ensure_started`, registry.on_demand).

Attacks by RPC clients (12-08's review, h105): many calls that may want a wallet at once (each
kind: a wallet method, an unknown name, `help`, `getprocessinfo`) must start one process, not
one each, and every call must get its own answer; `stop` while the first start is under way
must end the node with status 0 and leave no wallet process behind. On the code as merged both
held (first run: 12 calls at once, one process; stop during the start: status 0, no process).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cleancoin.components.rpc.client import RpcClient, RpcError
from framework import TestNode, is_multiprocess, pid_alive, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")


WALLET_TITLE = b"CleanCoin-wallet (sandboxed, policy wallet) -datadir="


def _tree(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *_tree(child)]
    return found


def _wallet_processes(pid: int) -> list[int]:
    out = []
    for p in _tree(pid):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(WALLET_TITLE):
                out.append(p)
        except OSError:
            pass
    return out


def _at_once(n: TestNode, calls: list[tuple[str, tuple]]) -> list[object]:
    """Each call on its own connection, all released together; what each got (a result or
    the RpcError)."""
    results: list[object] = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int, method: str, args: tuple) -> None:
        client = RpcClient("127.0.0.1", n.rpc_port, cookie_path=str(n.cookie_path), timeout=60)
        gate.wait()
        try:
            results[i] = client.call(method, *args)
        except Exception as exc:  # noqa: BLE001 - an error is an answer here (stop may close the server first)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, m, a)) for i, (m, a) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


def test_many_first_calls_at_once_start_one_wallet_process(node) -> None:  # noqa: ANN001
    n = node()
    n.start()
    assert n.rpc.getblockcount() == 0 and _wallet_processes(n.process.pid) == []
    calls = [("getbalance", ()), ("nosuchmethod", ()), ("help", ()), ("getprocessinfo", ())] * 3
    results = _at_once(n, calls)
    pids = set()
    for (method, _), result in zip(calls, results):
        if method == "getbalance":
            assert isinstance(result, RpcError) and result.code == -18, result      # the wallet's own answer
        elif method == "nosuchmethod":
            assert isinstance(result, RpcError) and result.code == -32601, result
        elif method == "help":
            assert isinstance(result, str) and "== Wallet ==" in result
        else:
            assert isinstance(result, dict), result
            pids |= {p["pid"] for p in result["processes"] if p["name"] == "CleanCoin-wallet"}
    assert len(_wallet_processes(n.process.pid)) == 1, _tree(n.process.pid)
    assert pids == set(_wallet_processes(n.process.pid)), pids
    assert n.debug_log().count("started at the first call that wanted it") == 1
    assert n.stop() == 0


def test_stop_during_the_first_start_leaves_no_wallet_process(node) -> None:  # noqa: ANN001
    n = node()
    n.start()
    assert n.rpc.getblockcount() == 0
    tree = _tree(n.process.pid)
    results = _at_once(n, [("help", ()), ("stop", ())])
    assert not isinstance(results[1], RpcError), results       # stop answered, or the server closed first
    code = n.process.wait(60)
    stderr = (n.datadir / "stderr.txt").read_text()
    n.process = None
    assert code == 0, stderr
    # The node's children end once it has (the zygote sees its parent gone): a moment later.
    def titles() -> dict[int, bytes]:
        left = {}
        for p in tree:
            try:
                left[p] = Path(f"/proc/{p}/cmdline").read_bytes()[:80]
            except OSError:
                pass
        return {p: t for p, t in left.items() if pid_alive(p)}
    try:
        wait_until(lambda: not titles(), timeout=15, what="the node's processes to end")
    except AssertionError:
        raise AssertionError((titles(), stderr)) from None
