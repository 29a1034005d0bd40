"""Functional, both executables: bitcoind's `-timeout` (an outgoing P2P connect, in ms) and
`-peertimeout` (a connected peer's version handshake, in seconds). Before 12-07 both were
fixed (5 s and 60 s) and the options were refused as unknown: an operator on a slow or a
hostile network could not shorten how long a blackholed address holds an outbound slot's
dial, nor how long a peer that connects and says nothing holds an inbound place. Under
CleanCoin-node the connect broker applies `-timeout`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
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


def _failures(n: TestNode, port: int) -> list[str]:
    return re.findall(rf"connection to 127\.0\.0\.1:{port} failed: .*", n.debug_log())


def test_timeout_drops_a_hanging_connect_and_keeps_a_working_one(
        node: Callable[..., TestNode], blackhole: int) -> None:
    """-timeout=300: a dial to the blackholed port fails within about 0.3 s (before 12-07:
    5 s, whatever was asked), again at each redial; a listener that accepts is still reached
    under the same short timeout."""
    service = CountingListener(socket.create_server(("127.0.0.1", 0)))
    n = node("-timeout=300", "-debug=net", f"-connect=127.0.0.1:{blackhole}",
             f"-connect=127.0.0.1:{service.port}")
    started = time.monotonic()
    n.start()
    wait_until(lambda: _failures(n, blackhole), timeout=10, what="the blackholed dial's failure")
    first = time.monotonic() - started
    # The dial begins before RPC is up; with the old fixed 5 s no failure came before 5 s.
    assert first < 3.5, f"the first failure came {first:.1f} s after the start"
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
