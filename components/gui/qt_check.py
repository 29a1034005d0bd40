"""A check that the installed Qt bindings keep Python's reference counts.

PySide6 6.12.0 on CPython 3.11 returns None (from every void method) and True/False (from a
signal's disconnect) without taking a reference: each call takes one reference from the
interpreter's own, and after some thousand calls (a few hundred IPC round trips through
qasync's socket notifiers) the process aborts with "Fatal Python error: none_dealloc". From
CPython 3.12 on these objects are immortal (PEP 683) and the fault is harmless. pyproject.toml
keeps such a version out; this check refuses to start a window on one that got in anyway,
with an error that says what to do, instead of a crash minutes later.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Calls made to measure; a sound binding loses none of None's references over them.
PROBE_CALLS = 256


def leaked_references(call: Callable[[], object], calls: int = PROBE_CALLS) -> int:
    """How many references to None `calls` calls of `call` took away (0 for sound code)."""
    before = sys.getrefcount(None)
    for _ in range(calls):
        call()
    return before - sys.getrefcount(None)


def check_qt_bindings() -> str | None:
    """None when PySide6 is sound here; else the error to show (and not start a window)."""
    if sys.version_info >= (3, 12):
        return None                  # None, True and False are immortal: nothing to lose
    import PySide6
    from PySide6.QtCore import QObject
    probe = QObject()
    lost = leaked_references(lambda: probe.setObjectName("probe"))
    # Other code may take or drop a few references meanwhile (the garbage collector); a
    # broken binding loses one per call.
    if lost < PROBE_CALLS // 2:
        return None
    return (f"PySide6 {PySide6.__version__} loses a reference to None on every call under Python "
            f"{sys.version.split()[0]} (the process would abort after a few thousand calls): install "
            "'pyside6-essentials<6.12' or use Python 3.12 or newer")
