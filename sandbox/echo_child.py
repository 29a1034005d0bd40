"""A minimal sandboxed program: enters its sandbox, then echoes lines on its IPC socket.

Used by the tests, the spawn benchmark and the demo to show a child that answers on its
socket only once its policy is in force. Run as `python -m cleancoin.sandbox.echo_child -ipcfd=N`.
"""

from __future__ import annotations

import asyncio  # noqa: F401 - a component's usual imports, so the benchmark is realistic
import os
import sys

from .component import enter


def main(argv: list[str]) -> int:
    """Serve echo requests on the descriptor given by -ipcfd=N until end of file."""
    fds = [int(a.split("=", 1)[1]) for a in argv if a.startswith("-ipcfd=")]
    if len(fds) != 1:
        print("usage: echo_child -ipcfd=N", file=sys.stderr)
        return 2
    enter()
    fd = fds[0]
    while True:
        data = os.read(fd, 65536)
        if not data:
            return 0
        os.write(fd, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
