"""Running one attempt in its own fork inside the sandbox, with a timeout: a seccomp kill
(SIGSYS) or a hang ends that attempt only."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import launcher
from .kernel_abi import _errname
from .targets import _Targets


class _Out:
    """The grandchild's side of the result pipe: notes, then one result."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _send(self, **message: object) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]

    def note(self, text: str) -> None:
        """A step that worked or failed before the decisive call (kept if that call kills us)."""
        self._send(note=text)

    def if_silent(self, outcome: str, detail: str) -> None:
        """What it means if the process ends without a result (a successful execve)."""
        self._send(silent=[outcome, detail])

    def if_signal(self, sig: int, outcome: str, detail: str) -> None:
        self._send(signal=[int(sig), outcome, detail])

    def result(self, outcome: str, detail: str) -> None:
        self._send(result=[outcome, detail])


@dataclass
class _Ctx:
    """What an attempt sees inside the sandbox."""

    targets: _Targets
    fds: dict[str, int] = field(default_factory=dict)
    seccomp: str | None = None          # the policy's seccomp action for the current attempt

    def denied(self, err: OSError | int, **hints: str) -> tuple[str, str]:
        """A failure, named by errno and, where known, by the mechanism that caused it."""
        code = err.errno if isinstance(err, OSError) else err
        name = _errname(code or 0)
        if name in hints:
            return "denied", f"{name} ({hints[name]})"
        if self.seccomp == f"errno:{name}":
            return "denied", f"{name} (seccomp)"
        return "denied", f"{name} (kernel: {os.strerror(code or 0)})"


Outcome = tuple[str, str]
Runner = Callable[[_Ctx, _Out], Outcome]


def _run_isolated(run: Runner, ctx: _Ctx, timeout: float) -> Outcome:
    """Run one attempt in a fork; SIGSYS is a seccomp denial, a hang an error."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = _Out(w)
        code = 0
        try:
            out.result(*run(ctx, out))
        except BaseException as exc:  # noqa: BLE001 - reported as the attempt's error
            code = 1
            try:
                out.result("error", f"{type(exc).__name__}: {exc}")
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)
    os.close(w)
    data = b""
    timed_out = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                timed_out = True
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    return _interpret(data, status, timed_out, timeout)


def _interpret(data: bytes, status: int, timed_out: bool, timeout: float) -> Outcome:
    notes: list[str] = []
    result = silent = None
    on_signal: dict[int, tuple[str, str]] = {}
    for line in data.decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "note" in message:
            notes.append(str(message["note"]))
        elif "silent" in message:
            silent = tuple(message["silent"])
        elif "signal" in message:
            sig, outcome, detail = message["signal"]
            on_signal[int(sig)] = (outcome, detail)
        elif "result" in message:
            result = tuple(message["result"])

    def joined(detail: str) -> str:
        return "; ".join([*notes, detail])

    if timed_out and result is None:
        return "error", joined(f"no answer within {timeout:g} s (killed)")
    if result is not None:
        return str(result[0]), joined(str(result[1]))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGSYS:
            return "denied", joined("killed by SIGSYS (seccomp)")
        if sig in on_signal:
            outcome, detail = on_signal[sig]
            return outcome, joined(detail)
        return "error", joined(launcher.describe_status(status))
    if silent is not None:
        return str(silent[0]), joined(f"{silent[1]} ({launcher.describe_status(status)})")
    return "error", joined(f"ended without an answer: {launcher.describe_status(status)}")


def _ok(detail: str) -> Outcome:
    return "allowed", f"succeeded: {detail}"
