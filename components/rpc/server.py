"""JSON-RPC over HTTP (aiohttp), in bitcoind's manner.

    auth = RpcAuth.from_options(netdatadir, rpcuser, rpcpassword)     # cookie unless a password
    endpoints, warnings = bind_endpoints(rpcbind, rpcallowip, rpcport)
    server = RpcServer(registry, auth, parse_allow(rpcallowip), endpoints)
    await server.start()            # writes <netdatadir>/.cookie (0600), binds
    await server.stop_requested.wait()   # the `stop` method (Registry.add_stop) sets it
    await server.stop()             # closes, deletes the cookie

A request goes through, in bitcoind's order: the client address against the allow list (403,
empty body); the path, "/" or "/wallet/<url-encoded name>" (404; 400 with a JSON-RPC error
when the name is not percent-encoded UTF-8); POST only (405); HTTP Basic auth (401 with
`WWW-Authenticate: Basic realm="jsonrpc"`, after a 250 ms pause when the credentials are
wrong; 429 with Retry-After, unchecked but for the cookie, while the failure limiter holds
the client's address or the whole server back); no Content-Encoding (415: bodies are never
inflated); the body size limit (413) and deadline, and what the user's requests in flight
may hold together (503 with Retry-After past `max_user_bytes`) and how many there are (503
past `max_user_requests`, half the connections); then JSON-RPC. Replies are charged to the
same budget as they are built (RPC_OUT_OF_MEMORY past it) and written, under the deadline,
before the request leaves the user's count:

- JSON-RPC 1.0 (no "jsonrpc" field, or "1.0"): the reply has "result", "error" and "id"; an error
  sets the HTTP status as bitcoind does: 400 for RPC_INVALID_REQUEST, 404 for
  RPC_METHOD_NOT_FOUND, 500 for any other code (parse errors included).
- JSON-RPC 2.0 ("jsonrpc": "2.0"): only one of "result" / "error", always HTTP 200 (bitcoind
  since v28); a request without "id" is a notification: executed, answered 204 with no body.
  A malformed request object (no method, ...) is still answered with HTTP 400, as bitcoind does.
- A batch (a JSON array) is always HTTP 200, one reply per non-notification in order; 204 when
  every member was a notification; "[]" for an empty batch. A batch of more than `max_batch`
  (1000) requests is refused as a whole: one RPC_INVALID_REQUEST error object, HTTP 400.
- A body that may hold more than `max_values` (200000) JSON values is refused unparsed the
  same way (jsonfmt.value_bound counts its separators).
- Malformed JSON: RPC_PARSE_ERROR "Parse error", HTTP 500, id null; a top-level value that is
  neither object nor array: RPC_PARSE_ERROR "Top-level object parse error".

Replies are `application/json` (exactly, with no charset, which some clients insist on) and end
with a newline, like bitcoind's. An unexpected exception is logged with its traceback and
answered with a fixed RPC_INTERNAL_ERROR message, never with its text.

With -rest, requests under /rest/ (components/node/rest.py) skip authentication, as
bitcoind's, but not the limits: they are counted and their replies charged as those of one
more user, REST_USER (at most MAX_REST_REQUESTS in flight, 503 "Work queue depth exceeded"
past it), built one at a time with the event loop given as long again in between, and
written under the same deadline (`_handle_rest`).

Connections are watched by http_guard.ConnectionGuard: -rpcservertimeout for the headers of
each request (and an idle keep-alive connection) and for its body, and a cap on connections.
docs/node.md ("RPC server limits") gives the limits, their defaults and why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cleancoin.components.rpc.aiohttp_web import web

from . import jsonfmt
from ..common.private_files import remove_own_file, write_cookie
from ..common.ratelimit import FailureLimiter, Rate
from .errors import (
    HTTP_BAD_METHOD,
    HTTP_BAD_REQUEST,
    HTTP_CONTENT_TOO_LARGE,
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_SERVER_ERROR,
    HTTP_NO_CONTENT,
    HTTP_NOT_FOUND,
    HTTP_OK,
    HTTP_REQUEST_TIMEOUT,
    HTTP_SERVICE_UNAVAILABLE,
    HTTP_TOO_MANY_REQUESTS,
    HTTP_UNAUTHORIZED,
    HTTP_UNSUPPORTED_MEDIA_TYPE,
    RPC_INVALID_REQUEST,
    RPC_OUT_OF_MEMORY,
    RPC_PARSE_ERROR,
    RpcError,
    legacy_http_status,
)
from .http_guard import ConnectionGuard, GuardedServer
from .registry import Registry, internal_error
from .whitelist import RpcWhitelist

LOG = logging.getLogger("cleancoin.rpc")

MAX_REQUEST_SIZE = 0x02000000          # bitcoind's MAX_SIZE: 32 MiB
COOKIE_USER = "__cookie__"
COOKIE_FILE = ".cookie"
WWW_AUTHENTICATE = 'Basic realm="jsonrpc"'
AUTH_FAILURE_DELAY = 0.25              # seconds, to deter brute forcing, as bitcoind
#: Wrong credentials charged to one client address (IPv6: its /64): a burst, then per second.
AUTH_FAILURES_PER_SOURCE = Rate(burst=10, per_second=1.0)
#: Wrong credentials charged to the whole server.
AUTH_FAILURES_OVERALL = Rate(burst=50, per_second=5.0)
#: -rpcservertimeout: seconds for a request's headers (and an idle connection), and for its body.
DEFAULT_SERVER_TIMEOUT = 30.0          # bitcoind's DEFAULT_HTTP_SERVER_TIMEOUT
#: Connections kept at once; past it the one waiting longest for a request is closed.
DEFAULT_MAX_CONNECTIONS = 256
#: Header lines of a request, and bytes in one (the request line may take aiohttp's 8190: a
#: wallet's name is in it). aiohttp's defaults, 128 of 8190 bytes, let a client without
#: credentials make the node hold ~1 MB for each connection whose headers it does not end
#: (285 MiB for 200); bitcoind allows 8192 bytes of headers in all.
MAX_HEADERS = 24
MAX_HEADER_FIELD_SIZE = 4096
#: Requests in one batch (bitcoind has no bound; geth's default is the same 1000).
MAX_BATCH_SIZE = 1000
#: JSON values in one request body, as jsonfmt.value_bound counts them before the parse.
#: The parse runs on the event loop P2P shares, and a value costs 50 to 100 bytes once parsed
#: (a non-integer 0.7 us of CPU): a 30 MiB body of 8 million `1.5` took 5.9 s and 1 GiB.
#: A full batch of 1000 calls of a few parameters holds some 10000 values.
MAX_REQUEST_VALUES = 200_000
#: What one user's requests in flight may hold together: their bodies as they arrive, then
#: PARSED_VALUE_BYTES for each value a body may hold. A user's slow bodies were held whole
#: until the body deadline: 12 connections sending 24 MiB each, 290 MiB (256: 8 GiB).
MAX_USER_BYTES_IN_FLIGHT = 64 * 1024 * 1024
#: Requests one user may have in flight at once, as a share of the connections: the rest stay
#: for others. A request is in flight from its headers on, and a connection in a request is
#: never closed to make room, so one user holding every connection (a byte of a body on each)
#: locked everyone else out until the body deadline.
USER_SHARE_OF_CONNECTIONS = 0.5
#: What a parsed JSON value is charged (a float that keeps its text ~90 bytes, an empty
#: object ~70, a small int in a list 8).
PARSED_VALUE_BYTES = 64
JSON_CONTENT_TYPE = "application/json"
#: The ledger key REST requests are counted and charged under (-rest): REST clients send no
#: credentials, so they share one count and one budget, as one more user. An RPC user name
#: cannot hold a colon (Basic auth splits at the first), so no user shares this key.
REST_USER = ":rest"
#: REST requests in flight at once: bitcoind's work queue (-rpcworkqueue, 16), past which it
#: answers 503 "Work queue depth exceeded" as here.
MAX_REST_REQUESTS = 16
#: Client addresses whose -rpcallowip verdict the server remembers (RpcServer._client_allowed).
ALLOWED_MEMO = 1024
#: Bytes of a reply handed to the transport at a time (it waits for the socket past 64 KiB).
REPLY_SLICE = 256 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


# -- authentication --------------------------------------------------------------------------


def _ordinal(number: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th"."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


class RpcAuth:
    """HTTP Basic credentials: the cookie file, -rpcuser/-rpcpassword and -rpcauth lines.

    Passwords are kept only as HMAC-SHA256 under a random salt and compared in constant time,
    as bitcoind does. `start()` writes the cookie (`__cookie__:<64 hex>`, mode 0600, through a
    temporary file and a rename; refused where another user could replace it); `stop()`
    deletes it, only if this process wrote it and the name is still that file.
    """

    def __init__(self, *, cookie_path: str | None = None, user: str | None = None,
                 password: str | None = None, rpcauth: Iterable[str] = ()) -> None:
        self.cookie_path = cookie_path
        self._entries: list[tuple[str, str, str]] = []      # (user, salt, hmac hex)
        self._cookie_written = False
        self._cookie_file: os.stat_result | None = None
        self.cookie_password: str | None = None
        if password:
            self._add_plain(user or "", password)
        for number, line in enumerate(rpcauth, 1):
            user_part, sep, salted = line.partition(":")
            salt, dollar, digest = salted.partition("$")
            if not sep or not dollar or not user_part or not salt or not digest:
                # Never the value: the usual mistake is a plaintext password where the
                # salted hash belongs, and this text goes to stderr and debug.log (bitcoind
                # says only "Invalid -rpcauth argument."). Which one and the shape are enough.
                raise ValueError(f"Invalid -rpcauth argument (the {_ordinal(number)}): expected USER:SALT$HASH "
                                 "with SALT$HASH the HMAC-SHA256 of the password (the value is not shown: it "
                                 "may be a password)")
            self._entries.append((user_part, salt, digest.lower()))

    @classmethod
    def from_options(cls, netdatadir: str, rpcuser: str = "", rpcpassword: str = "",
                     rpcauth: Iterable[str] = (), rpccookiefile: str | None = None) -> "RpcAuth":
        """bitcoind's choice: the cookie only when no -rpcpassword is set."""
        cookie = None
        if not rpcpassword:
            cookie = os.path.join(netdatadir, rpccookiefile or COOKIE_FILE)
        return cls(cookie_path=cookie, user=rpcuser, password=rpcpassword, rpcauth=rpcauth)

    def _add_plain(self, user: str, password: str) -> None:
        salt = secrets.token_hex(16)
        self._entries.append((user, salt, _hmac_hex(salt, password)))

    @property
    def has_credentials(self) -> bool:
        return bool(self._entries)

    def start(self) -> None:
        """Write the cookie (private_files.write_cookie: UnsafeFileError where another user
        could replace it) and accept its credentials."""
        if not self.cookie_path or self._cookie_written:
            return
        password = secrets.token_hex(32)
        self._cookie_file = write_cookie(self.cookie_path, f"{COOKIE_USER}:{password}")
        self._cookie_written = True
        self.cookie_password = password
        self._add_plain(COOKIE_USER, password)
        LOG.info("Generated RPC authentication cookie %s", self.cookie_path)

    def stop(self) -> None:
        """Forget the cookie and remove its file, only if the name is still the file written
        (since 12-07: before, whatever another user had put there was removed)."""
        if self._cookie_written and self.cookie_path:
            if self._cookie_file is not None and not remove_own_file(self.cookie_path, self._cookie_file):
                LOG.warning("The RPC cookie %s is no longer the file this node wrote; it is left in place",
                            self.cookie_path)
            self._cookie_written = False
            self._cookie_file = None
            self._entries = [e for e in self._entries if e[0] != COOKIE_USER]
            self.cookie_password = None

    def check(self, header: str | None, *, cookie_only: bool = False) -> str | None:
        """The user name for a valid `Authorization` header, else None. `cookie_only`: only
        the cookie's credentials are compared (while guessing is limited: see RpcServer)."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user_b, sep, password_b = decoded.partition(b":")
        if not sep:
            return None
        user = user_b.decode("utf-8", "replace")
        password = password_b.decode("utf-8", "surrogateescape")
        ok = False
        for entry_user, salt, digest in self._entries:
            if cookie_only and entry_user != COOKIE_USER:
                continue
            same_user = hmac.compare_digest(entry_user.encode(), user_b)
            same_pass = hmac.compare_digest(_hmac_hex(salt, password), digest)
            ok |= same_user and same_pass
        return user if ok else None


def _hmac_hex(salt: str, password: str) -> str:
    return hmac.new(salt.encode(), password.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


# -- options: -rpcallowip, -rpcbind, -rpcport -----------------------------------------------


def parse_allow(specs: Iterable[str], *, include_loopback: bool = True) -> list[Network]:
    """-rpcallowip values -> networks. bitcoind always allows loopback on top of them.

    A value is an IP (1.2.3.4, ::1), a network/CIDR (10.0.0.0/8) or a network/netmask
    (1.2.3.0/255.255.255.0). ValueError with bitcoind's message for anything else.
    """
    nets: list[Network] = list(LOOPBACK_NETWORKS) if include_loopback else []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"Invalid -rpcallowip subnet specification: {spec}. Valid values are a single IP "
                "(e.g. 1.2.3.4), a network/netmask (e.g. 1.2.3.4/255.255.252.0), or a network/CIDR "
                "(e.g. 1.2.3.4/24).") from None
    return nets


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """bitcoind's SplitHostPort: "host", "host:port", "[v6]", "[v6]:port", bare "v6"."""
    host, port = text, default_port
    colon = text.rfind(":")
    bracketed = text.startswith("[") and "]" in text
    # A port follows the last colon when the host is bracketed or has no other colon.
    if colon != -1 and (bracketed and text.rfind("]") < colon or text.count(":") == 1):
        port_text = text[colon + 1:]
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"Invalid port in {text!r}")
        host, port = text[:colon], int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def bind_endpoints(rpcbind: Sequence[str], rpcallowip: Sequence[str], rpcport: int
                   ) -> tuple[list[tuple[str, int]], list[str]]:
    """Where to listen, and warnings to log, by bitcoind's rule.

    Loopback (::1 and 127.0.0.1) unless both -rpcallowip and -rpcbind are given: -rpcbind alone
    is ignored ("refusing to allow everyone to connect").
    """
    warnings: list[str] = []
    if not (rpcallowip and rpcbind):
        if rpcallowip:
            warnings.append("option -rpcallowip was specified without -rpcbind; this doesn't usually make sense")
        if rpcbind:
            warnings.append("option -rpcbind was ignored because -rpcallowip was not specified, "
                            "refusing to allow everyone to connect")
        return [("::1", rpcport), ("127.0.0.1", rpcport)], warnings
    return [split_host_port(spec, rpcport) for spec in rpcbind], warnings


