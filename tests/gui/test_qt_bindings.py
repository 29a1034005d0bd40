"""The installed Qt bindings keep Python's reference counts, and the start-up check that
refuses broken ones detects a leak (PySide6 6.12.0 on CPython 3.11 lost a reference to None
on every void call: "none_dealloc" after a few hundred IPC round trips; docs/gui.md)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from cleancoin.components.gui.qt_check import PROBE_CALLS, check_qt_bindings, leaked_references


def test_installed_pyside_keeps_reference_counts(qapp: object) -> None:
    assert check_qt_bindings() is None


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_the_check_sees_a_call_that_drops_a_reference_to_none() -> None:
    """A real reference dropped per call (as the broken binding did), then given back."""
    decref = ctypes.pythonapi.Py_DecRef
    decref.argtypes = [ctypes.py_object]
    lost = leaked_references(lambda: decref(None))
    try:
        assert lost >= PROBE_CALLS
    finally:
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))
    assert leaked_references(lambda: None) < PROBE_CALLS // 2
