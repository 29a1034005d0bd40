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
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cleancoin.components.rpc.client import RpcError

from framework import TEST_ADDRESS, TestNode, free_port, is_multiprocess, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

HERE = Path(__file__).resolve().parent


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

    # A bitcoind client library sees a clean error and exact amounts.
    authproxy = pytest.importorskip("bitcoinrpc.authproxy")
    user, _, password = n.cookie_path.read_text().partition(":")
    proxy = authproxy.AuthServiceProxy(f"http://{user}:{password}@127.0.0.1:{n.rpc_port}", timeout=60)
    with pytest.raises(authproxy.JSONRPCException) as info:
        proxy.getbalance()
    assert info.value.code == -32603
    assert proxy.listunspent()[0]["amount"] == Decimal("1.50000000")
    assert proxy.getblockcount() == 0
    proxy._AuthServiceProxy__conn.close()


# ---------------------------------------------------------------------- item 2: registerRpc

def test_registrations_a_node_must_refuse(node, rogue) -> None:
    """The wallet process the operator named (-ipcconnect) may register wallet methods, but
    not node methods, case or whitespace variants, names outside [a-z0-9_]+, escape
    sequences in help, signature or category, oversized help, duplicates, or 2000 methods
    with 10 kB of help each; `help` prints nothing a terminal would interpret."""
    n = node("-ipcconnect=unix")
    results = rogue(n, "names")
    n.start()
    outcomes = json.loads(results.read_text())
    assert len(outcomes) == 14
    accepted = [label for label, outcome in outcomes.items() if not outcome.startswith("refused")]
    assert accepted == [], outcomes
    assert "[a-z0-9_]+" in outcomes["case variant Stop"]
    assert "the node's own" in outcomes["node method"] and "the node's own" in outcomes["help"]
    assert "control character" in outcomes["escape in help"]
    assert "at most" in outcomes["2000 methods with 10 kB help"]
    listing = n.rpc.help()
    assert all(ch == "\n" or ch.isprintable() for ch in listing)
    assert "getbalance" in listing
    for name in ("Stop", "m1", "evilhelp", "dupname", "bighelp"):
        assert n.rpc.help(name).startswith("help: unknown command")
    assert "refused a wallet RPC registration" in n.debug_log()


def _node_sock_attack(n: TestNode, tcp: tuple[int, str] | None, captured: list[str]) -> str:
    """As an IPC client (node.sock, or TCP with -ipcauth), register walletpassphrase with a
    handler that records what it is sent; the text of the refusal ("" if accepted)."""
    import asyncio

    import capnp

    from cleancoin.components.interfaces.chain import RpcMethodInfo, RpcResponse
    from cleancoin.components.ipc.address import parse
    from cleancoin.components.ipc.auth import parse_ipcauth
    from cleancoin.components.ipc.errors import IpcError
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import connect

    class Thief:
        async def execute(self, request):  # type: ignore[no-untyped-def]
            captured.append(request.params)
            return RpcResponse(True, "null")

    async def attack() -> str:
        if tcp is None:
            address, credentials = parse("unix", str(n.netdatadir / "node.sock")), None
        else:
            address, credentials = parse(f"tcp:127.0.0.1:{tcp[0]}", ""), parse_ipcauth(tcp[1])
        connection = await connect(address, IpcPeer("thief", os.getpid()), False, credentials)
        try:
            chain = await connection.init.make_chain()
            try:
                await chain.register_rpc([RpcMethodInfo("walletpassphrase", "wallet", "walletpassphrase",
                                                        "walletpassphrase\n")], Thief())
            except IpcError as exc:
                return str(exc)
            # Accepted: serve for a while, as a thief would.
            await asyncio.to_thread(_try_passphrase, n)
            return ""
        finally:
            connection.close()

    return asyncio.run(capnp.run(attack()))


def _try_passphrase(n: TestNode) -> None:
    try:
        n.rpc.walletpassphrase("operator-secret", 60)
    except RpcError:
        pass


