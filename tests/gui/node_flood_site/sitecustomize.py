"""Test harness (never installed): turns the CleanCoin-node that CleanCoin-gui starts into a
compromised one that floods its standard output and error.

tests/gui/test_gui_node_output.py starts the real CleanCoin-gui with PYTHONPATH pointing at a
copy of this directory and `flood.json` beside it. Python imports `sitecustomize` at start-up;
in the CleanCoin-node process (and nowhere else) this module wraps the sandbox's
`restrict_self`, so the flood starts where a node compromised over P2P would start it: after
the node confined itself with node.toml, from a thread of its own, while the window runs.

The flood: `stdout_bytes` of "A" without a single newline, written as fast as the pipe takes
them, and on stderr `stderr_lines` lines holding terminal escape sequences (clear the screen,
retitle the terminal window) and a bell, then `stderr_bytes` of "B" without a newline. A file
`flood.done` beside the config is written when all of it went out (the node's view of the
harness directory is read-only at most, so the mark goes to the node's own datadir).
"""

import json
import os
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_PATH = os.path.join(_HERE, "flood.json")
ESCAPES = b"\x1b[2J\x1b]0;pwned\x07"


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _flood(config):
    chunk = b"A" * 65536
    left = config["stdout_bytes"]
    while left > 0:
        _write_all(1, chunk[:left])
        left -= min(left, len(chunk))
    for i in range(config["stderr_lines"]):
        _write_all(2, b"line %d " % i + ESCAPES + b"\n")
    chunk = b"B" * 65536
    left = config["stderr_bytes"]
    while left > 0:
        _write_all(2, chunk[:left])
        left -= min(left, len(chunk))
    with open(config["done"], "w") as out:
        out.write("done")


def _install(config):
    import cleancoin.sandbox as sandbox
    original = sandbox.restrict_self

    def restrict_self(*args, **kwargs):
        report = original(*args, **kwargs)
        threading.Thread(target=_flood, args=(config,), daemon=True).start()
        return report
    sandbox.restrict_self = restrict_self


if os.path.exists(_CONFIG_PATH) and "cleancoin.cli.mp_node_main" in getattr(sys, "orig_argv", []):
    with open(_CONFIG_PATH) as _handle:
        _install(json.load(_handle))
