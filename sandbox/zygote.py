"""A launcher process (zygote) that starts only named components, each under its own policy.

Seccomp filters and Landlock domains are inherited and only ever get stricter, so a sandboxed
process cannot start a child that needs rights it lacks itself (a node cannot grant a wallet
its wallet directory, which the node must not see). The zygote is started before its parent
restricts itself; it keeps the rights to launch, and offers its parent exactly two things:
start component NAME with this IPC socket, and signal a component it started. Besides, with
the message that configures it (once, before the parent restricts itself), it forks the
parent's `Detached` processes, once each and never again on any request: processes that
confine themselves (CleanCoin-node's connect broker), forked instead of started as
interpreters of their own so that they share the zygote's image. In the same way it forks,
for each launch of a component whose plan logs refusals, that component's denial monitor
(`_denial_monitor`; since 12-07), which the component's own set-up configures and which
confines itself (denial_log.serve_forked). It is the subreaper of all of these (since 12-07)
and reaps them as they end, and never takes a component's status but as its exit event.

It is a fresh interpreter (`python -m cleancoin.sandbox.zygote`) with a scrubbed environment,
never a fork of its parent: a fork would carry the parent's memory (its conf file's RPC
password, an -ipcauth secret on its command line) into every component. It imports each
component's code once, at start, and forks a component per request, which runs every sandbox
step (`launcher.spawn`) and then the component's function: no interpreter start per spawn.

Two socket pairs connect parent and zygote: requests (spawn NAME with the IPC descriptor
passed by SCM_RIGHTS, answered with the pid and the enforcement report or the error; kill PID)
and events (a component exited, with its status). The zygote answers every malformed request
with an error and goes on serving; it accepts only a connected unix stream socket as IPC
descriptor, and limits how many components are alive and how fast they are started. It dies
with its parent, and its components die with it. Their stdout and stderr come through it,
with control characters made visible, prefixed with the component's name and pid, a line
longer than 16 KiB in pieces (a component must not make it hold what it writes).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import descriptors, report_registry, syscalls

if TYPE_CHECKING:
    from . import denial_log, launcher
    from .plan import Plan
    from .report import Report

# The launcher, the plan and the report (and with them every enforcement step) are imported
# where they are used, not here: CleanCoin-node launches its zygote as soon as its options are
# read (`Zygote.launch` needs none of them), so that the two interpreters start up side by
# side for longer (issue #16). The node imports them before it restricts itself (`configure`
# fits the policies); the zygote process imports them in `main`, before any preload.

_MAX_MESSAGE = 1 << 20
#: Environment variables a zygote keeps from its parent: what the interpreter and libc need.
#: Nothing else, so that no secret of the parent's environment reaches a component's memory.
_ENVIRONMENT = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED",
                "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONUNBUFFERED")
#: Signals the parent may send a component through the zygote.
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP})


@dataclass(frozen=True)
class Limits:
    """How many components may be alive at once (per name), and how many may be started in
    a minute (all names together): a confined parent cannot make the zygote fork without end."""

    alive: int = 2
    per_minute: int = 30


@dataclass(frozen=True)
class ComponentSpec:
    """A component the zygote may start: its code and the policy it runs under."""

    name: str
    # "package.module:function": imported by the zygote when it starts; the sandboxed child
    # calls function(ipc_fd) and exits with its return value.
    target: str
    policy: str | None                     # policy file; None runs it without a sandbox
    variables: Mapping[str, str] = field(default_factory=dict)
    # Directories some other confined process can write (the node's datadir): symlinks
    # there on the way to a grant are refused (see paths.resolve).
    writable_roots: tuple[str, ...] = ()
    # A plan made already (the probe's): used instead of `policy` and `variables`.
    plan: Plan | None = None
    # "package.module:function" the zygote calls once at its start, before any spawn: it
    # imports what every child would otherwise import after its fork, so that each start
    # (and restart) begins from a warm copy instead of paying the imports again.
    preload: str | None = None
    # Run `preload` at the component's first spawn instead of at `configure` (the zygote
    # imports it then, with the collector off, and freezes it before the fork): a parent that
    # may never start the component (CleanCoin-node without a wallet in use) does not pay for
    # its imports at every start. Fixed at `configure`, like the rest of the spec.
    preload_at_first_spawn: bool = False
    # Where the component's refusals with an errno are logged (`denial_log.DenialLog`).
    denials: object | None = None
    # A learning run (docs/audit.md): the component records here instead of being confined.
    learn_dir: str | None = None
    # Keyword arguments of `target` (after the IPC descriptor), fixed here, by a parent that
    # is not confined yet: settings a component must not take from that parent later, over
    # IPC, once the parent may be compromised (the wallet's -maxtxfee).
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Detached:
    """A process the zygote forks once, when it is configured, and never again: never the
    parent's child (a double fork; the zygote's as its subreaper, which reaps it), holding
    `fd` (a unix SOCK_SEQPACKET socket, its channel to the parent) and nothing else of the
    zygote's, which runs `target(fd, *arguments)` and confines itself (CleanCoin-node's
    connect broker). Its code and arguments are fixed by a
    parent that is not confined yet; no later request names, starts or signals it."""

    name: str
    target: str                 # "package.module:function", imported by the zygote first
    arguments: tuple[str, ...]
    fd: int                     # the parent's end is its own business; this one is passed


@dataclass(frozen=True)
class Spawned:
    """A component the zygote started: its pid and enforcement report."""

    pid: int                  # the component's pid as the parent sees it
    report: Report | None


@dataclass(frozen=True)
class Exited:
    """A component of the zygote that ended, and how."""

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
    """One message: (None, fds) at end of file; raises ValueError on a malformed one."""
    try:
        data, fds, flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, max_fds)
    except ConnectionResetError:
        # A peer that ended with a message of ours unread (a zygote whose exec failed, as the
        # parent's configure arrived) makes Linux report ECONNRESET once, ahead of the
        # messages it sent before that are still queued here: read again for them (or for end
        # of file). It cannot block: the peer is gone.
        data, fds, flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, max_fds)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ValueError("message or descriptors truncated")
    if not data:
        return None, fds
    try:
        return json.loads(data), fds
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: a request nested deeper than the parser recurses (a confined parent
        # can send a megabyte of '['); it ended the zygote before.
        for fd in fds:
            os.close(fd)
        raise ValueError(f"not JSON: {type(exc).__name__}") from None


def _plan(spec: ComponentSpec) -> Plan | None:
    if spec.plan is not None:
        return spec.plan
    if spec.policy is None:
        return None
    from . import launcher
    from .errors import EnforcementError, PolicyError, PolicyErrors
    from .policy_cache import load_policy    # checked against the files, else loaded in full
    try:
        return launcher.prepare(load_policy(spec.policy), spec.variables, spec.writable_roots,
                                spec.denials, spec.learn_dir)  # type: ignore[arg-type]
    except PolicyErrors as exc:
        raise ZygoteError(f"policy of {spec.name}: {exc}") from None
    except (PolicyError, EnforcementError) as exc:
        raise ZygoteError(f"policy of {spec.name}: {exc}", getattr(exc, "step", None)) from None


class Zygote:
    """The parent's handle on a running zygote."""

    def __init__(self, pid: int, requests: socket.socket, events: socket.socket) -> None:
        self.pid = pid
        self._requests = requests
        self.events = events          # watch for readability, then call `read_event()`
        self._ready = False
        self._reaped = False
        #: The pid of each `Detached` process it forked, once it is ready (`wait_ready`).
        self.detached_pids: dict[str, int] = {}

    def descriptors(self) -> tuple[int, int]:
        """The parent's ends of the two socket pairs (to keep open across restrict_self)."""
        return self._requests.fileno(), self.events.fileno()

    @classmethod
    def start(cls, components: Mapping[str, ComponentSpec], *, limits: Limits = Limits(),
              wait: bool = True, title: str = "zygote", name_kills: bool = True) -> "Zygote":
        """Start the zygote and fit every component's policy (`launch`, then `configure`).
        Raises on a bad policy.

        `wait=False` returns while the zygote's interpreter is still starting; call
        `wait_ready()` before the first spawn (the parent can do its own work meanwhile).
        `title` is what `ps` shows for it ("CleanCoin-node zygote"). `name_kills`: see
        `configure`.
        """
        zygote = cls.launch(sorted({spec.preload for spec in components.values()
                                    if spec.preload and not spec.preload_at_first_spawn}))
        zygote.configure(components, limits=limits, wait=wait, title=title, name_kills=name_kills)
        return zygote

    @classmethod
    def launch(cls, preloads: Sequence[str] = ()) -> "Zygote":
        """Start the zygote's interpreter, which runs `preloads` (`module:function`) at once and
        then waits for `configure`. A parent that launches first and fits the policies later
        has the two interpreters' start-up overlap (CleanCoin-node: about 0.2 s each)."""
        req_parent, req_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ev_parent, ev_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        env = {k: v for k, v in os.environ.items() if k in _ENVIRONMENT or k.startswith("LC_")}
        # Where its launches' reports go: the parent's choice (it may come from HOME or
        # XDG_RUNTIME_DIR, which the zygote does not keep), so that `status` finds them.
        registry = report_registry.directory()
        if registry:
            env[report_registry.ENV] = registry
        # -P: `-m` puts the working directory first on sys.path. A `cleancoin` package another
        # user left there (in /tmp, say) ran in the zygote as the node's user, before any
        # sandbox, with every component forked from it after; and the zygote, unconfined,
        # imports later than its start (a component's preload at its first spawn), so a
        # working directory the confined node may write (its datadir) would let it plant a
        # module there (12-08).
        argv = [sys.executable, "-P", "-m", "cleancoin.sandbox.zygote", str(os.getpid()),
                str(req_child.fileno()), str(ev_child.fileno()), *preloads]
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open("/dev/null", os.O_RDONLY)
                os.dup2(devnull, 0)
                descriptors.keep_only({0, 1, 2, req_child.fileno(), ev_child.fileno()})
                os.execve(sys.executable, argv, env)
            except OSError as exc:
                # The answer the parent waits for, so that its error says why (an interpreter
                # this user may not execute: one under another user's 0700 home).
                with contextlib.suppress(OSError):
                    _send(req_child, {"error": f"cannot execute {sys.executable}: {exc.strerror or exc}"})
            finally:
                os._exit(127)
        req_child.close()
        ev_child.close()
        return cls(pid, req_parent, ev_parent)

    def configure(self, components: Mapping[str, ComponentSpec], *, limits: Limits = Limits(),
                  wait: bool = True, title: str = "zygote", name_kills: bool = True,
                  detached: Sequence[Detached] = ()) -> None:
        """Fit every component's policy and hand the plans to a launched zygote; on a bad
        policy the zygote is stopped and the error raised. Called once. `detached`: the
        processes it forks now, once (`Detached`); their pids come with its ready answer
        (`detached_pids`).

        `name_kills`: an exit event of a component killed by its seccomp filter names the
        syscall, from the kernel log (`kernel_log.seccomp_kill`). The kernel rate-limits those
        records (about ten in five seconds), and a record it dropped is waited for 0.5 s with
        every other event held back; the probe, which knows what each attempt called and
        kills a dozen in a row, turns it off."""
        # What collect_spawn, read_event and reap use: imported now, before a parent that
        # restricts itself next (CleanCoin-node) is confined.
        from . import launcher, report  # noqa: F401
        try:
            plans = {name: {"target": spec.target, "preload": spec.preload,
                            "preload_at_first_spawn": spec.preload_at_first_spawn,
                            "plan": plan.to_json() if plan else None, "arguments": dict(spec.arguments)}
                     for name, spec in components.items() for plan in [_plan(spec)]}
        except BaseException:
            self.stop()
            raise
        try:
            _send(self._requests, {"components": plans, "title": title, "name_kills": name_kills,
                                   "limits": {"alive": limits.alive, "per_minute": limits.per_minute},
                                   "detached": [{"name": d.name, "target": d.target, "arguments": list(d.arguments)}
                                                for d in detached]},
                  [d.fd for d in detached])
        except OSError:
            self.wait_ready()       # the zygote is gone: raises what it said, if anything
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the zygote has its plans and takes requests; raises if it did not start."""
        if self._ready:
            return
        try:
            answer, _ = _recv(self._requests)
        except (ValueError, OSError) as exc:
            answer = f"bad answer: {exc}"
        pids = answer.get("detached", {}) if isinstance(answer, dict) else None
        if not (isinstance(answer, dict) and answer.get("ready") is True and set(answer) <= {"ready", "detached"}
                and isinstance(pids, dict) and all(isinstance(p, int) for p in pids.values())):
            self.stop()
            detail = (answer.get("error") if isinstance(answer, dict)
                      else "it ended without an answer" if answer is None else answer)
            raise ZygoteError(f"the zygote did not start: {detail}")
        self.detached_pids = {str(name): int(pid) for name, pid in pids.items()}
        self._ready = True

    def spawn(self, name: str, ipc_fd: int) -> Spawned:
        """Start component `name` with `ipc_fd` as its IPC socket; returns once it is sandboxed."""
        self.request_spawn(name, ipc_fd)
        return self.collect_spawn()

    def request_spawn(self, name: str, ipc_fd: int) -> None:
        """The first half of `spawn`: the zygote starts the component while the caller goes
        on; `collect_spawn()` then waits for the answer. One request at a time."""
        _send(self._requests, {"spawn": name}, [ipc_fd])

    def collect_spawn(self) -> Spawned:
        """The answer to the last `request_spawn`: the pid and report, or ZygoteError."""
        from .report import Report
        self.wait_ready()       # a request may go out before the zygote said it is ready
        answer = self._answer()
        try:
            report = Report.from_dict(answer["report"]) if answer.get("report") else None
            return Spawned(int(answer["pid"]), report)
        except (KeyError, TypeError, ValueError) as exc:
            raise ZygoteError(f"malformed answer from the zygote: {exc}") from None

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal a component this zygote started (and nothing else)."""
        self.wait_ready()
        _send(self._requests, {"kill": pid, "signal": int(sig)})
        self._answer()

    def _answer(self) -> dict[str, object]:
        try:
            answer, _ = _recv(self._requests)
        except (ValueError, OSError) as exc:
            raise ZygoteError(f"the zygote is gone ({exc})") from None
        if not isinstance(answer, dict):
            raise ZygoteError("the zygote is gone")
        if "error" in answer:
            raise ZygoteError(str(answer["error"]), answer.get("step"))  # type: ignore[arg-type]
        return answer

    def read_event(self) -> Exited | None:
        """The next exit event (call when `events` is readable); None when the zygote is gone."""
        try:
            message, _ = _recv(self.events)
        except (ValueError, OSError):
            return None
        if not isinstance(message, dict):
            return None
        return Exited(int(message["pid"]), int(message["returncode"]), str(message["description"]))

    def reap(self) -> int | None:
        """The zygote's return code once it has ended (reaped, so no zombie stays), else None."""
        from .launcher import returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        return returncode(status) if pid else None

    def stop(self) -> None:
        """End the zygote and reap it; its components die with it. Safe to call twice, and
        after `hang_up`."""
        self.hang_up()
        if not self._reaped:
            self._reaped = True
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass

    def hang_up(self) -> None:
        """End the zygote without waiting for it to exit (CleanCoin-node's shutdown: it exits
        while the node finishes; `stop` reaps it). Safe to call twice."""
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


