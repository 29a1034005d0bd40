"""Local implementations every process offers through its Init: hello and Echo."""

from __future__ import annotations

import logging

from .debug_log import CallLog
from .interfaces import Echo, Peer


class LocalEcho:
    """Echo, implemented in process."""

    async def echo(self, text: str) -> str:
        return text

    async def destroy(self) -> None:
        return None


class ProcessInit:
    """The Init of a process, one per connection; components extend it with factories."""

    def __init__(self, log: CallLog) -> None:
        self._log = log

    async def hello(self, client: Peer, debug: list[str]) -> Peer:
        # The client names itself; the log of this connection uses the name from now on.
        self._log.remote = client
        if "ipc" in debug and self._log.peer_may_enable and not self._log.enabled:
            self._log.enabled = True
            logging.getLogger("cleancoin.ipc").setLevel(logging.DEBUG)
        self._log.event("connected to")
        return self._log.local

    async def make_echo(self) -> Echo:
        return LocalEcho()
