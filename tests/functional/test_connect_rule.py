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
import struct
import threading
import time

import pytest

import cloud_services
from cloud_services import ALL, PEER, SERVICES, SPELLINGS, CloudServices
from framework import CountingListener, is_multiprocess, wait_until


def _service() -> CountingListener:
    """A TCP listener on a kernel-chosen 127.0.0.1 port (outside the framework's range), that
    counts its clients: a stand-in for a local service."""
    return CountingListener(socket.create_server(("127.0.0.1", 0)))


@pytest.fixture
def service():
    s = _service()
    yield s
    s.sock.close()


def test_addnode_to_a_local_endpoint_not_named_at_start_is_refused(node, service: CountingListener) -> None:
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


@pytest.fixture
def cloud(tmp_path):
    reason = cloud_services.skip_reason()
    if reason:
        pytest.skip(reason)
    services = CloudServices(tmp_path)
    yield services
    services.close()


def _endpoint(address: str, port: int = cloud_services.PORT) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def test_cloud_metadata_services_are_refused_unless_named(node, cloud: CloudServices) -> None:
    """Attack: the node runs on a cloud VM, where the provider's metadata service hands the
    instance's credentials to whoever asks from inside it (stand-ins in a network namespace
    behind a veth, cloud_services.py). `addnode` to each service's address (the P2P connect
    path a compromised node, or a peer's gossip, steers). Before 12-07 only the link-local
    169.254.169.254 was refused: the node connected to AWS's fd00:ec2::254, Alibaba's
    100.100.100.200, Azure's 168.63.129.16, Google's fd20:ce::254 and Oracle's 192.0.0.192
    (each server accepted the connection and answered with the credentials). Now each is
    refused by the connect rule, naming the provider and -allowlocalpeer; an ordinary remote
    address in the same namespace is reached, and a service named at start is too.
    The same services spelled as IPv6 addresses a NAT64 gateway, a SIIT translator, a 6to4
    or a Teredo relay carries on to them (cloud_services.SPELLINGS: 64:ff9b::a9fe:a9fe,
    64:ff9b:1::6464:64c8, ::ffff:0:c000:c0, 2002:a9fe:a9fe::1, 2001:0:c633:6401::57c0:7eef):
    until 12-07 the node connected to all five (the stand-in answered each with the
    credentials); now each is refused, naming the form and the address it carries."""
    a = node()
    named = node(f"-allowlocalpeer={_endpoint(SERVICES['alibaba-metadata'])}")
    a.start()
    for address in ALL.values():
        a.rpc.addnode(_endpoint(address), "onetry")
    a.rpc.addnode(_endpoint(PEER), "onetry")
    assert cloud.wait_connections(PEER, 1), cloud.connections()         # the control
    wait_until(lambda: a.debug_log().count("refused by the connect rule") >= len(ALL)
               or any(n for address, n in cloud.connections().items() if address != PEER),
               what=f"the refusals in debug.log (connections: {cloud.connections()})")
    reached = {address: n for address, n in cloud.connections().items() if n and address != PEER}
    assert reached == {}, f"the node reached {reached}"
    log = a.debug_log()
    assert (f"refused by the connect rule: {_endpoint(SERVICES['alibaba-metadata'])} is a cloud provider's "
            "service (Alibaba Cloud's metadata service), and not an endpoint named at start (-connect, -addnode "
            "or -allowlocalpeer)") in log, log[-3000:]
    assert (f"refused by the connect rule: {_endpoint(SPELLINGS['nat64-link-local-imds'])} is the NAT64 form "
            "of 169.254.169.254, a link-local address, and not an endpoint named at start") in log, log[-3000:]
    reached = {address: n for address, n in cloud.connections().items() if n and address != PEER}
    assert reached == {}, f"the node reached {reached}"
    named.start()
    named.rpc.addnode(_endpoint(SERVICES["alibaba-metadata"]), "onetry")
    assert cloud.wait_connections(SERVICES["alibaba-metadata"], 1), named.debug_log()[-3000:]


# ---------------------------------------------------------------------- slow name resolution

class _SilentDns:
    """A DNS server that never answers: a UDP socket bound to port 53 of a 127.x address of
    its own (resolv.conf takes no port), and a resolv.conf naming only it, with glibc's
    longest wait per query (timeout:30, attempts:2: a minute per lookup). It stands in for the
    server of a name the operator configured that an attacker controls. It counts the queries."""

    def __init__(self, directory) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            address = f"127.{os.getpid() % 200 + 20}.{int.from_bytes(os.urandom(1), 'big')}.53"
            try:
                self.sock.bind((address, 53))
                break
            except OSError:
                continue
        self.address = address
        self.queries = 0
        self.conf = directory / "resolv.conf"
        self.conf.write_text(f"nameserver {address}\noptions timeout:30 attempts:2\n")
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                self.sock.recv(4096)
            except OSError:
                return
            self.queries += 1

    def wrap(self, node) -> None:
        """Run `node` in a mount namespace of its own whose /etc/resolv.conf is ours (the
        real node, its broker and wallet inherit it; nothing else on the host sees it)."""
        plain = node.args
        node.args = lambda extra=(): ["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(self.conf),
                                      *plain(extra)]