def client_allowed(ip: str, allow: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in allow)


# -- JSON-RPC requests -----------------------------------------------------------------------

_NO_ID = object()


@dataclass
class _Request:
    """One JSON-RPC request of a call or a batch."""

    method: str
    params: Any
    id: Any            # _NO_ID when the request has no "id"
    version: str       # "1.0" or "2.0"

    @property
    def is_notification(self) -> bool:
        return self.id is _NO_ID and self.version == "2.0"


class _InvalidRequest(Exception):
    def __init__(self, message: str, id_: Any, version: str) -> None:
        super().__init__(message)
        self.error = RpcError(RPC_INVALID_REQUEST, message)
        self.id = id_
        self.version = version


def _parse_request(value: Any) -> _Request:
    """bitcoind's JSONRPCRequest::parse."""
    if not isinstance(value, dict):
        raise _InvalidRequest("Invalid Request object", None, "1.0")
    id_ = value["id"] if "id" in value else _NO_ID
    version = "1.0"
    marker = value.get("jsonrpc")
    if marker is not None:
        if not isinstance(marker, str):
            raise _InvalidRequest("jsonrpc field must be a string", id_, version)
        if marker == "2.0":
            version = "2.0"
        elif marker != "1.0":
            raise _InvalidRequest("JSON-RPC version not supported", id_, version)
    method = value.get("method")
    if method is None:
        raise _InvalidRequest("Missing method", id_, version)
    if not isinstance(method, str):
        raise _InvalidRequest("Method must be a string", id_, version)
    params = value.get("params")
    if params is None:
        params = []
    elif not isinstance(params, (list, dict)):
        raise _InvalidRequest("Params must be an array or object", id_, version)
    return _Request(method, params, id_, version)


