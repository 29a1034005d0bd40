"""Spawning a component as CleanCoin-node does, for the IPC tests and benchmarks: a zygote (a
fresh interpreter) starts the component's target in its sandbox with one end of a socket pair,
and this side connects to its Init over the other end.

The zygote is started per child: a pytest process runs Cap'n Proto loops itself, and KJ
refuses a second loop in a process that had one, so children cannot be forks of it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from cleancoin.components.ipc.connection import Connection, connect_init
from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.ipc.transport import stream_from_fd
from cleancoin.sandbox.plan import Plan
from cleancoin.sandbox.report import Report
from cleancoin.sandbox.zygote import ComponentSpec, Zygote, ZygoteError

LOG = logging.getLogger("cleancoin.ipc")
ECHO_TARGET = "cleancoin.components.ipc.echo_process:serve_fd"


@dataclass
class Child:
    """A spawned component: its pid, report, IPC connection, and how it ended."""

    name: str
    zygote: Zygote
    pid: int
    report: Report | None
    connection: Connection
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def kill(self) -> None:
        try:
            self.zygote.kill(self.pid)
        except ZygoteError:
            pass      # gone already

    def close(self) -> None:
        """End the zygote and with it the component (cleanup outside the event loop)."""
        self.zygote.stop()


async def spawn(target: str, name: str, plan: Plan | None, local: IpcPeer, *, debug: bool = False,
                preload: str | None = None) -> Child:
    """Start `target` under `plan` (None: no sandbox) and connect to its Init; returns once
    the child's sandbox is in force and it answered hello. `preload` runs in the zygote
    first, as CleanCoin-node preloads the wallet's imports (a confined wallet cannot load
    them later: its policy refuses getcwd, which pycapnp's schema loader needs)."""
    zygote = Zygote.start({name: ComponentSpec(name, target, None, plan=plan, preload=preload)})
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        spawned = zygote.spawn(name, theirs.fileno())
    except BaseException:
        zygote.stop()
        ours.close()
        raise
    finally:
        theirs.close()
    if spawned.report is not None:
        LOG.info("%s (pid %d) started:\n%s", name, spawned.pid, spawned.report.to_text())
    stream = await stream_from_fd(ours.detach())
    connection = await connect_init(stream, local, debug)
    # The child names itself with the pid it sees, which inside a pid namespace is 2; logs on
    # this side use the pid everyone else sees.
    connection.log.remote = IpcPeer(connection.remote.name, spawned.pid)
    child = Child(name, zygote, spawned.pid, spawned.report, connection)
    _watch_exit(child)
    return child


def _watch_exit(child: Child) -> None:
    loop = asyncio.get_running_loop()

    def on_event() -> None:
        event = child.zygote.read_event()
        if event is None or event.pid == child.pid:
            loop.remove_reader(child.zygote.events.fileno())
        if event is None:
            if not child.exited.done():
                child.exited.set_result(-1)
            return
        if event.pid == child.pid:
            LOG.warning("%s (pid %d) %s", child.name, child.pid, event.description)
            if not child.exited.done():
                child.exited.set_result(event.returncode)

    loop.add_reader(child.zygote.events.fileno(), on_event)
