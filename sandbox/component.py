"""The component side: restrict this process with the plan its launcher sent.

A component calls `enter()` once its imports and set-up are done and before it serves
anything. Launched without a sandbox, `enter()` does nothing and returns None.
"""

from __future__ import annotations

import os

from . import control
from .control import EXIT_SETUP_FAILED, SANDBOX_FD_ENV
from .enforce import apply_restrictions
from .errors import EnforcementError
from .plan import Plan
from .report import Report


def enter() -> Report | None:
    """Apply the post-exec steps and report to the launcher; exits on failure."""
    raw = os.environ.pop(SANDBOX_FD_ENV, None)
    if raw is None:
        return None
    fd = int(raw)
    try:
        message = control.recv(fd)
        if not isinstance(message, dict) or "plan" not in message:
            raise EnforcementError("control", "no plan received from the launcher")
        report = apply_restrictions(Plan.from_json(message["plan"]))
    except BaseException as exc:  # noqa: BLE001 - no component code may run after a failure
        err = exc if isinstance(exc, EnforcementError) else EnforcementError("setup", repr(exc))
        try:
            control.send(fd, {"error": err.as_dict()})
        finally:
            os._exit(EXIT_SETUP_FAILED)
    control.send(fd, {"report": report.to_dict()})
    os.close(fd)
    return report
