"""Functional: the JSON-RPC server under abuse (issue 11, item 6), against a real node.

The same for CleanCoind and CleanCoin-node. Each test performs the attack from an RPC
client's side with raw sockets (so nothing in a client library softens it) and checks that
the node refuses it and keeps serving honest clients.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import zlib
from pathlib import Path

import pytest

from framework import TestNode, WATCHER, WATCHER_PASSWORD, WATCHER_RPCAUTH, cpu_seconds


@pytest.fixture
def node(tmp_path: Path):
    made: list[TestNode] = []

    def make(*extra: str) -> TestNode:
        n = TestNode(len(made), tmp_path, extra)
        made.append(n)
        n.start()
        return n

    yield make
    for n in made:
        n.cleanup()


def http_post(port: int, body: bytes, auth: str | None, path: str = "/", timeout: float = 20.0,
              headers: tuple[str, ...] = ()) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 POST on a fresh connection (`headers`: more header lines); (status,
    headers, body)."""
    headers = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
               f"Content-Length: {len(body)}", "Connection: close", *headers]
    if auth is not None:
        headers.append("Authorization: Basic " + base64.b64encode(auth.encode()).decode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, rest


def cookie(n: TestNode) -> str:
    return n.cookie_path.read_text().strip()


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True when the peer closes `s` (EOF or reset) within `timeout` seconds."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


def test_wrong_passwords_in_parallel_are_limited_not_just_delayed(node) -> None:
    """200 wrong passwords at once: only the address's allowance (10, then 1/s) is checked,
    the rest is answered 429 at once; the right password works again after Retry-After."""
    n = node()
    body = json.dumps({"method": "getblockcount", "params": [], "id": 1}).encode()
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        try:
            status, headers, _ = http_post(n.rpc_port, body, f"__cookie__:guess{i}")
        except OSError:           # not even heard: the connection was refused or reset
            status, headers = 0, {}
        with lock:
            statuses.append(status)
            if status == 429:
                retry_after.append(headers.get("retry-after", ""))

    started = time.monotonic()
    threads = [threading.Thread(target=guess, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - started
    assert len(statuses) == 200 and set(statuses) <= {0, 401, 429}, sorted(set(statuses))
    assert statuses.count(401) <= 10 + int(took) + 1, (statuses.count(401), took)
    assert statuses.count(429) >= 150 and all(r.isdigit() and int(r) >= 1 for r in retry_after)
    right = json.dumps({"method": "getblockcount", "params": [], "id": 2}).encode()
    for _ in range(3):                   # the same address: it waits its turn, as Retry-After says
        status, headers, reply = http_post(n.rpc_port, right, cookie(n))
        if status != 429:
            break
        time.sleep(int(headers["retry-after"]))
    assert status == 200 and json.loads(reply)["result"] == 0
    log = n.debug_log()
    assert "incorrect password attempt" in log and "too many failed authentication attempts" in log
    assert "guess1" not in log


def test_half_sent_requests_are_closed_at_the_deadline(node) -> None:
    """Slowloris: 100 connections that send half their headers and 100 that send headers and
    half a body, then wait. An honest client is served meanwhile; the server closes all 200 at
    -rpcservertimeout (here 1 s)."""
    n = node("-rpcservertimeout=1")
    auth = "Authorization: Basic " + base64.b64encode(cookie(n).encode()).decode()
    held: list[socket.socket] = []
    try:
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", n.rpc_port))
            if i % 2:
                s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            else:
                s.sendall(("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                           f"{auth}\r\n\r\n" + '{"method": "getblo').encode())
            held.append(s)
        assert n.rpc.getblockcount() == 0
        started = time.monotonic()
        closed = [closed_by_peer(s, 10) for s in held]
        assert all(closed), f"{closed.count(False)} half-sent requests still open"
        assert time.monotonic() - started < 8
    finally:
        for s in held:
            s.close()
    assert n.rpc.getblockcount() == 0
    assert "within -rpcservertimeout" in n.debug_log()


def test_a_batch_is_bounded(node) -> None:
    """1000 calls in a batch are served; 1001 are refused as a whole with one JSON-RPC error
    (RPC_INVALID_REQUEST, HTTP 400), and the node goes on."""
    n = node()
    batch = [{"jsonrpc": "2.0", "method": "getblockcount", "id": i} for i in range(1000)]
    status, _, reply = http_post(n.rpc_port, json.dumps(batch).encode(), cookie(n))
    assert status == 200 and [r["result"] for r in json.loads(reply)] == [0] * 1000
    batch.append({"jsonrpc": "2.0", "method": "getblockcount", "id": 1000})
    status, _, reply = http_post(n.rpc_port, json.dumps(batch).encode(), cookie(n))
    answer = json.loads(reply)
    assert status == 400 and isinstance(answer, dict), (status, reply[:200])
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert "1001" in answer["error"]["message"] and "1000" in answer["error"]["message"]
    assert n.rpc.getblockcount() == 0


MALFORMED_PATHS = ["/wallet/%ff", "/wallet/%", "/wallet/%zz", "/wallet/a%00b", "/wallet/%c0%af",
                   "/wallet/..%2f..%2fchainstate.sqlite", "/wallet/" + "x" * 5000, "/wallet/a/b", "//",
                   "/wallet", "/%2e%2e/", "/wallet/%ed%a0%80"]


def test_malformed_paths_get_a_clean_error(node) -> None:
    """No path makes the node answer 500 or show an exception text; the node goes on."""
    n = node()
    for path in MALFORMED_PATHS:
        for body in (json.dumps({"method": "getblockcount", "id": 1}),
                     json.dumps({"method": "getwalletinfo", "id": 1}),
                     json.dumps({"jsonrpc": "2.0", "method": "getbalance", "id": 1})):
            status, _, reply = http_post(n.rpc_port, body.encode(), cookie(n), path=path)
            text = reply.decode("utf-8", "replace")
            assert status != 500 or json.loads(reply)["error"]["code"] not in (-32603, -1), (path, status, text)
            assert "Internal error" not in text and "Traceback" not in text, (path, text)
            assert "codec" not in text and "Error" not in text.split('"message"')[0], (path, text)
    assert n.rpc.getblockcount() == 0


def test_guessing_from_many_addresses_does_not_lock_the_cookie_out(node) -> None:
    """A client without credentials (any local user can reach 127.0.0.1, and bind any
    127.x.y.z) sends wrong passwords from 100 addresses, one every 0.3 s each (past its
    allowance an address is answered 429 at once, so it keeps the whole server's used up). Measured on the code
    before: 16 of 20 requests of CleanCoin-cli's user, the cookie's, were answered 429, for as
    long as the guessing went on (a lockout at the price of 5 requests a second). Now a cookie is
    still checked while the allowance is used up: it is 64 random hex digits, no rate of
    guessing finds it. A password of the operator's choosing (-rpcauth) stays behind the
    limit, as before: 429, unchecked."""
    n = node(f"-rpcauth={WATCHER_RPCAUTH}")
    body = json.dumps({"method": "getblockcount", "params": [], "id": 1}).encode()
    stop = threading.Event()

    def guess(source: str) -> None:
        while not stop.is_set():
            try:
                with socket.socket() as s:
                    s.bind((source, 0))
                    s.settimeout(5)
                    s.connect(("127.0.0.1", n.rpc_port))
                    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n"
                              b"Authorization: Basic %s\r\n\r\n%s" % (
                                  len(body), base64.b64encode(f"__cookie__:guess-{source}".encode()), body))
                    s.recv(100)
            except OSError:
                pass
            stop.wait(0.3)

    guessers = [threading.Thread(target=guess, args=(f"127.60.0.{i}",), daemon=True) for i in range(1, 101)]
    for t in guessers:
        t.start()
    statuses: list[int] = []
    watcher: list[int] = []
    try:
        time.sleep(1.0)
        for _ in range(20):
            statuses.append(http_post(n.rpc_port, body, cookie(n))[0])
            watcher.append(http_post(n.rpc_port, body, f"{WATCHER}:{WATCHER_PASSWORD}")[0])
            time.sleep(0.1)
    finally:
        stop.set()
        for t in guessers:
            t.join(10)
    print(f"cookie: {statuses}; rpcauth user: {watcher}")
    assert statuses == [200] * 20, statuses
    assert watcher.count(429) >= 1, watcher             # the guessable kind stays behind the limit
    log = n.debug_log()
    assert "too many failed authentication attempts" in log and "incorrect password attempt" in log


def test_a_compressed_body_costs_its_size_not_what_it_inflates_to(node) -> None:
    """A client without credentials sends three POSTs of a 1 MiB deflate-compressed body
    (`Content-Encoding: deflate`) that inflates to 1 GiB of zeros. Measured on the code before:
    aiohttp inflated each body while reading it, after the 401 too (it reads the rest of a
    body it did not use before the connection can go on): 0.8 s of the node's CPU per MiB
    sent, 2.4 s for the three, on the event loop P2P shares. Now request bodies are never
    inflated; a compressed one, with credentials, is refused (HTTP 415, nothing JSON-RPC
    clients send: bitcoind does not take it either), and an ordinary call works."""
    n = node()
    assert n.process is not None
    pid = n.process.pid
    # 1 MiB of zeros deflated after a full flush is a segment that inflates the same anywhere:
    # 1024 of them are 1 GiB, made in milliseconds (the final checksum is not that of 1 GiB,
    # but it is only looked at once all of it is inflated).
    packer = zlib.compressobj(9)
    first = packer.compress(b"\0" * (1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    segment = packer.compress(b"\0" * (1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    bomb = first + segment * 1023 + packer.flush()
    assert len(bomb) < 1_100_000 and len(zlib.decompressobj().decompress(bomb[:200_000])) > 100 * (1 << 20)
    spent = cpu_seconds(pid)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", n.rpc_port), timeout=20) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
                      % len(bomb) + bomb)
            assert s.recv(100).startswith(b"HTTP/1.1 401")
            time.sleep(0.2)
    time.sleep(0.5)
    spent = cpu_seconds(pid) - spent
    status, _, reply = http_post(n.rpc_port, zlib.compress(b'{"method":"getblockcount","id":1}'), cookie(n),
                                 headers=("Content-Encoding: deflate",))
    print(f"node CPU for 3 x 1 MiB of deflate: {spent:.2f} s; a compressed call: {status}")
    assert spent < 0.5, spent
    assert status == 415 and b"Content-Encoding" in reply, (status, reply)
    status, _, reply = http_post(n.rpc_port, b'{"method":"getblockcount","id":1}', cookie(n))
    assert (status, json.loads(reply)["result"]) == (200, 0)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_request_headers_are_bounded_before_authentication(node) -> None:
    """A client without credentials opens 200 connections and on each sends a request line and
    then headers, 120 of 8000 bytes (960 kB), without ending them: the headers deadline is
    30 s. Measured on the code before: the node held 285 MiB (aiohttp's defaults: 128 headers
    of up to 8190 bytes each, about 1 MB a connection, 256 connections). Now at most 24 header
    lines of 4096 bytes (bitcoind allows 8192 bytes of headers in all): the oversized ones
    are answered 400 at once, and headers just within the limits, on every connection, hold
    a few tens of MiB. An honest client is served meanwhile."""
    n = node()
    assert n.process is not None
    pid = n.process.pid
    grown: list[int] = []
    for count, size in ((23, 4000), (120, 8000)):      # (memory freed is not given back: small first)
        header = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * (size - 12)) for i in range(count))
        base = _rss(pid)
        held: list[socket.socket] = []
        try:
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", n.rpc_port))
                try:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + header)
                except OSError:          # answered 400 and closed while it was sending
                    pass
                held.append(s)
            time.sleep(1.0)
            grown.append(_rss(pid) - base)
            assert n.rpc.getblockcount() == 0
        finally:
            for s in held:
                s.close()
        time.sleep(0.5)
    print(f"RSS growth: largest allowed headers {grown[0] / 2**20:.0f} MiB, oversized {grown[1] / 2**20:.0f} MiB")
    assert max(grown) < 100 * 2**20, grown
    # A long but honest Authorization header (a 1000-character -rpcauth password, say) is fine.
    status, _, reply = http_post(n.rpc_port, b'{"method":"getblockcount","id":1}', cookie(n),
                                 headers=("User-Agent: " + "x" * 3000,))
    assert (status, json.loads(reply)["result"]) == (200, 0)
