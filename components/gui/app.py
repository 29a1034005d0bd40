"""The GUI application: the window over a node reached through a `Connector`.

A connector hands out the `Node` to talk to: the local binding (CleanCoin-qt), or an IPC
proxy to a spawned or attached CleanCoin-node (CleanCoin-gui). `GuiApp.run` subscribes to
the node's notifications and keeps the window in step. When the connection is lost, an
attached GUI (`connector.reconnects`) tries again every RECONNECT_SECONDS and subscribes
anew once the node is back; a GUI whose own node ended says so and stays open for reading.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import QApplication

from cleancoin.components.interfaces.node import Node

from .client import NodeClient
from .context import GuiContext
from .events import NodeEvents
from .main_window import MainWindow
from .sandbox_panel import ProcessInfo
from .settings import GuiSettings

log = logging.getLogger("cleancoin.gui")

RECONNECT_SECONDS = 2.0


@dataclass
class Link:
    """One connection to a node: the Node, how it is reached, and a coroutine that returns
    when the connection ends (None: it cannot end, the node is in this process)."""

    node: Node
    transport: str
    closed: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], None] | None = None
    #: Why there is no node yet (an attached GUI whose node went away before its first
    #: call): the window opens waiting for it, as for a node that goes away later.
    absent: str | None = None

    @classmethod
    def waiting(cls, transport: str, reason: str) -> "Link":
        """A link with no node behind it yet; GuiApp.run reconnects first."""
        return cls(AbsentNode(reason), transport, absent=reason)


class AbsentNode:
    """The Node of a `Link.waiting`: every call fails as one to a node that went away does
    (the window's widgets may call before the first reconnect)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def execute_rpc(self, request: Any) -> Any:
        raise ConnectionError(f"no node yet: {self.reason}")

    async def shutdown(self) -> None:
        raise ConnectionError(f"no node yet: {self.reason}")

    async def handle_notifications(self, notifications: Any) -> Any:
        raise ConnectionError(f"no node yet: {self.reason}")


Connector = Callable[[], Awaitable[Link]]


class GuiApp:
    """See the module docstring."""

    def __init__(self, executable: str, network: str, link: Link, *, own: ProcessInfo,
                 settings: GuiSettings, backup_dir: str, reconnect: Connector | None = None,
                 minimized: bool = False) -> None:
        self.events = NodeEvents()
        self.client = NodeClient(link.node, link.transport)
        self.ctx = GuiContext(self.client, self.events, executable)
        self.settings = settings
        self.link = link
        self.reconnect = reconnect
        self.window = MainWindow(self.ctx, own, network, backup_dir)
        self.window.on_close = self._closing
        self.closed = asyncio.Event()
        self.node_gone = asyncio.Event()
        self._handler: Any = None
        self._minimized = minimized
        self.ctx.wallet_selected.connect(lambda name: name and settings.set("wallet", name))

    def show(self) -> None:
        geometry = self.settings.get("geometry")
        if geometry:
            try:
                self.window.restoreGeometry(bytes.fromhex(geometry))
            except ValueError:
                pass
        if self._minimized:
            self.window.showMinimized()
        else:
            self.window.show()

    async def subscribe(self) -> None:
        """Subscribe to the node's notifications (tip and wallets arrive before this returns)."""
        self._handler = await self.client.subscribe(self.events)
        self.events.flush()         # the tip and the loaded wallets, to the widgets now
        wanted = self.settings.get("wallet")
        if wanted in self.ctx.wallets:
            self.ctx.select(wanted)
        self.events.connection.emit(True, f"connected: {self.client.transport}")
        self.window.sandbox.refresh()
        tip = self.events.last_tip
        # tests/bench/bench_gui.py times the start of a usable window by this line.
        log.info("window ready: %s; tip %s; wallets: %s", self.client.transport,
                 tip.height if tip is not None else "?", ", ".join(self.ctx.wallets) or "none")

    async def run(self) -> None:
        """Subscribe, then follow the connection until the window closes. A node that goes
        away while the window subscribes is lost like one that goes later (reconnect or end);
        with no node at the start (`Link.waiting`), the window says it waits and reconnects."""
        if self.link.absent is not None and self.reconnect is not None:
            log.warning("no node to talk to yet (%s): waiting for it at %s", self.link.absent, self.link.transport)
            self.events.connection.emit(False, f"waiting for the node at {self.link.transport}…")
            await self._reconnect()
            subscribed = True
        else:
            subscribed = await self._first_of(self.subscribe())
        while not self.closed.is_set():
            if self.link.closed is None:
                await self.closed.wait()
                return
            if subscribed:
                await self._first_of(None)
                if self.closed.is_set():
                    return
            self._lost()
            if self.reconnect is None:
                self.node_gone.set()
                return
            await self._reconnect()
            subscribed = True

    async def _first_of(self, work: Awaitable[None] | None) -> bool:
        """Wait for `work` (if any), the window's close or the connection's end, whichever
        comes first; whether `work` completed. Its failure counts as the connection's end:
        the node went away mid-call (once, the window then waited for an end already past)."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.closed.wait())]
        if self.link.closed is not None:
            waits.append(asyncio.ensure_future(self.link.closed()))
        task = asyncio.ensure_future(work) if work is not None else None
        await asyncio.wait(waits + ([task] if task is not None else []), return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if task is None:
            return False
        if not task.done():
            task.cancel()
            return False
        if task.cancelled() or task.exception() is not None:
            log.info("the node went away while the window subscribed: %s",
                     "cancelled" if task.cancelled() else task.exception())
            return False
        return True

    def _lost(self) -> None:
        log.warning("the connection to the node ended")
        self.events.flush()         # what the node sent before it went
        self.events.connection.emit(False, "node gone" + (", reconnecting…" if self.reconnect else ""))
        self.events.wallets.emit([ev for ev in self._unloaded_all()])

    def _unloaded_all(self) -> list[Any]:
        from cleancoin.components.interfaces.wallet import WalletEvent
        return [WalletEvent(name, "unloaded") for name in list(self.ctx.wallets)]

    async def _reconnect(self) -> None:
        assert self.reconnect is not None
        while not self.closed.is_set():
            await asyncio.sleep(RECONNECT_SECONDS)
            try:
                link = await self.reconnect()
            except Exception as exc:  # noqa: BLE001 - not back yet: try again
                log.debug("reconnecting: %s", exc)
                continue
            self.link = link
            self.client.node = link.node
            self.client.transport = link.transport
            try:
                await self.subscribe()
                log.info("reconnected to the node: %s", link.transport)
                return
            except Exception as exc:  # noqa: BLE001 - it went away again
                log.info("reconnected but could not subscribe: %s", exc)

    def _closing(self) -> None:
        try:
            self.settings.set("geometry", bytes(self.window.saveGeometry().data()).hex())
        except OSError:
            pass
        self.closed.set()

    async def close(self, *, stop_node: bool) -> None:
        """End the subscription and, if this GUI started the node, stop it."""
        self.ctx.tasks.cancel_all()
        handler, self._handler = self._handler, None
        if handler is not None:
            try:
                await asyncio.wait_for(handler.disconnect(), 5)
            except Exception:  # noqa: BLE001 - the node may be gone
                pass
        if stop_node:
            try:
                await asyncio.wait_for(self.client.shutdown(), 5)
            except Exception:  # noqa: BLE001 - gone already
                pass
        if self.link.close is not None:
            self.link.close()


def own_process(executable: str, report: Any, role: str) -> ProcessInfo:
    """This process as the Sandbox panel's root."""
    return ProcessInfo(executable, os.getpid(), role, report.to_dict() if report is not None else None,
                       "" if report is not None else "not confined")


def application(argv: list[str]) -> QApplication:
    """The one QApplication of this process."""
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("CleanCoin")
    app.setOrganizationName("CleanCoin")
    # The window's close ends GuiApp.run, which stops what it started; Qt quitting the
    # loop on its own would cut that short.
    app.setQuitOnLastWindowClosed(False)
    return app  # type: ignore[return-value]