class _RebindingDns(_SilentDns):
    """An attacker's DNS server that rebinds: its first answer for any name is `first` (a
    public address), every later one `then` (127.0.0.1), each with TTL 0; AAAA queries get an
    empty answer. `answered` lists the A answers in order."""

    def __init__(self, directory, first: str, then: str) -> None:
        self.first, self.then, self.answered = first, then, []
        super().__init__(directory)

    def _run(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1
            end = 12
            while end < len(query) and query[end]:
                end += query[end] + 1               # the question's name, label by label
            qtype = struct.unpack(">H", query[end + 1:end + 3])[0]
            question = query[12:end + 5]
            header = query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 0, 0, 0)   # a response, no error
            if qtype == 1:                          # A
                address = self.then if self.answered else self.first
                self.answered.append(address)
                header = header[:6] + struct.pack(">H", 1) + header[8:]
                question += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(address)
            self.sock.sendto(header + question, client)


@pytest.fixture
def rebinding_dns(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a mount namespace and port 53 need root")
    dns = _RebindingDns(tmp_path, PEER, "127.0.0.1")
    yield dns
    dns.sock.close()


def test_a_name_that_rebinds_to_the_loopback_gets_the_address_it_connects_to_checked(
        node, cloud: CloudServices, rebinding_dns: _RebindingDns) -> None:
    """DNS rebinding: an attacker's DNS server answers a name with a public address first and
    with 127.0.0.1 from then on, TTL 0 (`addnode rebind.attack.test:80 onetry`, twice). A
    rule that checked one lookup and connected after another would pass the check on the
    public address and connect to the loopback. The name is looked up once per connection,
    and the address checked is the address connected to (connect_rule.connect_checked): the
    first addnode reaches the public stand-in (cloud_services.PEER), the second is refused as
    the loopback. Both executables (CleanCoin-node's broker resolves, CleanCoind itself); no
    hole was found (a regression test)."""
    a = node("-debug=net")
    rebinding_dns.wrap(a)
    a.start()
    a.rpc.addnode("rebind.attack.test:80", "onetry")
    assert cloud.wait_connections(PEER, 1), (rebinding_dns.answered, a.debug_log()[-2000:])
    a.rpc.addnode("rebind.attack.test:80", "onetry")
    wait_until(lambda: "refused by the connect rule" in a.debug_log(), what="the second connection's refusal")
    assert ("refused by the connect rule: 127.0.0.1:80 is a loopback address, and not an endpoint named "
            "at start") in a.debug_log()
    assert rebinding_dns.answered[0] == PEER and set(rebinding_dns.answered[1:]) == {"127.0.0.1"}
    assert cloud.connections().get(PEER) == 1


@pytest.fixture
def silent_dns(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a mount namespace and port 53 need root")
    dns = _SilentDns(tmp_path)
    yield dns
    dns.sock.close()


def test_names_that_never_resolve_hold_no_numeric_connect_and_no_stop(node, silent_dns: _SilentDns) -> None:
    """An attacker's DNS server that never answers, for names given to addnode (each the
    network's name of a peer, as an operator's script adds them): every lookup fails within
    the connect timeout with a clear line, the lookups still pending hold none of the slots
    of a numeric connect, and the node stops at once. Both executables (the broker resolves
    for CleanCoin-node, CleanCoind's own threads for it)."""
    a, b = node("-debug=net"), node()
    silent_dns.wrap(a)
    a.start()
    b.start()
    # Two rounds of ten names (the node dials at most its 10 outbound slots at once, and
    # gives each up after its connect timeout, 5 s): on the old code, twenty lookups pending
    # at the server, each holding a slot of the broker (16) or a worker of CleanCoind's
    # executor (6), and the numeric connect failed ("busy", or timed out waiting for one).
    for round_ in range(2):
        for i in range(10):
            a.rpc.addnode(f"peer{round_}x{i}.dns-attack.test:18444", "onetry")
        wait_until(lambda: silent_dns.queries >= 1, what="the queries at the silent server")
        time.sleep(7.5)
    started = time.monotonic()
    a.rpc.addnode(b.p2p_addr, "onetry")
    try:
        wait_until(lambda: a.rpc.getconnectioncount() == 1, timeout=15, what="a's numeric connection to b")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {a.debug_log()[-3000:]}") from None
    assert time.monotonic() - started < 10
    wait_until(lambda: "resolving peer0x0.dns-attack.test took longer than" in a.debug_log()
               or "names are being resolved" in a.debug_log(), timeout=15, what="the lookups' failure")
    started = time.monotonic()
    assert a.stop(timeout=60) == 0
    assert time.monotonic() - started < 15, "the stop waited on DNS"


def test_a_name_named_at_start_that_never_resolves_holds_up_neither_start_nor_connects(node, silent_dns: _SilentDns) -> None:
    """-addnode with a name whose DNS server never answers: the rule is built without it
    within START_RESOLVE_TIMEOUT (5 s; it then allows nothing for that name), the node's RPC
    is up and a numeric connect made (on the old code CleanCoind's start, and CleanCoin-node's
    broker's, waited on glibc for a minute)."""
    a, b = node("-addnode=peer.dns-attack.test:18444", "-debug=net"), node()
    silent_dns.wrap(a)
    b.start()
    started = time.monotonic()
    a.start()
    a.rpc.addnode(b.p2p_addr, "onetry")
    try:
        wait_until(lambda: a.rpc.getconnectioncount() >= 1, timeout=15, what="a's numeric connection to b")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {a.debug_log()[-3000:]}") from None
    assert time.monotonic() - started < 20
    assert silent_dns.queries >= 1               # it was looked up at the silent server
