"""The .capnp schemas shipped with the package, loaded once per process."""

from __future__ import annotations

import functools
import os
from types import ModuleType

#: The schemas live beside the Python protocols they carry (components/interfaces/). The
#: package's folder, not importlib.resources: that import (pathlib, tempfile, shutil, zipfile)
#: cost the node and its zygote about 6 ms each at every start (issue #16); the package is a
#: plain folder (a regular install), as the base policy's grant of site-packages assumes.
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interfaces")


@functools.cache
def load(name: str) -> ModuleType:
    """The loaded schema module `name` (e.g. "init"), from components/interfaces/."""
    import capnp   # the multiprocess extra; imported only by processes that talk IPC
    return capnp.load(os.path.join(SCHEMA_DIR, f"{name}.capnp"), imports=[SCHEMA_DIR])
