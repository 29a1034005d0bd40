"""Who is listening at the other end of a TCP connection on this host.

A client that sends credentials (CleanCoin-cli's rpcpassword or cookie, an IPC login) to a
port on this host trusts whoever listens there. While the node is down, any local user may
listen on its RPC or IPC port first and collect what the next client sends (an rpcpassword
is good for as long as the conf file holds it). For unix sockets the listener's uid comes from
SO_PEERCRED (ipc/transport.py); TCP has no such option, but the kernel's socket table
(/proc/net/tcp, tcp6) shows, for the server's end of our own connection, the uid of the socket
that accepted it. A connection whose other end is not in this network namespace's table went
to another host, which nothing here can check; but a loopback connection's other end is always
there, so for one the table cannot show, the answer is no (fail closed).

Hand-written: no library reads these tables (psutil lists connections with pids, not the uid
of the socket's owner, and not for other users' sockets without root).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


class ForeignListener(Exception):
    """The other end of a local connection belongs to a user the client does not trust."""


@dataclass(frozen=True)
class Endpoint:
    """An address and port, IPv4 as IPv4-mapped IPv6 so that both tables compare alike."""

    address: ipaddress.IPv6Address
    port: int

    @classmethod
    def of(cls, sockaddr: tuple) -> Endpoint:        # type: ignore[type-arg]
        """From a socket's getsockname()/getpeername()."""
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if isinstance(address, ipaddress.IPv4Address):
            address = ipaddress.IPv6Address("::ffff:" + str(address))
        return cls(address, int(sockaddr[1]))


def _decode(field: str) -> Endpoint:
    """An address:port field of the table: each 32-bit word printed as a host-order number."""
    hex_address, hex_port = field.split(":")
    raw = b"".join(int(hex_address[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_address), 8))
    address = (ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + raw) if len(raw) == 4
               else ipaddress.IPv6Address(raw))
    return Endpoint(address, int(hex_port, 16))


class OpenTables:
    """The socket tables opened now and read afresh at each check (from offset 0: the kernel
    regenerates them), for a process that checks after it confined itself and has no /proc
    in its view (the connect broker, which checks a -ipcconnect=tcp wallet's listener for
    CleanCoin-node). They show the network namespace of the opener. A table that cannot be
    opened reads as empty, which check_server answers no for a loopback peer (fail closed)."""

    def __init__(self, paths: Iterable[str] = _TABLES) -> None:
        self._fds: list[int] = []
        #: A table that exists but could not be opened (ENOENT is a protocol this kernel lacks).
        self.incomplete = False
        # One file position per descriptor, shared by the broker's threads.
        self._reading = threading.Lock()
        for path in paths:
            try:
                self._fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                self.incomplete = self.incomplete or exc.errno != errno.ENOENT

    @property
    def fds(self) -> set[int]:
        return set(self._fds)

    def texts(self) -> tuple[list[str], bool]:
        """Each table's text now, and whether every table there is was read."""
        out, complete = [], not self.incomplete
        with self._reading:
            for fd in self._fds:
                chunks = []
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    while chunk := os.read(fd, 65536):
                        chunks.append(chunk)
                except OSError:
                    complete = False
                    continue
                out.append(b"".join(chunks).decode("ascii", "replace"))
        return out, complete and bool(out)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _texts(tables: Iterable[str] | OpenTables) -> tuple[list[str], bool]:
    """The tables' texts, and whether every table that exists was read (a missing one is a
    protocol this kernel lacks, tcp6 without IPv6; none read at all is not complete)."""
    if isinstance(tables, OpenTables):
        return tables.texts()
    out, complete = [], True
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                out.append(f.read())
        except OSError as exc:
            complete = complete and exc.errno == errno.ENOENT
    return out, complete and bool(out)


def _rows(texts: Iterable[str], port: int) -> Iterable[tuple[Endpoint, Endpoint, int]]:
    """The rows whose local port is `port` (the others are not decoded: a busy node's table
    has a row per peer, and the cli reads it before every request)."""
    suffix = f":{port:04X}"
    for text in texts:
        lines = text.splitlines()[1:]
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].endswith(suffix):
                yield _decode(fields[1]), _decode(fields[2]), int(fields[7])


def server_uid(sock: socket.socket, tables: Iterable[str] | OpenTables = _TABLES) -> int | None:
    """The uid owning the server's end of connected TCP socket `sock`, or None when that end
    is not on this host (not in this network namespace's table)."""
    return _server_uid(sock, _texts(tables)[0])


def _server_uid(sock: socket.socket, texts: Iterable[str]) -> int | None:
    ours, theirs = Endpoint.of(sock.getsockname()), Endpoint.of(sock.getpeername())
    for local, remote, uid in _rows(texts, theirs.port):
        if local == theirs and remote == ours:
            return uid
    return None


def check_server(sock: socket.socket, what: str, also: Iterable[int] = (),
                 tables: Iterable[str] | OpenTables = _TABLES) -> None:
    """Raise ForeignListener when the other end of `sock` is on this host and belongs to
    neither this user, nor root, nor a uid in `also` (the owner of the cookie read for it).
    Call it after connect and before the first byte with a secret is sent."""
    texts, complete = _texts(tables)
    uid = _server_uid(sock, texts)
    mine = os.geteuid()
    if uid is None:
        peer = Endpoint.of(sock.getpeername()).address
        if complete and not (peer.is_loopback or (peer.ipv4_mapped is not None and peer.ipv4_mapped.is_loopback)):
            return      # another host: nothing here can tell who listens there
        # Not in tables that could not all be read: it may be this host's own address (a
        # non-loopback one: eth0's), where another user may listen; until 12-07 such a peer
        # was taken for another host, and the login sent (fail open).
        if not complete:
            raise ForeignListener(f"refused {what}: cannot tell who listens there (the socket tables "
                                  "/proc/net/tcp and tcp6 could not be read). Nothing was sent")
        # A loopback connection's other end is always in this namespace's table: a table that
        # cannot be read, or lacks it, leaves the question open, and the answer is no.
        raise ForeignListener(f"refused {what}: cannot tell who listens there (its socket is not "
                              "in /proc/net/tcp or tcp6). Nothing was sent")
    if uid in (mine, 0, *also):
        return
    raise ForeignListener(f"refused {what}: the listener there belongs to uid {uid}, not to this "
                          f"user (uid {mine}) or root; another user may have taken the port while "
                          "the node was down. Nothing was sent")