# ---------------------------------------------------------------------- the zygote process

Target = Callable[..., int]     # target(ipc_fd, **arguments) -> exit status


@dataclass
class _Component:
    """In the zygote: a component it may start, its function, plan and arguments."""

    target: Target
    plan: Plan | None
    arguments: dict[str, str] = field(default_factory=dict)
    #: A preload left for the first spawn (`ComponentSpec.preload_at_first_spawn`); None once run.
    preload: str | None = None
    #: Why that preload failed: every spawn of the component is refused with it from then on.
    preload_failed: str | None = None

    def run_preload(self) -> None:
        """The first spawn's preload, in the zygote, before the fork: with the collector off
        while it imports, and frozen after (as `main` does with a preload at start), so that
        every process of this component starts from the same warm copy. A preload that fails
        refuses this spawn and every later one (ZygoteError): nothing runs half-imported."""
        if self.preload_failed is not None:
            raise ZygoteError(self.preload_failed)
        if self.preload is None:
            return
        spec, self.preload = self.preload, None
        gc.disable()
        try:
            _import_target(spec)()
        except Exception as exc:  # noqa: BLE001 - said in the spawn's answer
            self.preload_failed = f"preload {spec} failed: {type(exc).__name__}: {exc}"
            raise ZygoteError(self.preload_failed) from None
        finally:
            gc.freeze()
            gc.enable()


