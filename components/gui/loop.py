"""asyncio on Qt's event loop (qasync), and a way for widgets to run coroutines.

pycapnp is asyncio-only and Qt has its own loop; qasync's QEventLoop is an asyncio loop that
runs inside Qt's, in one thread: a process that restricts itself must stay single-threaded
(docs/sandbox.md), and widgets may only be touched from the thread that made them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import qasync

log = logging.getLogger("cleancoin.gui")


def install(app: Any, *, already_running: bool = False) -> asyncio.AbstractEventLoop:
    """Make Qt's event loop the asyncio loop of this thread. `already_running`: Qt's loop is
    driven by someone else (pytest-qt), so the asyncio loop counts as running from now on."""
    loop = qasync.QEventLoop(app, already_running=already_running)
    # Plain Python threads for asyncio.to_thread (CleanCoin-qt's wallet runs scrypt there):
    # qasync's default executor uses QThreads, which abort the process when still alive at exit.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    asyncio.set_event_loop(loop)
    return loop


class TaskRunner:
    """Runs the coroutines a window starts (button clicks, refreshes), reports failures to
    `on_error` instead of losing them, and cancels what is left when the window closes."""

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, what: str, coro: Awaitable[Any],
              on_done: Callable[[Any], None] | None = None) -> asyncio.Task[Any]:
        """Run `coro` (`what` names it in error messages); `on_done(result)` afterwards."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self._on_error(what, exc)
            elif on_done is not None:
                try:
                    on_done(t.result())
                except Exception as err:  # noqa: BLE001 - a widget update failed: say so
                    self._on_error(what, err)
        task.add_done_callback(done)
        return task

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
