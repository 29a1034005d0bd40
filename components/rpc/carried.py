"""JSON-RPC calls carried over IPC as `RpcRequest`/`RpcResponse` (components/interfaces/chain.py).

A wallet process runs the calls its node forwards, and a node runs the calls a front end sends
through `Node.executeRpc`: both run them in a `Registry`, exactly as the HTTP server would, and
answer with the JSON text of the result or the JSON-RPC error, never with an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..interfaces.chain import RpcRequest, RpcResponse
from . import jsonfmt
from .errors import RPC_PARSE_ERROR, RpcError
from .registry import Registry, internal_error

LOG = logging.getLogger("cleancoin.rpc")


async def execute_request(registry: Registry, request: RpcRequest, *, user: str = "",
                          before: Callable[[], Awaitable[None]] | None = None) -> RpcResponse:
    """Run `request` in `registry`; `user` stands in for an empty `request.user`, and
    `before()` runs once the parameters parsed (a wallet catches up with the chain there)."""
    try:
        params = jsonfmt.loads(request.params)
    except ValueError:
        return RpcResponse(False, "null", RPC_PARSE_ERROR, "Parse error")
    try:
        if before is not None:
            await before()
        result = await registry.execute(request.method, params, uri_wallet=request.uri_wallet,
                                        user=request.user or user)
        return RpcResponse(True, jsonfmt.dumps(result))
    except RpcError as exc:
        return RpcResponse(False, "null", exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - e.g. a result JSON cannot hold
        LOG.error("RPC method %s carried over IPC failed", request.method[:100].encode("unicode_escape").decode(),
                  exc_info=True)
        err = internal_error(exc)
        return RpcResponse(False, "null", err.code, err.message)
