"""CleanCoin-qt: node, wallets and window in one process (CleanCoind plus the GUI).

The window talks to the node through the `Node` interface's local binding (NodeService) and
hears from it through the same `NodeNotifications` CleanCoin-gui gets over IPC; the wallets
are CleanCoind's in-process wallets. Nothing here is confined: it is the classic model, one
process with everything (CleanCoin-gui is the sandboxed one). Qt's loop is the asyncio loop
(gui/loop.py), so the node, its RPC server and the window share one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass


from ..node.node import InitError, NodeConfig, NodeContext
from .cleancoind import InProcessWallets

log = logging.getLogger("cleancoin.gui")

PROG = "CleanCoin-qt"


@dataclass
class GuiOptions:
    """The options only the GUI executables have (cli/gui_main.py)."""

    minimized: bool = False          # -min
    reset_settings: bool = False     # -resetguisettings
    settings_dir: str | None = None  # where the GUI keeps its settings (default ~/.config/CleanCoin)
    platform: str = "auto"           # -guiplatform: auto (Wayland when there), wayland or x11


# What both GUI executables' option parsing (cli/gui_main.py) needs of the window's package,
# before a window exists.

def check_qt() -> str | None:
    """None when the installed PySide6 is sound; else the error to print (gui/qt_check.py)."""
    from ..gui.qt_check import check_qt_bindings
    return check_qt_bindings()


def check_settings_dir() -> str:
    """Make and check the GUI settings directory before anything in it is read (ConfError
    naming what is wrong; gui/settings.py); its path."""
    from ..gui.settings import check_settings_dir as check
    return check(None)


def remembered_datadir() -> str | None:
    """The data directory a -choosedatadir run remembered, if any."""
    from ..gui.datadir import remembered_datadir as remembered
    return remembered(None)


def choose_datadir() -> str | None:
    """Ask for a data directory (in a short-lived child process); None when none was chosen."""
    from ..gui.datadir import choose_datadir as choose
    return choose(None)


def forget_datadir() -> None:
    """-resetguisettings: forget the remembered data directory."""
    from ..gui.datadir import forget_datadir as forget
    forget(None)


class _Started:
    """The node's extension for CleanCoin-qt: the in-process wallets, and an event once the
    node has started (its RPC method table and wallets exist)."""

    def __init__(self, wallets: InProcessWallets | None) -> None:
        self.wallets = wallets
        self.ready = asyncio.Event()

    async def start(self, node: NodeContext) -> None:
        if self.wallets is not None:
            await self.wallets.start(node)
        self.ready.set()

    async def stop(self) -> None:
        if self.wallets is not None:
            await self.wallets.stop()

    async def finish(self) -> None:
        if self.wallets is not None:
            await self.wallets.finish()


async def start_node(config: NodeConfig) -> tuple[NodeContext, "asyncio.Task[int]"]:
    """Start the node in this loop; returns it once started, and the task that runs it
    (its result is the exit status). InitError when it cannot start."""
    extension = _Started(None if config.disable_wallet else InProcessWallets(list(config.wallets)))
    node = NodeContext(config, extension)
    task = asyncio.ensure_future(node.run())
    ready = asyncio.ensure_future(extension.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()             # raises the InitError
        raise InitError("the node stopped while starting")
    return node, task


def run(config: NodeConfig, options: GuiOptions, argv: list[str]) -> int:
    """Start CleanCoin-qt (options parsed, logging set up); returns the exit status."""
    from ..gui import display as displays
    from ..gui import loop as gui_loop
    from ..gui.app import GuiApp, Link, application, own_process
    from ..gui.settings import GuiSettings
    from ..node.node_binding import NodeService

    # The same choice as CleanCoin-gui's (Wayland first), though nothing here is confined.
    try:
        displays.apply(displays.choose(options.platform, os.environ), os.environ)
    except displays.DisplayError as exc:
        log.error("Error: %s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    qt_app = application(argv)
    loop = gui_loop.install(qt_app)
    settings = GuiSettings.open(config.chain, options.settings_dir, confined_window=False)
    if options.reset_settings:
        settings.reset()

    async def main() -> int:
        try:
            node, task = await start_node(config)
        except InitError as exc:
            log.error("Error: %s", exc)
            print(f"Error: {exc}", file=sys.stderr)
            return 1

        async def node_ended() -> None:
            await asyncio.shield(task)

        own = own_process(PROG, None, "GUI, node and wallets in one process (the classic model: "
                                      "nothing is confined; CleanCoin-gui runs them apart, sandboxed)")
        gui = GuiApp(PROG, config.chain, Link(NodeService(node), "in process", node_ended), own=own,
                     settings=settings, backup_dir=f"{config.netdatadir}/wallets", minimized=options.minimized)
        gui.show()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, gui.window.close)
        await gui.run()
        if not gui.closed.is_set():              # the node stopped (the `stop` RPC): close too
            gui.window.close()
        await gui.close(stop_node=False)
        node.request_shutdown()
        return await task

    with loop:
        try:
            return loop.run_until_complete(main())
        except KeyboardInterrupt:
            return 0


