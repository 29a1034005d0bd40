"""Reaching an already running node again after this process confined itself.

A confined GUI may not connect(2) anywhere new, and its filesystem view has no node.sock
(whose directory also holds the node's cookie and chain). So before it confines itself, a
GUI attached with -ipcconnect forks this small helper: it can do exactly one thing, connect
to the one address it was given, and hand the connected socket back (SCM_RIGHTS). That is
how an attached GUI keeps working when its node goes away and comes back. The helper dies
with the GUI and holds nothing but the address.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from cleancoin.components.ipc.address import Address, AddressError
from cleancoin.components.ipc.transport import open_socket


class ConnectorError(Exception):
    """The helper could not connect (the node is not there yet), or is gone."""


class Connector:
    """The GUI's end of the helper."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid

    @classmethod
    def start(cls, address: Address) -> "Connector":
        """Fork the helper (call before the process confines itself, while single-threaded)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:       # the helper: never returns
            ours.close()
            _serve(theirs, address, parent)
        theirs.close()
        ours.setblocking(False)
        return cls(ours, pid)

    def fileno(self) -> int:
        return self._sock.fileno()

    async def connect(self) -> socket.socket:
        """A new socket connected to the address, or ConnectorError."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._sock, b"c")
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self._sock.fileno(), lambda: done.done() or done.set_result(None))
        try:
            await asyncio.wait_for(done, 15)
        finally:
            loop.remove_reader(self._sock.fileno())
        message, fds, _flags, _addr = socket.recv_fds(self._sock, 4096, 1)
        if not message:
            raise ConnectorError("the connector helper is gone")
        if not fds:
            raise ConnectorError(message.decode(errors="replace"))
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock

    def stop(self) -> None:
        # End of file on its socket ends the helper (a confined GUI may not signal it).
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket, address: Address, parent: int) -> None:
    import prctl      # python-prctl, a dependency of the sandbox layer
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 65536)
        while sock.recv(16):
            try:
                conn = open_socket(address)
            except AddressError as exc:
                sock.send(str(exc).encode()[:4000])
                continue
            socket.send_fds(sock, [b"ok"], [conn.fileno()])
            conn.close()
    finally:
        os._exit(0)
