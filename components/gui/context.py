"""What every screen shares: the client, the notifications, the task runner, the loaded
wallets and which one is selected."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from cleancoin.components.interfaces.wallet import WalletEvent

from .client import NodeClient, RpcCallError
from .events import NodeEvents
from .loop import TaskRunner
from .models import WalletView
from .plain import clip

log = logging.getLogger("cleancoin.gui")

#: Wallets the window keeps (a node that announces more is refused: each is a selector entry).
MAX_WALLETS = 1000


class GuiContext(QObject):
    """See the module docstring. Screens call `run(what, coro, on_done)` for node calls."""

    wallet_selected = Signal(str)         # "" when none is loaded
    wallets_changed = Signal()            # the set of loaded wallets changed
    wallet_updated = Signal(object)       # WalletEvent of the selected wallet
    message = Signal(str, str)            # level ("error", "info"), text

    def __init__(self, client: NodeClient, events: NodeEvents, executable: str) -> None:
        super().__init__()
        self.client = client
        self.events = events
        self.executable = executable        # "CleanCoin-qt" or "CleanCoin-gui"
        self.tasks = TaskRunner(self._failed)
        self.wallets: dict[str, WalletView] = {}
        self.wallet = ""
        self.on_error: Callable[[str, str], None] | None = None
        events.wallets.connect(self._wallet_events)

    # ------------------------------------------------------------------ calls

    def run(self, what: str, coro: Any, on_done: Callable[[Any], None] | None = None) -> Any:
        return self.tasks.spawn(what, coro, on_done)

    def _failed(self, what: str, exc: BaseException) -> None:
        text = clip(exc.message if isinstance(exc, RpcCallError) else str(exc) or type(exc).__name__)
        log.warning("%s failed: %s", what, text)
        self.message.emit("error", f"{what}: {text}")

    async def call(self, method: str, *params: Any, wallet: bool = False) -> Any:
        """A call for the node, or for the selected wallet (`wallet=True`)."""
        return await self.client.call(method, *params, wallet=self.wallet if wallet else None)

    # ------------------------------------------------------------------ wallets

    def select(self, name: str) -> None:
        if name != self.wallet:
            self.wallet = name
            self.wallet_selected.emit(name)

    def _wallet_events(self, events: list[WalletEvent]) -> None:
        changed_set = False
        refused = 0
        for event in events:
            if event.kind == "unloaded":
                changed_set |= self.wallets.pop(event.wallet, None) is not None
                continue
            view = self.wallets.get(event.wallet)
            if view is None and len(self.wallets) >= MAX_WALLETS:
                refused += 1
                continue
            if view is None:
                view = self.wallets[event.wallet] = WalletView(event.wallet)
                changed_set = True
            view.update(event)
            if event.wallet == self.wallet:
                self.wallet_updated.emit(event)
        if refused:
            self.message.emit("error", f"the node announced more than {MAX_WALLETS} wallets: "
                                       f"{refused} not shown")
        if changed_set:
            self.wallets_changed.emit()
            if self.wallet not in self.wallets:
                self.select(next(iter(self.wallets), ""))

    @property
    def current(self) -> WalletView | None:
        return self.wallets.get(self.wallet)
