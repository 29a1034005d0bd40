"""Functional, both executables: bitcoind's `-timeout` (an outgoing P2P connect, in ms) and
`-peertimeout` (a connected peer's version handshake, in seconds). Before 12-07 both were
fixed (5 s and 60 s) and the options were refused as unknown: an operator on a slow or a
hostile network could not shorten how long a blackholed address holds an outbound slot's
dial, nor how long a peer that connects and says nothing holds an inbound place. Under
CleanCoin-node the connect broker applies `-timeout`.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from framework import CountingListener, TestNode, node_command, wait_until
from raw_peer import RawPeer


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose connects hang, as to a blackholed address: a listener with a
    backlog of 0 and one client already queued, so the kernel drops every further SYN."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = socket.create_connection(server.getsockname())
    port = int(server.getsockname()[1])
    probe = socket.socket()
    probe.settimeout(0.5)
    try:       # the set-up itself: a plain connect to it must hang, or this test proves nothing
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
    finally:
        probe.close()
    yield port
    filler.close()
    server.close()


def _dial_seconds(n: TestNode, port: int) -> list[float]:
    """Seconds each dial to 127.0.0.1:`port` took, from debug.log's own timestamps: from
    `connecting to` to the `failed` line that ends it (the node's clock, not this test's,
    so a loaded machine's slow start does not count)."""
    stamps: list[float] = []
    began: float | None = None
    for line in n.debug_log().splitlines():
        if f"127.0.0.1:{port}" not in line:
            continue
        at = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        if f"connecting to 127.0.0.1:{port}" in line:
            began = at
        elif f"connection to 127.0.0.1:{port} failed" in line and began is not None:
            stamps.append(at - began)
            began = None
    return stamps


def test_timeout_drops_a_hanging_connect_and_keeps_a_working_one(
        node: Callable[..., TestNode], blackhole: int) -> None:
    """-timeout=300: a dial to the blackholed port fails after about 0.3 s (before 12-07:
    5 s, whatever was asked), again at each redial; a listener that accepts is still reached
    under the same short timeout."""
    service = CountingListener(socket.create_server(("127.0.0.1", 0)))
    n = node("-timeout=300", "-debug=net", f"-connect=127.0.0.1:{blackhole}",
             f"-connect=127.0.0.1:{service.port}")
    n.start()
    wait_until(lambda: len(_dial_seconds(n, blackhole)) >= 2, timeout=20, what="two failed dials")
    took = _dial_seconds(n, blackhole)
    assert all(0.25 <= t < 2.5 for t in took), f"dials took {took} s"
    wait_until(lambda: service.accepted >= 1, timeout=10, what="the working connect")
    service.sock.close()


def test_peertimeout_disconnects_a_silent_peer_and_keeps_a_talking_one(node: Callable[..., TestNode]) -> None:
    """-peertimeout=2: an inbound connection that never sends its version is closed after
    about 2 s (before 12-07: 60 s); a peer that did its handshake stays."""
    n = node("-peertimeout=2")
    n.start()
    talking = RawPeer(n.p2p_port, "127.64.0.1")
    silent = socket.create_connection(("127.0.0.1", n.p2p_port))
    connected = time.monotonic()
    try:
        talking.handshake()
        silent.settimeout(10)
        try:
            data = silent.recv(4096)
            while data:                 # the node's own version, if it sent one first
                data = silent.recv(4096)
        except ConnectionResetError:
            pass
        held = time.monotonic() - connected
        assert 1.5 <= held < 6, f"the silent peer was disconnected after {held:.1f} s"
        talking.sync(3)
        assert [p["subver"] for p in n.rpc.getpeerinfo()] == ["/attack/"]
    finally:
        silent.close()
        talking.close()
    assert "handshake timeout" in n.debug_log()


@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_peertimeout_below_one_stops_the_start(tmp_path: Path, value: str) -> None:
    """bitcoind's message for a value below 1; a non-number names the option."""
    out = subprocess.run(node_command(f"-datadir={tmp_path}", "-regtest", f"-peertimeout={value}"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stderr
    expected = "is not a number" if value == "x" else "Error: peertimeout must be a positive integer."
    assert expected in out.stderr, out.stderr
    assert not (tmp_path / "regtest" / "chainstate.sqlite").exists()


@pytest.mark.parametrize("option", ["-timeout=10000000000000", "-timeout=1" + "0" * 400,
                                    "-peertimeout=2147483648", "-peertimeout=1" + "0" * 400])
def test_a_timeout_beyond_an_int_stops_the_start(tmp_path: Path, option: str) -> None:
    """Attack (an option value): until 12-07 -timeout=10000000000000 (1e10 s) started a node
    whose every dial failed with OverflowError (a socket's timeout is a time_t of ns; under
    CleanCoind the task keeping the -connect peer died at its first dial and never redialled),
    and a value past a float's range stopped the start with a traceback. Now both options
    stop at bitcoind's int bound with a message naming the option."""
    out = subprocess.run(node_command(f"-datadir={tmp_path}", "-regtest", option),
                         capture_output=True, text=True, timeout=30)
    name = option.split("=")[0]
    assert out.returncode == 1 and f"Invalid value for {name}:" in out.stderr, out.stderr
    assert "at most 2147483647" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_largest_timeout_still_connects(node: Callable[..., TestNode]) -> None:
    """-timeout at its bound (2147483647 ms, about 25 days) is a timeout a socket takes: the
    node reaches a listener that accepts."""
    service = CountingListener(socket.create_server(("127.0.0.1", 0)))
    n = node("-timeout=2147483647", "-peertimeout=2147483647", f"-connect=127.0.0.1:{service.port}")
    n.start()
    wait_until(lambda: service.accepted >= 1, timeout=20, what="the connect")
    service.sock.close()
    assert "OverflowError" not in n.debug_log()
