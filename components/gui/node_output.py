"""The standard output and error of a CleanCoin-node this window started, passed on as text.

The node faces the internet over P2P and may be compromised; what it writes must reach the
operator's terminal (or journal) as text, as a sandboxed component's output reaches it
through its launcher (sandbox/stdio.py): control characters (escape sequences that clear
the screen or retitle the terminal) written out as `\\xNN`, each line prefixed with
"CleanCoin-node: ", and a line without its end passed on in pieces of at most MAX_LINE.
Before, the started node simply shared the window's descriptors 1 and 2.

The relay runs in a small process of its own, forked before the window confines itself
(a confined window may not fork, and `restrict_self` wants a single thread): so a node
writing as fast as it can keeps that process busy, never the window, and a terminal that
reads slowly makes the node wait (the pipe fills), never the window. It holds two pipes'
read ends and descriptors 1 and 2, nothing else, and ends at end of file, that is once the
node and everything it started are gone (or with the window: PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence

from cleancoin.sandbox.stdio import Pipes, Relay

PREFIX = b"CleanCoin-node: "


class NodeOutput:
    """The relay process and the pipes a started node writes into."""

    def __init__(self, pipes: Pipes, pid: int) -> None:
        self.pipes = pipes
        self.pid = pid

    @classmethod
    def start(cls) -> "NodeOutput":
        """Make the pipes and fork the relay (before confinement, while single-threaded)."""
        pipes = Pipes.make()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:        # the relay: never returns
            _relay(pipes, parent)
        os.close(pipes.stdout_r)
        os.close(pipes.stderr_r)
        return cls(pipes, pid)

    @property
    def child_fds(self) -> list[int]:
        """The descriptors the node's launcher must keep open for `exec_with_output`."""
        return [self.pipes.stdout_w, self.pipes.stderr_w]

    def exec_with_output(self, argv: Sequence[str]) -> Callable[[int], int]:
        """A launcher target that puts /dev/null on 0 and the pipes on 1 and 2, then execs."""
        def target(_control_fd: int) -> int:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(self.pipes.stdout_w, 1)
            os.dup2(self.pipes.stderr_w, 2)
            for fd in {devnull, *self.child_fds} - {0, 1, 2}:
                os.close(fd)
            os.execv(argv[0], list(argv))
        return target

    def started(self) -> None:
        """The node has its ends: close ours, so that the relay sees end of file with it."""
        for fd in self.child_fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def finish(self, timeout: float = 5.0) -> bool:
        """Wait (up to `timeout`) until the relay has passed everything on; whether it did.
        A relay still running then dies with this process (a confined window may not kill)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _relay(pipes: Pipes, parent: int) -> None:
    code = 1
    try:
        import prctl      # python-prctl, a dependency of the sandbox layer
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        from cleancoin.sandbox.descriptors import keep_only
        keep_only({1, 2, pipes.stdout_r, pipes.stderr_r})
        relay = Relay(pipes, prefix=PREFIX)
        relay.start()
        relay.join(None)
        code = 0
    finally:
        os._exit(code)
