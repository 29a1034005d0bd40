"""The parent side: prepare the plan and the targets, start each attempt in its own sandboxed
child through a zygote (the path every component takes), collect the answers, check what can
be seen from outside, and judge every attempt."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping

from .. import launcher
from ..model import Policy
from ..plan import Plan
from ..report import Report
from ..zygote import ComponentSpec, Limits, Zygote, ZygoteError
from .attempts_inherited import PARENT_RUNS
from .battery import _Spec, _battery
from .judge import _Host, _Judge
from .result import Attempt, ProbeResult
from .runner import Outcome, _interpret
from .targets import _outside_targets, _Targets

DEFAULT_ATTEMPT_TIMEOUT = 5.0
_ATTEMPT = "cleancoin.sandbox.probe.runner:serve_attempt"
_SCRIPT = "cleancoin.sandbox.probe.runner:serve_script"
_MAX_SCRIPT_OUTPUT = 1 << 20


def probe(policy: Policy, variables: Mapping[str, str], script: str | None = None, *,
          attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT) -> ProbeResult:
    """Run the escape battery (or `script`) in children sandboxed by `policy`."""
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
    zygote = Zygote.start({"attempt": ComponentSpec("attempt", _ATTEMPT, None, plan=plan),
                           "script": ComponentSpec("script", _SCRIPT, None, plan=plan)},
                          limits=Limits(alive=1, per_minute=100_000), name_kills=False)
    try:
        with _outside_targets(judge, variables) as (targets, listeners):
            if source is not None:
                assert script is not None
                return _run_script(zygote, os.path.abspath(script), source, attempt_timeout)
            specs = [s for s in _battery() if _applies(s, targets, plan)]
            whys = {s.name: s.expect(judge, targets) for s in specs}
            results: dict[str, Outcome] = {}
            report: Report | None = None
            plan_of = _extra_grant_planner(enforced, variables)
            for spec in specs:
                if spec.parent_run:
                    results[spec.name] = PARENT_RUNS[spec.name](judge, targets, plan_of, attempt_timeout)
                    continue
                outcome, child_report = _run_attempt(zygote, spec, targets, whys[spec.name].seccomp,
                                                     attempt_timeout)
                results[spec.name] = outcome
                report = report or child_report
            _verify_from_outside(results, targets, listeners)
    finally:
        zygote.stop()
    if report is None:
        report = _report_of(plan)
    attempts = [Attempt(s.name, s.description, whys[s.name].expected, *results[s.name],
                        whys[s.name].reason) for s in specs]
    return ProbeResult(report, attempts, None, "")


def _applies(spec: _Spec, targets: _Targets, plan: Plan) -> bool:
    if spec.needs_writable and targets.writable_dir is None:
        return False
    if spec.needs_hidden and targets.hidden_file is None:
        return False
    if spec.needs_protected and not targets.protected_files:
        return False
    return not (spec.needs_self and "pid" in plan.namespaces)


def _report_of(plan: Plan) -> Report:
    """The report of one launch under the plan (when every attempt ran in the parent)."""
    child = launcher.spawn(plan, target=lambda _fd: 0)
    child.wait()
    assert child.report is not None
    return child.report


def _extra_grant_planner(policy: Policy, variables: Mapping[str, str]) -> Callable[..., Plan]:
    """The policy plus a grant of one more directory: write (grant-symlink-swap) or read
    (unix-socket-in-read-grant)."""
    def plan_of(path: str, access: str = "write") -> Plan:
        from ..policy_loader import load_policy
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
            handle.write(f'extends = [{json.dumps(policy.files[-1])}]\n'
                         f'[filesystem]\n{access} = [{json.dumps(path)}]\n')
        try:
            return launcher.prepare(load_policy(handle.name), variables)
        finally:
            os.unlink(handle.name)
    return plan_of


def _hand_in_fds() -> tuple[list[str], list[int]]:
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
    return names, fds


def _run_attempt(zygote: Zygote, spec: _Spec, targets: _Targets, seccomp: str | None,
                 timeout: float) -> tuple[Outcome, Report | None]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            spawned = zygote.spawn("attempt", theirs.fileno())
        except ZygoteError as exc:
            return ("error", f"the sandboxed child did not start: {exc}"), None
        finally:
            theirs.close()
        names, fds = _hand_in_fds()
        try:
            socket.send_fds(ours, [json.dumps({"attempt": spec.name, "targets": targets.to_json(),
                                               "seccomp": seccomp, "fd_names": names}).encode()], fds)
            sent = True
        except OSError:
            # The child ended before it read what to do (a policy's rlimits can kill it at
            # start): how it ended is this attempt's outcome, an error, not the probe's end.
            sent = False
        finally:
            for fd in fds:
                os.close(fd)
        data, timed_out = _read_until_eof(ours, timeout) if sent else (b"", False)
        if timed_out:
            try:
                zygote.kill(spawned.pid)
            except ZygoteError:
                pass
        return _interpret(data, _exit_code(zygote, spawned.pid, timeout), timed_out, timeout), spawned.report
    finally:
        ours.close()


def _read_until_eof(sock: socket.socket, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bool]:
    data = b""
    while True:
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            return data, True
        try:
            chunk = sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            return data, False
        if len(data) < limit:
            data += chunk


def _exit_code(zygote: Zygote, pid: int, timeout: float) -> int | None:
    """The attempt's return code, from the zygote's exit event (negative: a signal)."""
    while True:
        ready, _, _ = select.select([zygote.events], [], [], timeout + 5)
        if not ready:
            return None
        event = zygote.read_event()
        if event is None:
            return None
        if event.pid == pid:
            return event.returncode


def _run_script(zygote: Zygote, path: str, source: str, timeout: float) -> ProbeResult:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            spawned = zygote.spawn("script", theirs.fileno())
        finally:
            theirs.close()
        ours.sendall(json.dumps({"path": path, "source": source}).encode())
        ours.shutdown(socket.SHUT_WR)
        data, _ = _read_until_eof(ours, 24 * 3600, _MAX_SCRIPT_OUTPUT + 1)
    finally:
        ours.close()
    code = _exit_code(zygote, spawned.pid, 24 * 3600)
    output = data[:_MAX_SCRIPT_OUTPUT].decode(errors="replace")
    if len(data) > _MAX_SCRIPT_OUTPUT:
        output += "\n[... more output cut]\n"
    if code is not None and code == -signal.SIGSYS:
        output += "[the script was killed by SIGSYS: a syscall the seccomp filter forbids]\n"
    assert spawned.report is not None
    return ProbeResult(spawned.report, [], code if code is not None else -9, output)


def _verify_from_outside(results: dict[str, Outcome], targets: _Targets,
                         listeners: Mapping[str, socket.socket]) -> None:
    """What the parent can see for itself overrides a child that says it was denied."""

    def seen(name: str, how: str) -> None:
        outcome, detail = results.get(name, ("error", ""))
        if outcome != "allowed" and name in results:
            results[name] = ("allowed", f"{how} (the child reported: {detail or 'nothing'})")

    for key, name in (("tcp", "net-tcp-connect"), ("mptcp", "net-mptcp-connect"), ("abstract", "net-abstract-unix"),
                      ("named", "unix-named-socket")):
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
