"""A small synchronous JSON-RPC client (urllib), for CleanCoin-cli and tests.

    client = RpcClient("127.0.0.1", 27690, cookie_path=cookie_path(datadir, "regtest"))
    client.call("getblockhash", 0)                    # positional
    client.call("getblock", blockhash=h, verbosity=2) # named (bitcoind's -named)
    client.call("getbalance", wallet="w1")            # served at /wallet/w1

`call` returns the result (non-integer numbers as `Decimal`, exactly) or raises `RpcError`
with the server's code and message. What is not an RPC answer raises an `RpcTransportError`:
`RpcConnectionError` (refused, unreachable, timed out), `RpcAuthError` (HTTP 401) or
`RpcHttpError` (any other HTTP failure without a JSON-RPC reply). Their messages are
bitcoin-cli's.

Requests are JSON-RPC 2.0, as bitcoin-cli's since v28. The cookie file is read at every call,
so a restarted server's new cookie is picked up. Proxies from the environment are not used.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ..common import private_files
from ..common.local_listener import ForeignListener, check_server
from . import jsonfmt
from .errors import RpcError

DEFAULT_TIMEOUT = 900.0      # seconds; bitcoin-cli's -rpcclienttimeout default
COOKIE_USER = "__cookie__"


class RpcTransportError(Exception):
    """The call got no JSON-RPC answer; the message says why, in bitcoin-cli's words."""


class RpcConnectionError(RpcTransportError):
    def __init__(self, host: str, port: int, reason: str = "", code: int | None = None) -> None:
        detail = f' (error code {code} - "{reason}")' if code is not None else (f" ({reason})" if reason else "")
        super().__init__(f"Could not connect to the server {host}:{port}{detail}\n\n"
                         "Make sure the CleanCoind server is running and that you are connecting to "
                         "the correct RPC port.")
        self.host, self.port, self.reason = host, port, reason


class RpcAuthError(RpcTransportError):
    """HTTP 401: wrong credentials, or none could be found."""


