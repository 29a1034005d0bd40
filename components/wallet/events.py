"""The wallets' changes as `WalletEvent`s, for whoever follows them (a front end, via the node).

A wallet says what changed (`Wallet.on_change`); the feed coalesces per wallet and hands the
state after the change to its listeners once the current burst of work on the loop is done
(`call_soon`): a sync of 100 blocks, or a send that records a transaction and locks coins,
costs one balance computation and one event, not one per step. A "balance" event whose
state equals the last one sent for that wallet is not sent at all (a block that changed
nothing of ours).

Listeners are plain callables taking a list of events; they must not block (the IPC side
queues them: `WalletNotificationsRelay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from cleancoin.components.interfaces.wallet import WalletEvent, WalletNotifications

log = logging.getLogger("cleancoin.wallet")

Listener = Callable[[list[WalletEvent]], None]

#: Kinds that say more than "the numbers may have moved": they win over "balance" when a
#: wallet changes several ways in one burst.
_RANK = {"balance": 0, "status": 1, "transaction": 2, "loaded": 3, "unloaded": 3}


def _state(event: WalletEvent) -> WalletEvent:
    return dataclasses.replace(event, kind="", txid=b"")


class WalletEventFeed:
    """See the module docstring."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._dirty: dict[str, tuple[Any, str, bytes]] = {}   # name -> (wallet, kind, txid)
        self._last: dict[str, WalletEvent] = {}
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add_listener(self, listener: Listener) -> None:
        """Add `listener` (called on the loop this is called on)."""
        self._loop = asyncio.get_running_loop()
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def changed(self, wallet: Any, kind: str, txid: bytes = b"") -> None:
        """`wallet` (a wallet.Wallet) changed; an event follows once the loop is free. May
        be called from a worker thread (encryptwallet, walletpassphrase run scrypt in one)."""
        if not self._listeners or self._loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            self._loop.call_soon_threadsafe(self.changed, wallet, kind, txid)
            return
        previous = self._dirty.get(wallet.name)
        if previous is None or _RANK.get(kind, 0) >= _RANK.get(previous[1], 0):
            self._dirty[wallet.name] = (wallet, kind, txid)
        if not self._scheduled:
            self._loop.call_soon(self.flush)
            self._scheduled = True

    def unloaded(self, name: str) -> None:
        """`name` is no longer loaded: an event at once (there is no state left to read)."""
        self._dirty.pop(name, None)
        self._last.pop(name, None)
        self._send([WalletEvent(name, "unloaded")])

    def flush(self) -> None:
        """Send what changed since the last flush."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        events = []
        for name, (wallet, kind, txid) in dirty.items():
            try:
                event = wallet.event(kind, txid)
            except Exception as exc:  # noqa: BLE001 - a closed store: the unload event follows
                log.debug("wallet %s: no event (%s)", name, exc)
                continue
            if kind == "balance" and name in self._last and _state(self._last[name]) == _state(event):
                continue
            self._last[name] = event
            events.append(event)
        self._send(events)

    def _send(self, events: list[WalletEvent]) -> None:
        if not events:
            return
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("wallet event listener failed")


class WalletNotificationsRelay:
    """A feed listener that delivers to a `WalletNotifications` (over IPC: the node), one call
    at a time and in order, from its own task; a receiver that stops answering holds at most
    MAX_QUEUED events before it is dropped."""

    MAX_QUEUED = 10_000

    def __init__(self, feed: WalletEventFeed, target: WalletNotifications) -> None:
        self._feed = feed
        self._target = target
        self._queue: list[WalletEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self, first: list[WalletEvent]) -> None:
        self._queue.extend(first)
        self._wake.set()
        self._feed.add_listener(self)
        self._task = asyncio.get_running_loop().create_task(self._deliver())

    def __call__(self, events: list[WalletEvent]) -> None:
        if len(self._queue) + len(events) > self.MAX_QUEUED:
            log.warning("wallet notifications: the receiver is %d events behind; dropped", len(self._queue))
            self._stop()
            return
        self._queue.extend(events)
        self._wake.set()

    async def _deliver(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await self._target.wallet_events(batch)
            except Exception as exc:  # noqa: BLE001 - the receiver is gone: stop
                log.debug("wallet notifications: delivery failed (%s); stopped", exc)
                self._stop()

    def _stop(self) -> None:
        self.closed = True
        self._feed.remove_listener(self)
        self._wake.set()

    async def disconnect(self) -> None:
        """The `Handler` side: stop delivering."""
        self._stop()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    close = disconnect