@dataclass
class _Child:
    """In the zygote: a component it started."""

    name: str
    process: launcher.SandboxedProcess
    pidfd: int
    component: int


#: How often (seconds) the zygote looks for orphans that came to it from elsewhere than its
#: detached processes (`_Server._sweep`), when nothing else woke it.
_SWEEP_SECONDS = 2.0


class _Server:
    """The zygote's loop: spawn on request, report exits, relay output, reap its orphans; ends
    when the parent hangs up."""

    def __init__(self, components: dict[str, _Component], limits: Limits,
                 requests: socket.socket, events: socket.socket, name_kills: bool = True,
                 detached: Sequence[int] = ()) -> None:
        self.components = components
        self.limits = limits
        self.name_kills = name_kills
        self.requests = requests
        self.events = events
        self.children: dict[int, _Child] = {}          # pidfd -> child
        self.relays: dict[int, launcher.SandboxedProcess] = {}   # output fd -> child
        self.starts: list[float] = []
        self.sel = selectors.DefaultSelector()
        self.orphans: dict[int, int] = {}               # pidfd -> pid of a detached process
        for pid in detached:
            self._adopt(pid)

    def serve(self) -> None:
        self.sel.register(self.requests, selectors.EVENT_READ, "request")
        while True:
            for key, _ in self.sel.select(_SWEEP_SECONDS):
                if key.data == "request":
                    if not self._request():
                        return
                elif key.data == "exit":
                    self._exited(key.fd)
                elif key.data == "orphan":
                    self._reap_orphan(key.fd)
                else:
                    self._output(key.fd)
            self._sweep()

    # The zygote is the subreaper of what it starts (main: PR_SET_CHILD_SUBREAPER), so the
    # processes it double-forks (`Detached`, `_denial_monitor`) become its children when their
    # middle process ends, and so does an orphan of a component that has no pid namespace of
    # its own. It reaps those, and never a component: a component's status is `_exited`'s to
    # take (it becomes the exit event), so nothing here waits for "any child".

    def _adopt(self, pid: int) -> None:
        """Watch detached process `pid` (the zygote's child since its middle process ended;
        its pid is not reused before the zygote reaps it) and reap it when it ends."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            _reap(pid)          # it cannot be watched: reaped if it ended already, else by _sweep
            return
        self.orphans[pidfd] = pid
        self.sel.register(pidfd, selectors.EVENT_READ, "orphan")

    def _reap_orphan(self, pidfd: int) -> None:
        pid = self.orphans.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _reap(pid)

    def _sweep(self) -> None:
        """Reap every child that ended and is neither a component nor a watched detached
        process: orphans reparented here from below (a component's own double fork, where it
        has no pid namespace that would take them), which PID 1 reaped before the zygote was
        their subreaper. By pid, each one found among this process's children (/proc)."""
        from .helpers import children
        keep = {child.process.pid for child in self.children.values()} | set(self.orphans.values())
        for pid in children(os.getpid()):
            if pid not in keep:
                _reap(pid)

    def _request(self) -> bool:
        try:
            request, fds = _recv(self.requests, max_fds=4)
        except ValueError as exc:
            _send(self.requests, {"error": f"malformed request: {exc}"})
            return True
        if request is None:
            for fd in fds:
                os.close(fd)
            return False
        try:
            _send(self.requests, self._handle(request, fds))
        except ZygoteError as exc:
            _send(self.requests, {"error": str(exc), "step": exc.step})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _handle(self, request: object, fds: list[int]) -> dict[str, object]:
        if not isinstance(request, dict) or len(request) > 2:
            raise ZygoteError("malformed request: expected {\"spawn\": NAME} or {\"kill\": PID, \"signal\": N}")
        if "kill" in request:
            if fds:
                raise ZygoteError("a kill request carries no descriptor")
            return self._kill(request.get("kill"), request.get("signal", int(signal.SIGKILL)))
        if set(request) == {"spawn"}:
            return self._spawn(request["spawn"], fds)
        raise ZygoteError(f"unknown request {sorted(map(str, request))}")

    def _kill(self, pid: object, sig: object) -> dict[str, object]:
        if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(sig, int) or isinstance(sig, bool):
            raise ZygoteError("kill needs an integer pid and signal")
        if sig not in _SIGNALS:
            raise ZygoteError(f"signal {sig} is not one the zygote sends")
        for child in self.children.values():
            if child.component == pid:
                child.process.kill(sig)
                return {"ok": True}
        raise ZygoteError(f"pid {pid} is not a component of this zygote")

    def _spawn(self, name: object, fds: list[int]) -> dict[str, object]:
        if not isinstance(name, str) or name not in self.components:
            raise ZygoteError(f"unknown component {str(name)[:64]!r} (this zygote starts: "
                              f"{', '.join(self.components)})")
        if len(fds) != 1:
            raise ZygoteError("a spawn request carries exactly one IPC descriptor")
        _check_ipc_socket(fds[0])
        alive = sum(1 for c in self.children.values() if c.name == name)
        if alive >= self.limits.alive:
            raise ZygoteError(f"{alive} {name} processes are alive already (at most {self.limits.alive})")
        now = time.monotonic()
        self.starts = [t for t in self.starts if now - t < 60]
        if len(self.starts) >= self.limits.per_minute:
            raise ZygoteError(f"{len(self.starts)} components started in the last minute "
                              f"(at most {self.limits.per_minute})")
        self.starts.append(now)
        from . import launcher, steps
        component = self.components[name]
        component.run_preload()
        ipc_fd = fds[0]
        title = (f"{name} (sandboxed, policy {component.plan.policy})" if component.plan
                 else f"{name} (not sandboxed)")
        monitor = (_denial_monitor(name) if component.plan is not None and steps.wants_monitor(component.plan)
                   else None)
        try:
            child = launcher.spawn(component.plan, target=lambda control: _run(component, control, ipc_fd),
                                   pass_fds=[ipc_fd], relay=False, title=title, monitor=monitor)
        except launcher.SpawnError as exc:
            raise ZygoteError(str(exc), exc.step) from None
        finally:
            if monitor is not None:
                monitor.channel.close()     # the component's now (or, if it did not start, nobody's)
                if monitor.helper is not None:
                    self._adopt(monitor.helper.pid)
        pid = child.component_pid()
        pidfd = os.pidfd_open(child.pid)
        self.children[pidfd] = _Child(name, child, pidfd, pid)
        self.sel.register(pidfd, selectors.EVENT_READ, "exit")
        if child.output is not None:
            child.output.prefix = f"[{name} {pid}] ".encode()
            for fd in child.output.fds():
                self.relays[fd] = child
                self.sel.register(fd, selectors.EVENT_READ, "output")
        return {"pid": pid, "report": child.report.to_dict() if child.report else None}

    def _exited(self, pidfd: int) -> None:
        from . import launcher
        child = self.children.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        code = child.process.wait()
        description = launcher.describe_status(child.process.status or 0)
        if code == -signal.SIGSYS and self.name_kills:
            from .kernel_log import seccomp_kill
            syscall = seccomp_kill(child.component)
            if syscall:
                description += f": {syscall}, says the kernel log"
        _send(self.events, {"pid": child.component, "returncode": code, "description": description})

    def _output(self, fd: int) -> None:
        child = self.relays[fd]
        assert child.output is not None
        if not child.output.pump(fd):
            self.sel.unregister(fd)
            del self.relays[fd]