class RpcHttpError(RpcTransportError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_cookie(path: str) -> str:
    """The cookie's `user:password`, or OSError. The file lies in a directory the confined node
    writes: it is never read through a link, and anything but a cookie is not sent (it could
    be a secret of this user's that the node would then receive as a password)."""
    return _read_cookie(path)[0]


def _read_cookie(path: str) -> tuple[str, int]:
    """read_cookie, and the uid that owns the file: the node's, which may listen for it."""
    return private_files.read_cookie(path)


class _CheckedConnection(http.client.HTTPConnection):
    """An HTTP connection that looks at who accepted it before the request, credentials
    included, goes out (local_listener.py): on this host, only this user, root or the owner of
    the cookie being sent."""

    def __init__(self, *args: Any, trusted: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trusted = trusted

    def connect(self) -> None:
        super().connect()
        try:
            check_server(self.sock, f"{self.host}:{self.port}", self._trusted)
        except ForeignListener:
            self.sock.close()
            self.sock = None
            raise


class _CheckedHandler(urllib.request.HTTPHandler):
    def __init__(self, trusted: tuple[int, ...]) -> None:
        super().__init__()
        self._trusted = trusted

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_CheckedConnection, req, trusted=self._trusted)


class RpcClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, user: str | None = None,
                 password: str | None = None, cookie_path: str | None = None, wallet: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        """`password` (with `user`) wins over the cookie, as in bitcoin-cli; timeout 0 waits forever."""
        self.host = host
        self.port = int(port)
        self.user = user or ""
        self.password = password
        self.cookie_path = cookie_path
        self.wallet = wallet
        self.timeout = timeout
        self._ids = itertools.count(1)

    # -- credentials -----------------------------------------------------------------------

    def _credentials(self) -> tuple[str, bool, tuple[int, ...]]:
        """("user:password" or "", whether the cookie was wanted and not found, the uids
        besides this user and root that may listen for them: the cookie file's owner)."""
        if self.password:
            return f"{self.user}:{self.password}", False, ()
        if self.cookie_path:
            try:
                cookie, owner = _read_cookie(self.cookie_path)
                return cookie, False, (owner,)
            except FileNotFoundError:
                return "", True, ()
            except OSError as exc:
                raise RpcAuthError(f"Cannot use the authentication cookie {self.cookie_path}: "
                                   f"{exc.strerror or exc}") from None
        return "", False, ()

    # -- calls -----------------------------------------------------------------------------

    def call(self, method: str, *args: Any, wallet: str | None = None, **named: Any) -> Any:
        """One call; positional `args` or `named` parameters (both: args go in "args")."""
        if named:
            params: Any = dict(named)
            if args:
                params["args"] = list(args)
        else:
            params = list(args)
        reply = self.request(method, params, wallet=wallet)
        if reply.get("error") is not None:
            raise RpcError.from_json(reply["error"])
        return reply.get("result")

    def request(self, method: str, params: Any = None, *, wallet: str | None = None) -> dict[str, Any]:
        """One call; the reply object as the server sent it (an error does not raise)."""
        body = {"jsonrpc": "2.0", "method": method, "params": [] if params is None else params,
                "id": next(self._ids)}
        reply = self._post(body, wallet)
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise RpcHttpError("expected reply to have result, error and id properties", 200)
        return reply

    def batch(self, calls: Sequence[tuple[str, Any]], *, wallet: str | None = None) -> list[Any]:
        """Several calls in one request; each answer is its result or an RpcError (not raised)."""
        first = next(self._ids)
        body = [{"jsonrpc": "2.0", "method": m, "params": [] if p is None else p, "id": first + i}
                for i, (m, p) in enumerate(calls)]
        for _ in range(len(calls) - 1):
            next(self._ids)
        replies = self._post(body, wallet)
        if not isinstance(replies, list):
            raise RpcHttpError("Batch must be an array", 200)
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i in range(len(calls)):
            reply = by_id.get(first + i)
            if reply is None:
                out.append(RpcError(-32603, "no reply for this batch member"))
            elif reply.get("error") is not None:
                out.append(RpcError.from_json(reply["error"]))
            else:
                out.append(reply.get("result"))
        return out

    def _url(self, wallet: str | None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        wallet = wallet if wallet is not None else self.wallet
        path = "/" if wallet is None else "/wallet/" + quote(wallet, safe="")
        return f"http://{host}:{self.port}{path}"

    def _post(self, body: Any, wallet: str | None) -> Any:
        credentials, cookie_missing, trusted = self._credentials()
        headers = {"Content-Type": "application/json", "Host": f"{self.host}:{self.port}"}
        if credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        req = urllib.request.Request(self._url(wallet), data=jsonfmt.dumps(body).encode(),
                                     headers=headers, method="POST")
        timeout = self.timeout if self.timeout and self.timeout > 0 else None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedHandler(trusted))
        try:
            with opener.open(req, timeout=timeout) as response:
                status, text = response.status, response.read()
        except ForeignListener as exc:
            raise RpcTransportError(str(exc)) from None
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
            exc.close()
        except urllib.error.URLError as exc:
            raise self._connection_error(exc.reason) from None
        except (OSError, socket.timeout) as exc:
            raise self._connection_error(exc) from None
        except http.client.HTTPException as exc:
            # A reply cut short (the server killed while it wrote, IncompleteRead) or not
            # HTTP at all: no answer, said as one, never a traceback.
            raise RpcTransportError(f"No complete reply from the server {self.host}:{self.port} "
                                    f"({type(exc).__name__})") from None
        return self._reply(status, text, cookie_missing)

    def _connection_error(self, reason: Any) -> RpcConnectionError:
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return RpcConnectionError(self.host, self.port, "timeout reached")
        if isinstance(reason, OSError) and reason.errno:
            return RpcConnectionError(self.host, self.port, os.strerror(reason.errno), reason.errno)
        return RpcConnectionError(self.host, self.port, str(reason))

    def _reply(self, status: int, text: bytes, cookie_missing: bool) -> Any:
        """bitcoin-cli's reading of an HTTP answer."""
        if status == 401:
            if cookie_missing:
                raise RpcAuthError(
                    "Could not locate RPC credentials. No authentication cookie could be found, and "
                    "RPC password is not set.  See -rpcpassword and -stdinrpcpass.  "
                    f"Configuration file: ({self.conf_path_hint})")
            raise RpcAuthError("Authorization failed: Incorrect rpcuser or rpcpassword")
        if status in (429, 503):     # too many failed logins; work queue full
            raise RpcHttpError(f"Server response: {text.decode('utf-8', 'replace')}", status)
        if status >= 400 and status not in (400, 404, 500):
            raise RpcHttpError(f"server returned HTTP error {status}", status)
        if not text:
            raise RpcHttpError("no response from server", status)
        try:
            return jsonfmt.loads_decimal(text.decode("utf-8"))
        except ValueError:
            raise RpcHttpError("couldn't parse reply from server", status) from None

    conf_path_hint = "CleanCoin.conf"
    """Named in the missing-credentials message; CleanCoin-cli sets the conf file it read."""


__all__ = ["DEFAULT_TIMEOUT", "RpcAuthError", "RpcClient", "RpcConnectionError", "RpcError",
           "RpcHttpError", "RpcTransportError"]
