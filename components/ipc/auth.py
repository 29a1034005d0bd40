"""Authentication of TCP IPC clients: a cookie file or -ipcauth credentials.

A TCP listener's bootstrap capability is an `Auth` that offers nothing but `login`; the
process's Init is handed out only for the right credentials. Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

from .binding import PLAIN, InterfaceSpec, Method, capability_codec
from .debug_log import CallLog
from .errors import IpcAuthError
from . import schema

COOKIE_USER = "__cookie__"
COOKIE_NAME = ".ipccookie"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def matches(self, user: str, password: str) -> bool:
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_pass


def parse_ipcauth(text: str) -> Credentials:
    """-ipcauth=USER:PASSWORD."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("-ipcauth expects USER:PASSWORD")
    return Credentials(user, password)


def write_cookie(directory: str) -> Credentials:
    """A fresh random cookie in `directory`, mode 0600 from creation on (no window)."""
    path = os.path.join(directory, COOKIE_NAME)
    password = secrets.token_hex(32)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{COOKIE_USER}:{password}".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return Credentials(COOKIE_USER, password)


def read_cookie(directory: str) -> Credentials:
    """The cookie a client uses to log in to a process with this datadir."""
    with open(os.path.join(directory, COOKIE_NAME)) as handle:
        return parse_ipcauth(handle.read().strip())


class Authenticator:
    """The Auth implementation: `login` returns an Init for the right credentials."""

    def __init__(self, accepted: list[Credentials], make_init: object, log: CallLog) -> None:
        self._accepted = accepted
        self._make_init = make_init
        self._log = log

    async def login(self, user: str, password: str) -> object:
        if not any(c.matches(user, password) for c in self._accepted):
            raise IpcAuthError(f"login refused for user '{user}'")
        return self._make_init(self._log)   # type: ignore[operator]


def _init_spec() -> InterfaceSpec:
    from .specs import INIT
    return INIT


AUTH = InterfaceSpec("Auth", lambda: schema.load("auth").Auth, (
    Method("login", "login", (("user", PLAIN), ("password", PLAIN)), ("init", capability_codec(_init_spec)),
           secret=frozenset({"password"})),
))
