"""`NodeNotifications` as Qt signals: the node calls these coroutines (over IPC, or directly
in CleanCoin-qt) and the widgets connect to the signals. Nothing here polls.

The node may be compromised (docs/gui.md, "What the window trusts"), so this is where its
notifications are checked and bounded before any widget sees them:

- a malformed one (a tip with a NaN or out-of-range progress or a negative height, a wallet
  event of an unknown kind, a name longer than MAX_WALLET_NAME, a balance outside 0 to
  MAX_MONEY, a process event of an unknown kind) is refused: `refused` says which and why;
- what arrives is kept in bounded queues and handed to the widgets at most once every
  DRAW_SECONDS (a single notification at once): tips coalesced to the newest, wallet events
  to the newest per wallet and kind (at most MAX_PENDING_WALLETS of them), the newest EVENT_KEEP
  process events and LOG_KEEP log lines, each line cut at MAX_SHOWN characters; what was
  dropped is said in a line of its own. A node that pushes faster than the window draws
  costs the window a queue append per call, never a redraw.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any

from PySide6.QtCore import QObject, Signal

from cleancoin.components.common.amount import MAX_MONEY
from cleancoin.components.interfaces.node import PROCESS_EVENT_KINDS, ProcessEvent, TipInfo
from cleancoin.components.interfaces.wallet import WALLET_EVENT_KINDS, WalletEvent

from .plain import MAX_SHOWN, clip

#: The most often the widgets are handed what arrived (seconds between two hand-overs).
DRAW_SECONDS = 0.05
#: Longest wallet name accepted (a wallet is a directory: a path component is 255 bytes).
MAX_WALLET_NAME = 1024
#: Wallet events (one per wallet and kind) that may wait for one hand-over; more are dropped.
MAX_PENDING_WALLETS = 1000
#: Process events and log lines kept for one hand-over (the oldest are dropped first).
EVENT_KEEP = 100
LOG_KEEP = 2000
#: Refusals named one by one per hand-over (more are counted).
REFUSALS_SHOWN = 10


def tip_problem(tip: TipInfo) -> str:
    """Why `tip` cannot be a node's tip, or ""."""
    progress = tip.progress
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) \
            or not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
        return f"progress {tip.progress!r}"
    if tip.height < 0 or tip.headers < -1:
        return f"height {tip.height}, headers {tip.headers}"
    return ""


def wallet_event_problem(event: WalletEvent) -> str:
    """Why `event` cannot come from a wallet, or ""."""
    if event.kind not in WALLET_EVENT_KINDS:
        return f"kind {clip(event.kind, 40)!r}"
    if not event.wallet or len(event.wallet) > MAX_WALLET_NAME:
        return f"a wallet name of {len(event.wallet)} characters"
    for name in ("trusted", "untrusted_pending", "immature"):
        value = getattr(event, name)
        if not 0 <= value <= MAX_MONEY:
            return f"{name} {value}"
    return ""


class NodeEvents(QObject):
    """See the module docstring. `arrivals` counts notifications, for the Sandbox panel."""

    tip = Signal(object)            # TipInfo
    wallets = Signal(list)          # list[WalletEvent]
    process = Signal(object)        # ProcessEvent
    log = Signal(list)              # list[str]
    connection = Signal(bool, str)  # connected?, what happened
    refused = Signal(str)           # a notification the window did not take, and why

    def __init__(self) -> None:
        super().__init__()
        self.arrivals = 0
        self.last_tip: TipInfo | None = None
        self.last_arrival = 0.0
        self._tip: TipInfo | None = None
        self._wallets: dict[tuple[str, str], WalletEvent] = {}      # (wallet, kind) -> newest
        self._process: deque[ProcessEvent] = deque(maxlen=EVENT_KEEP)
        self._log: deque[str] = deque(maxlen=LOG_KEEP)
        self._dropped = {"process events": 0, "log lines": 0, "wallet events": 0, "malformed notifications": 0}
        self._refusals: list[str] = []
        self._scheduled: Any = None
        self._last_flush = 0.0

    def _arrived(self) -> None:
        self.arrivals += 1
        self.last_arrival = time.time()
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_flush + DRAW_SECONDS - time.monotonic()
        self._scheduled = loop.call_later(wait, self.flush) if wait > 0 else loop.call_soon(self.flush)

    def _refuse(self, what: str) -> None:
        if len(self._refusals) < REFUSALS_SHOWN:
            self._refusals.append(f"refused a malformed {what} from the node")
        else:
            self._dropped["malformed notifications"] += 1

    async def tip_changed(self, tip: TipInfo) -> None:
        problem = tip_problem(tip)
        if problem:
            self._refuse(f"tip ({problem})")
        else:
            self.last_tip = self._tip = tip
        self._arrived()

    async def wallet_events(self, events: list[WalletEvent]) -> None:
        for event in events:
            problem = wallet_event_problem(event)
            if problem:
                self._refuse(f"wallet event ({problem})")
            elif (event.wallet, event.kind) in self._wallets or len(self._wallets) < MAX_PENDING_WALLETS:
                # The newest per wallet and kind, in the order of the newest: a screen that
                # follows "transaction" events still sees one when a "status" came after it.
                self._wallets.pop((event.wallet, event.kind), None)
                self._wallets[(event.wallet, event.kind)] = event
            else:
                self._dropped["wallet events"] += 1
        self._arrived()

    async def process_event(self, event: ProcessEvent) -> None:
        if event.kind not in PROCESS_EVENT_KINDS:
            self._refuse(f"process event (kind {clip(event.kind, 40)!r})")
        else:
            if len(self._process) == self._process.maxlen:
                self._dropped["process events"] += 1
            self._process.append(ProcessEvent(event.kind, clip(event.name, 200), event.pid,
                                              clip(event.detail), event.restarts))
        self._arrived()

    async def log_lines(self, lines: list[str]) -> None:
        overflow = len(self._log) + len(lines) - LOG_KEEP
        if overflow > 0:
            self._dropped["log lines"] += overflow
        for line in lines[-LOG_KEEP:]:
            self._log.append(clip(line, MAX_SHOWN - 100))
        self._arrived()

    def flush(self) -> None:
        """Hand what arrived to the widgets now (GuiApp calls it once subscribed: the tip
        and the loaded wallets are then there)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._last_flush = time.monotonic()
        tip, self._tip = self._tip, None
        wallets, self._wallets = list(self._wallets.values()), {}
        processes, logs = list(self._process), list(self._log)
        self._process.clear()
        self._log.clear()
        refusals, self._refusals = self._refusals, []
        dropped = {k: v for k, v in self._dropped.items() if v}
        self._dropped = dict.fromkeys(self._dropped, 0)
        if tip is not None:
            self.tip.emit(tip)
        if wallets:
            self.wallets.emit(wallets)
        for event in processes:
            self.process.emit(event)
        if dropped:
            logs.append("not shown of what the node sent: "
                        + ", ".join(f"{n} {what}" for what, n in dropped.items()))
        if logs:
            self.log.emit(logs)
        for text in refusals:
            self.refused.emit(text)
