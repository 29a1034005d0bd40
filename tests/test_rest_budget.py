"""The REST interface's replies under the RPC server's budget: a real RpcServer with a real
RestInterface on loopback (ThreadedRpcServer), clients on raw sockets. The registry's
`getblock` stands in for the chain (a reply of the size asked for, counting its calls), so
that the budget can be small and the test fast; tests/functional/test_rest_cost.py runs the
same attack against real nodes.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from cleancoin.components.node.rest import RestInterface
from cleancoin.components.rpc.registry import BOOL, INT, STR, CallContext, Param, Registry
from cleancoin.components.rpc.server import RpcAuth
from rpc_thread import ThreadedRpcServer

#: Bytes of each block's hex (what /rest/block/<hash>.hex answers): more than the kernel
#: takes into its socket buffers for a client that does not read (some 4 MB on loopback).
REPLY = 8_000_000
#: The budget of the server under test: two replies fit, not three.
BUDGET = 20_000_000
TIMEOUT = 2.0
HASH = "ab" * 32


class _Node:
    """What RestInterface needs of the node: its registry."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.built = 0

        def getblock(ctx: CallContext, blockhash: str, verbosity: int = 1) -> Any:
            self.built += 1
            if verbosity:                 # .json: a reply larger than the whole budget
                return {"tx": ["00" * (BUDGET // 2)]}
            return "00" * (REPLY // 2)

        self.registry.add("getblock", getblock, [Param("blockhash", STR), Param("verbosity", INT, 1)])
        #: Entries of the stand-in mempool, and how often its contents were built.
        self.pool_size = 0
        self.pool_built = 0

        def getmempoolinfo(ctx: CallContext) -> Any:
            return {"size": self.pool_size}

        def getrawmempool(ctx: CallContext, verbose: bool = False) -> Any:
            self.pool_built += 1
            # About the 488 bytes of JSON a real entry takes (a 64-digit wtxid, some twenty fields).
            return {f"{i:064x}": {"wtxid": f"{i:064x}", "fields": "x" * 340} for i in range(self.pool_size)}

        self.registry.add("getmempoolinfo", getmempoolinfo)
        self.registry.add("getrawmempool", getrawmempool, [Param("verbose", BOOL, False)])


def _stalled_get(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def _status(s: socket.socket, timeout: float = 10.0) -> int:
    line = b""
    deadline = time.monotonic() + timeout
    while not (len(line) >= 12 and line.endswith(b" ")):
        assert select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0], f"no status: {line!r}"
        chunk = s.recv(1)
        assert chunk, f"closed after {line!r}"
        line += chunk
    return int(line.split()[1])


def test_rest_replies_are_charged_refused_unbuilt_while_the_budget_is_full_and_freed_at_the_deadline() -> None:
    """Clients that ask for a block and do not read: the first two replies fit the budget and
    are kept (until the client reads or the deadline), the third is built, does not fit and
    is answered 503, and the next ones are refused before they are built while the budget
    is still full, a reading client's too (503 with Retry-After, the reason in the body).
    Before, REST replies were outside every budget: all were built and kept (256
    connections' worth the same). Once the unread replies are dropped at the deadline, a
    client that reads gets the block."""
    node = _Node()
    server = ThreadedRpcServer(node.registry, RpcAuth(user="u", password="p"), rest=RestInterface(node),
                               max_user_bytes=BUDGET, server_timeout=TIMEOUT)
    with server as running:
        path = f"/rest/block/{HASH}.hex"
        url = f"http://127.0.0.1:{running.port}{path}"
        stalled = []
        for _ in range(2):
            stalled.append(_stalled_get(running.port, path))
            assert _status(stalled[-1]) == 200
        stalled += [_stalled_get(running.port, path) for _ in range(4)]
        assert [_status(s) for s in stalled[2:]] == [503] * 4
        assert node.built == 3, node.built        # the one that did not fit; none after it
        try:
            urllib.request.urlopen(url, timeout=10)
            raise AssertionError("served while the budget is full")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and e.headers["Retry-After"] == "1"
            assert b"Reply too large" in e.read()
        assert node.built == 3
        time.sleep(TIMEOUT + 1.5)                 # the unread replies are dropped
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and len(r.read().strip()) == REPLY
        assert node.built == 4
        # A reply larger than the whole budget is refused, and holds nothing up after it.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{running.port}/rest/block/{HASH}.json", timeout=10)
            raise AssertionError("a reply larger than the budget was served")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and b"Reply too large" in e.read()
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and len(r.read().strip()) == REPLY
        assert node.built == 6
        for s in stalled:
            s.close()


def test_a_mempool_too_large_for_the_budget_is_refused_before_it_is_built() -> None:
    """/rest/mempool/contents.json is built whole (getrawmempool verbose) before it can be
    measured: a full 300 MB pool (some 160,000 entries, 70 us and 2 KB of Python objects
    each) took 11 s of the event loop and some 350 MB for a moment, then was too large to
    send. Now a pool whose entries cannot fit the room left (400 bytes of JSON each at the
    least) is refused 503 unbuilt; a smaller one is served whole."""
    node = _Node()
    server = ThreadedRpcServer(node.registry, RpcAuth(user="u", password="p"), rest=RestInterface(node),
                               max_user_bytes=BUDGET, server_timeout=TIMEOUT)
    with server as running:
        url = f"http://127.0.0.1:{running.port}/rest/mempool/contents.json"
        node.pool_size = BUDGET // 400 + 1
        try:
            urllib.request.urlopen(url, timeout=10)
            raise AssertionError("a pool larger than the budget was served")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and b"Reply too large" in e.read()
        assert node.pool_built == 0
        node.pool_size = 1000
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and len(json.loads(r.read())) == 1000
        assert node.pool_built == 1
