"""The `Node` interface: what a front end (CleanCoin-gui, a tool) drives in a node process.

Defined once as a Python protocol; the node implements it in components/node/node_binding.py
and serves it through `Init.make_node()` (components/ipc/specs.py: NODE). JSON-RPC calls travel
as `RpcRequest`/`RpcResponse` (components/interfaces/chain.py), the same shapes a wallet process
uses to serve its methods through the node.
"""

from __future__ import annotations

from typing import Protocol

from .chain import RpcRequest, RpcResponse


class Node(Protocol):
    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        """Run one JSON-RPC call as the node's RPC server would; errors come back in the
        response, never as an exception."""
        ...

    async def shutdown(self) -> None:
        """Ask the node to shut down, as the `stop` RPC does."""
        ...
