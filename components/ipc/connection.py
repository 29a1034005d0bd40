"""One Cap'n Proto connection: serve an Init on a stream, or connect to one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .binding import SERVER_HANDLER_CODE
from .debug_log import CallLog
from .dispatch import answer_in_turn
from .errors import IpcError
from ..interfaces.init import Init, IpcPeer
from .specs import spec

# A malformed or hostile message must close its connection, not exhaust the process:
# 8 Mi words (64 MiB) bounds what one message may make the reader traverse, and a nesting
# depth of 64 is far beyond any of our schemas.
TRAVERSAL_LIMIT_WORDS = 8 * 1024 * 1024
NESTING_LIMIT = 64

LOG = logging.getLogger("cleancoin.ipc")

InitFactory = Callable[[CallLog], Init]


async def serve(stream: Any, bootstrap: Any, log: CallLog) -> None:
    """Serve `bootstrap` (a capnp server object) on `stream` until the peer goes away."""
    import capnp
    answer_in_turn(frozenset({SERVER_HANDLER_CODE}))
    server = capnp.TwoPartyServer(stream, bootstrap=bootstrap, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
                                  nesting_limit=NESTING_LIMIT)
    try:
        await server.on_disconnect()
    except Exception as exc:   # noqa: BLE001 - a broken peer ends its connection only
        LOG.info("ipc: connection from %s closed: %s", log.peer_text(), str(exc).splitlines()[0])
    finally:
        log.event("disconnected from")
        server.close()


async def serve_init(stream: Any, make_init: InitFactory, local: IpcPeer, debug: bool,
                     from_parent: bool = False) -> None:
    """Serve a fresh Init (one per connection, so each knows its peer) on `stream`.

    `from_parent`: the stream is the socket pair of a spawned child, whose parent may pass
    its -debug categories in hello.
    """
    log = CallLog(local, enabled=debug, peer_may_enable=from_parent)
    init = make_init(log)
    try:
        await serve(stream, spec("Init").server(init, log), log)
    finally:
        close = getattr(init, "close", None)
        if close is not None:
            await close()


@dataclass
class Connection:
    """A client's end: the peer's Init proxy and what the log needs."""

    init: Init
    log: CallLog
    client: Any
    stream: Any

    @property
    def remote(self) -> IpcPeer:
        assert self.log.remote is not None
        return self.log.remote

    async def closed(self) -> None:
        """Wait until the connection ends."""
        try:
            await self.client.on_disconnect()
        except Exception:  # noqa: BLE001 - ending is what we wait for
            pass

    def close(self) -> None:
        """Close now: the peer sees end of file even while proxies are still referenced."""
        self.client.close()
        self.stream.close()


async def connect_init(stream: Any, local: IpcPeer, debug: bool, credentials: Any = None) -> Connection:
    """Connect to the Init served on `stream` and say hello.

    With `credentials` the far end is an authenticating TCP listener: log in first, and get
    the Init from the answer.
    """
    import capnp
    answer_in_turn(frozenset({SERVER_HANDLER_CODE}))    # it may serve capabilities too
    client = capnp.TwoPartyClient(stream, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
                                  nesting_limit=NESTING_LIMIT)
    log = CallLog(local, enabled=debug)
    try:
        if credentials is not None:
            auth = spec("Auth").client(client.bootstrap(), log)
            init = await auth.login(credentials.user, credentials.password)
        else:
            init = spec("Init").client(client.bootstrap(), log)
        log.remote = await init.hello(local, ["ipc"] if debug else [])
    except IpcError:
        client.close()
        raise
    log.event("connected to")
    connection = Connection(init, log, client, stream)
    watcher = asyncio.get_running_loop().create_task(connection.closed())
    watcher.add_done_callback(lambda _: log.event("disconnected from"))
    return connection