def _reap(pid: int) -> None:
    """Reap child `pid` of the zygote if it has ended (not a component: see `_Server._adopt`)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        pass                # not ours (any more)


def _run(component: _Component, control: int, ipc_fd: int) -> int:
    """In the sandboxed child: the component needs nothing from the zygote but its socket
    and the arguments its parent fixed at `configure`."""
    os.close(control)
    return component.target(ipc_fd, **component.arguments)


def _check_ipc_socket(fd: int) -> None:
    """A component's IPC descriptor must be a connected unix stream socket, nothing else (a
    directory or file descriptor handed to a sandbox walks around its mounts)."""
    _check_socket(fd, socket.SOCK_STREAM, "the IPC descriptor")


def _check_socket(fd: int, kind: int, what: str) -> None:
    """`fd` must be a connected unix socket of type `kind`; raises ZygoteError naming `what`."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISSOCK(info.st_mode):
            raise ZygoteError(f"{what} is not a socket")
        sock = socket.socket(fileno=os.dup(fd))
        try:
            if sock.family != socket.AF_UNIX or sock.type != kind:
                raise ZygoteError(f"{what} is not a unix {'stream' if kind == socket.SOCK_STREAM else 'seqpacket'} socket")
            sock.getpeername()        # ENOTCONN for a socket that is not connected
        finally:
            sock.close()
    except OSError as exc:
        raise ZygoteError(f"{what} is not a connected socket: {exc.strerror}") from None


