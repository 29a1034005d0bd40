"""JSON-RPC server, registry and client over real HTTP on loopback.

A real aiohttp server runs on its own loop in a background thread (ThreadedRpcServer); the
tests talk to it with http.client (to see statuses, headers and raw bodies), with the project's
RpcClient, and with python-bitcoinrpc's AuthServiceProxy when it is installed.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import stat
from decimal import Decimal
from typing import Any

import pytest

from cleancoin.components.rpc import errors as E
from cleancoin.components.rpc import jsonfmt
from cleancoin.components.rpc.client import RpcAuthError, RpcClient, RpcConnectionError
from cleancoin.components.rpc.errors import RpcError
from cleancoin.components.rpc.registry import (
    INTERNAL_ERROR_MESSAGE,
    AMOUNT,
    ANY,
    ARR,
    BOOL,
    HEX,
    INT,
    NUM,
    OBJ,
    STR,
    CallContext,
    Param,
    Registry,
    loaded_wallets_resolver,
    parse_amount,
)
from cleancoin.components.rpc.server import (
    RpcAuth,
    bind_endpoints,
    client_allowed,
    parse_allow,
    split_host_port,
)
from rpc_thread import ThreadedRpcServer


class Calls:
    """What the test methods saw."""

    def __init__(self) -> None:
        self.count = 0
        self.wallets = ["w1"]


def make_registry(calls: Calls) -> Registry:
    reg = Registry(wallet_resolver=loaded_wallets_resolver(lambda: calls.wallets))

    async def echo(ctx: CallContext, **args: Any) -> list[Any]:
        values = [args[f"arg{i}"] for i in range(10)]
        while values and values[-1] is None:
            values.pop()
        return values

    reg.add("echo", echo, [Param(f"arg{i}", ANY, None) for i in range(10)], category="util",
            help="Simply echo back the input arguments.", hidden=True)

    async def add(ctx: CallContext, a: float, b: float = 0) -> float:
        return a + b

    reg.add("add", add, [Param("a", NUM, help="first"), Param("b", NUM, 0, "second")], category="util",
            help="Add two numbers.")

    def count(ctx: CallContext) -> int:   # a plain function works as well as a coroutine
        calls.count += 1
        return calls.count

    reg.add("count", count, category="util", help="Count calls.")

    async def fail(ctx: CallContext) -> None:
        raise ValueError("boom")

    reg.add("fail", fail, category="util", help="Always fails.")

    async def unjsonable(ctx: CallContext) -> Any:
        return {"x": object()}

    reg.add("unjsonable", unjsonable, category="util")

    async def nap(ctx: CallContext, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return True

    reg.add("nap", nap, [Param("seconds", NUM)], category="util", help="Sleep, then answer true.")

    async def typed(ctx: CallContext, s: str, n: int, b: bool, o: dict, a: list,
                    amount: Decimal | None, h: str | None) -> dict[str, Any]:
        return {"s": s, "n": n, "b": b, "o": o, "a": a, "amount": amount, "h": h}

    reg.add("typed", typed, [("s", STR), ("n", INT), ("b", BOOL), ("o", OBJ), ("a", ARR),
                             ("amount", AMOUNT, None), ("h", HEX, None)], category="util")

    async def getwalletinfo(ctx: CallContext) -> dict[str, Any]:
        return {"walletname": ctx.wallet, "uri_wallet": ctx.uri_wallet, "user": ctx.user}

    reg.add("getwalletinfo", getwalletinfo, category="wallet", help="Wallet state.", wallet=True)
    reg.add_stop()
    return reg


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def running(tmp_path, calls):
    reg = make_registry(calls)
    auth = RpcAuth(cookie_path=str(tmp_path / ".cookie"), user="alice", password="s3cret")
    with ThreadedRpcServer(reg, auth, binds=[("127.0.0.1", 0)]) as srv:
        yield srv


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cookie_header(srv: ThreadedRpcServer) -> str:
    with open(srv.server.auth.cookie_path, encoding="utf-8") as handle:
        user, _, password = handle.read().partition(":")
    return basic(user, password)


def send(port: int, body: Any = None, *, auth: str | None = None, path: str = "/", method: str = "POST",
         raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def rpc(srv: ThreadedRpcServer, body: Any, *, path: str = "/", raw: bytes | None = None) -> tuple[int, Any]:
    status, headers, data = send(srv.port, body, auth=basic("alice", "s3cret"), path=path, raw=raw)
    if data:
        assert headers["content-type"] == "application/json"
        assert data.endswith(b"\n")
    return status, (json.loads(data) if data else None)


# -- authentication ------------------------------------------------------------------------


def test_missing_or_wrong_credentials_get_401_with_a_challenge(running) -> None:
    body = {"method": "help", "params": [], "id": 1}
    status, headers, data = send(running.port, body)
    assert status == 401 and data == b""
    assert headers["www-authenticate"] == 'Basic realm="jsonrpc"'
    for bad in (basic("alice", "wrong"), basic("__cookie__", "0" * 64), basic("mallory", "s3cret"),
                "Basic !!notbase64", "Bearer abc", basic("alice", "")):
        status, headers, _ = send(running.port, body, auth=bad)
        assert status == 401, bad
        assert headers["www-authenticate"] == 'Basic realm="jsonrpc"'


def test_cookie_and_rpcuser_both_work_and_the_cookie_is_private(running) -> None:
    path = running.server.auth.cookie_path
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, oct(mode)
    with open(path, encoding="utf-8") as handle:
        content = handle.read()
    user, _, password = content.partition(":")
    assert user == "__cookie__" and len(password) == 64 and int(password, 16) >= 0
    assert not content.endswith("\n")
    body = {"method": "count", "params": [], "id": 7}
    for auth in (cookie_header(running), basic("alice", "s3cret")):
        status, _, data = send(running.port, body, auth=auth)
        assert status == 200
        assert json.loads(data)["error"] is None


def test_cookie_is_deleted_at_clean_shutdown_and_renewed_at_each_start(tmp_path, calls) -> None:
    cookie = tmp_path / "regtest" / ".cookie"
    cookie.parent.mkdir()
    auth = RpcAuth.from_options(str(tmp_path / "regtest"))          # no password: cookie
    assert auth.cookie_path == str(cookie)
    srv = ThreadedRpcServer(make_registry(calls), auth).start()
    first = cookie.read_text()
    assert not (tmp_path / "regtest" / ".cookie.tmp").exists()
    srv.stop()
    assert not cookie.exists()
    with ThreadedRpcServer(make_registry(calls), RpcAuth.from_options(str(tmp_path / "regtest"))) as srv2:
        assert cookie.read_text() != first
        assert RpcClient("127.0.0.1", srv2.port, cookie_path=str(cookie)).call("count") == 1
    # With -rpcpassword bitcoind writes no cookie.
    assert RpcAuth.from_options(str(tmp_path), "u", "p").cookie_path is None


def test_rpcauth_lines_are_checked_by_salted_hmac(tmp_path, calls) -> None:
    import hashlib
    import hmac

    salt = "cb77f0957de88ff388cf817ddbc7273"
    digest = hmac.new(salt.encode(), b"hunter2", hashlib.sha256).hexdigest()
    auth = RpcAuth(rpcauth=[f"bob:{salt}${digest}"])
    with ThreadedRpcServer(make_registry(calls), auth) as srv:
        assert RpcClient("127.0.0.1", srv.port, user="bob", password="hunter2").call("count") == 1
        with pytest.raises(RpcAuthError, match="Incorrect rpcuser or rpcpassword"):
            RpcClient("127.0.0.1", srv.port, user="bob", password="hunter3").call("count")
    with pytest.raises(ValueError, match="rpcauth"):
        RpcAuth(rpcauth=["bob-no-salt"])


# -- who may connect, where it listens -------------------------------------------------------


def test_a_client_outside_the_allow_list_gets_403(tmp_path, calls) -> None:
    auth = RpcAuth(user="alice", password="s3cret")
    with ThreadedRpcServer(make_registry(calls), auth, allow=["10.0.0.0/8"]) as srv:
        status, _, data = send(srv.port, {"method": "count", "id": 1}, auth=basic("alice", "s3cret"))
        assert status == 403 and data == b""
        # Refused before authentication is even looked at.
        assert send(srv.port, {"method": "count", "id": 1})[0] == 403
    assert calls.count == 0
    with ThreadedRpcServer(make_registry(calls), auth, allow=["127.0.0.1/32"]) as srv:
        assert send(srv.port, {"method": "count", "id": 1}, auth=basic("alice", "s3cret"))[0] == 200


def test_the_servers_remembered_allow_verdicts_are_client_alloweds_and_bounded() -> None:
    """Since 12-07 the server parses a client's address once, not per request: the same
    verdicts as client_allowed, asked twice (the second from memory), and never more than
    ALLOWED_MEMO addresses held."""
    from cleancoin.components.rpc.server import ALLOWED_MEMO, RpcServer
    server = RpcServer(Registry(), RpcAuth(user="u", password="p"),
                       parse_allow(["10.0.0.0/8"], include_loopback=False))
    for ip in ("10.1.2.3", "::ffff:10.1.2.3", "127.0.0.1", "11.0.0.1", "fe80::1%eth0", "junk") * 2:
        assert server._client_allowed(ip) is client_allowed(ip, server.allow), ip
    assert server._allowed == {"10.1.2.3": True, "::ffff:10.1.2.3": True, "127.0.0.1": False,
                               "11.0.0.1": False, "fe80::1%eth0": False, "junk": False}
    for i in range(ALLOWED_MEMO + 10):
        assert server._client_allowed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert len(server._allowed) <= ALLOWED_MEMO
    assert not server._client_allowed("11.0.0.1")


def test_allow_list_and_bind_options_follow_bitcoind() -> None:
    nets = parse_allow(["10.0.0.0/8", "192.168.1.7", "1.2.3.0/255.255.255.0"])
    assert client_allowed("127.0.0.1", nets) and client_allowed("127.9.9.9", nets)   # loopback always
    assert client_allowed("::1", nets) and client_allowed("::ffff:10.1.2.3", nets)
    assert client_allowed("1.2.3.200", nets) and client_allowed("192.168.1.7", nets)
    assert not client_allowed("192.168.1.8", nets) and not client_allowed("11.0.0.1", nets)
    assert not client_allowed("10.0.0.1", parse_allow([], include_loopback=False))
    with pytest.raises(ValueError, match="Invalid -rpcallowip subnet specification: 10.0.0.0/33"):
        parse_allow(["10.0.0.0/33"])
    # -rpcbind without -rpcallowip is ignored: loopback only.
    endpoints, warnings = bind_endpoints(["0.0.0.0"], [], 7332)
    assert endpoints == [("::1", 7332), ("127.0.0.1", 7332)] and "refusing" in warnings[0]
    endpoints, _ = bind_endpoints(["127.0.0.1:9000", "[::1]", "::1"], ["10.0.0.0/8"], 7332)
    assert endpoints == [("127.0.0.1", 9000), ("::1", 7332), ("::1", 7332)]
    assert split_host_port("[::1]:8", 1) == ("::1", 8) and split_host_port("host", 5) == ("host", 5)
    with pytest.raises(ValueError):
        split_host_port("host:99999", 1)


def test_several_binds_share_one_ephemeral_port_and_a_failed_bind_is_skipped(calls) -> None:
    endpoints = [("127.0.0.1", 0), ("127.0.0.2", 0), ("192.0.2.1", 0)]   # the last is not local
    with ThreadedRpcServer(make_registry(calls), RpcAuth(user="a", password="b"), binds=endpoints) as srv:
        hosts = [h for h, _ in srv.server.bound]
        assert hosts == ["127.0.0.1", "127.0.0.2"]
        assert len(set(srv.server.ports)) == 1
        for host in hosts:
            assert RpcClient(host, srv.port, user="a", password="b").call("count") >= 1


# -- HTTP level ----------------------------------------------------------------------------


def test_only_post_on_known_paths(running) -> None:
    auth = basic("alice", "s3cret")
    assert send(running.port, auth=auth, method="GET")[0] == 405
    assert send(running.port, {"method": "count"}, auth=auth, path="/rest/foo")[0] == 404
    assert send(running.port, {"method": "count"}, auth=auth, path="/walletx")[0] == 404


def test_request_size_limit(tmp_path, calls) -> None:
    auth = RpcAuth(user="alice", password="s3cret")
    with ThreadedRpcServer(make_registry(calls), auth, max_request_size=1000) as srv:
        small = {"method": "echo", "params": ["x" * 100], "id": 1}
        assert rpc(srv, small)[0] == 200
        big = {"method": "echo", "params": ["x" * 2000], "id": 1}
        status, _, _ = send(srv.port, big, auth=basic("alice", "s3cret"))
        assert status == 413
        assert rpc(srv, small)[0] == 200


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


def test_connection_cap_closes_the_connection_waiting_longest(tmp_path, calls, caplog) -> None:
    """Past max_connections, the connection that has waited longest for a request makes room
    for the new one (an honest client is served while half-sent requests fill the places);
    when every connection is busy with a request, the new one is refused."""
    import threading
    import time

    auth = RpcAuth(user="alice", password="s3cret")
    with caplog.at_level("INFO", logger="cleancoin.rpc"), \
            ThreadedRpcServer(make_registry(calls), auth, max_connections=4, max_user_requests=4) as srv:
        waiting = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            waiting.append(s)
            time.sleep(0.05)                          # the first one has waited longest
        assert rpc(srv, {"method": "add", "params": [1, 2], "id": 1}) == (200, {"result": 3, "error": None, "id": 1})
        assert _closed_by_server(waiting[0], 2)
        assert not any(_closed_by_server(s, 0.1) for s in waiting[1:])
        for s in waiting:
            s.close()
        time.sleep(0.2)
        answers: list[int] = []
        naps = [threading.Thread(target=lambda: answers.append(rpc(srv, {"method": "nap", "params": [0.8],
                                                                          "id": 1})[0])) for _ in range(4)]
        for t in naps:
            t.start()
        time.sleep(0.3)                               # four requests in progress: no place is waiting
        with socket.create_connection(("127.0.0.1", srv.port)) as fifth:
            assert _closed_by_server(fifth, 2)
        for t in naps:
            t.join(10)
        assert answers == [200] * 4
    text = caplog.text
    assert "waited" in text and "for a request" in text and "all busy" in text


def test_body_deadline(tmp_path, calls, caplog) -> None:
    """Headers, then half the body, then nothing: closed at the deadline (-rpcservertimeout)."""
    import time

    auth = RpcAuth(user="alice", password="s3cret")
    with caplog.at_level("INFO", logger="cleancoin.rpc"), \
            ThreadedRpcServer(make_registry(calls), auth, server_timeout=0.5) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                   f"Authorization: {basic('alice', 's3cret')}\r\n\r\n" + '{"method"').encode())
        started = time.monotonic()
        assert _closed_by_server(s, 5)
        assert 0.4 < time.monotonic() - started < 3
        s.close()
        assert rpc(srv, {"method": "add", "params": [1, 2], "id": 1})[0] == 200
    assert "request body not received within -rpcservertimeout (0.5 s)" in caplog.text


def test_a_request_makes_no_task_of_its_own_beyond_aiohttps(running) -> None:
    """Tasks the server's loop makes per request on a keep-alive connection, counted by a task
    factory: at most aiohttp's handler task (Python 3.11; none from 3.12, where aiohttp
    starts it eagerly). Before 12-07 the body's read and the reply's write each ran as a
    task of asyncio.wait_for's, with three loop turns each (issue #16); the deadlines are
    asyncio.timeout scopes now (test_body_deadline: still enforced)."""
    made: list[object] = []

    async def count_tasks() -> None:
        loop = asyncio.get_running_loop()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            made.append(getattr(coro, "__qualname__", coro))
            return asyncio.Task(coro, loop=loop, **kwargs)
        loop.set_task_factory(factory)   # type: ignore[arg-type]

    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    headers = {"Authorization": basic("alice", "s3cret"), "Content-Type": "application/json"}

    def call(a: int) -> Any:
        conn.request("POST", "/", json.dumps({"method": "add", "params": [a, 1], "id": a}), headers)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())["result"]

    try:
        assert call(0) == 1                 # the connection's own task is made here
        running.run(count_tasks(), 10)
        assert [call(a) for a in range(1, 11)] == list(range(2, 12))
    finally:
        conn.close()
    assert len(made) <= 10, made


# -- JSON-RPC 1.0 and 2.0 ------------------------------------------------------------------


def test_json_rpc_1_0_reply_has_result_error_and_id_and_errors_set_http_status(running) -> None:
    status, reply = rpc(running, {"method": "add", "params": [2, 3.5], "id": "a"})
    assert status == 200 and reply == {"result": 5.5, "error": None, "id": "a"}
    status, reply = rpc(running, {"jsonrpc": "1.0", "method": "add", "params": [1], "id": 2})
    assert status == 200 and reply == {"result": 1, "error": None, "id": 2}
    status, reply = rpc(running, {"method": "nosuchmethod", "params": [], "id": 3})
    assert status == 404
    assert reply == {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 3}
    status, reply = rpc(running, {"method": "add", "params": ["x"], "id": 4})
    assert status == 500 and reply["error"]["code"] == E.RPC_TYPE_ERROR and reply["result"] is None
    status, reply = rpc(running, {"params": [], "id": 5})
    assert status == 400 and reply["error"] == {"code": -32600, "message": "Missing method"} and reply["id"] == 5
    status, reply = rpc(running, {"jsonrpc": "3.0", "method": "count", "id": 6})
    assert status == 400 and reply["error"]["message"] == "JSON-RPC version not supported"
    status, reply = rpc(running, {"method": "count", "params": "x", "id": 7})
    assert status == 400 and reply["error"]["message"] == "Params must be an array or object"
    # No id: not a notification in 1.0; the reply simply has no id.
    status, reply = rpc(running, {"method": "count"})
    assert status == 200 and reply == {"result": 1, "error": None}


def test_json_rpc_2_0_reply_has_only_result_or_error_and_always_http_200(running) -> None:
    status, reply = rpc(running, {"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 1})
    assert status == 200 and reply == {"jsonrpc": "2.0", "result": 5, "id": 1}
    status, reply = rpc(running, {"jsonrpc": "2.0", "method": "nosuchmethod", "id": 2})
    assert status == 200
    assert reply == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 2}
    status, reply = rpc(running, {"jsonrpc": "2.0", "method": "fail", "id": None})
    assert status == 200 and set(reply) == {"jsonrpc", "error", "id"} and reply["id"] is None


def test_notification_is_executed_and_answered_204(running, calls) -> None:
    status, reply = rpc(running, {"jsonrpc": "2.0", "method": "count", "params": []})
    assert status == 204 and reply is None
    assert calls.count == 1
    # An error in a notification is not answered either.
    assert rpc(running, {"jsonrpc": "2.0", "method": "fail"}) == (204, None)


def test_batch_mixes_valid_invalid_and_notifications(running, calls) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": 1},
        {"method": "add", "params": [1, 2], "id": 2},                      # 1.0 member
        {"jsonrpc": "2.0", "method": "nosuchmethod", "id": 3},
        {"jsonrpc": "2.0", "method": "count"},                            # notification
        42,                                                                 # not an object
        {"jsonrpc": "2.0", "method": "add", "params": ["1"], "id": 4},
        {"jsonrpc": "2.0", "params": [], "id": 5},                          # no method
        {"jsonrpc": "2.0", "method": "fail", "id": 6},
    ]
    status, replies = rpc(running, batch)
    assert status == 200
    assert [r.get("id") for r in replies] == [1, 2, 3, None, 4, 5, 6]
    assert replies[0] == {"jsonrpc": "2.0", "result": 3, "id": 1}
    assert replies[1] == {"result": 3, "error": None, "id": 2}
    assert replies[2]["error"]["code"] == E.RPC_METHOD_NOT_FOUND and "result" not in replies[2]
    assert replies[3] == {"result": None, "error": {"code": -32600, "message": "Invalid Request object"}, "id": None}
    assert replies[4]["error"]["code"] == E.RPC_TYPE_ERROR
    assert replies[5]["error"] == {"code": -32600, "message": "Missing method"}
    assert replies[6]["error"]["code"] == E.RPC_INTERNAL_ERROR
    assert calls.count == 1
    assert rpc(running, []) == (200, [])
    assert rpc(running, [{"jsonrpc": "2.0", "method": "count"}] * 2) == (204, None)
    assert calls.count == 3


def test_malformed_json_is_a_parse_error_with_http_500(running) -> None:
    for raw in (b"{not json", b"", b'{"method": "count", "id": 1', b"\xff\xfe", b"[NaN]"):
        status, reply = rpc(running, None, raw=raw)
        assert status == 500, raw
        assert reply == {"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None}
    status, reply = rpc(running, None, raw=b'"just a string"')
    assert status == 500 and reply["error"] == {"code": -32700, "message": "Top-level object parse error"}
    assert rpc(running, {"method": "count", "id": 1})[0] == 200


# -- the registry --------------------------------------------------------------------------


def test_wrong_parameter_types_are_rpc_type_errors_in_bitcoinds_words(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    with pytest.raises(RpcError) as err:
        client.call("add", "1", True)
    assert err.value.code == E.RPC_TYPE_ERROR
    assert err.value.message == (
        "Wrong type passed:\n{\n"
        '    "Position 1 (a)": "JSON value of type string is not of expected type number",\n'
        '    "Position 2 (b)": "JSON value of type bool is not of expected type number"\n}')
    good = client.call("typed", "s", 5, False, {"k": 1}, [1], "0.10000000", "00ff")
    assert good == {"s": "s", "n": 5, "b": False, "o": {"k": 1}, "a": [1], "amount": Decimal("0.1"), "h": "00ff"}
    assert client.call("typed", "s", 5, False, {}, [], 21000000.5)["amount"] == Decimal("21000000.5")
    with pytest.raises(RpcError, match="JSON value is not an integer as expected") as err:
        client.call("typed", "s", 1.5, False, {}, [])
    assert err.value.code == E.RPC_TYPE_ERROR
    with pytest.raises(RpcError, match="^Invalid amount") as err:
        client.call("typed", "s", 1, False, {}, [], 0.123456789)
    assert err.value.code == E.RPC_TYPE_ERROR
    with pytest.raises(RpcError, match="^Amount out of range"):
        client.call("typed", "s", 1, False, {}, [], -1)
    with pytest.raises(RpcError, match="^Amount is not a number or string"):
        client.call("typed", "s", 1, False, {}, [], [1])
    with pytest.raises(RpcError, match="h must be hexadecimal string") as err:
        client.call("typed", "s", 1, False, {}, [], None, "0g")
    assert err.value.code == E.RPC_INVALID_PARAMETER
    # A required parameter given as null is a type error, as in bitcoind.
    with pytest.raises(RpcError, match="JSON value of type null is not of expected type number"):
        client.call("add", None)


def test_wrong_number_of_arguments_answers_the_methods_help(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    for args in ((), (1, 2, 3)):
        with pytest.raises(RpcError) as err:
            client.call("add", *args)
        assert err.value.code == E.RPC_MISC_ERROR
        assert err.value.message.startswith("add a ( b )\n\nAdd two numbers.\n\nArguments:\n1. a    (numeric, required) first")


def test_named_parameters(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    assert client.call("add", a=1, b=2) == 3
    assert client.call("add", b=10, a=1) == 11
    assert client.call("add", a=4) == 4                                   # b takes its default
    assert client.call("add", 5, b=1) == 6                                # "args" + named
    assert client.request("add", {"args": [5, 6]})["result"] == 11
    with pytest.raises(RpcError, match="^Unknown named parameter c") as err:
        client.call("add", a=1, c=2)
    assert err.value.code == E.RPC_INVALID_PARAMETER
    with pytest.raises(RpcError, match="Parameter a specified twice both as positional and named argument"):
        client.call("add", 1, a=2)
    with pytest.raises(RpcError) as err:
        client.call("add", b=2)                       # a missing: null in a required position
    assert err.value.code == E.RPC_TYPE_ERROR


def test_help_lists_by_category_and_explains_one_method(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    listing = client.call("help")
    assert listing.startswith("== Control ==\nhelp ( \"command\" )\nstop\n\n== Util ==\nadd a ( b )\ncount\n")
    assert "== Wallet ==\ngetwalletinfo" in listing
    assert "echo" not in listing.split()                                  # hidden
    text = client.call("help", "typed")
    assert text.startswith('typed "s" n b {o} [a,...] ( amount "h" )\n')
    assert "6. amount    (numeric or string, optional)" in text
    assert client.call("help", "nosuch") == "help: unknown command: nosuch\n"
    assert client.call("help", "echo").startswith("echo ( arg0 arg1")


def test_wallet_endpoint_routing(running, calls) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    # One wallet loaded: it is the default, at "/" and at its own endpoint.
    assert client.call("getwalletinfo")["walletname"] == "w1"
    assert client.call("getwalletinfo", wallet="w1") == {"walletname": "w1", "uri_wallet": "w1", "user": "alice"}
    with pytest.raises(RpcError) as err:
        client.call("getwalletinfo", wallet="nope")
    assert (err.value.code, err.value.message) == (E.RPC_WALLET_NOT_FOUND, "Requested wallet does not exist or is not loaded")
    calls.wallets[:] = ["w1", "my wallet/ü", ""]
    with pytest.raises(RpcError) as err:
        client.call("getwalletinfo")
    assert err.value.code == E.RPC_WALLET_NOT_SPECIFIED
    assert client.call("getwalletinfo", wallet="my wallet/ü")["walletname"] == "my wallet/ü"
    assert client.call("getwalletinfo", wallet="")["walletname"] == ""         # /wallet/ is the "" wallet
    # Non-wallet methods answer at a wallet endpoint too, as in bitcoind.
    assert client.call("add", 1, 1, wallet="w1") == 2
    status, reply = rpc(running, {"method": "getwalletinfo", "id": 1}, path="/wallet/my%20wallet%2F%C3%BC")
    assert status == 200 and reply["result"]["walletname"] == "my wallet/ü"
    calls.wallets[:] = []
    with pytest.raises(RpcError, match="^No wallet is loaded") as err:
        client.call("getwalletinfo")
    assert err.value.code == E.RPC_WALLET_NOT_FOUND


def test_a_failing_handler_is_an_internal_error_and_the_server_lives_on(running, caplog) -> None:
    """The exception's text is logged, never sent: not in the error, not in an HTTP 500."""
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    with caplog.at_level("ERROR", logger="cleancoin.rpc"):
        for _ in range(3):
            with pytest.raises(RpcError) as err:
                client.call("fail")
            assert (err.value.code, err.value.message) == (E.RPC_INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)
        with pytest.raises(RpcError) as err:
            client.call("unjsonable")
        assert err.value.code == E.RPC_INTERNAL_ERROR
    assert "Traceback" not in err.value.message and "boom" not in err.value.message
    assert any(r.exc_info for r in caplog.records)                     # the traceback is logged
    assert any("boom" in r.getMessage() or "boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    status, reply = rpc(running, {"method": "fail", "id": 1})
    assert status == 500 and reply["error"] == {"code": E.RPC_INTERNAL_ERROR, "message": INTERNAL_ERROR_MESSAGE}
    assert client.call("add", 1, 2) == 3


def test_the_method_of_each_call_is_logged_cleaned_at_debug_only(running, caplog) -> None:
    """-debug=rpc's "ThreadRPCServer method=" line, with the name's control characters
    replaced; without it, no line (and since 12-07 the name is not cleaned for nothing)."""
    with caplog.at_level("INFO", logger="cleancoin.rpc"):
        rpc(running, {"method": "add", "params": [1, 2], "id": 1})
    assert "ThreadRPCServer method=" not in caplog.text
    with caplog.at_level("DEBUG", logger="cleancoin.rpc"):
        rpc(running, {"method": "add", "params": [1, 2], "id": 1})
        rpc(running, {"method": "no\x1b[2Jsuch", "id": 2})
    assert "ThreadRPCServer method=add user=alice" in caplog.text
    assert "ThreadRPCServer method=no?[2Jsuch user=alice" in caplog.text


def test_warmup_answers_rpc_in_warmup(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    running.server.registry.set_warmup("Loading block index…")
    with pytest.raises(RpcError) as err:
        client.call("count")
    assert (err.value.code, err.value.message) == (E.RPC_IN_WARMUP, "Loading block index…")
    running.server.registry.set_warmup(None)
    assert client.call("count") == 1


def test_stop_answers_then_signals_the_owner(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    assert not running.server.stop_requested.is_set()
    assert client.call("stop") == "CleanCoin server stopping"
    assert running.run(asyncio.wait_for(running.server.stop_requested.wait(), 5)) is True


def test_registry_refuses_bad_declarations() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.add("help", lambda ctx: None)
    with pytest.raises(ValueError, match="required parameter 'b' after an optional one"):
        reg.add("m", lambda ctx, a, b: None, [("a", INT, 1), ("b", INT)])
    with pytest.raises(ValueError, match="cannot be called"):
        reg.add("m", lambda ctx: None, [("a", INT)])
    with pytest.raises(ValueError, match="unknown type"):
        Param("a", "float")
    assert parse_amount("1e-8") == Decimal("0.00000001")


def test_decimals_are_exact_both_ways(running) -> None:
    client = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret")
    status, _, data = send(running.port, None, auth=basic("alice", "s3cret"),
                           raw=b'{"method":"echo","params":[0.1, 50.00000000, 1e3],"id":1}')
    assert data == b'{"result":[0.1,50.0,1000.0],"error":null,"id":1}\n'
    assert jsonfmt.dumps({"a": Decimal("50.00000000")}) == '{"a":50.00000000}'
    assert client.call("echo", Decimal("0.30000000")) == [Decimal("0.3")]


# -- the client ----------------------------------------------------------------------------


def test_client_errors_for_refused_connections_and_bad_credentials(running, tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    with pytest.raises(RpcConnectionError) as err:
        RpcClient("127.0.0.1", free_port, user="a", password="b").call("help")
    assert str(err.value).startswith(f"Could not connect to the server 127.0.0.1:{free_port}")
    assert "Make sure the CleanCoind server is running" in str(err.value)
    with pytest.raises(RpcAuthError, match="Could not locate RPC credentials"):
        RpcClient("127.0.0.1", running.port, cookie_path=str(tmp_path / "missing")).call("help")
    results = RpcClient("127.0.0.1", running.port, user="alice", password="s3cret").batch(
        [("add", [1, 2]), ("nosuch", []), ("add", {"a": 5})])
    assert results[0] == 3 and isinstance(results[1], RpcError) and results[2] == 5


def test_python_bitcoinrpc_authserviceproxy_works_unchanged(running) -> None:
    authproxy = pytest.importorskip("bitcoinrpc.authproxy")
    with open(running.server.auth.cookie_path, encoding="utf-8") as handle:
        password = handle.read().partition(":")[2]
    url = f"http://__cookie__:{password}@127.0.0.1:{running.port}"
    proxy = authproxy.AuthServiceProxy(url, timeout=10)
    assert proxy.add(1, Decimal("2.5")) == Decimal("3.5")
    assert proxy.count() == 1 and proxy.count() == 2                    # one kept-alive connection
    assert proxy.help("add").startswith("add a ( b )")
    with pytest.raises(authproxy.JSONRPCException) as err:
        proxy.nosuchmethod()
    assert err.value.code == E.RPC_METHOD_NOT_FOUND
    with pytest.raises(authproxy.JSONRPCException) as err:
        proxy.add("x")
    assert err.value.code == E.RPC_TYPE_ERROR
    wallet = authproxy.AuthServiceProxy(url + "/wallet/w1", timeout=10)
    assert wallet.getwalletinfo()["walletname"] == "w1"
    for each in (proxy, wallet):                    # the library never closes its connection
        each._AuthServiceProxy__conn.close()


def test_default_rpc_ports_match_the_chain_parameters() -> None:
    from cleancoin.components.common.chainparams import params_for
    from cleancoin.components.common.conf import DEFAULT_RPC_PORTS
    for name, port in DEFAULT_RPC_PORTS.items():
        assert params_for(name).rpc_port == port, name


def test_rpcwhitelist_reads_its_lines_as_bitcoind() -> None:
    from cleancoin.components.rpc.whitelist import RpcWhitelist
    w = RpcWhitelist.from_options(["mon:getblockcount,getbestblockhash", "mon:getbestblockhash getblockcount uptime",
                                   "empty", "both:help"])
    assert w.lists["mon"] == {"getblockcount", "getbestblockhash"}          # intersected
    assert w.default and w.active                                            # on with any line
    assert w.refused("mon", ["getblockcount", "getbestblockhash"]) is None
    assert w.refused("mon", ["getblockcount", "stop"]) == "stop"
    assert w.refused("empty", ["help"]) == "help"                            # an empty list
    assert w.refused("someone", ["help"]) == ""                              # no list: nothing
    assert RpcWhitelist.from_options(["mon:help"], default=False).refused("someone", ["stop"]) is None
    assert RpcWhitelist.from_options([], default=True).refused("anyone", ["help"]) == ""
    assert not RpcWhitelist.from_options([]).active


def test_the_on_demand_hook_runs_before_a_lookup_and_only_outside_warmup() -> None:
    """Registry.on_demand (CleanCoin-node's wallet process started on first use): awaited with
    the name and whether the table has it; a True answer looks the name up again, so a method
    the hook registered answers the very call that made it. In warm-up it is not called."""
    from cleancoin.components.rpc.errors import RpcError as Failure
    from cleancoin.components.rpc.registry import Registry
    registry = Registry()
    registry.add("known", lambda ctx: "node's")
    seen: list[tuple[str, bool]] = []

    async def hook(name: str, known: bool) -> bool:
        seen.append((name, known))
        if name == "late" and registry.get("late") is None:
            registry.add("late", lambda ctx: "registered by the hook", category="wallet")
        return not known

    registry.on_demand = hook

    async def calls() -> list[Any]:
        out: list[Any] = [await registry.execute("known"), await registry.execute("late")]
        try:
            await registry.execute("nosuch")
        except Failure as exc:
            out.append(exc.code)
        registry.set_warmup("Loading")
        try:
            await registry.execute("other")
        except Failure as exc:
            out.append(exc.code)
        return out

    assert asyncio.run(calls()) == ["node's", "registered by the hook", -32601, -28]
    assert seen == [("known", True), ("late", False), ("nosuch", False)]


def test_a_request_sent_while_the_loop_is_stalled_is_answered(tmp_path, calls) -> None:
    """The event loop stalls past -rpcservertimeout (a REST reply being built: 2 to 7 s at a
    load of 9, tests/functional/test_rest_cost.py) while a connection accepted before it sends
    a whole request: it is answered. Before 12-08 the deadline sweep, run as the loop came
    back before the request's handler, closed it unanswered ("Remote end closed connection
    without response"). A connection that sends nothing is still closed (by the sweep or by
    aiohttp's keep-alive timer, both at -rpcservertimeout)."""
    import threading
    import time

    auth = RpcAuth(user="alice", password="s3cret")
    stalling = threading.Event()

    def stall() -> None:
        stalling.set()
        time.sleep(1.5)                               # three deadlines of 0.5 s

    with ThreadedRpcServer(make_registry(calls), auth, server_timeout=0.5) as srv:
        asker = socket.create_connection(("127.0.0.1", srv.port))
        idle = socket.create_connection(("127.0.0.1", srv.port))
        deadline = time.monotonic() + 5
        while srv.server.guard.count < 2 and time.monotonic() < deadline:
            time.sleep(0.01)                          # both accepted: their waits have begun
        srv.loop.call_soon_threadsafe(stall)
        assert stalling.wait(5)
        body = json.dumps({"method": "add", "params": [1, 2], "id": 1}).encode()
        asker.sendall((f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice', 's3cret')}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        asker.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := asker.recv(4096)):
            answer += chunk
        asker.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        started = time.monotonic()
        assert _closed_by_server(idle, 5)             # the one that sent nothing: at its deadline
        assert time.monotonic() - started < 3
        idle.close()
