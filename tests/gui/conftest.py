"""Fixtures for the GUI tests: Qt offscreen, asyncio on Qt's loop (qasync) with pycapnp's
event loop held open, datadirs outside /tmp, and helpers that wait for what the window
shows (driven by notifications: nothing here polls the node)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("capnp")

ROOT = Path.home() / ".cache" / "cleancoin-gui-tests"



@pytest.fixture
def datadir() -> Iterator[Path]:
    """A datadir outside /tmp (the node's sandbox gives it a /tmp of its own)."""
    path = ROOT / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    yield path
    if not os.environ.get("KEEP_GUI_TEST_DIRS"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings_dir(datadir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = datadir / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(path))
    return path / "CleanCoin"


@pytest.fixture
def aloop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """Qt's loop as the running asyncio loop (pytest-qt drives Qt), with pycapnp's KJ loop
    entered for the test's duration."""
    import capnp

    from cleancoin.components.gui import loop as gui_loop
    loop = gui_loop.install(qapp, already_running=True)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with capnp.kj_loop():
            entered.set()
            await release.wait()
    task = loop.create_task(hold())
    run(qapp, entered.wait())
    yield loop
    release.set()
    run(qapp, task)
    # pytest-qt, not asyncio, drives Qt's loop, so qasync's "already running" loop never
    # stops by itself: say that no loop runs any more, or later tests' asyncio.run() refuse.
    # (Closing it as well made the next GUI test's IPC calls hang: not done.)
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)


def run(qapp: Any, awaitable: Any, timeout: float = 60.0) -> Any:
    """Wait for a coroutine or future on Qt's loop; its result."""
    from pytestqt.qtbot import QtBot  # noqa: F401 - pytest-qt is there
    from PySide6.QtCore import QDeadlineTimer, QEventLoop
    future = asyncio.ensure_future(awaitable)
    deadline = QDeadlineTimer(int(timeout * 1000))
    while not future.done():
        if deadline.hasExpired():
            future.cancel()
            raise TimeoutError(f"not done within {timeout} s: {awaitable!r}")
        qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    return future.result()


def wait_for(qtbot: Any, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    """Until predicate() is true (Qt events, and so notifications, processed meanwhile)."""
    try:
        qtbot.waitUntil(lambda: bool(predicate()), timeout=int(timeout * 1000))
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None
