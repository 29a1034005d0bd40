"""`NodeService`: the `Node` interface (components/interfaces/node.py) over a running Node."""

from __future__ import annotations

from typing import Any

from ..interfaces.chain import Handler, RpcRequest, RpcResponse
from ..interfaces.node import NodeNotifications
from ..rpc.carried import execute_request


class NodeService:
    """Runs RPC calls in the node's method table (so wallet methods reach the wallet process
    exactly as they do from the HTTP server), passes shutdown requests on, and subscribes
    front ends to the node's `FrontendHub` (node/frontend.py). One per connection (or per
    in-process front end): what it subscribed ends with it (`close`)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._subscriptions: list[Any] = []

    async def execute_rpc(self, request: RpcRequest) -> RpcResponse:
        return await execute_request(self._node.registry, request, user="__ipc__")

    async def shutdown(self) -> None:
        self._node.request_shutdown()

    async def handle_notifications(self, notifications: NodeNotifications) -> Handler:
        hub = self._node.frontend
        if hub is None:
            raise RuntimeError("the node is shutting down")
        sub = await hub.subscribe(notifications)
        self._subscriptions.append(sub)
        return sub

    async def close(self) -> None:
        """The connection ended: stop its subscriptions."""
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            await sub.disconnect()
