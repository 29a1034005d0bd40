"""Functional, CleanCoin-node only: what the node believes about its wallet process and its
other IPC peers (issue 11, items 1, 2, 3 and 11).

Each test performs an attack from the less trusted side (a compromised wallet process,
tests/functional/rogue_wallet.py; an IPC client of node.sock or of an authenticated TCP
listener) against a real CleanCoin-node and checks that it is refused.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.rpc.client import RpcError

from framework import TEST_ADDRESS, TestNode, free_port, is_multiprocess, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

HERE = Path(__file__).resolve().parent


@pytest.fixture
def node(tmp_path: Path):
    made: list[TestNode] = []

    def make(*extra: str) -> TestNode:
        n = TestNode(len(made), tmp_path, extra)
        made.append(n)
        return n

    yield make
    for n in made:
        n.cleanup()


@pytest.fixture
def rogue(tmp_path: Path):
    """Start rogue_wallet.py MODE on `<netdatadir>/wallet.sock` of a node; yields a function
    returning the path of its results file."""
    started: list[subprocess.Popen[bytes]] = []

    def start(n: TestNode, mode: str) -> Path:
        n.netdatadir.mkdir(parents=True, exist_ok=True)
        results = tmp_path / f"rogue-{mode}.json"
        proc = subprocess.Popen([sys.executable, str(HERE / "rogue_wallet.py"), str(n.netdatadir / "wallet.sock"),
                                 str(results), mode], stdout=subprocess.PIPE,
                                stderr=open(tmp_path / f"rogue-{mode}.err", "ab"))
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return results

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


def post(n: TestNode, body: Any, wallet: str | None = None) -> tuple[int, bytes]:
    """A raw JSON-RPC POST with the node's cookie: the HTTP status and the exact reply bytes."""
    user, _, password = n.cookie_path.read_text().partition(":")
    path = "/" if wallet is None else f"/wallet/{wallet}"
    req = urllib.request.Request(f"http://127.0.0.1:{n.rpc_port}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
                                          "Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def strict_json(text: bytes) -> Any:
    """Exactly one JSON value, no NaN: what any client must be able to read."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text.decode("utf-8"), parse_constant=refuse)


# ---------------------------------------------------------------------- item 1: JSON injection

def test_a_wallet_cannot_splice_json_into_the_nodes_replies(node, rogue) -> None:
    """A compromised wallet answers with text that closes its own `result` and forges a reply
    for id 2 (a node method in the same batch), with two values, 5000 levels of nesting,
    NaN, 20 MB, a lone surrogate, and an error message full of escape sequences. The node
    parses and checks each answer: one reply per request, nothing forged, a clear error for
    each bad answer, exact decimals for a good one."""
    n = node("-ipcconnect=unix")
    rogue(n, "inject")
    n.start()

    batch = [{"jsonrpc": "1.0", "method": "getbalance", "params": [], "id": 1},
             {"jsonrpc": "1.0", "method": "getblockcount", "params": [], "id": 2}]
    status, body = post(n, batch)
    assert status == 200
    assert b"FORGED" not in body
    replies = strict_json(body)
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[1] == {"result": 0, "error": None, "id": 2}
    assert replies[0]["result"] is None and replies[0]["error"]["code"] == -32603
    assert "invalid result" in replies[0]["error"]["message"]

    for method in ("getnewaddress", "getwalletinfo", "gettransaction", "listwallets", "getbalances"):
        status, body = post(n, {"jsonrpc": "1.0", "method": method, "params": [], "id": 7})
        reply = strict_json(body)
        assert reply["id"] == 7 and reply["result"] is None, (method, body[:200])
        assert reply["error"]["code"] == -32603 and "invalid result" in reply["error"]["message"], method
        assert len(body) < 4096, method

    status, body = post(n, {"jsonrpc": "1.0", "method": "sendtoaddress", "params": [], "id": 8})
    error = strict_json(body)["error"]
    assert error["code"] == -4 and "bad things" in error["message"]
    assert "\x1b" not in error["message"] and "\x07" not in error["message"]
    assert "second line" in error["message"]

    # A good answer passes, with its decimals as the wallet wrote them (bitcoind's format).
    status, body = post(n, {"jsonrpc": "1.0", "method": "listunspent", "params": [], "id": 9})
    assert b'"amount":1.50000000' in body
    assert strict_json(body)["result"][0]["txid"] == "ab"
    assert n.rpc.getblockcount() == 0          # the node goes on serving
    assert "invalid result" in n.debug_log()
