"""The parent side of a launch: fit the policy, fork, run every step in the child, wait for the verdict.

`spawn` returns once the child reported its enforcement (or raises `SpawnError` naming the
step that failed), so a caller never talks to a child whose sandbox is not in place. The
child runs the whole step list (`steps.STEPS`) before it runs anything else: then it either
execs a program (`CleanCoin-sandbox run`: the policy must allow execve) or calls a function
already in its memory (`target`: the zygote's components, `probe`, tests).
"""

from __future__ import annotations

import os
import signal
# _socket, not socket: the launch needs one socketpair, and socket.py (with the selectors,
# array and enum conversions of every constant it brings) is about 3 ms of each
# `CleanCoin-sandbox run` (docs/audit.md, "Start-up time"). Callers get the same methods
# the control socket was used through (fileno, close, recv, send, settimeout).
import _socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import control, descriptors, helpers, report as reports, report_registry, steps, syscalls
from .control import EXIT_SETUP_FAILED
from .errors import EnforcementError
from .plan import Plan
from .report import Report
from .stdio import Pipes, Relay

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run` imports this and never typing

if TYPE_CHECKING:   # the zygote spawns from finished plans and never loads a policy
    from . import denial_log
    from .denial_log import DenialLog
    from .terminal_state import TerminalState
    from .model import Policy


#: Set to a directory, every sandbox entry of this process (and of the zygote it starts)
#: records what its component does there instead of enforcing seccomp and Landlock: how the
#: functional suite learns the wallet's and the node's policies (`CleanCoin-sandbox learn --from`).


class SpawnError(Exception):
    """A child that did not start: the step that failed and why, or how it died."""

    def __init__(self, step: str, reason: str, returncode: int | None = None) -> None:
        self.step, self.reason, self.returncode = step, reason, returncode
        super().__init__(f"sandbox step '{step}' failed: {reason}")


def describe_status(status: int) -> str:
    """A wait status in words: 'exited with status 3' or 'killed by SIGSYS'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = " (a syscall the seccomp filter forbids)" if sig == signal.SIGSYS else ""
        return f"killed by {name}{extra}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def returncode(status: int) -> int:
    """A wait status as subprocess does it: negative signal number, or the exit status."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@dataclass
class SandboxedProcess:
    """A launched child: its pid, its control socket, its output and, once ready, its report."""

    pid: int
    control: _socket.socket
    report: Report | None = None
    status: int | None = field(default=None)
    # The child's stdout and stderr when its policy says stdio = "pipe" and the caller relays
    # them itself (spawn(relay=False)): call output.pump(fd) when one of output.fds() is readable.
    output: Relay | None = None
    # The pid (and start time) its report is registered under for `status` (0: none).
    registered: int = 0
    registered_start: int = 0
    # The operator's terminal modes when a child given our descriptors started (stdio =
    # "inherit"), put back once it has ended (terminal_state.py).
    terminal: "TerminalState | None" = None

    def poll(self) -> int | None:
        """The return code if the child has ended, else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                self._unregister()
                self._restore_terminal()
        return None if self.status is None else returncode(self.status)

    def wait(self) -> int:
        """Wait for the child to end; returns its return code (negative: killed by a signal)."""
        if self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except BaseException:
                # Interrupted (the operator's Ctrl-C: KeyboardInterrupt) while a child that holds
                # our terminal runs on (it may ignore SIGINT): it ends first, then its modes go
                # back; put back while it ran, it could set them again before it died with us.
                if self.terminal is not None:
                    self.kill()
                    _, self.status = os.waitpid(self.pid, 0)
                    self._restore_terminal()
                raise
        self._unregister()
        self._restore_terminal()
        self.control.close()
        return returncode(self.status)

    def _restore_terminal(self) -> None:
        if self.terminal is not None:
            self.terminal.restore()
            self.terminal = None

    def _unregister(self) -> None:
        if self.registered:
            report_registry.unregister(self.registered, self.registered_start)
            self.registered = 0

    def component_pid(self) -> int:
        """The pid (in our namespace) of the component itself, below the waiting processes
        a pid namespace adds; `pid` when there are none."""
        if self.report is not None and self.report.pid != self.pid:
            # Helpers of the component (a denial monitor) are children of PID 1 too: the
            # component is the descendant whose pid inside the namespace the report gives.
            found = _descendant_with_inner_pid(self.pid, self.report.pid)
            if found is not None:
                return found
        pid = self.pid
        while True:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as handle:
                    children = handle.read().split()
            except OSError:
                return pid
            if len(children) != 1:
                return pid
            pid = int(children[0])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the component itself; the waiting processes above it then end as it did.

        (Killing only the outermost waiter would leave the component running until the
        kernel tears its pid namespace down, a window in which it still answers.)
        """
        if self.status is None:
            for pid in dict.fromkeys((self.component_pid(), self.pid)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                if sig != signal.SIGKILL:
                    break   # the waiters forward other signals themselves


def _descendant_with_inner_pid(root: int, inner: int) -> int | None:
    """The descendant of `root` whose pid in its own (innermost) namespace is `inner`."""
    pending = [root]
    for _ in range(64):
        if not pending:
            return None
        pid = pending.pop(0)
        try:
            # ASCII, read as UTF-8: that codec is loaded already (the ascii one is not, on `run`).
            with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
                nspid = next((line.split()[1:] for line in handle if line.startswith("NSpid:")), [])
            with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as handle:
                pending += [int(c) for c in handle.read().split()]
        except OSError:
            continue
        if pid != root and len(nspid) > 1 and int(nspid[-1]) == inner:
            return pid
    return None


def _resolve_program(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    program = argv[0]
    if "/" not in program:
        import shutil   # here: shutil (with bz2, lzma, ...) is ~3 ms that only a PATH lookup needs
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            raise SpawnError("exec", f"{program}: not found on PATH")
        program = found
    return [program, *argv[1:]]


def prepare(policy: "Policy", variables: Mapping[str, str], writable_roots: Sequence[str] = (),
            denials: "DenialLog | None" = None, learn_dir: str | None = None) -> Plan:
    """Fit a policy to this kernel and these variables (before fork; may raise). With
    `denials`, refusals with an errno are logged there (`denial_log`). With `learn_dir` the
    plan records into that directory instead of enforcing (a learning run, docs/audit.md):
    only ever from an explicit request of the caller, never from the environment, so that
    no stray variable can switch a sandbox off."""
    from . import kernel
    from .plan_compiler import compile_plan
    notifying = False
    if denials is not None:
        from .denial_log import notifies
        # Compiled once, in the form the denial log loads (libseccomp takes about 5 ms a
        # filter; the plain form was compiled first and then again).
        notifying = notifies(policy)
    plan = compile_plan(policy, variables, kernel.detect(), writable_roots=writable_roots,
                        notify_errno=notifying)
    if denials is not None:
        from .denial_log import plan_with_denials
        plan = plan_with_denials(plan, policy, denials, compiled_notifying=notifying)
    if learn_dir:
        # Learning (docs/audit.md): the plan records instead of refusing. Only for learning runs.
        from .learn_plan import learning_plan
        from .variables import default_values
        plan = learning_plan(plan, policy, learn_dir, {**default_values(), **variables})
    return plan


def spawn(plan: Plan | None, argv: Sequence[str] = (), *, pass_fds: Sequence[int] = (),
          target: Callable[[int], int] | None = None, env: Mapping[str, str] | None = None,
          relay: bool = True, raw_output: bool = False, title: str = "",
          monitor: "denial_log.Monitor | None" = None) -> SandboxedProcess:
    """Fork a child under `plan` (None: no sandbox at all) and wait until it reports.

    With `argv` the child execs it once every step is in force (the policy must allow
    execve); with `target` it calls target(control_fd) instead, whose return value is its
    exit status (it may send more messages on the control descriptor). `pass_fds` stay open
    in the child. With stdio "pipe" the child's output is passed on to this process's stdout
    and stderr by a thread (`relay`; control characters shown escaped unless `raw_output`
    and not a terminal), or left to the caller in `SandboxedProcess.output`. `title` is what
    `ps` shows for the child (its waiting processes say "(waiter)" and "(init)" after it).
    `monitor`: the plan's denial monitor, started already by the caller (a zygote's fork,
    denial_log.serve_forked) and configured by the child's "denial monitor" step instead of
    one started there; the caller closes its end of the channel once this returns.
    """
    if target is None and not argv:
        raise ValueError("spawn needs argv or a target")
    if target is None and plan is not None and not plan.exec_allowed:
        # Refused here: a child killed inside execve looks like one that exec'd and ended.
        raise SpawnError("exec", f"policy '{plan.policy}' does not allow execve, and run execs the "
                                 "program under the policy: allow execve (with a reason)")
    parent_env = dict(os.environ if env is None else env)
    run_env = dict(plan.environment) if plan is not None else parent_env
    full_argv = _resolve_program(argv, {**parent_env, **run_env}) if target is None else []
    denial_fd = _open_denial_log(plan)
    pipes = Pipes.make() if plan is not None and plan.stdio == "pipe" else None
    terminal = None
    if plan is not None and plan.stdio == "inherit":
        from .terminal_state import TerminalState   # termios: only for a child given our terminal
        terminal = TerminalState.save()
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        if pipes is not None:
            pipes.close_parent_ends()
        _child(plan, full_argv, target, parent_env, set(pass_fds), theirs.fileno(), parent, pipes, title,
               denial_fd, monitor)
    theirs.close()
    if denial_fd >= 0:
        os.close(denial_fd)
    child = SandboxedProcess(pid, ours, terminal=terminal)
    if pipes is not None:
        pipes.close_child_ends()
        child.output = Relay(pipes, raw=raw_output)
        if relay:
            child.output.start()
    _await_ready(child, plan, expect_exec=target is None)
    if child.report is not None:
        # For `CleanCoin-sandbox status`: the kernel does not show a process's policy. The
        # validated report again as plain data (Report.to_dict copies every container, so
        # `completed` may fill in its helpers).
        pid = child.component_pid()
        report = helpers.completed(child.report.to_dict(), pid)
        if report_registry.register(pid, {"kind": "launch", "report": report}):
            child.registered, child.registered_start = pid, report_registry.start_time(pid) or 0
    return child


def _open_denial_log(plan: Plan | None) -> int:
    """A launched child's denial log file, opened here, in the launcher, before the child's
    filesystem view goes up: the file may then lie outside everything the component can
    reach, so that it cannot erase or rewrite the record of its refusals (CleanCoin-node's
    wallet process logs them to the node's sandbox.log). -1 when there is no file to open (no
    denial log, or the component's stderr)."""
    if plan is None or not plan.denials:
        return -1
    from . import denial_log
    try:
        return denial_log.open_for(plan)
    except EnforcementError as exc:
        raise SpawnError(exc.step, exc.reason) from None


def _child(plan: Plan | None, argv: list[str], target: Callable[[int], int] | None,
           parent_env: dict[str, str], pass_fds: set[int], control_fd: int, parent: int,
           pipes: Pipes | None, title: str, denial_fd: int = -1,
           monitor: "denial_log.Monitor | None" = None) -> None:
    """The forked child: every step, the report, then exec or the target. Never returns."""
    try:
        if title:
            syscalls.set_title(title)
        if plan is None:
            env = _unconfined(parent, pass_fds | {0, 1, 2, control_fd})
        else:
            keep = (pass_fds | {control_fd} | ({denial_fd} if denial_fd >= 0 else set())
                    | ({monitor.channel.fileno()} if monitor is not None else set()))
            ctx = steps.Context(plan, steps.Entry.LAUNCH, keep, parent_pid=parent, pipes=pipes,
                                title=title, denial_fd=denial_fd, monitor=monitor)
            steps.run(ctx)
            env = ctx.env
            report = reports.build(plan, ctx.outcomes, os.getpid(), ctx.namespaces)
            control.send(control_fd, {"report": report.to_dict()})
    except BaseException as exc:  # noqa: BLE001 - no child code may run after a failure
        _fail(control_fd, exc)
    if target is not None:
        # No exec to hand the policy's environment over: it replaces this process's own.
        os.environ.clear()
        os.environ.update(env)
        code = 1
        try:
            code = target(control_fd)
        finally:
            os._exit(code)
    # exec closes the control socket (close-on-exec): its end of file tells the parent the
    # program started; an exec that fails says why on it first.
    try:
        os.set_inheritable(control_fd, False)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        _fail(control_fd, EnforcementError("exec", f"{argv[0]}: {exc.strerror}"))
    os._exit(EXIT_SETUP_FAILED)


def _unconfined(parent: int, keep: set[int]) -> dict[str, str]:
    """No sandbox (the -sandbox=0 baseline): die with the parent, keep only the given fds."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(EXIT_SETUP_FAILED)
    descriptors.keep_only(keep)
    return dict(os.environ)


def _fail(control_fd: int, exc: BaseException) -> None:
    err = exc if isinstance(exc, EnforcementError) else EnforcementError("setup", repr(exc))
    try:
        control.send(control_fd, {"error": err.as_dict()})
    finally:
        os._exit(EXIT_SETUP_FAILED)


def _await_ready(child: SandboxedProcess, plan: Plan | None, expect_exec: bool) -> None:
    if plan is None:
        return
    fd = child.control.fileno()
    while True:
        try:
            message = control.recv(fd)
        except (ValueError, OSError) as exc:
            message = {"error": {"step": "control", "reason": f"bad message from child: {exc}"}}
        if message is None:
            if child.report is not None:
                return   # exec: end of file after the report means the program started
            status = child.wait()
            raise SpawnError("startup", f"the child ended before reporting: "
                                        f"{describe_status(child.status or 0)}", status)
        if isinstance(message, dict) and "error" in message:
            err = message["error"]
            status = child.wait()
            raise SpawnError(str(err.get("step")), str(err.get("reason")), status)
        if isinstance(message, dict) and "report" in message:
            child.report = Report.from_dict(message["report"])
            if not expect_exec:
                return
            continue
        raise SpawnError("control", f"unexpected message from child: {str(message)[:200]}")
