"""Sockets for IPC: inherited descriptors, unix sockets, TCP with authentication and TLS.

Listeners run their own accept loop rather than asyncio's server, so that each connection can
be checked before Cap'n Proto sees a byte: a unix peer of another uid is refused
(SO_PEERCRED), and connections past -ipcmaxconnections are closed at once.

Limits before authentication (docs/ipc.md, "Limits"): each listener counts its own clients
(-ipcmaxconnections per listener, so TCP clients cannot take node.sock's places); a client
that has not logged in (TCP, TLS included) or made a first call (unix) within the handshake
deadline (-ipchandshaketimeout) is closed; a TCP client may send PRELOGIN_BYTES in all
before its login succeeds, and is closed past that; wrong logins are limited by
auth.LoginLimits. Every refusal is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# TLS (TCP IPC only) is imported where a context is made, not here: the wallet process that
# CleanCoin-node's zygote forks speaks IPC over a unix socket pair only, and its zygote keeps
# `ssl` out of its image (wallet_process.zygote_preload; 0.85 MiB of objects and OpenSSL's
# relocated data). asyncio works without it, as on a Python built without OpenSSL.
if TYPE_CHECKING:
    import ssl

from ..common.local_listener import ForeignListener, check_server
from .address import Address, AddressError
from .auth import Authenticator, Credentials, LoginLimits
from .connection import Connection, InitFactory, connect_init, serve, serve_init
from .debug_log import CallLog
from .specs import spec
from .stream import accepted_protocol, stream_on_socket
from ..interfaces.init import IpcPeer

LOG = logging.getLogger("cleancoin.ipc")

#: Clients one listener serves at once (-ipcmaxconnections).
DEFAULT_MAX_CONNECTIONS = 16
#: Seconds a client has to log in (TCP, TLS handshake included) or make its first call (unix).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Bytes a TCP client may send before it has logged in: a login (bootstrap, the call, its
#: finish) is a few hundred. Without this bound KJ read a whole message of up to the
#: traversal limit (64 MiB) from a client that had proven nothing: 16 such clients made a
#: listening process hold 1 GiB.
PRELOGIN_BYTES = 64 * 1024
#: Seconds between deciding to close a client and closing it: its last answer goes out first.
_CLOSE_AFTER = 0.1
#: Seconds a closing connection may take to flush its last answer before it is cut.
_CLOSE_GRACE = 1.0

async def stream_from_fd(fd: int) -> Any:
    """A capnp stream on an inherited, connected socket descriptor (the socket pair a spawned component is started with)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return await stream_on_socket(sock)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


@dataclass
class ListenOptions:
    """Options shared by all listeners of a process (each listener counts its own clients;
    wrong logins are counted for the process as a whole)."""

    debug: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS                  # per listener
    credentials: list[Credentials] = field(default_factory=list)   # TCP only, required there
    tls: ssl.SSLContext | None = None                               # TCP only
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    logins: LoginLimits = field(default_factory=LoginLimits)


@dataclass
class Listener:
    """A bound, listening socket, its accept loop and the clients it serves now."""

    address: Address
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    #: The clients it serves now, by the future that resolves when each one's place is free.
    active: dict[asyncio.Future[None], "_Session"] = field(default_factory=dict)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.sock.close()
        if self.address.kind == "unix":
            # A confined node cannot remove a socket it bound before confining itself outside
            # its view (-ipcbind=unix:PATH): the next start removes it as stale.
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.unlink(self.address.path)


