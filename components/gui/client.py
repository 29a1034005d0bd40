"""The GUI's calls to the node: JSON-RPC through `Node.execute_rpc`, timed per method.

The same code runs over a local binding (CleanCoin-qt) and over Cap'n Proto (CleanCoin-gui);
`CallStats` are what the Sandbox panel shows as the IPC call counts and latencies of this
process (in CleanCoin-qt: in-process calls, for comparison).

The node may be compromised (docs/gui.md, "What the window trusts"): a call it leaves
unanswered fails after `call_timeout` seconds (NodeNotAnswering) instead of waiting forever,
an answer longer than MAX_RESULT characters is refused before it is parsed, and an error
message is cut at MAX_SHOWN characters.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cleancoin.components.interfaces.chain import Handler, RpcRequest
from cleancoin.components.interfaces.node import Node, NodeNotifications

from .plain import clip

#: Seconds a call may take before the window gives up on it (bitcoin-cli's -rpcclienttimeout
#: is 900; the window's longest honest calls, a rescan or scrypt, take seconds to minutes).
CALL_TIMEOUT = 600.0
#: Seconds the subscription may take (an honest node answers at once: it is up by then).
SUBSCRIBE_TIMEOUT = 60.0
#: Characters of one answer the window parses (listtransactions of 1000 is about 500 kB).
MAX_RESULT = 16 * 1024 * 1024


class RpcCallError(Exception):
    """The node answered with a JSON-RPC error (`code`, `message` as bitcoind's)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NodeNotAnswering(RpcCallError):
    """The node did not answer a call in time (it may be stuck, or compromised)."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(0, f"the node did not answer {what} within {seconds:g} s")


@dataclass
class CallStats:
    """Calls of one method: how many, and their round trips in seconds."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0
    errors: int = 0

    def add(self, seconds: float, failed: bool) -> None:
        self.count += 1
        self.total += seconds
        self.worst = max(self.worst, seconds)
        self.errors += failed

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class NodeClient:
    """A `Node` (local or remote) as the GUI uses it. `transport` names the way it is
    reached ("in process", "socket pair", "unix:/.../node.sock")."""

    def __init__(self, node: Node, transport: str) -> None:
        self.node = node
        self.transport = transport
        self.stats: dict[str, CallStats] = {}
        self.last_call_at = 0.0
        self.call_timeout = CALL_TIMEOUT
        self.subscribe_timeout = SUBSCRIBE_TIMEOUT

    def _record(self, name: str, started: float, failed: bool) -> None:
        self.stats.setdefault(name, CallStats()).add(time.perf_counter() - started, failed)
        self.last_call_at = time.time()

    async def call_text(self, method: str, params_json: str, wallet: str | None = None) -> tuple[bool, str, int]:
        """One call with parameters as JSON text: (ok, result JSON or error message, code)."""
        started = time.perf_counter()
        failed = True
        try:
            response = await asyncio.wait_for(self.node.execute_rpc(RpcRequest(method, params_json, wallet)),
                                              self.call_timeout)
            failed = not response.ok
        except asyncio.TimeoutError:
            raise NodeNotAnswering(method, self.call_timeout) from None
        finally:
            self._record(f"executeRpc({method})", started, failed)
        if response.ok:
            if len(response.result) > MAX_RESULT:
                raise RpcCallError(0, f"the node's answer to {method} is too large "
                                      f"({len(response.result)} characters; at most {MAX_RESULT})")
            return True, response.result, 0
        return False, clip(response.error_message), response.error_code

    async def call(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        """One call; the result as Python values (amounts as Decimal), or RpcCallError."""
        ok, text, code = await self.call_text(method, json.dumps(list(params), default=str), wallet)
        if not ok:
            raise RpcCallError(code, text)
        return json.loads(text, parse_float=Decimal)

    async def subscribe(self, receiver: NodeNotifications) -> Handler:
        started = time.perf_counter()
        failed = True
        try:
            handler = await asyncio.wait_for(self.node.handle_notifications(receiver), self.subscribe_timeout)
            failed = False
        except asyncio.TimeoutError:
            raise NodeNotAnswering("handleNotifications", self.subscribe_timeout) from None
        finally:
            self._record("handleNotifications", started, failed)
        return handler

    async def shutdown(self) -> None:
        started = time.perf_counter()
        try:
            await self.node.shutdown()
        finally:
            self._record("shutdown", started, False)
