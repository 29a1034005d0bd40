"""The standard output and error of a CleanCoin-node this window started, passed on as text.

The node faces the internet over P2P and may be compromised; what it writes must reach the
operator's terminal (or journal) as text, as a sandboxed component's output reaches it
through its launcher (sandbox/stdio.py): control characters (escape sequences that clear
the screen or retitle the terminal) written out as `\\xNN`, each line prefixed with
"CleanCoin-node: ", and a line without its end passed on in pieces of at most MAX_LINE.
Before, the started node simply shared the window's descriptors 1 and 2.

The relay runs in a small program of its own (`sandbox/relay_main.py`, a fresh `python -I`
interpreter, not a fork of the window: a fork held the window's memory, about 31 MiB of PSS,
and whatever it had read), started before the window confines itself (a confined window may
not start processes): so a node writing as fast as it can keeps that process busy, never the
window, and a terminal that reads slowly makes the node wait (the pipe fills), never the
window. It holds two pipes' read ends and descriptors 1 and 2, nothing else, and ends at end
of file, that is once the node and everything it started are gone (or with the window:
PDEATHSIG).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

from cleancoin.sandbox.stdio import Pipes

PREFIX = b"CleanCoin-node: "


class NodeOutput:
    """The relay process and the pipes a started node writes into."""

    def __init__(self, pipes: Pipes, process: subprocess.Popen[bytes]) -> None:
        self.pipes = pipes
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls) -> "NodeOutput":
        """Make the pipes and start the relay program (before confinement)."""
        pipes = Pipes.make()
        argv = [sys.executable, "-I", "-m", "cleancoin.sandbox.relay_main", str(os.getpid()),
                str(pipes.stdout_r), str(pipes.stderr_r), PREFIX.decode()]
        # Only what the interpreter needs of the environment: nothing of the window's.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        try:
            process = subprocess.Popen(argv, pass_fds=(pipes.stdout_r, pipes.stderr_r),
                                       stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(pipes.stdout_r)
            os.close(pipes.stderr_r)
        return cls(pipes, process)

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
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
