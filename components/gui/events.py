"""`NodeNotifications` as Qt signals: the node calls these coroutines (over IPC, or directly
in CleanCoin-qt) and the widgets connect to the signals. Nothing here polls."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal

from cleancoin.components.interfaces.node import ProcessEvent, TipInfo
from cleancoin.components.interfaces.wallet import WalletEvent


class NodeEvents(QObject):
    """See the module docstring. `arrivals` counts notifications, for the Sandbox panel."""

    tip = Signal(object)            # TipInfo
    wallets = Signal(list)          # list[WalletEvent]
    process = Signal(object)        # ProcessEvent
    log = Signal(list)              # list[str]
    connection = Signal(bool, str)  # connected?, what happened

    def __init__(self) -> None:
        super().__init__()
        self.arrivals = 0
        self.last_tip: TipInfo | None = None
        self.last_arrival = 0.0

    def _arrived(self) -> None:
        self.arrivals += 1
        self.last_arrival = time.time()

    async def tip_changed(self, tip: TipInfo) -> None:
        self._arrived()
        self.last_tip = tip
        self.tip.emit(tip)

    async def wallet_events(self, events: list[WalletEvent]) -> None:
        self._arrived()
        self.wallets.emit(list(events))

    async def process_event(self, event: ProcessEvent) -> None:
        self._arrived()
        self.process.emit(event)

    async def log_lines(self, lines: list[str]) -> None:
        self._arrived()
        self.log.emit(list(lines))
