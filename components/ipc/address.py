"""IPC addresses as written on the command line: -ipcbind / -ipcconnect values."""

from __future__ import annotations

import os
from dataclasses import dataclass

# sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


class AddressError(ValueError):
    """An address that cannot be used, with the option it came from."""


@dataclass(frozen=True)
class Address:
    """An IPC address: a unix socket path or a TCP host and port."""

    kind: str          # "unix" or "tcp"
    path: str = ""     # unix
    host: str = ""     # tcp
    port: int = 0      # tcp

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def parse(text: str, default_unix_path: str) -> Address:
    """`unix`, `unix:PATH` or `tcp:HOST:PORT` ([IPv6] in brackets)."""
    if text == "unix":
        return _unix(default_unix_path)
    if text.startswith("unix:"):
        return _unix(os.path.abspath(text[5:]))
    if text.startswith("tcp:"):
        rest = text[4:]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise AddressError(f"'{text}': expected tcp:HOST:PORT with a port from 1 to 65535")
        return Address("tcp", host=host.strip("[]") or "127.0.0.1", port=int(port))
    raise AddressError(f"'{text}': expected unix, unix:PATH or tcp:HOST:PORT")


def _unix(path: str) -> Address:
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise AddressError(f"unix socket path '{path}' is {len(os.fsencode(path))} bytes long; "
                           f"the limit is {UNIX_PATH_MAX} (use -ipcbind=unix:SHORTER_PATH)")
    return Address("unix", path=path)
