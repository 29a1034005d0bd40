"""`import dataclasses` without importing `inspect` with it.

dataclasses imports `inspect` at its top for one thing at class creation: a class without a
docstring is given one made from `inspect.signature` (every dataclass on the launch path has
a docstring: docs/audit.md, "Start-up time"). `inspect` brings `ast`, `dis`, `opcode`,
`tokenize`, `token` and `linecache` along, about 8 ms of the 40 ms of standard library
`CleanCoin-sandbox run` imports before any of its own code (issue #16). Here dataclasses is
imported with a stand-in for `inspect` in `sys.modules` for the length of that import: the
stand-in imports the real module at its first attribute lookup and answers from it, so
dataclasses (or anything else holding the stand-in) works exactly as before whenever it
does need `inspect`, only later. Once dataclasses is imported the stand-in leaves
`sys.modules`; an `import inspect` anywhere after gets the real module. The same technique
as pyseccomp's stand-in for `ctypes.util` (sandbox/seccomp.py, `_lib`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:
    from types import ModuleType


class _DeferredInspect(type(sys)):      # type: ignore[misc] - the module type, without `types`
    """`inspect`, imported at its first use (module docstring)."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get("inspect") is self:
            del sys.modules["inspect"]        # still in the import of dataclasses
        import inspect
        return getattr(inspect, name)


def import_dataclasses() -> ModuleType:
    """The dataclasses module, imported (if it is not yet) without `inspect` (module
    docstring)."""
    if "dataclasses" in sys.modules or "inspect" in sys.modules:
        import dataclasses
        return dataclasses
    stand_in = _DeferredInspect("inspect")
    sys.modules["inspect"] = stand_in
    try:
        import dataclasses
    finally:
        if sys.modules.get("inspect") is stand_in:
            del sys.modules["inspect"]
    return dataclasses
