"""CleanCoin-gui's own log: `<settingsdir>/CleanCoin-gui-<network>.log` (the node keeps its
debug.log in the datadir, which the confined GUI cannot see), and the console with
-printtoconsole."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from cleancoin.sandbox.log_format import LogFormatter
from ..common.private_files import open_log


def setup_gui_logging(directory: str, network: str, console: bool, debug: Sequence[str]) -> str:
    """Set up the "cleancoin" logger for the GUI process; returns the log file's path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"CleanCoin-gui-{network}.log")
    root = logging.getLogger("cleancoin")
    root.setLevel(logging.INFO)
    root.propagate = False
    # The node's text (its errors, its wallets' names) is logged here: escaped, and kept on
    # the line of the record that carries it (a confined node must not write this record).
    fmt = LogFormatter("%(asctime)s.%(msecs)03dZ [%(name)s] %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    # Opened before confinement, by a process the window's earlier run could have planted a
    # link for: never through a link (private_files), as the node opens its debug.log.
    handlers: list[logging.Handler] = [logging.StreamHandler(open_log(path))]
    if console:
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if any(c in ("ipc", "1", "all", "") for c in debug):
        logging.getLogger("cleancoin.ipc").setLevel(logging.DEBUG)
    if any(c in ("sandbox", "1", "all", "") for c in debug):
        # Every refusal of the window's sandbox, in sandbox.log (not only the first of a kind).
        logging.getLogger("cleancoin.sandbox").setLevel(logging.DEBUG)
    return path
