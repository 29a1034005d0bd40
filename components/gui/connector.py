"""Reaching an already running node again after this process confined itself.

A confined GUI may not connect(2) anywhere new, and its filesystem view has no node.sock
(whose directory also holds the node's cookie and chain). So before it confines itself, a
GUI attached with -ipcconnect forks this small helper: it can do exactly one thing, connect
to the one address it was given, and hand the connected socket back (SCM_RIGHTS). That is
how an attached GUI keeps working when its node goes away and comes back. The helper dies
with the GUI and holds nothing but the address.

Over TCP without -ipcauth the login is the node's cookie (`.ipccookie` in the data
directory), which a node writes anew at each start and which the confined window cannot see:
the helper reads it too, as CleanCoin-cli reads `.cookie` (ipc/auth.read_cookie: no link, a
regular file, at most 1 KiB, a cookie's form), and sends it with the socket. Before 12-07 the
window read it itself after confining itself, and an attached GUI over TCP never logged in.

The window asks only when its link is gone, so the helper ends the connection it handed out
before when it makes the next one (shutdown(2) on its own copy ends it for the window too) and
makes at most one every MIN_INTERVAL seconds. Before 12-07 it connected on every request and
kept nothing: a compromised window held as many connections to the node as it asked for (6 in
a few milliseconds in tests/gui/test_gui_attacks.py; over TCP each with the cookie to log in),
and the node's listener serves 16 at once, its other clients none beyond that.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from cleancoin.components.ipc.address import Address, AddressError
from cleancoin.components.ipc.auth import COOKIE_NAME
from cleancoin.components.ipc.transport import open_socket


class ConnectorError(Exception):
    """The helper could not connect (the node is not there yet), or is gone."""


class Connector:
    """The GUI's end of the helper."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid

    @classmethod
    def start(cls, address: Address, cookie_dir: str | None = None) -> "Connector":
        """Fork the helper (call before the process confines itself, while single-threaded).
        `cookie_dir`: the directory whose node cookie goes with each socket (TCP without
        -ipcauth), else None."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:       # the helper: never returns
            ours.close()
            _serve(theirs, address, parent, cookie_dir)
        theirs.close()
        ours.setblocking(False)
        return cls(ours, pid)

    def fileno(self) -> int:
        return self._sock.fileno()

    async def connect(self) -> tuple[socket.socket, str | None]:
        """A new socket connected to the address, with the node's cookie as the helper read
        it just before (None: not asked for); ConnectorError when it cannot connect or read
        the cookie."""
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
        cookie = message[len(_OK):].decode("ascii", errors="replace") if message.startswith(_OK) else ""
        return sock, cookie or None

    def stop(self) -> None:
        # End of file on its socket ends the helper (a confined GUI may not signal it).
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


#: The helper's answer with a socket: _OK, then the cookie's text when it was asked to read one.
_OK = b"ok"
#: The least time between two connections the helper makes: below the window's own pace
#: (gui/app.RECONNECT_SECONDS, 2 s), so a window that reconnects never waits for it.
MIN_INTERVAL = 0.5


def _serve(sock: socket.socket, address: Address, parent: int, cookie_dir: str | None) -> None:
    import prctl      # python-prctl, a dependency of the sandbox layer
    from cleancoin.components.common.private_files import read_cookie
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 65536)
        handed: socket.socket | None = None       # our copy of the last connection handed out
        last = float("-inf")
        while sock.recv(16):
            if handed is not None:
                _end(handed)
                handed = None
            time.sleep(max(0.0, last + MIN_INTERVAL - time.monotonic()))
            last = time.monotonic()
            try:
                cookie = read_cookie(os.path.join(cookie_dir, COOKIE_NAME))[0] if cookie_dir else ""
                conn = open_socket(address)
            except (AddressError, OSError) as exc:
                sock.send(str(exc).encode()[:4000])
                continue
            try:
                socket.send_fds(sock, [_OK + cookie.encode("ascii", errors="replace")], [conn.fileno()])
            except OSError:
                conn.close()
                raise
            handed = conn
    finally:
        os._exit(0)


def _end(conn: socket.socket) -> None:
    """End a connection handed out before, for every holder of it (the window's copy too)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass            # ended already (the node hung up)
    conn.close()
