"""Serve a process's Init on one end of a socket pair and use it from the other, in one loop.

Shared by the tests that run the same scenario against a local object and its IPC proxy.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import capnp

from cleancoin.components.ipc.connection import connect_init, serve_init
from cleancoin.components.ipc.init_impl import ProcessInit
from cleancoin.components.interfaces.init import IpcPeer


async def use_over_socketpair(chain_factory: Callable[[], Any] | None, use: Callable[[Any], Awaitable[Any]],
                              server: IpcPeer, client: IpcPeer) -> Any:
    """Run `use(init proxy)` against an Init offering `chain_factory` as makeChain."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    server_stream = await capnp.AsyncIoStream.create_connection(sock=a)
    client_stream = await capnp.AsyncIoStream.create_connection(sock=b)
    make_init = functools.partial(ProcessInit, chain_factory=chain_factory)
    serving = asyncio.ensure_future(serve_init(server_stream, make_init, server, False))
    connection = await connect_init(client_stream, client, False)
    try:
        return await use(connection.init)
    finally:
        connection.close()
        await asyncio.wait_for(serving, 5)
        a.close()
        b.close()
