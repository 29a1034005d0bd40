"""A relay as a program of its own: `python -I -m cleancoin.sandbox.relay_main PARENT OUT ERR
PREFIX` copies the pipes OUT and ERR to its stdout and stderr, each line prefixed and its
control characters made visible (stdio.Relay), until both reach end of file.

CleanCoin-gui passes a started node's output on through it (components/gui/node_output.py),
and a process that restricts itself on a terminal its own (stdio.apply: PARENT 0, no parent
to die with, since the output it wrote just before it ended must still be shown).
A fresh interpreter, not a fork of the caller: a fork carried the whole GUI process's memory
(about 31 MiB of PSS in bench_gui, and whatever secrets it had read) into an unconfined helper
whose only job is to copy bytes. It dies with PARENT (PR_SET_PDEATHSIG) and holds nothing but
the two pipes and its stdout and stderr; like every process of the window's tree it keeps its
memory from the same user's other processes (not dumpable, no core file).
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    """Relay until end of file; 2 for a usage error, 0 otherwise (also when PARENT is gone)."""
    if len(argv) != 4 or not all(a.isdigit() for a in argv[:3]):
        print("usage: relay_main PARENT OUT_FD ERR_FD PREFIX", file=sys.stderr)
        return 2
    parent, out_fd, err_fd = (int(a) for a in argv[:3])
    import resource
    from . import syscalls
    # Before the first byte it relays: what a node writes to its stdout and stderr (a log
    # line, a traceback with a value in it) is the node's, not for the same user's other
    # processes to read from this one's memory, nor to be written into (since 12-07; it was
    # dumpable). No core file either (children of the window inherit its core size 0 anyway).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    if parent:
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return 0
    else:
        # A helper of a self-restricting process (helpers.OUTPUT_RELAY): nothing to gain by
        # exec, no capability (a node run as root), as `status` expects of a helper.
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        from .capabilities import drop
        drop(())
    # The caller's terminal or supervisor may signal the whole group; the relay ends at end
    # of file, once the node has written its last line.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    from .stdio import Pipes, Relay
    relay = Relay(Pipes(out_fd, -1, err_fd, -1), prefix=argv[3].encode())
    relay.start()
    relay.join(None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
