"""The window (the real GuiApp, MainWindow and screens) over a compromised node: a real
Cap'n Proto connection to tests/gui/rogue_node.py, which serves the Node interface with
attacker behaviour. Not a test module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .conftest import run

ROGUE = Path(__file__).parent / "rogue_node.py"


@contextmanager
def rogue_node(datadir: Path, mode: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The rogue node process listening on a unix socket in `datadir`, until the block ends."""
    path = datadir / "rogue.sock"
    process = subprocess.Popen([sys.executable, str(ROGUE), str(path), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", "the rogue node did not start"
        yield process, path
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def link_to(qapp: Any, path: Path) -> Any:
    """A Link as CleanCoin-gui makes one to an attached node."""
    from cleancoin.components.gui.app import Link
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.address import parse
    from cleancoin.components.ipc.transport import connect

    async def make() -> Link:
        connection = await connect(parse(f"unix:{path}", str(path)), IpcPeer("CleanCoin-gui", os.getpid()), False)
        return Link(await connection.init.make_node(), f"unix:{path} (attached)", connection.closed,
                    connection.close)
    return run(qapp, make())


def gui_app(link: Any, datadir: Path, settings_dir: Path) -> Any:
    from cleancoin.components.gui.app import GuiApp, own_process
    from cleancoin.components.gui.settings import GuiSettings
    app = GuiApp("CleanCoin-gui", "regtest", link, own=own_process("CleanCoin-gui", None, "test"),
                 settings=GuiSettings.open("regtest", str(settings_dir), confined_window=True),
                 backup_dir=str(datadir / "wallets"))
    app.show()
    return app


@contextmanager
def window_over_rogue(qapp: Any, datadir: Path, settings_dir: Path, mode: str,
                      subscribe: bool = True) -> Iterator[tuple[Any, subprocess.Popen[str]]]:
    """A shown, subscribed GuiApp over a rogue node in `mode`; closed afterwards."""
    with rogue_node(datadir, mode) as (process, path):
        app = gui_app(link_to(qapp, path), datadir, settings_dir)
        try:
            if subscribe:
                run(qapp, app.subscribe(), 60)
            yield app, process
        finally:
            app.window.close()
            run(qapp, app.close(stop_node=False), 30)


class LoopWatch:
    """How long Qt's event loop was kept from running: a timer that should fire every
    `interval_ms`, and the longest gap between its firings (seconds)."""

    def __init__(self, interval_ms: int = 10) -> None:
        import time

        from PySide6.QtCore import QTimer
        self._time = time.monotonic
        self.last = self._time()
        self.worst = 0.0
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = self._time()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return self.worst


def rss_kib() -> int:
    """This process's resident set now, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
