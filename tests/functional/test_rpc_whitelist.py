"""Functional, both executables: -rpcwhitelist, as bitcoind. A monitoring user whose password
leaks (from a script's config, a shell history) may call its methods and nothing else: not
`stop`, not a wallet method (which CleanCoin-node forwards to its wallet process: the check
comes first), not a batch that hides one refused call among allowed ones. What the operator
sees: HTTP 403 and the log line bitcoind writes."""

from __future__ import annotations

import json
from collections.abc import Callable

from framework import WATCHER, WATCHER_PASSWORD as PASSWORD, WATCHER_RPCAUTH as RPCAUTH, TestNode, post_json_rpc, wait_until


def _post(node: TestNode, body: object, user: str, password: str, wallet: str = "") -> tuple[int, bytes]:
    return post_json_rpc(node.rpc_port, body, user, password, wallet)


def _call(method: str, *params: object) -> dict[str, object]:
    return {"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}


def test_a_whitelisted_user_calls_its_methods_and_nothing_else(node: Callable[..., TestNode]) -> None:
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount,getbestblockhash",
             f"-rpcwhitelist={WATCHER}:getblockcount getbestblockhash getnetworkinfo",   # intersected
             "-rpcwhitelistdefault=0")                  # users without a list (the cookie's): all
    n.start()
    n.rpc.createwallet("w")
    status, body = _post(n, _call("getblockcount"), WATCHER, PASSWORD)
    assert (status, json.loads(body)["result"]) == (200, 0)
    for refused in (_call("getnetworkinfo"),           # in one list only: not in the intersection
                    _call("stop"), _call("getwalletinfo"), _call("sendtoaddress", "x", 1),
                    [_call("getblockcount"), _call("stop")]):
        assert _post(n, refused, WATCHER, PASSWORD, wallet="w") == (403, b""), refused
    assert n.rpc.getblockcount() == 0                  # the node is up; the cookie user may call all
    assert n.rpc.getwalletinfo()["walletname"] == "w"
    wait_until(lambda: "RPC User watcher not allowed to call method stop" in n.debug_log(), 10,
               what="the refusal in debug.log")
    assert n.stop() == 0


def test_with_a_whitelist_users_without_one_call_nothing_by_default(node: Callable[..., TestNode]) -> None:
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount")
    n.start(wait=False)
    cookie = n.cookie_path
    # The cookie is written a moment before the RPC port is bound: refused until then.
    wait_until(lambda: cookie.exists() and _status_or_none(n, WATCHER, PASSWORD) == 200, 30, what="the node's RPC")
    user, _, password = cookie.read_text().partition(":")
    assert _post(n, _call("getblockcount"), user, password) == (403, b"")
    assert _post(n, _call("stop"), WATCHER, PASSWORD) == (403, b"")
    wait_until(lambda: "RPC User __cookie__ not allowed to call any methods" in n.debug_log(), 10,
               what="the refusal in debug.log")
    assert n.process is not None
    n.process.terminate()                              # the RPC `stop` is locked out too
    assert n.process.wait(30) == 0
    n.process = None


def _status_or_none(node: TestNode, user: str, password: str) -> int | None:
    """getblockcount's HTTP status as `user`, or None while the port refuses connections."""
    try:
        return _post(node, _call("getblockcount"), user, password)[0]
    except OSError:           # urllib's URLError is one: connection refused
        return None


def _post_raw(node: TestNode, body: bytes, user: str, password: str, path: str = "/") -> tuple[int, bytes]:
    return post_json_rpc(node.rpc_port, body, user, password, path=path)


def test_no_request_form_reaches_a_refused_method(node: Callable[..., TestNode]) -> None:
    """Red team 12-06, held: the forms where a checker and a dispatcher could read a request
    differently. A duplicate "method" key (the checker and the dispatcher read the same parsed
    object: the last one, stop, refused), JSON-RPC 2.0 notifications alone and in a batch,
    a non-string method, another spelling, help naming stop, a wallet URI: each is refused
    or fails, and the node is still up."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount", "-rpcwhitelistdefault=0")
    n.start()
    n.rpc.createwallet("w")
    refused = [
        b'{"id":1,"method":"getblockcount","method":"stop"}',
        b'{"jsonrpc":"2.0","method":"stop"}',
        b'[{"jsonrpc":"2.0","method":"getblockcount"},{"jsonrpc":"2.0","method":"stop"}]',
        b'[{"jsonrpc":"2.0","id":1,"method":"getblockcount"},{"jsonrpc":"2.0","method":"stop","id":null}]',
        b'{"id":1,"method":"STOP"}', b'{"id":1,"method":"stop "}', b'{"id":1,"method":"help","params":["stop"]}',
    ]
    for body in refused:
        assert _post_raw(n, body, WATCHER, PASSWORD) == (403, b""), body
        assert _post_raw(n, body, WATCHER, PASSWORD, "/wallet/w")[0] in (403, 500), body
    for body in (b'{"id":1,"method":["stop"]}', b'{"id":1,"method":null,"params":["stop"]}',
                 b'{"id":1,"method":{"stop":1}}', b'[[{"method":"stop"}]]', b'[{"method":["stop"]}]'):
        assert _post_raw(n, body, WATCHER, PASSWORD)[0] in (400, 403, 500), body    # malformed
    assert _post_raw(n, b'{"id":1,"method":"getbalance"}', WATCHER, PASSWORD, "/wallet/w") == (403, b"")
    # The last duplicate wins for both: getblockcount, allowed.
    status, answer = _post_raw(n, b'{"id":1,"method":"stop","method":"getblockcount"}', WATCHER, PASSWORD)
    assert (status, json.loads(answer)["result"]) == (200, 0)
    assert n.rpc.getblockcount() == 0                  # still up: no form reached stop
    assert n.stop() == 0
