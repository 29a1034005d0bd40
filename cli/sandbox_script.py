"""The CleanCoin-sandbox console script: the method cache first, then the tool.

The dataclasses of the sandbox's modules generate their methods from source when those
modules are imported; the method cache (sandbox/method_cache.py) keeps that code compiled.
It must stand in for dataclasses' `exec` before the tool's first import that defines a
dataclass, so the console script starts here, not in cli/sandbox_main.py, whose imports
define some. The tool gives dataclasses its `exec` back once it has imported and planned
(`sandbox_main._methods_done`), before any program starts.
"""

from __future__ import annotations

TYPE_CHECKING = False     # not typing's: CleanCoin-sandbox imports this and never typing

if TYPE_CHECKING:
    from typing import NoReturn


def script() -> NoReturn:
    """CleanCoin-sandbox (`sandbox_main.script`), with dataclasses' methods from the cache."""
    from cleancoin.sandbox.import_path import drop_relative
    drop_relative()         # the .pth file did, where the installation has it (import_path.py)
    from cleancoin.sandbox import method_cache
    method_cache.activate()
    from cleancoin.cli.sandbox_main import script as tool
    tool()


if __name__ == "__main__":
    script()
