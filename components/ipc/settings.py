"""The -ipc* options of every CleanCoin executable, parsed once into IpcSettings.

    -ipcbind=ADDR            listen (repeatable): unix | unix:PATH | tcp:HOST:PORT
    -ipcconnect=ADDR         use a running process instead of spawning one: unix[:PATH] |
                             tcp:HOST:PORT | auto (connect when a socket answers, else spawn)
    -ipcauth=USER:PASSWORD   TCP credentials (besides the cookie)
    -ipccert=FILE -ipckey=FILE   TLS for TCP (a client pins -ipccert)
    -ipcmaxconnections=N     clients served at once by each listener (default 16)
    -ipchandshaketimeout=S   seconds a client has to log in (TCP) or make a first call (unix)
    -debug=ipc               log every request and response
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
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

    def listen_options(self, cookie: Credentials | None) -> ListenOptions:
        """Options for this process's listeners; `cookie` is added to the accepted logins."""
        creds = [*self.auth, *([cookie] if cookie else [])]
        tls = server_tls(self.cert, self.key) if self.cert and self.key else None
        return ListenOptions(self.debug, self.max_connections, creds, tls, self.handshake_timeout)


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
    if bool(one("ipccert")) != bool(one("ipckey")):
        raise AddressError("-ipccert and -ipckey go together")
    try:
        auth = tuple(parse_ipcauth(v) for v in options.get("ipcauth", ()))
    except ValueError as exc:
        raise AddressError(str(exc)) from None
    return IpcSettings(tuple(options.get("ipcbind", ())), one("ipcconnect"), auth, one("ipccert"),
                       one("ipckey"), max_conn, _debug_ipc(options), handshake)


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
        tls = client_tls(settings.cert) if settings.cert else None
    return await connect(address, local, settings.debug, credentials, tls, sock)
