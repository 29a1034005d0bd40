"""An RpcServer on its own event loop in a background thread.

For synchronous callers in the same process: tests, and tools that want a server next to
blocking code. The daemon itself runs RpcServer on its main loop instead.

    with ThreadedRpcServer(registry, RpcAuth(user="u", password="p")) as running:
        RpcClient("127.0.0.1", running.port, user="u", password="p").call("help")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from cleancoin.components.rpc.registry import Registry
from cleancoin.components.rpc.server import RpcAuth, RpcServer


class ThreadedRpcServer:
    def __init__(self, registry: Registry, auth: RpcAuth, *args: Any, start_timeout: float = 10.0,
                 **kwargs: Any) -> None:
        """Arguments as for RpcServer."""
        self.server = RpcServer(registry, auth, *args, **kwargs)
        self.start_timeout = start_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="rpc-server", daemon=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "ThreadedRpcServer":
        self._thread.start()
        try:
            self.run(self.server.start(), self.start_timeout)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.server.stop(), self.server.shutdown_timeout + 10)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    def __enter__(self) -> "ThreadedRpcServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