#: Processes a zygote forks at `configure` (`Detached`): CleanCoin-node has one, its broker.
_MAX_DETACHED = 4
_DETACHED_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass
class _DetachedStart:
    """In the zygote: a `Detached` process to fork, its function imported, its socket held."""

    name: str
    target: Callable[..., int]
    arguments: list[str]
    fd: int


def _detached(value: object, fds: list[int]) -> list[_DetachedStart]:
    """The `detached` entries of the configure message, checked, each with its descriptor (a
    unix SOCK_SEQPACKET socket, in the message's order); raises ZygoteError and closes the
    descriptors on anything else."""
    try:
        if not isinstance(value, list) or len(value) != len(fds):
            raise ZygoteError("each detached process needs exactly one descriptor")
        starts = []
        for entry, fd in zip(value, fds):
            if (not isinstance(entry, dict) or set(entry) != {"name", "target", "arguments"}
                    or not isinstance(entry["name"], str) or not 0 < len(entry["name"]) <= 64
                    or not set(entry["name"]) <= _DETACHED_NAME or not isinstance(entry["target"], str)
                    or not isinstance(entry["arguments"], list)
                    or not all(isinstance(a, str) for a in entry["arguments"])):
                raise ZygoteError("a detached process is {name, target, arguments: [str]}")
            _check_socket(fd, socket.SOCK_SEQPACKET, "a detached process's channel")
            if any(start.name == entry["name"] for start in starts):
                raise ZygoteError(f"two detached processes named {entry['name']}")
            starts.append(_DetachedStart(entry["name"], _import_target(entry["target"]), entry["arguments"], fd))
        return starts
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _start_detached(starts: list[_DetachedStart]) -> dict[str, int]:
    """Fork each (helpers.detached; the zygote's child as its subreaper, `_Server._adopt`
    reaps it); returns name -> pid. Their sockets are closed here either way: the zygote
    keeps nothing of theirs."""
    from .helpers import detached
    pids: dict[str, int] = {}
    try:
        for start in starts:
            try:
                pid = detached(lambda start=start: _run_detached(start))     # type: ignore[misc]
            except OSError as exc:
                raise ZygoteError(f"cannot start {start.name}: {exc.strerror or exc}") from None
            if not pid:
                raise ZygoteError(f"cannot start {start.name}: its fork did not say its pid")
            pids[start.name] = pid
    finally:
        for start in starts:
            os.close(start.fd)
    return pids


