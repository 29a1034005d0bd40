"""Functional, both executables: the connect rule (components/node/connect_rule.py) on
the node's real P2P connect path. An `addnode` at run time to an endpoint on this host that
was not named at start is refused with a clear line in debug.log, and the service there sees
nothing; a named one (-allowlocalpeer, or the framework's port range) connects. CleanCoind
applies the rule in its own process, CleanCoin-node in its connect broker: the same outcome
and the same line. And CleanCoin-node whose broker died goes on without outgoing connections.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from framework import TestNode, is_multiprocess, wait_until


class _Service:
    """A TCP listener on a kernel-chosen 127.0.0.1 port (outside the framework's range), that
    counts its clients: a stand-in for a local service."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture
def service():
    s = _Service()
    yield s
    s.sock.close()


def test_addnode_to_a_local_endpoint_not_named_at_start_is_refused(node, service: _Service) -> None:
    a = node()
    named = node(f"-allowlocalpeer=127.0.0.1:{service.port}")
    b = node()
    a.start()
    a.rpc.addnode(f"127.0.0.1:{service.port}", "onetry")
    a.rpc.addnode(f"[::ffff:127.0.0.1]:{service.port}", "onetry")
    wait_until(lambda: a.debug_log().count("refused by the connect rule") >= 2, what="the refusals in debug.log")
    log = a.debug_log()
    assert (f"not connecting to 127.0.0.1:{service.port}: refused by the connect rule: 127.0.0.1:{service.port} "
            "is a loopback address, and not an endpoint named at start") in log
    assert service.accepted == 0
    # The allowed operations: a node in the framework's range (named to every node) ...
    b.start()
    a.rpc.addnode(b.p2p_addr, "onetry")
    wait_until(lambda: a.rpc.getconnectioncount() == 1, what="a's connection to b")
    # ... and the same service, named to a node at start.
    named.start()
    named.rpc.addnode(f"127.0.0.1:{service.port}", "onetry")
    wait_until(lambda: service.accepted == 1, what="the named node's connection to the service")
    assert "refused by the connect rule" not in named.debug_log()


def test_a_bad_allowlocalpeer_stops_the_start(node) -> None:
    a = node("-allowlocalpeer=127.0.0.1")
    with pytest.raises(AssertionError, match="allowlocalpeer"):
        a.start()


@pytest.mark.skipif(not is_multiprocess(), reason="CleanCoin-node's connect broker")
def test_a_node_whose_connect_broker_died_goes_on_without_outgoing_connections(node) -> None:
    a, b = node(), node()
    a.start()
    b.start()
    def broker() -> dict:
        return a.rpc.getprocessinfo()["processes"][0]["connect_broker"]
    wait_until(lambda: broker()["status"] == "ready", what="the broker's start-up word")
    entry = broker()
    assert entry["pid"] > 0
    a.rpc.addnode(b.p2p_addr, "onetry")           # works while it lives
    wait_until(lambda: a.rpc.getconnectioncount() == 1, what="a's connection to b")
    a.rpc.disconnectnode(b.p2p_addr)
    wait_until(lambda: a.rpc.getconnectioncount() == 0, what="the disconnection")
    os.kill(entry["pid"], signal.SIGKILL)
    a.rpc.addnode(b.p2p_addr, "onetry")
    try:
        wait_until(lambda: "the connect broker has ended" in a.debug_log(), what="the failure in debug.log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {a.debug_log()[-3000:]}") from None
    assert a.rpc.getconnectioncount() == 0
    assert broker()["status"].startswith("gone: the connect broker has ended")
    assert a.rpc.getblockcount() == 0                # still serving
    assert a.process is not None and a.process.poll() is None
