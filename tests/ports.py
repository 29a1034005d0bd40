"""Listening ports for tests: below the kernel's ephemeral range, never handed out twice.

A port the kernel picks with bind(0) lies in the ephemeral range (ip_local_port_range,
32768-60999 by default), where every outgoing connection of the test run takes its local
port, so it may be taken before the process under test binds it; and bind(0) may give the
same port again once its socket is closed, so two ports picked one after another (a node's
P2P and RPC ports) may coincide. Both happened in CI ("address already in use"). Not a test
module: imported by the unit tests, the GUI tests and tests/functional/framework.py.
"""

from __future__ import annotations

import os
import random
import socket

#: Ports this process has handed out (bind-checked free when handed out).
_HANDED_OUT: set[int] = set()
#: Where ports are picked: below the ephemeral range, or the slice of it the functional
#: runner gave this test process (CLEANCOIN_TEST_PORTS=LOW-HIGH), so that two test files
#: running side by side never pick the same port.
PORTS_ENV = "CLEANCOIN_TEST_PORTS"
_LOW, _HIGH = 20000, 32768


def _ports() -> range:
    low, _, high = os.environ.get(PORTS_ENV, "").partition("-")
    if low.isdigit() and high.isdigit() and _LOW <= int(low) < int(high) <= _HIGH:
        return range(int(low), int(high))
    return range(_LOW, _HIGH)


def slice_of(slot: int, slots: int) -> str:
    """The CLEANCOIN_TEST_PORTS value of runner slot `slot` of `slots`."""
    width = (_HIGH - _LOW) // slots
    return f"{_LOW + slot * width}-{_LOW + (slot + 1) * width}"


_PORTS = _ports()


def port_range() -> tuple[int, int]:
    """The lowest and highest port free_port() may hand out in this process."""
    return _PORTS.start, _PORTS.stop - 1


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1, below the ephemeral range, and that
    this process has not handed out before (nor another runner slot: see PORTS_ENV)."""
    while True:
        port = random.choice(_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