def _run_detached(start: _DetachedStart) -> None:
    """In the forked process: the signals the zygote ignores back to their defaults, stdio on
    /dev/null, every descriptor but its socket closed; then its function, whose return value
    is its exit status. Never returns."""
    status = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)
        descriptors.keep_only({0, 1, 2, start.fd})
        status = start.target(start.fd, *start.arguments)
    finally:
        os._exit(status if isinstance(status, int) else 1)


def _denial_monitor(component: str) -> denial_log.Monitor:
    """A component's denial monitor, forked here as the `Detached` processes are (a double
    fork, reaped by the zygote as its subreaper; nothing of the zygote's but its channel), for
    one launch (`launcher.spawn(..., monitor=)`): the launched child's "denial monitor" step
    configures it, and it confines itself (denial_log.serve_forked: the fork execs the
    compiled monitor, since 12-08; where it cannot, it runs the interpreter's program and
    holds the zygote's image, which is no secret: a fresh interpreter, its environment
    scrubbed). It runs outside the component's namespaces, where the component cannot name
    it. Raises ZygoteError."""
    from . import denial_log, helpers, report_registry
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        pids = _start_detached([_DetachedStart(denial_log.FORKED_TITLE, denial_log.serve_forked, [component],
                                               theirs.detach())])
    except BaseException:
        ours.close()
        raise
    pid = pids[denial_log.FORKED_TITLE]
    return denial_log.Monitor(ours, helper=helpers.Helper(helpers.DENIAL_MONITOR, pid,
                                                          report_registry.start_time(pid), outside=True))


