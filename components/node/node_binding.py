"""`NodeService`: the `Node` interface (components/node_interface.py) over a running Node."""

from __future__ import annotations

from typing import Any

from ..chain_interface import RpcRequest, RpcResponse
from ..rpc import jsonfmt
from ..rpc.errors import RPC_PARSE_ERROR, RpcError
from ..rpc.registry import internal_error


class NodeService:
    """Runs RPC calls in the node's method table (so wallet methods reach the wallet process
    exactly as they do from the HTTP server) and passes shutdown requests on."""

    def __init__(self, node: Any) -> None:
        self._node = node

    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        try:
            params = jsonfmt.loads(request.params)
        except ValueError:
            return RpcResponse(False, "null", RPC_PARSE_ERROR, "Parse error")
        try:
            result = await self._node.registry.execute(request.method, params, uri_wallet=request.uri_wallet,
                                                       user=request.user or "__ipc__")
            return RpcResponse(True, jsonfmt.dumps(result))
        except RpcError as exc:
            return RpcResponse(False, "null", exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - e.g. a result JSON cannot hold
            err = internal_error(exc)
            return RpcResponse(False, "null", err.code, err.message)

    async def shutdown(self) -> None:
        self._node.request_shutdown()