def _bind_unix(address: Address) -> socket.socket:
    try:
        mode = os.lstat(address.path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISSOCK(mode):
        raise AddressError(f"{address}: the path exists and is not a socket")
    if mode is not None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(address.path)
        except OSError:
            os.unlink(address.path)   # left behind by a process that is gone
        else:
            raise AddressError(f"{address}: another process is already listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The socket is 0600 from the moment it exists, by the umask alone. No chmod afterwards:
    # a chmod by path follows a link, and where others may write the directory they can
    # replace the new socket with a link to any file of ours between bind and chmod (a socket
    # inode cannot be reached through the socket's descriptor: fchmod on it changes nothing
    # on the file system). What is there after bind is looked at, never followed.
    old = os.umask(0o177)
    try:
        sock.bind(address.path)
    finally:
        os.umask(old)
    try:
        made = os.lstat(address.path)
    except OSError:
        made = None
    if (made is None or not stat.S_ISSOCK(made.st_mode) or made.st_uid != os.geteuid()
            or stat.S_IMODE(made.st_mode) & 0o077):
        sock.close()
        raise AddressError(f"{address}: the socket was replaced as soon as it was made: another user "
                           "can write its directory; listen in a directory of your own (0700)")
    return sock


def _bind_tcp(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address.host, address.port))
    return sock


def bind(address: Address) -> socket.socket:
    """A listening socket on `address` (synchronous: a process that confines itself binds
    before, and serves on it after)."""
    try:
        sock = _bind_unix(address) if address.kind == "unix" else _bind_tcp(address)
    except OSError as exc:
        raise AddressError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def listen(address: Address, make_init: InitFactory, local: IpcPeer, options: ListenOptions,
                 sock: socket.socket | None = None) -> Listener:
    """Serve a fresh Init (behind Auth on TCP) to every client accepted on `address`, bound
    here or already (`sock`, from `bind`)."""
    if address.kind == "tcp" and not options.credentials:
        raise AddressError(f"{address}: a TCP listener needs credentials (cookie or -ipcauth)")
    if sock is None:
        sock = bind(address)
    listener = Listener(address, sock)
    listener.task = asyncio.get_running_loop().create_task(
        _accept_loop(listener, make_init, local, options))
    LOG.info("ipc: listening on %s", address)
    return listener


async def _accept_loop(listener: Listener, make_init: InitFactory, local: IpcPeer,
                       options: ListenOptions) -> None:
    loop = asyncio.get_running_loop()
    setups: set[asyncio.Task[None]] = set()
    while True:
        try:
            conn, peer = await loop.sock_accept(listener.sock)
        except OSError as exc:
            LOG.warning("ipc: accept on %s failed: %s", listener.address, exc)
            await asyncio.sleep(0.1)
            continue
        if listener.address.kind == "unix":
            uid = peer_uid(conn)
            if uid != os.getuid():
                LOG.warning("ipc: refused a client of uid %d on %s (only uid %d may connect)",
                            uid, listener.address, os.getuid())
                conn.close()
                continue
            source = f"uid {uid}"
        else:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            source = str(peer[0])
        if len(listener.active) >= options.max_connections and not _make_room(listener, options, source):
            LOG.warning("ipc: refused a client on %s: -ipcmaxconnections=%d reached (client %s)",
                        listener.address, options.max_connections, source)
            conn.close()
            continue
        done: asyncio.Future[None] = loop.create_future()
        session = _Session(listener.address, source, options.handshake_timeout, loop.time(), done)
        listener.active[done] = session
        done.add_done_callback(lambda fut: listener.active.pop(fut, None))
        # Set-up (a TLS handshake) runs apart from the accept loop: a client that connects
        # and says nothing must not hold up the others.
        setup = loop.create_task(_set_up(conn, session, make_init, local, options))
        session.setup = setup
        session.conn = conn
        setups.add(setup)
        setup.add_done_callback(setups.discard)


def _make_room(listener: Listener, options: ListenOptions, newcomer: str) -> bool:
    """A full listener closes the client that has waited longest without getting through
    the handshake (an honest client logs in, or calls, within milliseconds of connecting;
    one that has not is the likeliest to be holding a place); False when every client is
    through it."""
    waiting = [s for s in listener.active.values() if not s.ready]
    if not waiting:
        return False
    oldest = min(waiting, key=lambda s: s.accepted_at)
    LOG.warning("ipc: -ipcmaxconnections=%d reached on %s: closing the client from %s, which has not %s "
                "after %.1f s, for one from %s", options.max_connections, listener.address, oldest.source,
                "logged in" if listener.address.kind == "tcp" else "made a call",
                asyncio.get_running_loop().time() - oldest.accepted_at, newcomer)
    oldest.evict()
    return True


@dataclass
class _Session:
    """One accepted client until it ends: whether it got through the handshake (a login on
    TCP, a first call on a unix socket), and how to close it."""

    address: Address
    source: str
    handshake_timeout: float
    accepted_at: float
    slot: asyncio.Future[None]           # resolved: the listener's place is free again
    transport: asyncio.BaseTransport | None = None
    gate: Any = None                     # the stream's _Gate (its pre-login allowance)
    setup: asyncio.Task[None] | None = None     # the set-up (TLS handshake) until it is done
    conn: socket.socket | None = None            # the accepted socket
    ready: bool = False
    _deadline: asyncio.TimerHandle | None = None

    def start_deadline(self) -> None:
        """Close the client if it is not through the handshake `handshake_timeout` seconds
        after it was accepted (the TLS handshake counts)."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(self.accepted_at + self.handshake_timeout, self._expire)

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            if self._deadline is not None:
                self._deadline.cancel()
            if self.gate is not None:
                self.gate.lift_allowance()

    def too_much_before_login(self) -> None:
        """The client sent more than PRELOGIN_BYTES without logging in (its gate aborted it)."""
        LOG.warning("ipc: closing the client from %s on %s: more than %d bytes before a login",
                    self.source, self.address, PRELOGIN_BYTES)
        self.ended()        # (the gate has aborted the connection)

    def _expire(self) -> None:
        if self.ready or self.transport is None or self.transport.is_closing():
            return
        what = "login" if self.address.kind == "tcp" else "call"
        LOG.warning("ipc: closing the client from %s on %s: no %s within the handshake deadline (%g s)",
                    self.source, self.address, what, self.handshake_timeout)
        self.transport.abort()
        self.ended()

    def evict(self) -> None:
        """Close now, to free the place (also in the middle of a TLS handshake)."""
        if self.transport is not None:
            self.transport.abort()
        else:
            # Still being set up, or not even started: the set-up is cancelled, and the socket
            # closed once the cancellation has run (a set-up never started never closes it).
            if self.setup is not None and not self.setup.done():
                self.setup.cancel()
            if self.conn is not None:
                asyncio.get_running_loop().call_soon(self.conn.close)
        self.ended()

    def close_soon(self) -> None:
        """Close after the answer being sent now has left (cut after a grace period if the
        client does not read it)."""
        transport = self.transport
        if transport is None:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(_CLOSE_AFTER, transport.close)
        loop.call_later(_CLOSE_AFTER + _CLOSE_GRACE, transport.abort)
        self.ended()

    def ended(self) -> None:
        """The client is gone or being closed: its place is free."""
        if self._deadline is not None:
            self._deadline.cancel()
        if not self.slot.done():
            self.slot.set_result(None)


class _MarksFirstCall:
    """An Init whose first called method marks the session ready (unix: the handshake)."""

    def __init__(self, inner: Any, session: _Session) -> None:
        self._inner = inner
        self._session = session

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name != "close":              # `close` is the server's own, at the end
            self._session.mark_ready()
        return value


async def _set_up(conn: socket.socket, session: _Session, make_init: InitFactory, local: IpcPeer,
                  options: ListenOptions) -> None:
    try:
        await _serve_accepted(conn, session, make_init, local, options)
    except (OSError, asyncio.TimeoutError) as exc:       # ssl.SSLError is an OSError
        LOG.info("ipc: client from %s on %s dropped during set-up: %s", session.source, session.address,
                 exc or type(exc).__name__)
        conn.close()
        session.ended()


async def _serve_accepted(conn: socket.socket, session: _Session, make_init: InitFactory, local: IpcPeer,
                          options: ListenOptions) -> None:
    address = session.address

    async def run(stream: Any) -> None:
        try:
            if address.kind == "tcp":
                log = CallLog(local, enabled=options.debug)
                auth = Authenticator(options.credentials, make_init, log, limits=options.logins,
                                     source=session.source, where=str(address),
                                     on_login=session.mark_ready, close=session.close_soon)
                await serve(stream, spec("Auth").server(auth, log), log)
            else:
                await serve_init(stream, lambda log: _MarksFirstCall(make_init(log), session), local,
                                 options.debug)
        finally:
            session.ended()

    def protocol() -> asyncio.BaseProtocol:
        if address.kind != "tcp":
            return accepted_protocol(run)
        session.gate = accepted_protocol(run, allowance=PRELOGIN_BYTES, on_exceeded=session.too_much_before_login)
        return session.gate

    conn.setblocking(False)
    loop = asyncio.get_running_loop()
    tls = options.tls if address.kind == "tcp" else None
    remaining = max(0.001, session.accepted_at + session.handshake_timeout - loop.time())
    transport, _ = await loop.connect_accepted_socket(
        protocol, conn, ssl=tls, ssl_handshake_timeout=remaining if tls else None)
    session.transport = transport
    session.start_deadline()


def open_socket(address: Address) -> socket.socket:
    """A socket connected to `address` (synchronous: a process that confines itself connects
    before, and talks over it after)."""
    try:
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address.path)
                # The listener's side of the same-user rule: a socket path in a shared
                # directory may be another user's, who listened there first; nothing is sent
                # to a server that is not us (it would play the node to a wallet or a GUI).
                uid = peer_uid(sock)
                if uid != os.getuid():
                    raise AddressError(f"refused {address}: it is served by uid {uid}, not by this "
                                       f"user (uid {os.getuid()}), who may have listened there first")
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout=10)
            try:
                # The same rule for a port on this host: the login (a password, the cookie)
                # goes only to a listener of this user or root (common/local_listener.py).
                check_server(sock, str(address))
            except ForeignListener as exc:
                sock.close()
                raise AddressError(str(exc)) from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise AddressError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def connect(address: Address, local: IpcPeer, debug: bool, credentials: Credentials | None = None,
                  tls: ssl.SSLContext | None = None, sock: socket.socket | None = None) -> Connection:
    """Connect to a listening process (or use `sock`, from `open_socket`); TCP needs credentials."""
    if sock is None:
        sock = open_socket(address)
    try:
        stream = await stream_on_socket(sock, tls=tls if address.kind != "unix" else None,
                                        server_hostname=address.host if tls else None)
    except OSError as exc:
        sock.close()
        raise AddressError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    return await connect_init(stream, local, debug, credentials if address.kind == "tcp" else None)


class KeyFileUnsafe(OSError):
    """-ipckey's file is one that others may read or replace."""


def check_key_file(fd: int, path: str) -> None:
    """KeyFileUnsafe unless the open file `fd` (-ipckey's, `path`) belongs to this user or root
    and neither others nor its group may write it, nor others read it (ssh's rule for a private
    key, a group that reads it allowed: a service's group). Until 12-07 any key loaded silently:
    with a world-readable one another local user could serve the node's certificate on its port
    while the node restarted, and a remote client's pinning would pass."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileUnsafe(f"{path} is not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise KeyFileUnsafe(f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}) "
                            "or root: its owner can replace the key")
    loose = info.st_mode & (stat.S_IRWXO | stat.S_IWGRP)
    if loose:
        raise KeyFileUnsafe(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: "
                            f"{'others may read or write it' if info.st_mode & stat.S_IRWXO else 'its group may write it'}"
                            f"; chmod 600 {path}")


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """TLS for a TCP listener (-ipccert, -ipckey). The key file is checked (check_key_file) on
    the descriptor OpenSSL then reads, through /proc/self/fd: a file swapped after the check
    is not the one loaded."""
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        check_key_file(fd, key)
        ctx.load_cert_chain(cert, f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


def client_tls(cert: str) -> ssl.SSLContext:
    """TLS for a TCP client that trusts exactly the server certificate `cert` (pinned): the
    first certificate of the file, the listener's own, is the one trust anchor (a partial
    chain ends there), and the rest of a chain file (a CA's fullchain.pem) is not trusted. Until
    12-07 every certificate of the file was an anchor: with a CA's in it, any certificate that
    CA signed for the address passed."""
    import ssl
    with open(cert, "rb") as handle:
        text = handle.read(1 << 20).decode("ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ssl.SSLError(f"{cert} holds no PEM certificate")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=text[start:stop + len(end)] + "\n")
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
