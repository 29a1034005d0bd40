"""The parent side: prepare the plan and the targets, spawn the probe child, collect its
answers, check what can be seen from outside, and judge every attempt."""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Mapping

from .. import control, launcher
from ..model import Policy
from .battery import _battery, _child_battery
from .judge import _Host, _Judge
from .result import Attempt, ProbeResult
from .script import _child_script
from .targets import _outside_targets, _Targets

DEFAULT_ATTEMPT_TIMEOUT = 5.0


def probe(policy: Policy, variables: Mapping[str, str], script: str | None = None, *,
          attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT) -> ProbeResult:
    """Run the escape battery (or `script`) in a child sandboxed by `policy`."""
    return probe_against(policy, policy, variables, script, attempt_timeout=attempt_timeout)


def probe_against(expected: Policy, enforced: Policy, variables: Mapping[str, str],
                  script: str | None = None, *,
                  attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT) -> ProbeResult:
    """Run the battery under `enforced`, judging each attempt by what `expected` promises.

    `probe` passes the same policy twice. Two different ones compare a sandbox with a claim:
    whatever `expected` forbids that works under `enforced` is reported as an escape (this is
    how the tests show that an escape is detected, without a broken sandbox).
    """
    plan = launcher.prepare(enforced, variables)
    expected_plan = plan if expected is enforced else launcher.prepare(expected, variables)
    source = None
    if script is not None:
        with open(script, encoding="utf-8") as handle:
            source = handle.read()
    judge = _Judge(expected, expected_plan, _Host.detect())
    with _outside_targets(judge, variables) as (targets, listeners):
        specs = [s for s in _battery() if not (s.needs_writable and targets.writable_dir is None)
                 and not (s.needs_hidden and targets.hidden_file is None)]
        whys = {s.name: s.expect(judge, targets) for s in specs}
        if source is not None:
            assert script is not None
            path = os.path.abspath(script)
            text = source

            def target(fd: int) -> int:
                return _child_script(fd, path, text)
        else:
            seccomp = {name: why.seccomp for name, why in whys.items()}

            def target(fd: int) -> int:
                return _child_battery(fd, specs, targets, seccomp, attempt_timeout)

        child = launcher.spawn(plan, target=target)
        assert child.report is not None
        if expected is enforced and set(child.report.namespaces) != set(plan.namespaces):
            judge = _Judge(expected, expected_plan, judge.host, child.report.namespaces)
            whys = {s.name: s.expect(judge, targets) for s in specs}
        try:
            if source is None:
                _hand_in_fds(child.control)
            results, script_result, trouble = _collect(child, attempt_timeout, source is not None)
        except BaseException:
            child.kill()
            child.wait()
            raise
        if trouble:
            child.kill()
        code = child.wait()
        if source is not None:
            if script_result is None:
                return ProbeResult(child.report, [], code, trouble or
                                   f"[no result: the probe child {launcher.describe_status(child.status or 0)}]")
            return ProbeResult(child.report, [], int(script_result["status"]),  # type: ignore[call-overload]
                               str(script_result["output"]))
        _verify_from_outside(results, targets, listeners)
    missing = trouble or f"no result: the probe child {launcher.describe_status(child.status or 0)}"
    attempts = []
    for spec in specs:
        why = whys[spec.name]
        outcome, detail = results.get(spec.name, ("error", missing))
        attempts.append(Attempt(spec.name, spec.description, why.expected, outcome, detail, why.reason))
    return ProbeResult(child.report, attempts, None, "")


def _hand_in_fds(sock: socket.socket) -> None:
    names: list[str] = []
    fds: list[int] = []
    try:
        fds.append(os.pidfd_open(os.getpid()))
        names.append("pidfd")
    except (OSError, AttributeError):
        pass
    try:
        fds.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        names.append("netns")
    except OSError:
        pass
    try:
        socket.send_fds(sock, [json.dumps(names).encode()], fds)
    finally:
        for fd in fds:
            os.close(fd)


def _collect(child: launcher.SandboxedProcess, attempt_timeout: float, script: bool
             ) -> tuple[dict[str, tuple[str, str]], dict[str, object] | None, str]:
    """Read the child's messages until it is done; returns results, script result, trouble."""
    results: dict[str, tuple[str, str]] = {}
    fd = child.control.fileno()
    wait = None if script else attempt_timeout + 10
    while True:
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return results, None, f"the probe child gave no answer for {wait:g} s (killed)"
        try:
            message = control.recv(fd)
        except (OSError, ValueError) as exc:
            return results, None, f"bad message from the probe child: {exc}"
        if message is None:
            return results, None, ""
        if not isinstance(message, dict):
            continue
        if "attempt" in message:
            item = message["attempt"]
            results[str(item["name"])] = (str(item["outcome"]), str(item["detail"]))
        elif "script" in message:
            return results, dict(message["script"]), ""
        elif "done" in message:
            return results, None, ""
        elif "error" in message:
            err = message["error"]
            return results, None, f"the probe child failed at {err.get('step')}: {err.get('reason')}"


def _verify_from_outside(results: dict[str, tuple[str, str]], targets: _Targets,
                         listeners: Mapping[str, socket.socket]) -> None:
    """What the parent can see for itself overrides a child that says it was denied."""

    def seen(name: str, how: str) -> None:
        outcome, detail = results.get(name, ("error", ""))
        if outcome != "allowed":
            results[name] = ("allowed", f"{how} (the child reported: {detail or 'nothing'})")

    for key, name in (("tcp", "net-tcp-connect"), ("abstract", "net-abstract-unix")):
        sock = listeners[key]
        sock.setblocking(False)
        try:
            conn, _ = sock.accept()
            conn.close()
            seen(name, "the parent accepted a connection from the sandbox")
        except (BlockingIOError, OSError):
            pass
    udp = listeners["udp"]
    udp.setblocking(False)
    try:
        if udp.recv(64) == targets.token.encode():
            seen("net-udp-send", "the parent received the datagram")
    except (BlockingIOError, OSError):
        pass
    if os.path.exists(targets.created):
        seen("fs-write-outside", f"{targets.created} exists")
    try:
        with open(targets.canary, "rb") as handle:
            if handle.read() != targets.secret:
                seen("fs-modify-outside", "the canary was changed")
    except OSError:
        pass
