"""Unit tests of the P2P connection-level limits added 12-08: which connections the far end
closed (hangup.py, real TCP sockets), and -maxuploadtarget's arithmetic (upload_target.py).
The attacks themselves run against both executables in
tests/functional/test_p2p_churn.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cleancoin.components.node.p2p.hangup import hung_up
from cleancoin.components.node.p2p.upload_target import TIMEFRAME, UploadTarget, parse_byte_units


@contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair over loopback: (the node's end, the peer's end)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    try:
        yield accepted, client
    finally:
        accepted.close()
        client.close()


def wait_hung_up(fd: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if fd in hung_up([fd]):
            return True
        time.sleep(0.01)
    return False


def test_a_connection_closed_with_unread_data_before_its_end_is_seen_hung_up() -> None:
    """The far end sends 40 KB the node has not read and closes (FIN after the data): hung
    up, though reading would first return the data. An open connection with as much unread
    data is not. (A FIN still queued at the far end behind data the node's window does not
    take has not arrived: no one can tell that connection from an open one.)"""
    with tcp_pair() as (node_end, closing), tcp_pair() as (node_end2, open_peer):
        for peer in (closing, open_peer):
            peer.sendall(b"x" * 40_000)
        closing.shutdown(socket.SHUT_WR)
        assert wait_hung_up(node_end.fileno())
        assert hung_up([node_end.fileno(), node_end2.fileno()]) == {node_end.fileno()}
        assert node_end.recv(10, socket.MSG_PEEK) == b"x" * 10      # (the data is still there)


def test_a_reset_connection_is_seen_hung_up() -> None:
    """The far end resets the connection (close with SO_LINGER 0: RST)."""
    with tcp_pair() as (node_end, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        assert wait_hung_up(node_end.fileno())


def test_no_descriptors_and_closed_ones() -> None:
    assert hung_up([]) == set()
    assert hung_up([-1]) == set()


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("5000", 5000 << 20), ("500M", 500 << 20), ("500m", 500_000_000), ("2g", 2_000_000_000),
    ("2G", 2 << 30), ("1k", 1000), ("1K", 1024), ("3T", 3 << 40), (" 7 ", 7 << 20),
])
def test_upload_targets_parse_as_bitcoind_parses_them(text: str, value: int) -> None:
    assert parse_byte_units(text) == value


@pytest.mark.parametrize("text", ["", "x", "12x", "-5", "1.5G", "5MB", "0x10"])
def test_anything_else_is_no_upload_target(text: str) -> None:
    assert parse_byte_units(text) is None


def test_the_target_keeps_a_block_every_10_minutes_for_new_blocks() -> None:
    """200 MB a day, blocks of 1 MB: at the cycle's start 144 MB are kept for new blocks, so old
    ones are refused once 56 MB went out; everything else only at 200 MB. Half-way through
    the cycle 72 MB are kept; a new cycle starts from nothing."""
    target = UploadTarget(200_000_000, 1_000_000)
    now = 1_000_000.0
    target.record(55_000_000, now)
    assert not target.reached(now, historical=True)
    target.record(1_000_000, now)
    assert target.reached(now, historical=True)
    assert not target.reached(now, historical=False)
    half = now + TIMEFRAME / 2
    assert not target.reached(half, historical=True)       # 56 < 200 - 72
    target.record(144_000_000, half)
    assert target.reached(half, historical=False) and target.reached(half, historical=True)
    later = now + TIMEFRAME + 1
    assert not target.reached(later, historical=False) and not target.reached(later, historical=True)
    target.record(1, later)
    assert target.sent == 1 and target.cycle_start == later


def test_no_target_is_never_reached_and_one_below_the_buffer_always_is() -> None:
    assert not UploadTarget(0).reached(0.0, historical=True)
    small = UploadTarget(100_000_000, 1_000_000)            # under 144 MB: old blocks never
    assert small.reached(5.0, historical=True) and not small.reached(5.0, historical=False)