def test_ipc_clients_cannot_take_the_wallet_methods_of_a_dead_wallet(node) -> None:
    """The wallet process dies; at once an IPC client of node.sock, then one logged in on the
    TCP listener with -ipcauth, registers walletpassphrase. Both are refused (no registration
    capability on the listeners, and the names stay reserved for the node's own wallet
    process); the operator's passphrase reaches nobody else, and the real wallet's restart
    takes its methods back."""
    port = free_port()
    n = node("-ipcbind=unix", f"-ipcbind=tcp:127.0.0.1:{port}", "-ipcauth=gui:front-end-pw")
    n.start()
    n.rpc.createwallet("w", False, False, "operator-secret")
    wallet_pid = [p for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"][0]["pid"]
    captured: list[str] = []
    os.kill(wallet_pid, signal.SIGKILL)
    refusals = [_node_sock_attack(n, None, captured), _node_sock_attack(n, (port, "gui:front-end-pw"), captured)]
    assert captured == []
    for text in refusals:
        assert "takes no wallet RPC registrations" in text, refusals
    wait_until(lambda: n.rpc.getprocessinfo()["processes"][1]["restarts"] == 1, what="wallet restart")
    wait_until(lambda: _answers(n), what="wallet methods back")
    n.rpc.walletpassphrase("operator-secret", 60)
    assert n.rpc.getwalletinfo()["unlocked_until"] > 0
    assert "refused a wallet RPC registration" in n.debug_log()


def _answers(n: TestNode) -> bool:
    try:
        n.rpc.getwalletinfo()
        return True
    except RpcError:
        return False


def test_ipcallowwallet_lets_a_listener_client_serve_the_wallet_methods(node, tmp_path: Path) -> None:
    """With -disablewallet -ipcallowwallet=1 a CleanCoin-wallet -ipcconnect client serves the
    wallet methods (the operator's explicit choice); a second one is refused while it runs."""
    n = node("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1")
    n.start()
    base = [str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest", f"-datadir={n.datadir}",
            "-ipcconnect=unix"]
    log = open(tmp_path / "wallet-stderr.txt", "ab")
    first = subprocess.Popen(base, stderr=log)
    try:
        wait_until(lambda: _listwallets(n) == [], what="wallet registration")
        second = subprocess.run(base, stderr=subprocess.PIPE, timeout=60)
        assert second.returncode == 1 and b"already served" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)
        log.close()


def _listwallets(n: TestNode) -> Any:
    try:
        return n.rpc.listwallets()
    except RpcError:
        return None


# ---------------------------------------------------------------------- item 3: fan-out

def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_notification_subscribers_are_bounded_and_node_memory_stays_flat(node) -> None:
    """An IPC client makes 3000 handleNotifications registrations whose callbacks never
    return. Those beyond the per-connection bound are refused; over 100 blocks the node's
    RSS stays flat, and the node's own wallet still follows the chain."""
    import asyncio

    import capnp

    from cleancoin.components.ipc.address import parse
    from cleancoin.components.ipc.errors import IpcError
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import connect

    n = node("-ipcbind=unix")
    n.start()
    n.rpc.createwallet("w")
    address = n.rpc.getnewaddress()
    pid = n.process.pid

    class Stuck:
        async def block_connected(self, block, height):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()

        async def block_disconnected(self, block, height):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()

        async def transaction_added_to_mempool(self, tx):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()

        async def transaction_removed_from_mempool(self, txid, reason):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()

        async def chain_events(self, events):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()

    async def attack() -> tuple[int, int, list[int]]:
        connection = await connect(parse("unix", str(n.netdatadir / "node.sock")), IpcPeer("flood", os.getpid()), False)
        try:
            chain = await connection.init.make_chain()
            outcomes = await asyncio.gather(*(chain.handle_notifications(Stuck()) for _ in range(3000)),
                                            return_exceptions=True)
            accepted = sum(1 for o in outcomes if not isinstance(o, BaseException))
            refused = [o for o in outcomes if isinstance(o, IpcError)]
            assert all("at most" in str(o) for o in refused), refused[:1]
            n.rpc.generatetoaddress(5, TEST_ADDRESS)        # warm up: every receiver now hangs
            await asyncio.sleep(0.5)
            samples = [_rss_kb(pid)]
            for _ in range(5):
                await asyncio.to_thread(n.rpc.generatetoaddress, 20, TEST_ADDRESS)
                samples.append(_rss_kb(pid))
            return accepted, len(refused), samples
        finally:
            connection.close()

    accepted, refused, samples = asyncio.run(capnp.run(attack()))
    assert accepted <= 128 and accepted + refused == 3000
    growth = samples[-1] - samples[0]
    assert growth < 8 * 1024, samples                  # flat: well under 8 MB over 100 blocks
    n.rpc.generatetoaddress(1, address)
    wait_until(lambda: n.rpc.getwalletinfo()["lastprocessedblock"]["height"] == n.rpc.getblockcount(),
               what="the node's own wallet to follow the chain")
    assert n.process.poll() is None