def _say(requests: socket.socket, message: object) -> None:
    """An answer the parent may no longer be there to read (it is exiting): then none."""
    try:
        _send(requests, message)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _arguments(value: object) -> dict[str, str]:
    """A component's arguments as `configure` sent them: names to strings, nothing else."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() and isinstance(v, str)
                                              for k, v in value.items()):
        raise ZygoteError("a component's arguments must map names to strings")
    return dict(value)


def _import_target(spec: str) -> Target:
    module, _, function = spec.partition(":")
    target = getattr(importlib.import_module(module), function)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def _become_subreaper() -> None:
    """Make the zygote the subreaper of every process below it (since 12-07): its double
    forks' grandchildren (`Detached`, the denial monitors) were PID 1's when their middle
    process ended, and where PID 1 does not reap (a container without an init) each one that
    ended stayed a zombie, one per component start, which a compromised parent could repeat
    until no pid was left. The zygote reaps them (`_Server`). They stay out of the parent's
    reach as before: not its children (no wait, no SIGCHLD of theirs there), outside its
    Landlock domain (no signal, no ptrace: scoped), not dumpable. Raises ZygoteError."""
    try:
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as exc:
        raise ZygoteError("cannot become the subreaper of its detached processes "
                          f"(prctl PR_SET_CHILD_SUBREAPER): {exc.strerror or exc}") from None


def main(argv: list[str]) -> int:
    """Entry point of the zygote process: `python -m cleancoin.sandbox.zygote PARENT REQ EV
    [PRELOAD...]`, each PRELOAD a component's `module:function` to run at once."""
    # The collector is off while the preloads import (fewer passes over objects that live as
    # long as the process), and those objects are frozen before any fork: a component's own
    # collections never walk (and so never copy-on-write) the pages it shares with the zygote.
    gc.disable()
    # No relative entry on the import path either ("" or "." from PYTHONPATH: the working
    # directory, see `launch`): the zygote imports after its parent may be compromised. `site`
    # has made PYTHONPATH's absolute already (this filter alone let "/x:" through until 12-08,
    # h108): sandbox/import_path.py finds them (its .pth file did so before `-m` found this module).
    from cleancoin.sandbox.import_path import drop_relative
    drop_relative()
    sys.path[:] = [entry for entry in sys.path if entry and os.path.isabs(entry)]
    # Not dumpable: exec made it so again. Unconfined and the start of every component, its
    # memory must not be the same user's to read or write (code written into it would run in
    # the next component before that one's sandbox is up); the components it forks inherit
    # this (without a sandbox nothing else would make them so). Core size 0 came with exec.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    from . import launcher  # noqa: F401 - every spawn runs it (see the note at the imports)
    from .plan import Plan
    parent, req_fd, ev_fd = (int(a) for a in argv[:3])
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    syscalls.set_name("zygote")     # the title comes with the components
    report_registry.register(os.getpid(), {"kind": "zygote", "role": "starts components under their "
                                           "own policies; unconfined by design (it builds their sandboxes)"})
    # Ctrl-C in the terminal reaches the whole process group, and systemd (KillMode=
    # control-group), `timeout` or `kill -TERM -PGID` send SIGTERM to every process at once:
    # the parent shuts down and asks its components to close cleanly, which needs the zygote
    # alive until then (it ends when the parent hangs up, or dies with it). A zygote killed by
    # the SIGTERM made CleanCoin-node stop with status 1 ("the wallet launcher is gone").
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    requests = socket.socket(fileno=req_fd)
    events = socket.socket(fileno=ev_fd)
    preloaded = list(dict.fromkeys(argv[3:]))      # in the parent's order, each once
    try:
        for spec in preloaded:
            _import_target(spec)()
        failed = None
    except Exception as exc:  # noqa: BLE001 - said in answer to the components, below
        failed = exc
    try:
        # The answer to the components (also when a preload failed: a zygote that ended
        # before reading them would reset the connection, and its reason would be lost).
        first, first_fds = _recv(requests, max_fds=_MAX_DETACHED)
        if first is None:
            return 0        # the parent hung up before configuring us (an option error): quietly
        if failed is not None:
            raise failed
        if not isinstance(first, dict) or "components" not in first:
            _say(requests, {"error": "expected the components first"})
            return 1
        detached = _detached(first.get("detached", []), first_fds)
        components = {name: _Component(_import_target(c["target"]),
                                       Plan.from_json(c["plan"]) if c["plan"] else None,
                                       _arguments(c.get("arguments", {})),
                                       preload=c["preload"] if c.get("preload") and c["preload"] not in preloaded
                                       and c.get("preload_at_first_spawn") is True else None)
                      for name, c in first["components"].items()}
        for name, c in first["components"].items():
            if c.get("preload") and c["preload"] not in preloaded and components[name].preload is None:
                _import_target(c["preload"])()
        limits = Limits(**first.get("limits", {}))
        from . import steps
        if any(c.plan is not None and steps.wants_monitor(c.plan) for c in components.values()):
            # What the forked denial monitors run (_denial_monitor), imported before the freeze:
            # shared with every one of them instead of imported in each.
            from . import denial_log  # noqa: F401
        syscalls.set_title(str(first.get("title", "zygote")), "zygote")
    except ConnectionResetError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the parent must learn why we cannot serve
        _say(requests, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    gc.freeze()
    gc.enable()
    try:
        _become_subreaper()
        # After the freeze (their collections never walk the zygote's objects) and before the
        # first component: a fork now holds nothing of a component's (its relayed output).
        pids = _start_detached(detached)
    except ZygoteError as exc:
        _say(requests, {"error": str(exc)})
        return 1
    try:
        _send(requests, {"ready": True, "detached": pids})
        _Server(components, limits, requests, events, first.get("name_kills") is not False,
                list(pids.values())).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass        # the parent hung up mid-answer (it is exiting): so do we, quietly
    return 0


if __name__ == "__main__":
    _status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown: freeing every preloaded module (the wallet, Cap'n Proto) took
    # about 40 ms, which the parent spent waiting for us at its shutdown; nothing of ours
    # needs finalising (the components' output is relayed as it comes, and flushed above).
    os._exit(_status)
