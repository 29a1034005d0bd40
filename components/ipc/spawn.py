"""Spawning a component as a child process connected by a socket pair (-ipcfd=N).

The child is launched through the sandbox layer (or without it, when the plan is None), is
killed if its parent dies, and its exit is noticed through a pidfd and logged with its status
or signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cleancoin.sandbox import launcher
from cleancoin.sandbox.plan import Plan

from .connection import Connection, connect_init
from .interfaces import Peer
from .transport import stream_from_fd

LOG = logging.getLogger("cleancoin.ipc")


@dataclass
class Child:
    """A spawned component: its process, its IPC connection and how it ended."""

    name: str
    process: launcher.SandboxedProcess
    connection: Connection
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.kill()


async def spawn(module: str, name: str, plan: Plan | None, local: Peer, *, debug: bool = False,
                on_exit: Callable[["Child", int], None] | None = None,
                python: Sequence[str] = (sys.executable,)) -> Child:
    """Start `python -m module -ipcfd=N` under `plan` and connect to its Init.

    Returns once the child's sandbox is in force and it answered hello.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The launcher waits (briefly, synchronously) for the child's enforcement report: a
        # component must never be talked to before its sandbox is up.
        process = launcher.spawn(plan, [*python, "-m", module, f"-ipcfd={theirs.fileno()}"],
                                 pass_fds=[theirs.fileno()])
    finally:
        theirs.close()
    if process.report is not None:
        LOG.info("%s (pid %d) started:\n%s", name, process.pid, process.report.to_text())
    stream = await stream_from_fd(ours.detach())
    connection = await connect_init(stream, local, debug)
    # The child names itself with the pid it sees, which inside a pid namespace is 2; logs on
    # this side use the pid everyone else sees.
    connection.log.remote = Peer(connection.remote.name, process.component_pid())
    child = Child(name, process, connection)
    _watch_exit(child, on_exit)
    return child


def _watch_exit(child: Child, on_exit: Callable[[Child, int], None] | None) -> None:
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(child.pid)

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        code = child.process.wait()
        LOG.warning("%s (pid %d) %s", child.name, child.pid,
                    launcher.describe_status(child.process.status or 0))
        if not child.exited.done():
            child.exited.set_result(code)
        if on_exit is not None:
            on_exit(child, code)

    loop.add_reader(pidfd, reap)