# ---------------------------------------------------------------------- item 11: -28, never -18

def test_a_restarting_wallet_answers_28_until_its_wallets_are_loaded(node) -> None:
    """Clients that retry on -28 (as with bitcoind) poll a wallet method while the wallet
    process is killed and restarted three times: every error they see is -28, and each
    recovery ends with the wallet's answer."""
    n = node()
    n.start()
    n.rpc.createwallet("w")
    errors: list[tuple[int, str]] = []
    answers = [0]
    stop = threading.Event()

    def poll() -> None:
        from cleancoin.components.rpc.client import RpcClient
        rpc = RpcClient("127.0.0.1", n.rpc_port, cookie_path=str(n.cookie_path), timeout=60)
        while not stop.is_set():
            try:
                rpc.call("getwalletinfo")
                answers[0] += 1
            except RpcError as exc:
                errors.append((exc.code, exc.message))

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(2)]
    for p in pollers:
        p.start()
    try:
        for restart in range(1, 4):
            wpid = [p for p in n.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"][0]["pid"]
            os.kill(wpid, signal.SIGKILL)
            wait_until(lambda: n.rpc.getprocessinfo()["processes"][1]["restarts"] == restart, what="restart")
            seen = answers[0]
            wait_until(lambda: answers[0] > seen + 5, what="answers after the restart")
    finally:
        stop.set()
        for p in pollers:
            p.join(20)
    assert errors, "the polls never saw the wallet process gone"
    assert {code for code, _ in errors} == {-28}, sorted(set(errors))[:5]


def test_a_wallet_cannot_forge_or_hide_lines_in_the_nodes_debug_log(node, rogue) -> None:
    """The node logs why its wallet process sends no wallet events, with the process's own
    error text: a compromised wallet process (rogue_wallet.py `forge`) puts a line break, a
    line in debug.log's format, a carriage return, escape sequences and U+202E in it. The IPC
    runtime keeps the last line of a remote error only, so the forged line does not come
    through; on the old code the escape sequences and U+202E did, raw, into the node's
    debug.log (the file the confined wallet cannot write; CSI 2J and OSC 0 run in the terminal
    of whoever follows the log). Now they are escaped inside the node's record."""
    from rogue_wallet import FORGED_LOG_LINE
    n = node("-ipcconnect=unix")
    rogue(n, "forge")
    n.start()
    assert n.rpc.getblockcount() == 0
    wait_until(lambda: "sends no wallet events" in n.debug_log(), 20)
    log = n.debug_log()
    starts = [line for line in log.split("\n") if line[:1].isdigit()]
    # Allowed: the node's own record is there, with what the wallet process said (the IPC
    # runtime passes on the last line of a remote error's text).
    [record] = [line for line in starts if "sends no wallet events" in line]
    assert "handleNotifications failed in rogue-wallet" in record, record
    # Refused: the wallet's line as a record of its own, and raw control characters.
    assert not [line for line in starts if line.startswith(FORGED_LOG_LINE)], log[-2000:]
    assert not [c for c in log if c in "\r\x1b\x07\u202e"], repr(log[-2000:])
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\u202e" in log, log[-2000:]
