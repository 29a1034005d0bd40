"""Local implementations every process offers through its Init: hello and Echo."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..chain_interface import Chain
from .debug_log import CallLog
from .errors import IpcError
from .interfaces import Echo, Peer

#: Makes the Chain a node process offers (e.g. `lambda: make_chain(node)`).
ChainFactory = Callable[[], Chain]


class LocalEcho:
    """Echo, implemented in process."""

    async def echo(self, text: str) -> str:
        return text

    async def destroy(self) -> None:
        return None


class ProcessInit:
    """The Init of a process, one per connection; components extend it with factories."""

    def __init__(self, log: CallLog, chain_factory: ChainFactory | None = None) -> None:
        # `chain_factory`: only a node process has one; connection.InitFactory stays
        # `(log) -> Init`, so a node passes `functools.partial(ProcessInit, chain_factory=...)`.
        self._log = log
        self._chain_factory = chain_factory

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

    async def make_chain(self) -> Chain:
        if self._chain_factory is None:
            # Every Init has the method (one schema for all processes); a clear refusal beats
            # the generic "unimplemented" a client would otherwise have to interpret.
            raise IpcError("this process offers no Chain")
        return self._chain_factory()
