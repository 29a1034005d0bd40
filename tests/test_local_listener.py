"""common/local_listener.py on real sockets: the server's end of a loopback connection is found
in the kernel's table with its owner's uid, for IPv4, IPv6 and IPv4 through a dual-stack
listener; a loopback connection whose server end is not in the table is refused. The other user's
listener is tests/functional/test_other_users.py::test_a_tcp_port_another_user_listens_on_gets_no_credentials."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cleancoin.components.common.local_listener import ForeignListener, OpenTables, check_server, server_uid


@contextmanager
def connected(family: socket.AddressFamily, listen_on: str, connect_to: str) -> Iterator[socket.socket]:
    server = socket.socket(family)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((listen_on, 0))
    server.listen(1)
    client = socket.create_connection((connect_to, server.getsockname()[1]), timeout=5)
    try:
        yield client
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(("family", "listen_on", "connect_to"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "::1"),
    (socket.AF_INET6, "::", "127.0.0.1"),       # IPv4 to a dual-stack listener: in tcp6, mapped
])
def test_the_server_end_of_a_local_connection_is_found_with_its_uid(family: socket.AddressFamily, listen_on: str,
                                                                     connect_to: str) -> None:
    with connected(family, listen_on, connect_to) as client:
        assert server_uid(client) == os.geteuid()
        check_server(client, "test")             # this user's listener: no refusal


def test_a_loopback_server_end_missing_from_the_table_is_refused(tmp_path: Path) -> None:
    """Not in the table: another host, not judged; but a loopback connection's other end is
    always there, so a table that lacks it (or cannot be read) fails closed."""
    table = tmp_path / "tcp"
    table.write_text("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n")
    with connected(socket.AF_INET, "127.0.0.1", "127.0.0.1") as client:
        assert server_uid(client, tables=[str(table)]) is None
        with pytest.raises(ForeignListener, match="cannot tell who listens there"):
            check_server(client, "127.0.0.1:1", tables=[str(table)])
        with pytest.raises(ForeignListener, match="cannot tell who listens there"):
            check_server(client, "127.0.0.1:1", tables=[str(tmp_path / "missing")])


def test_a_listener_of_another_uid_is_refused_unless_trusted(tmp_path: Path) -> None:
    """The same connection, its server end rewritten in a copy of the table as owned by uid
    4242: refused, and accepted when that uid is the cookie's owner."""
    with connected(socket.AF_INET, "127.0.0.1", "127.0.0.1") as client:
        port = client.getpeername()[1]
        lines = Path("/proc/net/tcp").read_text().splitlines()
        forged = [lines[0]]
        for line in lines[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[2] != "00000000:0000":
                fields[7] = "4242"
            forged.append(" ".join(fields))
        table = tmp_path / "tcp"
        table.write_text("\n".join(forged) + "\n")
        assert server_uid(client, tables=[str(table)]) == 4242
        with pytest.raises(ForeignListener, match="belongs to uid 4242, not to this user"):
            check_server(client, "127.0.0.1:1", tables=[str(table)])
        check_server(client, "127.0.0.1:1", also=(4242,), tables=[str(table)])


def _own_non_loopback_ipv4() -> str:
    """This host's source address for other hosts (a UDP connect sends nothing), or skip."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("203.0.113.1", 9))
        address = probe.getsockname()[0]
    except OSError as exc:
        pytest.skip(f"no route off this host: {exc}")
    finally:
        probe.close()
    if address.startswith("127."):
        pytest.skip("this host's only address is a loopback one")
    return address


def test_this_hosts_own_address_is_judged_only_from_tables_read_whole(tmp_path: Path) -> None:
    """A listener on this host's own non-loopback address (eth0's) looks like another host's
    when it is missing from the tables: fine when the tables were read (it is not here, so it
    is elsewhere), refused when a table that exists could not be read. Until 12-07 an
    unreadable table let such a peer pass as another host's (fail open), and the login went to
    whoever listened there."""
    address = _own_non_loopback_ipv4()
    table = tmp_path / "tcp"
    table.write_text("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n")
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    with connected(socket.AF_INET, address, address) as client:
        assert server_uid(client) == os.geteuid()
        check_server(client, "test")                                      # read whole: ours
        check_server(client, f"{address}:1", tables=[str(table)])         # read, not there: elsewhere
        with pytest.raises(ForeignListener, match="could not be read"):
            check_server(client, f"{address}:1", tables=[str(unreadable)])
        with pytest.raises(ForeignListener, match="could not be read"):
            check_server(client, f"{address}:1", tables=[str(table), str(unreadable)])
        with pytest.raises(ForeignListener, match="could not be read"):
            check_server(client, f"{address}:1", tables=OpenTables([str(table), str(unreadable)]))
        check_server(client, f"{address}:1", tables=OpenTables([str(table), str(tmp_path / "no-tcp6")]))
