"""How the node executables end: with their status, without the interpreter's teardown.

After a node's `main` has returned, everything that must outlive the process is on disk or
on its way: the chain database is closed, the pid file and cookie are gone, the wallet
process has exited (CleanCoin-node waits for it and its zygote). What is left is the
interpreter's teardown: freeing every module and running the cyclic collector over every
object (aiohttp, Cap'n Proto, the node's code). That took 50-80 ms of CPU at each stop
(measured: tests/bench/bench_multiprocess.py, start and stop), time a caller waiting for
the process to exit spends idle. The zygote ends the same way (sandbox/zygote.py).

What the teardown would still have done is done here: the logging handlers are flushed and
closed, atexit handlers run, stdout and stderr are flushed.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable

TYPE_CHECKING = False     # not typing's: CleanCoin-sandbox imports this and never typing

if TYPE_CHECKING:
    from typing import NoReturn


def run_and_exit(main: Callable[[], int | None]) -> NoReturn:
    """Run a console script's `main` and end the process with its status (None is 0), skipping
    the interpreter's teardown. An exception out of `main` is left to the interpreter, which
    prints it and exits 1 as usual."""
    status = main()
    code = 0 if status is None else int(status)
    atexit._run_exitfuncs()
    # Only where logging is in use: CleanCoin-sandbox does not import it (about 2 ms).
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass        # a closed or broken pipe: nothing more can reach it anyway
    os._exit(code & 0xFF)