def _reply(version: str, result: Any, error: RpcError | None, id_: Any) -> dict[str, Any]:
    """bitcoind's JSONRPCReplyObj: both members in 1.0, only one in 2.0; no id if none was sent."""
    reply: dict[str, Any] = {"jsonrpc": "2.0"} if version == "2.0" else {}
    if error is None:
        reply["result"] = result
        if version != "2.0":
            reply["error"] = None
    else:
        if version != "2.0":
            reply["result"] = None
        reply["error"] = error.to_json()
    if id_ is not _NO_ID:
        reply["id"] = id_
    return reply


def _encode(reply: dict[str, Any]) -> str:
    """A reply as text; a result that is not JSON becomes an internal error, not a crash."""
    try:
        return jsonfmt.dumps(reply)
    except (TypeError, ValueError) as exc:
        LOG.error("RPC result is not JSON: %s", exc)
        version = "2.0" if reply.get("jsonrpc") == "2.0" else "1.0"
        return jsonfmt.dumps(_reply(version, None, internal_error(exc), reply.get("id", _NO_ID)))


# -- the server ------------------------------------------------------------------------------


class RpcServer:
    """JSON-RPC over HTTP for one Registry.

    `allow`: the networks (or strings) that may connect, used exactly as given; None is loopback
    only. `parse_allow(-rpcallowip values)` gives bitcoind's list (loopback always included).
    `binds`: (host, port) pairs, port 0 for any free port (`ports` tells which); `sockets`:
    those bound already (`bind_sockets`), served instead of binding `binds`.
    """

    def __init__(self, registry: Registry, auth: RpcAuth, allow: Iterable[Network | str] | None = None,
                 binds: Iterable[tuple[str, int]] = (("127.0.0.1", 0),), *,
                 max_request_size: int = MAX_REQUEST_SIZE, shutdown_timeout: float = 5.0,
                 auth_failure_delay: float = AUTH_FAILURE_DELAY,
                 server_timeout: float = DEFAULT_SERVER_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, max_batch: int = MAX_BATCH_SIZE,
                 max_values: int = MAX_REQUEST_VALUES, max_user_bytes: int = MAX_USER_BYTES_IN_FLIGHT,
                 max_user_requests: int | None = None, max_rest_requests: int = MAX_REST_REQUESTS,
                 auth_failures: FailureLimiter | None = None, rest: Any = None,
                 whitelist: RpcWhitelist | None = None,
                 sockets: list[tuple[str, int, socket.socket]] | None = None) -> None:
        self.registry = registry
        self.auth = auth
        # -rpcwhitelist: which methods each user may call (components/rpc/whitelist.py).
        self.whitelist = whitelist or RpcWhitelist()
        if allow is None:
            self.allow: list[Network] = list(LOOPBACK_NETWORKS)
        else:
            self.allow = [a if not isinstance(a, str) else ipaddress.ip_network(a, strict=False) for a in allow]
        self._allowed: dict[str, bool] = {}      # client address -> allowed (_client_allowed)
        self.binds = list(binds)
        self.max_request_size = max_request_size
        self.shutdown_timeout = shutdown_timeout
        self.auth_failure_delay = auth_failure_delay
        self.server_timeout = server_timeout
        self.max_batch = max_batch
        self.max_values = max_values
        self.max_user_bytes = max_user_bytes
        self.max_user_requests = (max_user_requests if max_user_requests is not None
                                  else max(1, int(max_connections * USER_SHARE_OF_CONNECTIONS)))
        # user -> requests in flight.
        self._user_requests: dict[str, int] = {}
        # user -> bytes its requests in flight hold (bodies, estimated parsed values).
        self._user_bytes: dict[str, int] = {}
        self.auth_failures = auth_failures or FailureLimiter(AUTH_FAILURES_PER_SOURCE, AUTH_FAILURES_OVERALL)
        self.guard = ConnectionGuard(server_timeout, max_connections)
        # -rest: an object with `async handle(request) -> RestReply` for paths under /rest/
        # (components/node/rest.py), served without authentication, as bitcoind serves them;
        # counted and charged here as the requests of one more user (REST_USER).
        self.rest = rest
        self.max_rest_requests = max(1, max_rest_requests)
        # One REST reply is built at a time, and not before the loop has had as long for
        # everything else as the last build took (_rest_next_at, loop time).
        self._rest_turn = asyncio.Lock()
        self._rest_next_at = 0.0
        # What REST_USER's ledger held when a REST reply last did not fit (None: since then
        # one was taken or dropped): until it holds less, REST requests are refused unbuilt.
        self._rest_full_at: int | None = None
        self.stop_requested = asyncio.Event()
        self.bound: list[tuple[str, int]] = []
        self._runner: web.BaseRunner | None = None
        # Bound already (`bind_sockets`, before the process confined itself), else by `bind`.
        self._sockets: list[tuple[str, int, socket.socket]] | None = sockets

    def _client_allowed(self, ip: str) -> bool:
        """`client_allowed(ip, self.allow)`, remembered per address (`allow` is fixed once
        the server is made): a keep-alive client sends every request from one address, and
        the parse took a few microseconds of each (issue #16). At most ALLOWED_MEMO addresses
        are kept (all forgotten when full: many addresses cost a parse each, as before)."""
        known = self._allowed.get(ip)
        if known is None:
            if len(self._allowed) >= ALLOWED_MEMO:
                self._allowed.clear()
            known = self._allowed[ip] = client_allowed(ip, self.allow)
        return known

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self.bound]

    @property
    def port(self) -> int:
        """The first bound port."""
        if not self.bound:
            raise RuntimeError("the RPC server is not listening")
        return self.bound[0][1]

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the RPC server is already started")
        self.auth.start()
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop,
                                   client_max_size=self.max_request_size)

        # aiohttp's own idle timer as a backstop of the guard's (same deadline). Bodies are
        # never inflated (auto_decompress): aiohttp inflated a `Content-Encoding: deflate` body
        # as it read it, also the rest of one it had answered 401 to, so a client without
        # credentials made the node inflate 1 GiB (0.8 s of CPU) per MiB it sent.
        server = GuardedServer(self._handle, guard=self.guard, request_factory=make_request,
                               access_log=None, keepalive_timeout=self.server_timeout, auto_decompress=False,
                               max_headers=MAX_HEADERS, max_field_size=MAX_HEADER_FIELD_SIZE)
        runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout, handle_signals=False)
        await runner.setup()
        self._runner = runner
        self.guard.start()
        try:
            await self._bind_all(runner)
        except BaseException:
            await self.stop()
            raise

    def bind(self) -> None:
        """Bind the listening sockets now (synchronous: a process that confines itself binds
        before, and `start` serves on them after). `start` calls it if nobody did."""
        if self._sockets is None:
            self._sockets = bind_sockets(self.binds)

    def descriptors(self) -> list[int]:
        """The bound sockets' descriptors (after `bind`)."""
        return [sock.fileno() for _, _, sock in self._sockets or ()]

    async def _bind_all(self, runner: web.AppRunner) -> None:
        self.bind()
        assert self._sockets is not None
        for host, port, sock in self._sockets:
            site = web.SockSite(runner, sock)
            await site.start()
            self.bound.append((host, port))
            LOG.info("Binding RPC on address %s port %d", host, port)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (up to shutdown_timeout), delete the cookie."""
        runner, self._runner = self._runner, None
        try:
            await self.guard.stop()
            if runner is not None:
                await runner.cleanup()
        finally:
            self.bound = []
            self.auth.stop()

    def request_stop(self) -> None:
        """Ask the owner to stop the server (sets `stop_requested`); the `stop` method calls it."""
        self.stop_requested.set()

    async def __aenter__(self) -> "RpcServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- HTTP ------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.guard.busy(request.protocol)
        try:
            return await self._handle_http(request)
        except web.HTTPException:
            raise
        except Exception:  # noqa: BLE001 - nothing a client sends may take the server down
            LOG.error("RPC request failed", exc_info=True)
            return _json_response(HTTP_INTERNAL_SERVER_ERROR,
                                  _encode(_reply("1.0", None, internal_error(), None)))
        finally:
            self.guard.idle(request.protocol)

    async def _handle_http(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip, peer_port = (peer[0], peer[1]) if isinstance(peer, tuple) else ("", 0)
        if not self._client_allowed(ip):
            LOG.debug("HTTP request from %s rejected: Client network is not allowed RPC access", ip)
            return web.Response(status=HTTP_FORBIDDEN)
        path = request.rel_url.raw_path
        if self.rest is not None and path.startswith("/rest/"):
            return await self._handle_rest(request, _peer_text(ip, peer_port))
        if path == "/":
            uri_wallet = None
        elif path.startswith("/wallet/"):
            uri_wallet = _wallet_name(path[len("/wallet/"):])
            if uri_wallet is None:
                error = RpcError(RPC_INVALID_REQUEST, "Invalid wallet name in the URI: not percent-encoded UTF-8")
                return _json_response(HTTP_BAD_REQUEST, _encode(_reply("1.0", None, error, None)))
        else:
            return web.Response(status=HTTP_NOT_FOUND)
        if request.method != "POST":
            return web.Response(status=HTTP_BAD_METHOD, text="JSONRPC server handles only POST requests")
        header = request.headers.get("Authorization")
        if header is None:
            return web.Response(status=HTTP_UNAUTHORIZED, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
        if not self.auth_failures.allowed(ip):
            # Only the cookie is checked: a check of a password someone chose could succeed
            # and let the guessing go on, but the cookie (256 random bits) is found at no
            # rate, and checking it keeps a flood of wrong passwords from locking
            # CleanCoin-cli out for as long as it lasts.
            user = self.auth.check(header, cookie_only=True)
            if user is None:
                wait = max(1, math.ceil(self.auth_failures.retry_after(ip)))
                LOG.warning("ThreadRPCServer refused a request from %s unchecked: too many failed "
                            "authentication attempts (retry in %d s)", _peer_text(ip, peer_port), wait)
                return web.Response(status=HTTP_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)},
                                    text=f"Too many failed authentication attempts; retry in {wait} s")
        else:
            user = self.auth.check(header)
        if user is None:
            self.auth_failures.failed(ip)
            LOG.warning("ThreadRPCServer incorrect password attempt from %s", _peer_text(ip, peer_port))
            await asyncio.sleep(self.auth_failure_delay)
            return web.Response(status=HTTP_UNAUTHORIZED, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            # Not inflated (see start); JSON-RPC clients send plain JSON, as bitcoind takes it.
            return web.Response(status=HTTP_UNSUPPORTED_MEDIA_TYPE,
                                text="Content-Encoding is not supported: send the JSON as it is")
        in_flight = self._user_requests.get(user, 0)
        if in_flight >= self.max_user_requests:
            LOG.warning("RPC: refused a request from %s: user %s has %d requests in flight (the limit is %d)",
                        _peer_text(ip, peer_port), _sanitize(user), in_flight, self.max_user_requests)
            return web.Response(status=HTTP_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
                                text="Too many requests of this user in flight; retry shortly")
        self._user_requests[user] = in_flight + 1
        charge = _Charge(self._user_bytes, user, self.max_user_bytes)
        # The body's storage, emptied in `finally` whatever still refers to the object: a
        # refused or timed-out read ends in an exception whose traceback keeps _read_body's
        # frame, and (when the read ran as wait_for's task, before 12-07) the finished task
        # and wait_for's frame made a cycle of it, which only the cyclic collector frees
        # (seen: 15 MiB bodies of refused requests held on after their 503, several at once).
        body = bytearray()
        reply: bytearray | None = None
        try:
            try:
                # asyncio.timeout, not wait_for: wait_for ran the read as a task of its own,
                # three more loop turns per request (issue #16: 6 of a forwarded call's 12).
                async with asyncio.timeout(self.server_timeout):
                    await self._read_body(request, charge, body)
                charge.add(PARSED_VALUE_BYTES * min(jsonfmt.value_bound(body), self.max_values + 1))
            except web.HTTPRequestEntityTooLarge:
                return web.Response(status=HTTP_CONTENT_TOO_LARGE)
            except asyncio.TimeoutError:
                LOG.info("RPC: closing the connection from %s: request body not received within "
                         "-rpcservertimeout (%g s)", _peer_text(ip, peer_port), self.server_timeout)
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=HTTP_REQUEST_TIMEOUT)
            except _OverBudget:
                LOG.warning("RPC: refused a request from %s: user %s's bodies in flight would hold more than "
                            "%d bytes", _peer_text(ip, peer_port), _sanitize(user), self.max_user_bytes)
                return web.Response(status=HTTP_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
                                    text="Too much of this user's request data in flight; retry shortly")
            context = {"uri_wallet": uri_wallet, "user": user, "peer": _peer_text(ip, peer_port), "server": self}
            status, reply = await self._process(body, context, charge)
            body.clear()
            if reply is None:
                return web.Response(status=status)
            reply += b"\n"
            return await self._send(request, status, reply, _peer_text(ip, peer_port))
        finally:
            body.clear()
            if reply is not None:
                # Its storage, as the body's: aiohttp's response object outlives the request.
                with contextlib.suppress(BufferError):      # a view of it still exported
                    reply.clear()
            charge.release()
            left = self._user_requests.get(user, 1) - 1
            if left > 0:
                self._user_requests[user] = left
            else:
                self._user_requests.pop(user, None)

    async def _read_body(self, request: web.BaseRequest, charge: "_Charge", body: bytearray) -> None:
        """The whole body into `body`, each piece charged to its user as it arrives
        (_OverBudget when the user's requests in flight would hold too much), at most
        max_request_size bytes. The caller owns `body` and empties it when done; it is used
        as it is, not copied to bytes (a second copy of up to 32 MiB)."""
        declared = request.content_length
        if declared is not None and declared > self.max_request_size:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_request_size, actual_size=declared)
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return
            if len(body) + len(chunk) > self.max_request_size:
                raise web.HTTPRequestEntityTooLarge(max_size=self.max_request_size,
                                                    actual_size=len(body) + len(chunk))
            charge.add(len(chunk))
            body += chunk

    async def _handle_rest(self, request: web.BaseRequest, peer: str) -> web.StreamResponse:
        """A request under /rest/: counted and charged as REST_USER's, as a user's JSON-RPC
        requests are.

        - At most max_rest_requests in flight: past it 503 "Work queue depth exceeded"
          (bitcoind's answer when its work queue is full).
        - Replies are built one at a time, and the next waits as long as the last took, so
          REST has at most half of the event loop while anything else waits: a block's JSON
          takes the loop for 0.7 s, and forty at once held every RPC call and P2P message
          up for 28 s (taking turns without the pause, each await of an RPC call still let
          one more be built: 3 to 5 s for getblockcount). A client gone while it waited is
          not built for.
        - A reply that would pass the budget (max_user_bytes) is answered 503, and so is
          every REST request after it, before it is built, until REST_USER's ledger holds
          less than when that happened (a reply was taken, or dropped at the deadline).
        - The reply is written under -rpcservertimeout while it stays charged (_send).

        Refusals are logged at debug level: the clients are anonymous and choose how often."""
        in_flight = self._user_requests.get(REST_USER, 0)
        if in_flight >= self.max_rest_requests:
            LOG.debug("RPC: refused a REST request from %s: %d in flight (the limit is %d)", peer, in_flight,
                      self.max_rest_requests)
            return web.Response(status=HTTP_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
                                text="Work queue depth exceeded")
        self._user_requests[REST_USER] = in_flight + 1
        charge = _Charge(self._user_bytes, REST_USER, self.max_user_bytes)
        try:
            loop = asyncio.get_running_loop()
            async with self._rest_turn:
                # Whatever else is ready runs first, and for as long as the last build took.
                await asyncio.sleep(max(0.0, self._rest_next_at - loop.time()))
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=HTTP_SERVICE_UNAVAILABLE)    # gone while it waited: not built
                held = self._user_bytes.get(REST_USER, 0)
                if self._rest_full_at is not None and held >= self._rest_full_at:
                    LOG.debug("RPC: refused a REST request from %s unbuilt: REST replies in flight hold %d bytes",
                              peer, held)
                    return self._rest_too_large()
                self._rest_full_at = None
                started = loop.time()
                try:
                    reply = await self.rest.handle(request, room=self.max_user_bytes - held)
                finally:
                    self._rest_next_at = 2 * loop.time() - started
                try:
                    charge.add(len(reply.body))
                except _OverBudget:
                    # A reply too large for the whole budget says nothing about the next
                    # ones: only replies held by others make later requests wait.
                    self._rest_full_at = held if held > 0 else None
                    LOG.info("RPC: refused a REST reply of %d bytes to %s: REST replies in flight would hold more "
                             "than %d bytes; refusing REST requests until some are read", len(reply.body), peer,
                             self.max_user_bytes)
                    return self._rest_too_large()
            return await self._send(request, reply.status, reply.body, peer, reply.content_type, reply.charset)
        finally:
            charge.release()
            left = self._user_requests.get(REST_USER, 1) - 1
            if left > 0:
                self._user_requests[REST_USER] = left
            else:
                self._user_requests.pop(REST_USER, None)

    def _rest_too_large(self) -> web.Response:
        return web.Response(status=HTTP_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
                            text=f"Reply too large: the REST replies in flight would hold more than "
                                 f"{self.max_user_bytes} bytes; retry once they are read\r\n")

    async def _send(self, request: web.BaseRequest, status: int, reply: bytes | bytearray, peer: str,
                    content_type: str = JSON_CONTENT_TYPE, charset: str | None = None) -> web.StreamResponse:
        """Write the reply here, not after the handler returns, so that it stays charged to its
        user until the transport has taken it (a client that does not read kept a reply the
        node had built for as long as the connection lasted, uncharged); within
        -rpcservertimeout, or the connection is closed."""
        response: web.StreamResponse
        if len(reply) <= REPLY_SLICE:
            # Headers and body in one send, as before (a StreamResponse sends its headers at
            # once: a client saw a reply cut after them when the node was killed in between).
            response = web.Response(status=status, body=reply, content_type=content_type, charset=charset)
        else:
            response = web.StreamResponse(status=status)
            response.content_type = content_type
            if charset is not None:
                response.charset = charset
            response.content_length = len(reply)

        async def write() -> None:
            await response.prepare(request)
            if not isinstance(response, web.Response):
                # In slices: the transport copies what the socket does not take at once, and
                # aiohttp joined headers and a whole body first (a 64 MiB batch reply: two
                # more copies).
                with memoryview(reply) as view:
                    for start in range(0, len(view), REPLY_SLICE):
                        await response.write(view[start:start + REPLY_SLICE])
            await response.write_eof()

        try:
            async with asyncio.timeout(self.server_timeout):     # no task of its own (see above)
                await write()
        except asyncio.TimeoutError:
            LOG.info("RPC: closing the connection from %s: reply of %d bytes not read within "
                     "-rpcservertimeout (%g s)", peer, len(reply), self.server_timeout)
            if request.transport is not None:
                request.transport.abort()
        return response

    # -- JSON-RPC --------------------------------------------------------------------------

    async def _process(self, body: bytes | bytearray, context: dict[str, Any],
                       charge: "_Charge") -> tuple[int, bytearray | None]:
        """The HTTP status and reply (None: no body) for a request body. Every reply a method
        builds is charged to the user's budget as it is built, as bodies are: a reply that
        would pass it is answered RPC_OUT_OF_MEMORY instead, and a batch's calls after it are
        not run (their replies would be refused too)."""
        status, reply = await self._answer(body, context, charge)
        if reply is None or isinstance(reply, bytearray):
            return status, reply
        return status, bytearray(reply, "utf-8")

    async def _answer(self, body: bytes | bytearray, context: dict[str, Any],
                      charge: "_Charge") -> tuple[int, str | bytearray | None]:
        values = jsonfmt.value_bound(body)
        if values > self.max_values:
            LOG.info("RPC: refused a request of %d bytes from %s unparsed: up to %d JSON values (the limit is %d)",
                     len(body), context["peer"], values, self.max_values)
            error = RpcError(RPC_INVALID_REQUEST, f"Request too complex: up to {values} JSON values, the limit "
                                                  f"is {self.max_values} (split it)")
            return legacy_http_status(error.code), _encode(_reply("1.0", None, error, None))
        try:
            value = jsonfmt.loads(body.decode("utf-8"))
        except ValueError:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return HTTP_INTERNAL_SERVER_ERROR, _encode(_reply("1.0", None, RpcError(RPC_PARSE_ERROR, "Parse error"), None))
        if self.whitelist.active:
            refusal = self._refused_by_whitelist(value, context["user"])
            if refusal is not None:
                return refusal
        if isinstance(value, dict):
            try:
                req = _parse_request(value)
            except _InvalidRequest as bad:
                return legacy_http_status(bad.error.code), _encode(_reply(bad.version, None, bad.error, bad.id))
            if req.version == "2.0":
                text = await self._execute(req, context)
                if req.is_notification:
                    return HTTP_NO_CONTENT, None
                text, _ = self._charged(text, req, charge, context)
                return HTTP_OK, text
            try:
                result = await self._run(req, context)
            except RpcError as err:
                return legacy_http_status(err.code), _encode(_reply(req.version, None, err, req.id))
            text, fits = self._charged(_encode(_reply(req.version, result, None, req.id)), req, charge, context)
            del result
            return (HTTP_OK if fits else legacy_http_status(RPC_OUT_OF_MEMORY)), text
        if isinstance(value, list):
            if len(value) > self.max_batch:
                LOG.info("RPC: refused a batch of %d requests from %s (the limit is %d)", len(value),
                         context["peer"], self.max_batch)
                error = RpcError(RPC_INVALID_REQUEST,
                                 f"Batch too large: {len(value)} requests, the limit is {self.max_batch}")
                return legacy_http_status(error.code), _encode(_reply("1.0", None, error, None))
            # The replies go into one buffer as they are made (the list of them and its join
            # were two more copies of the whole); `fits` turns false at the first that would
            # pass the user's budget.
            out = bytearray(b"[")
            members = 0
            fits = True
            for index, item in enumerate(value):
                if index:
                    await asyncio.sleep(0)     # other clients get a turn between the calls

                try:
                    req = _parse_request(item)
                except _InvalidRequest as bad:
                    if not (bad.version == "2.0" and bad.id is _NO_ID):
                        text = _encode(_reply(bad.version, None, bad.error, bad.id))
                        out += (b"," if members else b"") + text.encode()
                        members += 1
                    continue
                if fits or req.is_notification:
                    text = await self._execute(req, context)
                    if req.is_notification:
                        continue
                    text, fits = self._charged(text, req, charge, context)
                else:
                    text = _encode(_reply(req.version, None, _reply_too_large(self.max_user_bytes), req.id))
                out += (b"," if members else b"") + text.encode()
                members += 1
                del text
            if not members and value:
                return HTTP_NO_CONTENT, None
            out += b"]"
            return HTTP_OK, out
        error = RpcError(RPC_PARSE_ERROR, "Top-level object parse error")
        return HTTP_INTERNAL_SERVER_ERROR, _encode(_reply("1.0", None, error, None))

    def _charged(self, text: str, req: _Request, charge: "_Charge",
                 context: dict[str, Any]) -> tuple[str, bool]:
        """(`text`, True) when the reply fits the user's budget, which it is then charged to;
        else (the RPC_OUT_OF_MEMORY error for `req`, logged, False). A batch's later calls are
        refused without this (and without a line each)."""
        try:
            charge.add(len(text))
        except _OverBudget:
            LOG.warning("RPC: refused a reply of %d bytes to %s (%s): user %s's requests and replies in "
                        "flight would hold more than %d bytes", len(text), context["peer"],
                        _sanitize(req.method), _sanitize(context["user"]), self.max_user_bytes)
            return _encode(_reply(req.version, None, _reply_too_large(self.max_user_bytes), req.id)), False
        return text, True

    def _refused_by_whitelist(self, value: Any, user: str) -> tuple[int, str | None] | None:
        """bitcoind's -rpcwhitelist check: HTTP 403 without a body for a call (or a batch
        holding one) the user may not make; None when the request may go on."""
        if isinstance(value, dict):
            method = value.get("method")
            methods = [method] if isinstance(method, str) else []
        elif isinstance(value, list):
            methods = []
            for item in value:
                if not isinstance(item, dict):
                    error = RpcError(RPC_INVALID_REQUEST, "Invalid Request object")
                    return legacy_http_status(error.code), _encode(_reply("1.0", None, error, None))
                if not isinstance(item.get("method"), str):
                    error = RpcError(RPC_PARSE_ERROR, "Method must be a string")
                    return HTTP_INTERNAL_SERVER_ERROR, _encode(_reply("1.0", None, error, None))
                methods.append(item["method"])
        else:
            methods = []
        refused = self.whitelist.refused(user, methods)
        if refused is None:
            return None
        if refused:
            LOG.warning("RPC User %s not allowed to call method %s", _sanitize(user), _sanitize(refused))
        else:
            LOG.warning("RPC User %s not allowed to call any methods", _sanitize(user))
        return HTTP_FORBIDDEN, None

    async def _run(self, req: _Request, context: dict[str, Any]) -> Any:
        if LOG.isEnabledFor(logging.DEBUG):     # the method's text is cleaned only to be logged
            LOG.debug("ThreadRPCServer method=%s user=%s", _sanitize(req.method), context["user"])
        return await self.registry.execute(req.method, req.params, version=req.version, **context)

    async def _execute(self, req: _Request, context: dict[str, Any]) -> str:
        """Run one request and encode its reply, the error included (2.0 and batch members)."""
        try:
            result = await self._run(req, context)
        except RpcError as err:
            return _encode(_reply(req.version, None, err, req.id))
        return _encode(_reply(req.version, result, None, req.id))


def _reply_too_large(limit: int) -> RpcError:
    return RpcError(RPC_OUT_OF_MEMORY, f"Reply too large: this user's requests and replies in flight would hold more "
                                       f"than {limit} bytes; ask for less in one request, or retry once others "
                                       f"are answered")


class _OverBudget(Exception):
    """A user's requests in flight would hold more than the server allows one user."""


class _Charge:
    """What one request holds, charged to its user in `ledger` (user -> bytes) while it runs."""

    def __init__(self, ledger: dict[str, int], user: str, limit: int) -> None:
        self._ledger = ledger
        self._user = user
        self._limit = limit
        self._held = 0

    def add(self, size: int) -> None:
        """Charge `size` more bytes; _OverBudget (nothing charged) past the user's limit."""
        total = self._ledger.get(self._user, 0) + size
        if total > self._limit:
            raise _OverBudget
        self._ledger[self._user] = total
        self._held += size

    def release(self) -> None:
        """The request is done: its bytes are the user's again."""
        if self._held:
            left = self._ledger.get(self._user, 0) - self._held
            if left > 0:
                self._ledger[self._user] = left
            else:
                self._ledger.pop(self._user, None)
            self._held = 0


def _wallet_name(encoded: str) -> str | None:
    """The wallet name of a /wallet/<name> URI; None when it is not percent-encoded UTF-8."""
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return None


def _json_response(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=(text + "\n").encode(), content_type=JSON_CONTENT_TYPE)


def _peer_text(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _sanitize(text: str, limit: int = 100) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def bind_sockets(binds: Iterable[tuple[str, int]]) -> list[tuple[str, int, socket.socket]]:
    """Listening sockets on `binds` ((host, port) pairs; port 0: one free port, the same for
    every host), as (host, bound port, socket). An endpoint that cannot be bound is logged
    and skipped; raises OSError when none can be. Synchronous: CleanCoin-node binds before
    it confines itself, in the host's network namespace, and serves on them after
    (RpcServer's `sockets`)."""
    ephemeral = 0
    errors: list[str] = []
    sockets: list[tuple[str, int, socket.socket]] = []
    for host, port in binds:
        sock = None
        last: OSError | None = None
        for candidate in ([ephemeral, 0] if port == 0 and ephemeral else [port]):
            try:
                sock = _listen(host, candidate)
                break
            except OSError as exc:
                last = exc
        if sock is None:
            errors.append(f"Binding RPC on address {host} port {port} failed: {last}")
            LOG.warning("%s", errors[-1])
            continue
        bound_port = sock.getsockname()[1]
        if port == 0 and not ephemeral:
            ephemeral = bound_port
        sockets.append((host, bound_port, sock))
    if not sockets:
        raise OSError("Unable to bind any endpoint for RPC server: " + "; ".join(errors))
    return sockets


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
