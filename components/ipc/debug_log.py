"""-debug=ipc: one log line per request and per response, on both sides of a connection.

Without the category nothing is formatted per call: the binding asks `enabled` once per call
and the check is a bool attribute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from ..interfaces.init import IpcPeer

LOG = logging.getLogger("cleancoin.ipc")


def render(value: Any, limit: int = 80) -> str:
    """A short rendering of parameters and results for the log."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class CallLog:
    """Per-connection logging state: who is at each end and the request counter."""

    local: IpcPeer
    remote: IpcPeer | None = None
    enabled: bool = False
    # Only a parent-child connection (a spawned component's socket pair) lets the peer turn the log on: a listener's
    # clients must not switch on logging in a process that was started without it.
    peer_may_enable: bool = False
    _numbers: count = field(default_factory=lambda: count(1))

    def peer_text(self) -> str:
        return str(self.remote) if self.remote else "peer(?)"

    def request(self, direction: str, interface: str, method: str, params: dict[str, Any]) -> tuple[int, float]:
        """Log a request; returns its number and start time."""
        number = next(self._numbers)
        args = ", ".join(f"{k}={render(v, 60)}" for k, v in params.items())
        arrow = "->" if direction == "out" else "<-"
        LOG.debug("ipc: %s %s %s #%d %s.%s(%s)", self.local, arrow, self.peer_text(), number,
                  interface, method, args)
        return number, time.perf_counter()

    def response(self, direction: str, number: int, start: float, interface: str, method: str,
                 result: Any, error: BaseException | None = None) -> None:
        """Log the response (or error) of request `number`."""
        took = (time.perf_counter() - start) * 1000
        arrow = "<-" if direction == "out" else "->"
        outcome = f"raised {type(error).__name__}: {render(str(error), 120)}" if error else f"= {render(result)}"
        LOG.debug("ipc: %s %s %s #%d %s.%s %s (%.3f ms)", self.local, arrow, self.peer_text(), number,
                  interface, method, outcome, took)

    def event(self, what: str) -> None:
        """Connects and disconnects."""
        if self.enabled:
            LOG.debug("ipc: %s %s %s", self.local, what, self.peer_text())
