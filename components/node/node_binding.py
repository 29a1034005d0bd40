"""`NodeService`: the `Node` interface (components/interfaces/node.py) over a running Node."""

from __future__ import annotations

from typing import Any

from ..interfaces.chain import RpcRequest, RpcResponse
from ..rpc.carried import execute_request


class NodeService:
    """Runs RPC calls in the node's method table (so wallet methods reach the wallet process
    exactly as they do from the HTTP server) and passes shutdown requests on."""

    def __init__(self, node: Any) -> None:
        self._node = node

    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        return await execute_request(self._node.registry, request, user="__ipc__")

    async def shutdown(self) -> None:
        self._node.request_shutdown()
