"""Functional, both executables: what one JSON-RPC request can make the node spend before any
method sees it. The attacker holds credentials, but only for what -rpcwhitelist lets it call
(here getblockcount): a monitoring script's leaked password. Its request is well under the
32 MiB size limit; the cost is in parsing it, on the event loop the node's P2P and every other
RPC client share.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from framework import (WATCHER, WATCHER_PASSWORD as PASSWORD, WATCHER_RPCAUTH as RPCAUTH, TestNode, cpu_seconds,
                       peak_rss_growth, post_json_rpc, rss, wait_until)

MIB = 1 << 20


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key}")


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
    peak, cpu = _status(pid, "VmHWM"), cpu_seconds(pid)
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
    spent, grown = cpu_seconds(pid) - cpu, _status(pid, "VmHWM") - peak
    print(f"status {status}; node CPU {spent:.2f} s; peak RSS +{grown / MIB:.0f} MiB; "
          f"honest max latency {max(latencies):.3f} s")
    assert status == 400 and json.loads(reply)["error"]["code"] == -32600, (status, reply[:200])
    assert "JSON values" in json.loads(reply)["error"]["message"]
    assert spent < 1.0, spent
    assert grown < 150 * MIB, grown
    # The old code kept the other client waiting for the whole parse (6 s on an idle machine);
    # the bound leaves room for a load of 15 (1.04 s seen at 13, 12-07), not for the parse.
    assert max(latencies) < 4.0, latencies
    # An ordinary call of the same user, numbers included, is served.
    status, reply = post_json_rpc(n.rpc_port, {"id": 2, "method": "getblockcount", "params": []}, WATCHER, PASSWORD)
    assert (status, json.loads(reply)["result"]) == (200, 0)
    assert n.stop() == 0


def _hold_a_big_body(port: int, auth: str, send: int, declared: int) -> socket.socket:
    """A POST whose Content-Length is `declared`, of which `send` bytes are sent; then the
    sender waits (until the server's body deadline)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = ("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Basic {auth}\r\nContent-Length: {declared}\r\n\r\n")
    s.sendall(head.encode())
    try:
        s.sendall(b" " * send)
    except OSError:            # the server answered and closed: nothing more to hold
        pass
    return s


def test_one_users_unfinished_bodies_are_bounded(node: Callable[..., TestNode]) -> None:
    """The restricted user opens 12 connections and sends 24 MiB of a 32 MiB body on each, as
    fast as loopback allows, then waits (the body deadline is 30 s). Measured on the code
    before: the node held every byte, RSS +290 MiB (the 256 connections the server allows:
    8 GiB) until the deadline. Now a user's bodies in flight (and the estimated size of their
    parsed values) may take 64 MiB together; past that its requests are answered 503 and
    their bodies are read and dropped. Another user is served meanwhile, and the restricted
    user's next ordinary call works once its connections are gone."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount", "-rpcwhitelistdefault=0")
    n.start()
    assert n.process is not None
    pid = n.process.pid
    auth = base64.b64encode(f"{WATCHER}:{PASSWORD}".encode()).decode()
    base = rss(pid)
    held: list[socket.socket] = []
    try:
        for _ in range(12):
            held.append(_hold_a_big_body(n.rpc_port, auth, 24 * MIB, 32 * MIB - 16))
        time.sleep(1.0)
        grown = rss(pid) - base
        t0 = time.monotonic()
        assert n.rpc.getblockcount() == 0                      # the cookie's user, meanwhile
        other = time.monotonic() - t0
        answers = []
        for s in held:
            s.settimeout(0.2)
            try:
                answers.append(s.recv(200).split(b"\r\n", 1)[0])
            except (TimeoutError, OSError):
                answers.append(b"")
    finally:
        for s in held:
            s.close()
    print(f"RSS growth {grown / MIB:.0f} MiB; other user {other:.3f} s; answers {answers}")
    # 83 MiB on a quiet machine, up to 167 MiB seen with both cores busy, while refused bodies
    # stayed referenced until the cyclic collector ran; since they are emptied when their
    # request ends, 49-50 MiB (two bodies of 24 MiB are within the budget). The code before
    # held 290.
    assert grown < 128 * MIB, f"the node holds {grown / MIB:.0f} MiB of one user's unfinished bodies"
    assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) >= 9, answers
    assert other < 2.0
    wait_until(lambda: post_json_rpc(n.rpc_port, {"id": 2, "method": "getblockcount"}, WATCHER, PASSWORD)[0] == 200,
               20, what="the restricted user's next call")
    assert "bodies in flight" in n.debug_log()
    assert n.stop() == 0


def test_an_amount_beyond_decimals_range_is_a_type_error_not_an_internal_error(node: Callable[..., TestNode]) -> None:
    """`1E+1000000` as an amount: measured on the code before, abs() of it overflowed the
    decimal context and the call failed with -32603 "Internal error", a traceback written to
    debug.log for every such call (any user allowed a method with an amount parameter decides
    how often). Now -3 "Invalid amount", as for any other amount out of range, and no
    traceback; an ordinary amount still reaches the method."""
    n = node()
    n.start()
    user, _, password = n.cookie_path.read_text().partition(":")
    for amount in (b"1E+1000000", b"-1e999999999", b'"1e999999999"'):
        body = b'{"id":1,"method":"sendrawtransaction","params":["00",' + amount + b"]}"
        status, reply = post_json_rpc(n.rpc_port, body, user, password)
        assert json.loads(reply)["error"] == {"code": -3, "message": "Invalid amount"}, (amount, reply)
    status, reply = post_json_rpc(n.rpc_port, b'{"id":1,"method":"sendrawtransaction","params":["00",0.1]}',
                                  user, password)
    assert json.loads(reply)["error"]["code"] == -22, reply           # the amount passed: a decode error
    assert "Traceback" not in n.debug_log() and "Overflow" not in n.debug_log()
    assert n.stop() == 0


def test_one_user_cannot_take_every_connection(node: Callable[..., TestNode]) -> None:
    """The restricted user opens 256 connections (the server's cap) and on each sends a
    request's headers and one byte of its body, then waits: every connection is in the middle
    of a request, none waiting for one. Measured on the code before: the server closed every
    new connection ("all busy") until the body deadline, so the cookie's user, CleanCoin-cli,
    was locked out for as long as the user went on. Now one user may have at most half the
    connections in requests at once (the rest are answered 503 at once); the cookie's user is
    served, and the restricted user's next call once its connections are gone."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount", "-rpcwhitelistdefault=0")
    n.start()
    auth = base64.b64encode(f"{WATCHER}:{PASSWORD}".encode()).decode()
    held: list[socket.socket] = []
    try:
        for _ in range(256):
            held.append(_hold_a_big_body(n.rpc_port, auth, 1, 100))
        time.sleep(0.5)
        try:
            answer = n.rpc.getblockcount()
        except Exception as exc:  # noqa: BLE001 - the attack's success, shown as what it was
            answer = repr(exc)
    finally:
        for s in held:
            s.close()
    assert answer == 0, answer
    wait_until(lambda: post_json_rpc(n.rpc_port, {"id": 2, "method": "getblockcount"}, WATCHER, PASSWORD)[0] == 200,
               20, what="the restricted user's next call")
    assert "requests in flight" in n.debug_log()
    assert n.stop() == 0


def test_refused_bodies_are_freed_at_once_for_many_connections(node: Callable[..., TestNode]) -> None:
    """The restricted user opens 64 connections one after another (it may hold 128) and sends
    24 MiB of a 32 MiB body on each. Past its 64 MiB budget every request is refused, so what
    the node holds should stay near that budget however many connections there are.
    Measured on the code before (quiet machine): peak RSS +197 MiB at 40 connections, +244 at
    64, and +197 / +262 MiB (64 / 128 connections) still held after every connection had
    closed: a refused read ended in an exception whose traceback kept the half-read body, in a
    cycle (finished task, wait_for's frame) only the cyclic collector frees, and the bodies so
    kept grew the allocator's heap, which it never gave back. Now each body's storage is
    emptied when its request ends: peak +68 to +70 MiB for 40, 64 and 128 connections, +5 MiB
    after they close. The bounds: the user's budget (64 MiB) and as much again for the
    allocator and what is in the kernel's hands at a time (128); 32 MiB once closed."""
    n = node(f"-rpcauth={RPCAUTH}", f"-rpcwhitelist={WATCHER}:getblockcount", "-rpcwhitelistdefault=0")
    n.start()
    assert n.process is not None
    pid = n.process.pid
    auth = base64.b64encode(f"{WATCHER}:{PASSWORD}".encode()).decode()
    base = rss(pid)
    held: list[socket.socket] = []
    with peak_rss_growth(pid) as peak:
        try:
            for _ in range(64):
                held.append(_hold_a_big_body(n.rpc_port, auth, 24 * MIB, 32 * MIB - 16))
            time.sleep(0.5)
        finally:
            for s in held:
                s.close()
        wait_until(lambda: post_json_rpc(n.rpc_port, {"id": 2, "method": "getblockcount"}, WATCHER, PASSWORD)[0] == 200,
                   20, what="the restricted user's next call")
        time.sleep(0.5)
    after = rss(pid) - base
    print(f"peak RSS growth {peak[0] / MIB:.0f} MiB; after the connections closed {after / MIB:.0f} MiB")
    assert "bodies in flight" in n.debug_log()             # the budget refused (the attack ran)
    assert peak[0] < 128 * MIB, f"peak RSS +{peak[0] / MIB:.0f} MiB for one user's 64 connections"
    assert after < 32 * MIB, f"the node still holds {after / MIB:.0f} MiB of closed connections' bodies"
    assert n.stop() == 0
