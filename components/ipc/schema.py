"""The .capnp schemas shipped with the package, loaded once per process."""

from __future__ import annotations

import functools
import os
from importlib.resources import files
from types import ModuleType

#: The schemas live beside the Python protocols they carry (components/interfaces/).
SCHEMA_DIR = str(files("cleancoin.components.interfaces"))


@functools.cache
def load(name: str) -> ModuleType:
    """The loaded schema module `name` (e.g. "init"), from components/interfaces/."""
    import capnp   # the multiprocess extra; imported only by processes that talk IPC
    return capnp.load(os.path.join(SCHEMA_DIR, f"{name}.capnp"), imports=[SCHEMA_DIR])
