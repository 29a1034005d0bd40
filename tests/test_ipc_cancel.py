"""A peer that leaves in the middle of a call: the server cancels what it asked."""

from __future__ import annotations

import asyncio
import functools
import socket

import capnp

from cleancoin.components.ipc.connection import connect_init, serve_init
from cleancoin.components.ipc.errors import IpcError
from cleancoin.components.ipc.init_impl import ProcessInit
from cleancoin.components.interfaces.init import IpcPeer


class SlowChain:
    """A Chain whose get_height never answers; it records how its call ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def get_height(self) -> int:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return 0


async def _scenario() -> tuple[bool, bool, str]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    chain = SlowChain()
    server_stream = await capnp.AsyncIoStream.create_connection(sock=a)
    client_stream = await capnp.AsyncIoStream.create_connection(sock=b)
    serving = asyncio.ensure_future(serve_init(server_stream, functools.partial(ProcessInit, chain_factory=lambda: chain),
                                               IpcPeer("server", 1), False))
    connection = await connect_init(client_stream, IpcPeer("client", 2), False)
    proxy = await connection.init.make_chain()
    call = asyncio.ensure_future(proxy.get_height())
    await asyncio.wait_for(chain.started.wait(), 5)
    connection.close()                         # the client leaves mid-call
    b.close()
    try:
        await asyncio.wait_for(chain.cancelled.wait(), 5)
        cancelled = True
    except asyncio.TimeoutError:
        cancelled = False
    try:
        await asyncio.wait_for(call, 5)
        caller = "returned"
    except IpcError as exc:
        caller = str(exc)
    except asyncio.CancelledError:
        caller = "cancelled"
    await asyncio.wait_for(serving, 5)         # the server's loop for that peer ended
    a.close()
    return cancelled, serving.done(), caller


def test_server_cancels_the_call_of_a_departed_peer() -> None:
    cancelled, server_done, caller = asyncio.run(capnp.run(_scenario()))
    assert cancelled, "the server-side call kept running after its peer left"
    assert server_done
    assert caller != "returned"
