"""One attempt in its own sandboxed child, started the way every component is.

The probe starts a zygote (a fresh interpreter, as CleanCoin-node does for its wallet) and
asks it for one child per attempt: every sandbox step runs, then `serve_attempt` reads which
attempt to make from its socket, makes it, and writes notes and a result back as JSON lines.
A seccomp kill (SIGSYS) or a hang ends that attempt only, and a policy that forbids fork
(the shipped component policies do) is probed as well as any other. `serve_script` runs a
`--script` file the same way, its stdout and stderr going to the socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import launcher
from .kernel_abi import _errname
from .targets import _Targets

_MAX_REQUEST = 1 << 20


class _Out:
    """The attempt's side of its socket: notes, then one result."""

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


def _request(fd: int) -> tuple[dict[str, object], list[int]]:
    """The parent's one message: what to do, with descriptors handed in."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 8)
    finally:
        sock.close()
    return json.loads(data.decode()), fds


def serve_attempt(fd: int) -> int:
    """The zygote's target for one attempt (in the sandbox: every step is applied)."""
    from .battery import _battery
    request, fds = _request(fd)
    specs = {s.name: s for s in _battery()}
    spec = specs[str(request["attempt"])]
    ctx = _Ctx(_Targets.from_json(request["targets"]),  # type: ignore[arg-type]
               dict(zip(request.get("fd_names", []), fds)),  # type: ignore[arg-type]
               request.get("seccomp"))  # type: ignore[arg-type]
    out = _Out(fd)
    try:
        out.result(*spec.run(ctx, out))
    except BaseException as exc:  # noqa: BLE001 - reported as the attempt's error
        out.result("error", f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def serve_script(fd: int) -> int:
    """The zygote's target for `probe --script`: the file runs as __main__, its output to fd."""
    from .script import _exec_script
    request, _fds = _request(fd)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    return _exec_script(str(request["path"]), str(request["source"]))


def _interpret(data: bytes, returncode: int | None, timed_out: bool, timeout: float) -> Outcome:
    """An attempt's verdict from what it wrote and how its process ended."""
    notes: list[str] = []
    result = silent = None
    on_signal: dict[int, tuple[str, str]] = {}
    for line in data.decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):    # a line nested too deep is no message either
            continue
        if not isinstance(message, dict):
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

    how = _describe(returncode)
    if timed_out and result is None:
        return "error", joined(f"no answer within {timeout:g} s (killed)")
    if result is not None:
        return str(result[0]), joined(str(result[1]))
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGSYS:
            return "denied", joined("killed by SIGSYS (seccomp)")
        if sig in on_signal:
            outcome, detail = on_signal[sig]
            return outcome, joined(detail)
        return "error", joined(how)
    if silent is not None:
        return str(silent[0]), joined(f"{silent[1]} ({how})")
    return "error", joined(f"ended without an answer: {how}")


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "status unknown"
    if returncode < 0:
        return launcher.describe_status(-returncode)   # a wait status whose low bits are the signal
    return f"exited with status {returncode}"


def _ok(detail: str) -> Outcome:
    return "allowed", f"succeeded: {detail}"
