"""components/common/startup_gc.py: the collector paused for the start-up imports, then the
imported objects frozen and the collector on; `resume` without `pause` changes nothing. Each
case in a fresh interpreter (the freeze is for the life of the process)."""

from __future__ import annotations

import json
import subprocess
import sys

PAUSED = """
import gc, json
from cleancoin.components.common import startup_gc
startup_gc.pause()
off = not gc.isenabled()
import cleancoin.components.node.node  # noqa: F401 - start-up imports
startup_gc.resume()
print(json.dumps({"off_while_importing": off, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""

NOT_PAUSED = """
import gc, json
from cleancoin.components.common import startup_gc
startup_gc.resume()
print(json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def _run(code: str) -> dict[str, object]:
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)


def test_paused_imports_are_frozen_and_the_collector_comes_back() -> None:
    seen = _run(PAUSED)
    assert seen["off_while_importing"] is True
    assert seen["enabled"] is True
    assert seen["frozen"] > 10_000       # the node's modules, classes and functions


def test_resume_without_pause_leaves_the_collector_alone() -> None:
    assert _run(NOT_PAUSED) == {"enabled": True, "frozen": 0}

