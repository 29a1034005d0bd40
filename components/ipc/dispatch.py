"""Server calls answered in the event-loop turn that received them.

pycapnp runs every server method as `asyncio.create_task(handler(context))`: the task's first
step runs one loop turn later, its done callback one more, and only then is the answer
serialised (three turns, measured as most of the Python cost of a round trip, issue #16).
Most of our handlers never wait (an Echo, a wallet RPC that reads SQLite), so this module
installs a task factory (`loop.set_task_factory`, public asyncio API) that runs the first step
of *our* server handlers at once, as Python 3.12's `asyncio.eager_task_factory` does:

- the handler finishes without waiting: the "task" is a finished future, and pycapnp's done
  callback runs at once, so the answer goes out in the same KJ turn;
- the handler waits on something: a real Task takes over the started coroutine from the
  point where it waits, exactly as if it had run its first step itself.

Only coroutines of the IPC binding's server handlers (`binding.SERVER_HANDLER_CODE`) are run
eagerly; every other `create_task` in the process behaves as before. Not a patch of pycapnp:
pycapnp calls `create_task`, and the loop's task factory is the documented way to decide what
that creates.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any

_NOTHING = object()


class _Finished(asyncio.Future):  # type: ignore[type-arg]
    """A handler that finished in its first step: a future that is done already.

    Done callbacks added afterwards run at once instead of a turn later (asyncio schedules
    them with call_soon): pycapnp adds the callback that fulfils the KJ promise of the call,
    and the answer should leave in this turn. pycapnp also sets `_fulfiller` on its tasks,
    which needs an instance dict (a Python subclass has one)."""

    def add_done_callback(self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None) -> None:
        if context is None:
            fn(self)
        else:
            context.run(fn, self)


class _Resumed(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine that already ran its first step and waits on `pending`: what a Task
    drives from there on. Its first `send` hands the Task the future the coroutine waits on
    (still marked as blocking, so the Task wakes up when it completes)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def send(self, value: Any) -> Any:
        if self._pending is not _NOTHING:
            pending, self._pending = self._pending, _NOTHING
            return pending
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._pending = _NOTHING        # cancelled before the Task's first step: into the coroutine
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:          # never awaited: only a Task drives it
        raise TypeError("a resumed server call is driven by its task only")


async def _reraise(exc: BaseException) -> Any:
    raise exc


def _eager_factory(codes: frozenset[CodeType]) -> Callable[..., asyncio.Future[Any]]:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, *, context: contextvars.Context | None = None,
                **kwargs: Any) -> asyncio.Future[Any]:
        if getattr(coro, "cr_code", None) not in codes:
            return asyncio.Task(coro, loop=loop, context=context, **kwargs)
        ctx = contextvars.copy_context() if context is None else context
        try:
            pending = ctx.run(coro.send, None)
        except StopIteration as done:
            finished = _Finished(loop=loop)
            finished.set_result(done.value)
            return finished
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the call's failure, as a task would hold it
            # A failed call is answered by a real Task a turn later: pycapnp's error path does
            # not take a future that failed before create_task returned (the call never got
            # its answer: tests/test_chain_interface.py hung).
            return asyncio.Task(_reraise(exc), loop=loop, context=ctx, **kwargs)
        return asyncio.Task(_Resumed(coro, pending), loop=loop, context=ctx, **kwargs)

    return factory


def answer_in_turn(codes: frozenset[CodeType]) -> None:
    """Run coroutines whose code is in `codes` eagerly on the running loop (idempotent; a
    loop with a task factory of someone else's is left alone)."""
    loop = asyncio.get_running_loop()
    current = loop.get_task_factory()
    if current is None:
        loop.set_task_factory(_eager_factory(codes))  # type: ignore[arg-type]
