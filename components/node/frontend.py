"""What a node tells its front ends (`NodeNotifications`, components/interfaces/node.py).

`FrontendHub` is one per node. It collects:
- tip changes, from the chain's listeners;
- wallet events, from whichever wallets the node has (CleanCoind's in-process loader,
  CleanCoin-node's wallet process through `WalletLoader.handle_notifications`);
- process events (a wallet process exited, was restarted), from CleanCoin-node's extension;
- the node's warnings and errors as they are logged (`LogTap`).

Each subscriber (`FrontendSubscription`, one per `Node.handle_notifications`) has its own
task that delivers one call at a time. Pending state is coalesced rather than queued: tip
changes to the newest tip, wallet events to the newest per wallet, so a burst of 100 blocks
costs a front end one `tipChanged` and one `walletEvents`, and a slow front end holds at most
one pending item per wallet plus MAX_LOG_LINES log lines and MAX_PROCESS_EVENTS process
events (older ones are dropped, with a count in the next line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..interfaces.node import NodeNotifications, ProcessEvent, TipInfo
from ..interfaces.wallet import WalletEvent

log = logging.getLogger("cleancoin.node")

#: Log lines and process events kept for one subscriber that is not reading.
MAX_LOG_LINES = 200
MAX_PROCESS_EVENTS = 100
#: Characters of one forwarded log line.
MAX_LINE = 1000


class FrontendSubscription:
    """One front end's receiver, its pending state and its delivery task."""

    def __init__(self, hub: "FrontendHub", target: NodeNotifications) -> None:
        self._hub = hub
        self._target = target
        self._tip: TipInfo | None = None
        self._wallets: dict[str, WalletEvent] = {}
        self._processes: list[ProcessEvent] = []
        self._lines: list[str] = []
        self._dropped_lines = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._deliver())

    # ------------------------------------------------------------------ pending state

    def tip(self, tip: TipInfo) -> None:
        self._tip = tip
        self._wake.set()

    def wallets(self, events: list[WalletEvent]) -> None:
        for event in events:
            # Keep the newest state per wallet, but never let a later "balance" hide that a
            # transaction or a load happened (a front end refreshes its lists on those).
            prior = self._wallets.pop(event.wallet, None)
            if prior is not None and event.kind == "balance" and prior.kind != "balance":
                event = WalletEvent(**{**event.__dict__, "kind": prior.kind, "txid": prior.txid})
            self._wallets[event.wallet] = event
        self._wake.set()

    def process(self, event: ProcessEvent) -> None:
        self._processes.append(event)
        del self._processes[:-MAX_PROCESS_EVENTS]
        self._wake.set()

    def line(self, line: str) -> None:
        self._lines.append(line[:MAX_LINE])
        if len(self._lines) > MAX_LOG_LINES:
            self._dropped_lines += len(self._lines) - MAX_LOG_LINES
            del self._lines[:-MAX_LOG_LINES]
        self._wake.set()

    # ------------------------------------------------------------------ delivery

    async def _deliver(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.deliver_pending()
            except Exception as exc:  # noqa: BLE001 - the front end went away
                log.debug("front-end notifications: delivery failed (%s); stopped", exc)
                self.close()

    async def deliver_pending(self) -> None:
        """Send everything pending, in the order process events, tip, wallets, log lines
        (a restart is shown before the state that follows it)."""
        processes, self._processes = self._processes, []
        for event in processes:
            await self._target.process_event(event)
        tip, self._tip = self._tip, None
        if tip is not None:
            await self._target.tip_changed(tip)
        wallets, self._wallets = list(self._wallets.values()), {}
        if wallets:
            await self._target.wallet_events(wallets)
        lines, self._lines = self._lines, []
        if self._dropped_lines:
            lines.insert(0, f"({self._dropped_lines} earlier log lines not shown: the window was busy)")
            self._dropped_lines = 0
        if lines:
            await self._target.log_lines(lines)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.subscribers.discard(self)
            self._wake.set()

    async def disconnect(self) -> None:
        """The `Handler`: stop delivering."""
        self.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class LogTap(logging.Handler):
    """The node's WARNING and ERROR lines (and the sandbox's and IPC runtime's INFO lines about
    processes), passed to the hub as they are logged."""

    def __init__(self, hub: "FrontendHub") -> None:
        super().__init__(logging.INFO)
        self._hub = hub
        from cleancoin.sandbox.log_format import LogFormatter
        self.setFormatter(LogFormatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not _about_processes(record):
            return
        try:
            text = self.format(record).splitlines()[0]
        except Exception:  # noqa: BLE001 - logging must never raise
            return
        self._hub.log_line(text)


def _about_processes(record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return any(word in message for word in ("confined", "started", "restarted", "sandbox", "killed"))


class FrontendHub:
    """See the module docstring. `node` is the running node.Node."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self.subscribers: set[FrontendSubscription] = set()
        self._wallets: dict[str, WalletEvent] = {}    # the last state of each loaded wallet
        self._tap = LogTap(self)
        self._loop = asyncio.get_running_loop()
        node.chain.add_listener(self)
        logging.getLogger("cleancoin").addHandler(self._tap)

    def close(self) -> None:
        logging.getLogger("cleancoin").removeHandler(self._tap)
        with contextlib.suppress(Exception):
            self._node.chain.remove_listener(self)
        for sub in list(self.subscribers):
            sub.close()

    # ------------------------------------------------------------------ subscribing

    async def subscribe(self, target: NodeNotifications) -> FrontendSubscription:
        """A new subscriber; the current tip and wallets are delivered before this returns."""
        sub = FrontendSubscription(self, target)
        sub.tip(self.tip_info())
        if self._wallets:
            sub.wallets(list(self._wallets.values()))
        await sub.deliver_pending()
        sub.start()
        self.subscribers.add(sub)
        return sub

    def tip_info(self) -> TipInfo:
        chain = self._node.chain
        tip = chain.tip
        headers = max(chain.best_header.height, tip.height)
        progress = 1.0 if tip.height >= headers else tip.height / max(headers, 1)
        ibd = chain.initial_block_download(self._node.now())
        mempool = self._node.mempool
        return TipInfo(tip.height, tip.hash, tip.time, headers, progress, ibd,
                       len(mempool) if mempool is not None else 0)

    # ------------------------------------------------------------------ sources

    def block_connected(self, block: Any, index: Any) -> None:
        self._tip_changed()

    def block_disconnected(self, block: Any, index: Any) -> None:
        self._tip_changed()

    def _tip_changed(self) -> None:
        # Chain listeners may run on an RPC worker thread; the subscribers live on the loop.
        if not self.subscribers:
            return
        self._loop.call_soon_threadsafe(self._send_tip)

    def _send_tip(self) -> None:
        if self._node.chain is None:
            return
        tip = self.tip_info()
        for sub in list(self.subscribers):
            sub.tip(tip)

    def wallet_events(self, events: list[WalletEvent]) -> None:
        """From the node's wallets (a WalletEventFeed listener, or the wallet process)."""
        for event in events:
            if event.kind == "unloaded":
                self._wallets.pop(event.wallet, None)
            else:
                self._wallets[event.wallet] = WalletEvent(**{**event.__dict__, "kind": "loaded", "txid": b""})
        for sub in list(self.subscribers):
            sub.wallets(events)

    def wallets_gone(self) -> None:
        """The wallet process went away: its wallets are not loaded any more (until it is back)."""
        events = [WalletEvent(name, "unloaded") for name in self._wallets]
        if events:
            self.wallet_events(events)

    def process_event(self, event: ProcessEvent) -> None:
        for sub in list(self.subscribers):
            sub.process(event)

    def log_line(self, line: str) -> None:
        if not self.subscribers:
            return
        try:
            loop_running = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            loop_running = False
        if loop_running:
            self._send_line(line)
        else:
            self._loop.call_soon_threadsafe(self._send_line, line)

    def _send_line(self, line: str) -> None:
        for sub in list(self.subscribers):
            sub.line(line)


class WalletEventsReceiver:
    """The `WalletNotifications` the node passes to its wallet process: into the hub."""

    def __init__(self, hub: FrontendHub) -> None:
        self._hub = hub

    async def wallet_events(self, events: list[WalletEvent]) -> None:
        self._hub.wallet_events(events)
