"""Authentication of TCP IPC clients: a cookie file or -ipcauth credentials.

A TCP listener's bootstrap capability is an `Auth` that offers nothing but `login`; the
process's Init is handed out only for the right credentials. Comparisons are constant-time.

Guessing is limited (`LoginLimits`): the logins of one connection are answered one at a
time, a wrong one after a pause, and after `max_failures` wrong ones the connection is
closed; failures are also charged to the client's address and to the whole process
(`FailureLimiter`), and while either has no allowance left a login is refused unchecked,
unless it is the cookie's (256 random bits: no rate of guessing finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ..common import private_files
from ..common.ratelimit import FailureLimiter, Rate
from .debug_log import CallLog
from .errors import IpcAuthError

LOG = logging.getLogger("cleancoin.ipc")

#: Wrong logins one connection may make; the last one's answer is followed by the close.
MAX_LOGIN_FAILURES = 3
#: Seconds a wrong login waits before it is answered (on its own connection only).
LOGIN_FAILURE_DELAY = 0.25
#: Wrong logins charged to one client address: a burst, then this many per second.
LOGIN_FAILURES_PER_SOURCE = Rate(burst=10, per_second=1.0)
#: Wrong logins charged to the whole process (all listeners, all addresses).
LOGIN_FAILURES_OVERALL = Rate(burst=50, per_second=5.0)
#: Seconds a login sent after the connection's last allowed one waits unanswered for the close.
_UNANSWERED = 3.0

COOKIE_USER = "__cookie__"
COOKIE_NAME = ".ipccookie"


@dataclass(frozen=True)
class Credentials:
    """A login a TCP IPC listener accepts (-ipcauth or the .ipccookie)."""

    user: str
    # Not in the repr: a dataclass prints every field, and a repr ends up in logs and tracebacks.
    password: str = field(repr=False)

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
    """A fresh random cookie in `directory`, mode 0600 from creation on (no window). Whatever
    lies at the temporary name is removed, never opened: the directory may be one a confined
    process writes (a wallet started on its own writes its cookie into the node's)."""
    path = os.path.join(directory, COOKIE_NAME)
    password = secrets.token_hex(32)
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{COOKIE_USER}:{password}".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return Credentials(COOKIE_USER, password)


def read_cookie(directory: str) -> Credentials:
    """The cookie a client uses to log in to a process with this datadir. The confined node
    writes that directory and chooses what lies there: read as CleanCoin-cli reads `.cookie`
    (private_files.read_cookie: no link, a regular file, at most 1 KiB, a cookie's form), else
    OSError (RefusedFile: "path: why"). Before 12-06 the whole file was read, whatever its size."""
    text, _owner = private_files.read_cookie(os.path.join(directory, COOKIE_NAME))
    return parse_ipcauth(text)


@dataclass
class LoginLimits:
    """How wrong logins are limited; one object per process, shared by its listeners."""

    max_failures: int = MAX_LOGIN_FAILURES
    failure_delay: float = LOGIN_FAILURE_DELAY
    failures: FailureLimiter = field(default_factory=lambda: FailureLimiter(
        LOGIN_FAILURES_PER_SOURCE, LOGIN_FAILURES_OVERALL))


def _shown_user(user: str) -> str:
    """A client-chosen user name fit for the log: quoted, escapes visible, bounded."""
    return repr(user[:64])


class Authenticator:
    """The Auth implementation of one connection: `login` returns an Init for the right
    credentials.

    `source` is the client's address (what failures are charged to), `where` the listener
    for log lines; `on_login` is called when a login succeeds, `close` to end the connection
    after too many failures.
    """

    def __init__(self, accepted: list[Credentials], make_init: object, log: CallLog, *,
                 limits: LoginLimits | None = None, source: str = "", where: str = "",
                 on_login: Callable[[], None] | None = None, close: Callable[[], None] | None = None) -> None:
        self._accepted = accepted
        self._make_init = make_init
        self._log = log
        self._limits = limits or LoginLimits()
        self._source = source
        self._where = where
        self._on_login = on_login
        self._close = close
        self._failures = 0
        self._closing = False
        # Pipelined logins wait for each other: a client gains nothing by sending many at once.
        self._one_at_a_time = asyncio.Lock()

    async def login(self, user: str, password: str) -> object:
        async with self._one_at_a_time:
            if self._closing:
                # The connection is being closed: no answer (the close ends this call).
                await asyncio.sleep(_UNANSWERED)
                raise IpcAuthError("login refused: too many failed logins on this connection")
            limited = not self._limits.failures.allowed(self._source)
            # While guessing is limited only the cookie is checked: a password someone chose
            # could be found by guessing on, the cookie (256 random bits) at no rate, and
            # checking it keeps a flood of wrong logins from locking its users out.
            accepted = [c for c in self._accepted if c.user == COOKIE_USER] if limited else self._accepted
            if any(c.matches(user, password) for c in accepted):
                if self._on_login is not None:
                    self._on_login()
                return self._make_init(self._log)   # type: ignore[operator]
            if limited:
                LOG.warning("ipc: refused a login from %s on %s unchecked: too many failed logins "
                            "(retry in %.0f s)", self._source, self._where,
                            self._limits.failures.retry_after(self._source))
                self._end()
                raise IpcAuthError("login refused: too many failed logins, try again later")
            self._failures += 1
            self._limits.failures.failed(self._source)
            LOG.warning("ipc: refused a login for user %s from %s on %s (%d of %d on this connection)",
                        _shown_user(user), self._source, self._where, self._failures, self._limits.max_failures)
            await asyncio.sleep(self._limits.failure_delay)
            if self._failures >= self._limits.max_failures:
                LOG.warning("ipc: %d failed logins: closing the connection from %s on %s",
                            self._failures, self._source, self._where)
                self._end()
            raise IpcAuthError(f"login refused for user {_shown_user(user)}")

    def _end(self) -> None:
        self._closing = True
        if self._close is not None:
            self._close()
