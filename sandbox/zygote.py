"""A launcher process (zygote) that starts only named components, each under its own policy.

Seccomp filters and Landlock domains are inherited and only ever get stricter, so a sandboxed
process cannot start a child that needs rights it lacks itself (a node cannot grant a wallet
its wallet directory, which the node must not see). The zygote is forked before its parent
restricts itself; it keeps the rights to launch, and offers its parent exactly one thing: start
component NAME with this IPC socket. It loads and fits every component's policy when it
starts, so a bad policy stops the parent early and each spawn skips the policy work.

Two socket pairs connect parent and zygote: requests (spawn NAME, with the IPC descriptor
passed by SCM_RIGHTS; the answer carries the pid and the enforcement report or the error)
and events (a component exited, with its status), which the parent can watch from its event
loop. The zygote dies with its parent, and its children die with it.

The zygote is a fresh interpreter (`python -m cleancoin.sandbox.zygote`), not a fork of its
parent: every spawn forks it up to three times (a pid namespace needs a waiter and an init),
and a fork costs in proportion to the address space it copies. It receives the finished plans
from its parent and imports neither the policy model nor libseccomp.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import descriptors, launcher
from .child_setup import die_with_parent
from .plan import Plan
from .report import Report

_MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class ComponentSpec:
    """A component the zygote may start: the program and the policy it runs under."""

    name: str
    argv: tuple[str, ...]                  # e.g. (python, "-m", "cleancoin.components.wallet")
    policy: str | None                     # policy file; None runs it without a sandbox
    variables: Mapping[str, str] = field(default_factory=dict)
    # Only for `Zygote.fork`: run target(ipc_fd) -> exit status in the sandboxed child
    # instead of exec'ing argv (the code is already imported; see Zygote.fork).
    target: Callable[[int], int] | None = None


@dataclass(frozen=True)
class Spawned:
    pid: int                  # the component's pid as the parent sees it
    report: Report | None


@dataclass(frozen=True)
class Exited:
    pid: int
    returncode: int           # negative: killed by that signal
    description: str          # "exited with status 3", "killed by SIGSYS (...)"


class ZygoteError(Exception):
    """A spawn the zygote refused or could not do; `step` names the sandbox step if any."""

    def __init__(self, message: str, step: str | None = None) -> None:
        self.step = step
        super().__init__(message)


def _send(sock: socket.socket, message: object, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(sock, [data], fds or [])


def _recv(sock: socket.socket, max_fds: int = 0) -> tuple[object | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, max_fds)
    if not data:
        return None, fds
    return json.loads(data), fds


class Zygote:
    """The parent's handle on a running zygote."""

    def __init__(self, pid: int, requests: socket.socket, events: socket.socket) -> None:
        self.pid = pid
        self._requests = requests
        self.events = events          # watch for readability, then call `read_event()`

    @classmethod
    def start(cls, components: Mapping[str, ComponentSpec], *, wait: bool = True) -> "Zygote":
        """Fit every component's policy, then start the zygote. Raises on a bad policy.

        `wait=False` returns while the zygote's interpreter is still starting; call
        `wait_ready()` before the first spawn (the parent can do its own work meanwhile).
        """
        plans = {name: {"argv": list(spec.argv), "plan": plan.to_json() if plan else None}
                 for name, spec in components.items() for plan in [_plan(spec)]}
        req_parent, req_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ev_parent, ev_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                req_parent.close()
                ev_parent.close()
                for sock in (req_child, ev_child):
                    os.set_inheritable(sock.fileno(), True)
                os.execv(sys.executable, [sys.executable, "-m", "cleancoin.sandbox.zygote",
                                          str(parent), str(req_child.fileno()), str(ev_child.fileno())])
            finally:
                os._exit(127)
        req_child.close()
        ev_child.close()
        zygote = cls(pid, req_parent, ev_parent)
        _send(req_parent, {"components": plans})
        if wait:
            zygote.wait_ready()
        return zygote

    @classmethod
    def fork(cls, components: Mapping[str, ComponentSpec]) -> "Zygote":
        """Like `start`, but the zygote is a fork of this process, and a component with a
        `target` runs that function in its sandboxed child instead of an exec.

        What it saves: a second and a third interpreter start with their imports (the parent
        imports the components' code once, before it forks; measured ~0.2 s of CPU per node
        start). What it costs: the zygote and its components begin as copies of this process
        (copy on write), so call it early, single-threaded, before this process holds anything
        a component must not see (CleanCoin-node: before it opens its chain or any secret),
        and expect its memory image in theirs. The sandbox steps are the same; a target runs
        after all of them, with the policy's environment in os.environ. Also before any
        Cap'n Proto event loop runs in this process: KJ refuses a second loop on a thread that
        had one, which is what a forked child would inherit.
        """
        plans = {name: (spec.argv, _plan(spec), spec.target) for name, spec in components.items()}
        req_parent, req_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ev_parent, ev_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                req_parent.close()
                ev_parent.close()
                die_with_parent(parent)
                _name_self(b"zygote")
                descriptors.keep_only({0, 1, 2, req_child.fileno(), ev_child.fileno()})
                try:
                    _serve(plans, req_child, ev_child)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                code = 0
            finally:
                # Never back into the parent's code (its main(), its atexit handlers).
                os._exit(code)
        req_child.close()
        ev_child.close()
        return cls(pid, req_parent, ev_parent)

    def wait_ready(self) -> None:
        """Wait until the zygote has its plans and takes requests; raises if it died."""
        answer, _ = _recv(self._requests)
        if answer != {"ready": True}:
            self.stop()
            raise ZygoteError(f"the zygote did not start: {answer}")

    def spawn(self, name: str, ipc_fd: int) -> Spawned:
        """Start component `name` with `ipc_fd` as its -ipcfd; returns once it is sandboxed."""
        self.request_spawn(name, ipc_fd)
        return self.collect_spawn()

    def request_spawn(self, name: str, ipc_fd: int) -> None:
        """The first half of `spawn`: the zygote starts the component while the caller goes
        on; `collect_spawn()` then waits for the answer. One request at a time."""
        _send(self._requests, {"spawn": name}, [ipc_fd])

    def collect_spawn(self) -> Spawned:
        """The answer to the last `request_spawn`: the pid and report, or ZygoteError."""
        answer, _ = _recv(self._requests)
        if not isinstance(answer, dict):
            raise ZygoteError("the zygote is gone")
        if "error" in answer:
            raise ZygoteError(str(answer["error"]), answer.get("step"))
        report = Report.from_dict(answer["report"]) if answer.get("report") else None
        return Spawned(int(answer["pid"]), report)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal a component this zygote started (and nothing else)."""
        _send(self._requests, {"kill": pid, "signal": int(sig)})
        answer, _ = _recv(self._requests)
        if not isinstance(answer, dict) or "error" in answer:
            raise ZygoteError(str(answer.get("error") if isinstance(answer, dict) else "the zygote is gone"))

    def read_event(self) -> Exited | None:
        """The next exit event (call when `events` is readable); None when the zygote is gone."""
        message, _ = _recv(self.events)
        if not isinstance(message, dict):
            return None
        return Exited(int(message["pid"]), int(message["returncode"]), str(message["description"]))

    def stop(self) -> None:
        """End the zygote; its components die with it. Safe to call twice."""
        if self._requests.fileno() < 0:
            return
        # Hanging up is enough: the zygote's loop ends when its parent does. The kill is for a
        # zygote stuck in a spawn, and may be refused once the parent restricted itself
        # (Landlock's signal scope: the zygote is outside the parent's domain).
        self._requests.close()
        self.events.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _name_self(name: bytes) -> None:
    """Set the process name `ps` and /proc/<pid>/comm show (a fork keeps its parent's)."""
    import ctypes
    buf = ctypes.create_string_buffer(name[:15])
    ctypes.CDLL(None).prctl(15, buf, 0, 0, 0)     # PR_SET_NAME


def _plan(spec: ComponentSpec) -> Plan | None:
    if spec.policy is None:
        return None
    from .errors import EnforcementError, PolicyError, PolicyErrors
    from .policy_loader import load_policy
    try:
        return launcher.prepare(load_policy(spec.policy), spec.variables)
    except PolicyErrors as exc:
        raise ZygoteError(f"policy of {spec.name}: {exc}") from None
    except (PolicyError, EnforcementError) as exc:
        raise ZygoteError(f"policy of {spec.name}: {exc}", getattr(exc, "step", None)) from None


Components = Mapping[str, tuple[tuple[str, ...], Plan | None, Callable[[int], int] | None]]


def main(argv: list[str]) -> int:
    """Entry point of the zygote process: `python -m cleancoin.sandbox.zygote PARENT REQ EV`."""
    parent, req_fd, ev_fd = (int(a) for a in argv)
    die_with_parent(parent)
    descriptors.keep_only({0, 1, 2, req_fd, ev_fd})
    requests = socket.socket(fileno=req_fd)
    events = socket.socket(fileno=ev_fd)
    first, _ = _recv(requests)
    if not isinstance(first, dict) or "components" not in first:
        return 1
    plans: Components = {name: (tuple(c["argv"]), Plan.from_json(c["plan"]) if c["plan"] else None, None)
                         for name, c in first["components"].items()}
    try:
        _send(requests, {"ready": True})
        _serve(plans, requests, events)
    except (BrokenPipeError, ConnectionResetError):
        pass        # the parent hung up mid-answer (it is exiting): so do we, quietly
    return 0


def _serve(plans: Components, requests: socket.socket, events: socket.socket) -> None:
    """The zygote's loop: spawn on request, report exits; ends when the parent hangs up."""
    # Ctrl-C in the terminal reaches the whole process group: the parent shuts down and asks
    # its components to close cleanly, which needs the zygote alive until then (it ends when
    # the parent hangs up, or dies with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    children: dict[int, tuple[launcher.SandboxedProcess, int, int]] = {}   # pidfd -> ...
    sel = selectors.DefaultSelector()
    sel.register(requests, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is requests:
                if not _answer(plans, requests, sel, children):
                    return
            else:
                child, pidfd, component = children.pop(key.fd)
                sel.unregister(pidfd)
                os.close(pidfd)
                code = child.wait()
                _send(events, {"pid": component, "returncode": code,
                               "description": launcher.describe_status(child.status or 0)})


def _answer(plans: Components, requests: socket.socket,
            sel: selectors.BaseSelector, children: dict[int, tuple[launcher.SandboxedProcess, int, int]]) -> bool:
    request, fds = _recv(requests, max_fds=1)
    if request is None:
        return False
    try:
        if not isinstance(request, dict):
            raise ZygoteError("malformed request")
        if "kill" in request:
            known = {component: child for child, _, component in children.values()}
            target = known.get(int(request["kill"]))
            if target is None:
                raise ZygoteError(f"pid {request['kill']} is not a component of this zygote")
            target.kill(int(request.get("signal", signal.SIGKILL)))
            _send(requests, {"ok": True})
            return True
        name = str(request.get("spawn"))
        if name not in plans:
            raise ZygoteError(f"unknown component '{name}' (this zygote starts: {', '.join(plans)})")
        if len(fds) != 1:
            raise ZygoteError("a spawn request carries exactly one IPC descriptor")
        argv, plan, target = plans[name]
        try:
            if target is not None:
                ipc_fd = fds[0]
                child = launcher.spawn(plan, target=lambda _control: target(ipc_fd), pass_fds=fds)
            else:
                child = launcher.spawn(plan, [*argv, f"-ipcfd={fds[0]}"], pass_fds=fds)
        except launcher.SpawnError as exc:
            raise ZygoteError(str(exc), exc.step) from None
        component = child.component_pid()
        pidfd = os.pidfd_open(child.pid)
        children[pidfd] = (child, pidfd, component)
        sel.register(pidfd, selectors.EVENT_READ)
        _send(requests, {"pid": component, "report": child.report.to_dict() if child.report else None})
    except ZygoteError as exc:
        _send(requests, {"error": str(exc), "step": exc.step})
    finally:
        for fd in fds:
            os.close(fd)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
