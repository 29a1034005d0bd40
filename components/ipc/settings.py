"""The -ipc* options of every CleanCoin executable, parsed once into IpcSettings.

    -ipcbind=ADDR            listen (repeatable): unix | unix:PATH | tcp:HOST:PORT
    -ipcconnect=ADDR         use a running process instead of spawning one: unix[:PATH] |
                             tcp:HOST:PORT | auto (connect when a socket answers, else spawn)
    -ipcauth=USER:PASSWORD   TCP credentials (besides the cookie)
    -ipccert=FILE -ipckey=FILE   TLS for TCP listeners; a client pins -ipccert alone
    -ipcmaxconnections=N     clients served at once by each listener (default 16)
    -ipchandshaketimeout=S   seconds a client has to log in (TCP) or make a first call (unix)
    -debug=ipc               log every request and response
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl      # not at run time: see transport.py's note on TLS

from .address import Address, AddressError, parse
from .auth import Credentials, parse_ipcauth, read_cookie
from .connection import Connection
from ..interfaces.init import IpcPeer
from .transport import (
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, ListenOptions, client_tls, connect, server_tls,
)


@dataclass(frozen=True)
class IpcSettings:
    """The -ipc* options of a process, checked."""

    binds: tuple[str, ...] = ()
    connect: str | None = None
    auth: tuple[Credentials, ...] = ()
    cert: str | None = None
    key: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    debug: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: -ipccert and -ipckey loaded (parse_settings), for the listeners: read when the options
    #: are, before the process confines itself, whose view has neither file (until 12-07 they
    #: were read when the node began to listen, and CleanCoin-node with -ipccert never started:
    #: "Error: [Errno 2] No such file or directory").
    server_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    #: -ipccert loaded as the one certificate a client trusts (pinned), for the same reason
    #: (CleanCoin-gui's window connects, and reconnects, confined).
    client_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def listen_options(self, cookie: Credentials | None) -> ListenOptions:
        """Options for this process's listeners; `cookie` is added to the accepted logins."""
        creds = [*self.auth, *([cookie] if cookie else [])]
        return ListenOptions(self.debug, self.max_connections, creds, self.server_context, self.handshake_timeout)


def parse_settings(options: Mapping[str, Sequence[str]]) -> IpcSettings:
    """Build IpcSettings from already split `-name=value` options (name -> values)."""
    def one(name: str) -> str | None:
        values = options.get(name, ())
        return values[-1] if values else None

    try:
        max_conn = int(one("ipcmaxconnections") or DEFAULT_MAX_CONNECTIONS)
    except ValueError:
        raise AddressError("-ipcmaxconnections expects a number") from None
    if max_conn < 1:
        raise AddressError("-ipcmaxconnections must be at least 1")
    try:
        handshake = float(one("ipchandshaketimeout") or DEFAULT_HANDSHAKE_TIMEOUT)
    except ValueError:
        raise AddressError("-ipchandshaketimeout expects a number of seconds") from None
    if not 0 < handshake <= 3600:
        raise AddressError("-ipchandshaketimeout must be more than 0 and at most 3600 seconds")
    binds = tuple(options.get("ipcbind", ()))
    cert, key = one("ipccert"), one("ipckey")
    # A client gets -ipccert alone (docs/ipc.md: copy cert.pem, never key.pem, to it); a
    # TCP listener needs both (with the certificate alone it would listen in clear).
    if key and not cert:
        raise AddressError("-ipckey needs -ipccert")
    if cert and not key and any(b.startswith("tcp") for b in binds):
        raise AddressError("-ipccert and -ipckey go together for a TCP listener (-ipcbind=tcp:...)")
    try:
        auth = tuple(parse_ipcauth(v) for v in options.get("ipcauth", ()))
    except ValueError as exc:
        raise AddressError(str(exc)) from None
    server_context = client_context = None
    if cert:
        try:
            # The key only where this process listens on TCP: CleanCoin-gui passes -ipckey on
            # to the node it starts, and its window is not to hold the node's private key.
            server_context = server_tls(cert, key) if key and any(b.startswith("tcp") for b in binds) else None
            client_context = client_tls(cert)
        except OSError as exc:         # ssl.SSLError is one; ssl is not imported here (above)
            what = f"-ipccert={cert}" + (f", -ipckey={key}" if key else "")
            raise AddressError(f"{what}: cannot be loaded: {getattr(exc, 'strerror', None) or exc}") from None
    return IpcSettings(binds, one("ipcconnect"), auth, cert, key, max_conn, _debug_ipc(options), handshake,
                       server_context, client_context)


def _debug_ipc(options: Mapping[str, Sequence[str]]) -> bool:
    """-debug=ipc, or every category (-debug, -debug=1, -debug=all), unless -debugexclude=ipc:
    as the executables read -debug for their logger levels."""
    wanted = False
    for category in options.get("debug", ()):
        if category in ("ipc", "1", "all", ""):
            wanted = True
        elif category in ("0", "none"):
            wanted = False
    return wanted and "ipc" not in options.get("debugexclude", ())


async def open_peer(settings: IpcSettings, default_path: str, local: IpcPeer, cookie_dir: str,
                    spawn: Callable[[], Awaitable[Connection]], sock: socket.socket | None = None
                    ) -> Connection:
    """Reach the process this one needs: -ipcconnect's address, or spawn it.

    `auto` connects when the default unix socket answers and spawns otherwise. `sock` is a
    socket already connected to -ipcconnect's address (transport.open_socket).
    """
    if settings.connect is None:
        return await spawn()
    if settings.connect == "auto":
        try:
            return await connect(parse("unix", default_path), local, settings.debug)
        except AddressError:
            return await spawn()
    address: Address = parse(settings.connect, default_path)
    credentials = None
    tls: ssl.SSLContext | None = None
    if address.kind == "tcp":
        credentials = settings.auth[0] if settings.auth else read_cookie(cookie_dir)
        tls = settings.client_context
    return await connect(address, local, settings.debug, credentials, tls, sock)
