"""The denial log: refused syscalls in the component's own log, with the syscall and why.

A refusal with an errno (an argument rule such as TIOCSTI -> EPERM, a socket family the
policy does not list -> EAFNOSUPPORT, clone with namespace flags, an errno default) lets the
component go on, and so goes unnoticed unless someone says it happened. With a denial log the
filter sends those syscalls to a monitor (SECCOMP_RET_USER_NOTIF) instead of answering them
itself; the monitor answers the very same errno (the syscall never runs: the notification is
the refusal) and writes a line to the log. If the monitor is gone, the kernel answers ENOSYS:
still refused. Refusals that kill (kill_process) stay in the filter, untouched: the component's
launcher reports the SIGSYS, with the syscall where the kernel's audit log is readable
(`kernel_log`). clone3's ENOSYS, a fixed part of every filter, is not logged.

The monitor is a small compiled program of its own (denial_monitor.c, since 12-08; until then
denial_monitor.py under `python -I -S`, about 4 MiB of interpreter per monitor), exec'd from a
sealed memfd of mode 0111 (`exec_compiled`: the kernel starts it not dumpable), not a fork of
the component: a fork kept a copy-on-write image of the component's heap,
which grew private as the component went on writing (10 MiB for a regtest node). It is started
by the "denial monitor" step, before Landlock (exec needs the interpreter's execute right)
and before the rlimits (it keeps limits of its own, never the component's: since 12-07),
after the namespaces, the view and the descriptor step: a double fork that keeps only its
channel and the log, sets no_new_privs, drops every capability and execs. The program then
confines itself before it takes anything from the component but its configuration: not dumpable, Landlock handling
every right and granting none (with signal and abstract unix scopes), and a seccomp filter of
its own (compiled here, `monitor_filter`); it says it is ready, or why it is not, and the
component's seccomp step waits for that: a monitor that cannot confine itself stops the start
("denial monitor" step), fail closed. A process that restricts itself may start the monitor
before its plan exists (`prelaunch`: CleanCoin-node, before its own imports, so that the
seccomp step no longer waits for the interpreter): it holds only its channel until
`restrict_self` sends the configuration and the log (`configure`) before the first step, and
then confines itself as above before it takes anything else. The seccomp step then hands it the listener over the channel:
that needs sendmsg and close to be allowed, which every CleanCoin policy allows; a policy
that does not gets no denial log (the report says so).

A component launched by a zygote (CleanCoin-node's wallet process) gets, since 12-07, a
monitor the zygote forked for that launch (`serve_forked`, zygote._denial_monitor), outside
the component's namespaces, which execs the compiled program (since 12-08; it ran the
interpreter's program in the fork before, about 7.7 MiB of the zygote's pages); its "denial
monitor" step only configures it (`configure`) and it confines itself as above.

Where the compiled program cannot be executed (an installation without it, a view without
the C library), or must not be (a user namespace its uid owns: steps._denial_monitor), the
same double fork does not exec: it runs the interpreter's program's `main` itself
(denial_monitor.py, kept for this: the same protocol, steps and lines), confined by the same
steps and filter before it takes anything but its configuration, and the report says so and
why. (Until 12-07 that fork was made at the seccomp step, after the rlimits.)

Lines are rate-limited: the first 10 of each syscall and errno, then every 1000th with its
count. Verbose (-debug=sandbox) logs every refusal with its arguments, at most 100 a second.
"""

from __future__ import annotations

import dataclasses
import errno as errno_module
import functools
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from . import denial_monitor, helpers, notify, sealed_program, syscalls
from .errors import EnforcementError
from .plan import Plan

TYPE_CHECKING = False     # not typing's: `CleanCoin-sandbox run --denials` imports this

if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class DenialLog:
    """Where a component's refusals are logged: a file (appended), or "" for its stderr;
    `label` names the component in each line (its pid otherwise)."""

    log: str = ""
    verbose: bool = False
    label: str = ""


def _resolved_log(plan: Plan, log: str) -> str:
    """The log's real path, following links only where the component could not have made them,
    as the plan's grants were resolved (`plan.untrusted`, paths.py): an operator's link on the
    way (a datadir reached through a symlink) is followed, one inside a writable grant or root
    is refused, naming it. `open_log` then refuses any link met after planning."""
    from . import paths
    try:
        return paths.resolve(log, plan.untrusted)
    except (paths.SymlinkRefused, OSError) as exc:
        raise EnforcementError("denial monitor", f"denial log {log}: {exc}") from None


def notifies(policy: Any) -> bool:
    """Whether a denial log would load `policy`'s filter in its notifying form (seccomp on,
    and sendmsg and close allowed: `plan_with_denials`)."""
    return bool(policy.seccomp.enabled) and not _missing(policy)


def _missing(policy: Any) -> list[str]:
    return [n for n in ("sendmsg", "close") if n not in policy.allowed_syscalls]


def plan_with_denials(plan: Plan, policy: Any, config: DenialLog, compiled_notifying: bool = False) -> Plan:
    """The plan with a notifying filter and the monitor's table; unchanged (with a note in the
    report) where a denial log cannot be set up. The log's path is resolved as grants are
    (`_resolved_log`). `compiled_notifying`: the plan's filter was compiled in the notifying
    form already (`compile_plan(..., notify_errno=True)`, where `notifies(policy)`), and is
    not compiled again."""
    from . import seccomp
    if config.log:
        config = dataclasses.replace(config, log=_resolved_log(plan, config.log))
    from .filter_spec import filter_spec
    if plan.learn or not plan.seccomp_bpf or not policy.seccomp.enabled:
        return plan
    missing = _missing(policy)
    if missing:
        return _noted(plan, f"no denial log: the policy does not allow {', '.join(missing)}, which "
                            "hand the filter's listener to the monitor")
    spec = filter_spec(policy)
    table = seccomp.rule_table(spec)
    default_errno = _errno(table.default_action)
    rules: dict[int, list[list[Any]]] = {}
    names: dict[int, str] = {}
    for rule in table.rules:
        number = seccomp.syscall_number(rule.syscall)
        code = _errno(rule.action)
        if number is None or number < 0 or code is None or rule.syscall == "clone3" or not rule.logged:
            continue
        names[number] = rule.syscall
        conds = [[c.index, c.op, c.value, c.mask] for c in rule.args]
        rules.setdefault(number, []).append([code, conds])
    notified = bool(rules) or default_errno is not None
    if not notified:
        return plan
    if compiled_notifying:
        bpf, sha256 = plan.seccomp_bpf, plan.seccomp_sha256
    else:
        compiled = seccomp.compile_filter(spec, notify_errno=True)
        bpf, sha256 = compiled.bpf, compiled.sha256
    # The monitor has no libseccomp to ask, so it gets the names of what it may be asked
    # about: the rules' syscalls, and every syscall only where an errno default refuses any
    # (no shipped policy has one: their default kills).
    every = _syscall_names() if default_errno is not None else {}
    denials = {"log": config.log, "verbose": config.verbose, "label": config.label,
               "rules": {str(k): v for k, v in rules.items()},
               "default": default_errno, "names": {**every, **{str(k): v for k, v in names.items()}},
               "families": {}}
    from .families import BY_NUMBER
    denials["families"] = {str(k): v for k, v in BY_NUMBER.items()}
    import base64
    denials["monitor_bpf"] = base64.b64encode(monitor_filter()).decode()
    _read_image()
    return _noted(dataclasses.replace(plan, seccomp_bpf=bpf, seccomp_sha256=sha256, denials=denials),
                  "refusals with an errno are answered by a monitor and logged"
                  + (f" to {config.log}" if config.log else " to stderr")
                  + (" (verbose)" if config.verbose else " (rate-limited)"))


def _errno(action: str) -> int | None:
    if action.startswith("errno:"):
        return int(getattr(errno_module, action.split(":", 1)[1]))
    return None


def _noted(plan: Plan, note: str) -> Plan:
    mechanisms = dict(plan.mechanisms)
    old = mechanisms.get("seccomp")
    if old is not None:
        mechanisms["seccomp"] = dataclasses.replace(old, details=(*old.details, note))
    return dataclasses.replace(plan, mechanisms=mechanisms)


# ------------------------------------------------------------------------ the monitor's filter

#: What the monitor itself may do once confined (denial_monitor.confine): its descriptors,
#: memory without PROT_EXEC, and the two notification ioctls it makes (receive, answer; never
#: SECCOMP_IOCTL_NOTIF_ID_VALID). Everything else is EPERM.
MONITOR_ALLOWED = ("read", "write", "close", "recvmsg", "poll", "ppoll", "brk", "munmap", "mremap",
                   "madvise", "rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "restart_syscall",
                   "clock_gettime", "futex", "getpid", "gettid", "exit", "exit_group")
_PROT_EXEC = 4
#: Above every x86_64 syscall number (the highest is in the 400s).
_MAX_SYSCALL = 512


@functools.cache
def monitor_filter() -> bytes:
    """The BPF of the monitor's own seccomp filter, compiled here with libseccomp so that the
    monitor loads bytes and imports nothing of ours."""
    from . import seccomp
    lib = seccomp._lib()  # noqa: SLF001
    flt = lib.SyscallFilter(lib.ERRNO(errno_module.EPERM))
    flt.set_attr(lib.Attr.ACT_BADARCH, lib.KILL_PROCESS)
    flt.set_attr(lib.Attr.CTL_NNP, 0)        # set by the monitor itself, checked
    for name in MONITOR_ALLOWED:
        flt.add_rule(lib.ALLOW, name)
    for name in ("mmap", "mprotect"):
        flt.add_rule(lib.ALLOW, name, lib.Arg(2, lib.MASKED_EQ, _PROT_EXEC, 0))
    for request in (notify.IOCTL_NOTIF_RECV, notify.IOCTL_NOTIF_SEND):
        flt.add_rule(lib.ALLOW, "ioctl", lib.Arg(1, lib.MASKED_EQ, 0xFFFFFFFF, request))
    return seccomp._export(flt, "export_bpf")  # noqa: SLF001


def _syscall_names() -> dict[str, str]:
    """Every native syscall number's name that libseccomp knows, for the monitor's lines."""
    from .seccomp import syscall_name
    names = {str(nr): syscall_name(nr) for nr in range(_MAX_SYSCALL)}
    return {nr: name for nr, name in names.items() if not name.startswith("#")}


# ------------------------------------------------------------------------ in the component

MONITOR_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "denial_monitor.py")
#: The monitor as a compiled program (denial_monitor.c, built by setup.py beside this module):
#: what is exec'd wherever exec is allowed; the interpreter's program only runs in a fork.
COMPILED_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "denial-monitor")
#: How long the component's seccomp step waits for its monitor to say it is confined.
_READY_SECONDS = 30.0


@dataclass
class Monitor:
    """The component's side of a monitor started before Landlock (`launch`, or `prelaunch`
    and `configure`): the channel, our copy of the log's descriptor until the seccomp step
    (-1 until a prelaunched monitor is configured), and the monitor's process."""

    channel: socket.socket
    out: int = -1
    #: The monitor process, for the report (`status` knows the sandbox's helpers from it).
    helper: helpers.Helper | None = None


def open_log(config: Mapping[str, Any]) -> int:
    """The log of `plan.denials` (`config`), opened before Landlock, by the component's own
    set-up or, for a launched one, by its launcher before the view goes up. The path may be
    one the component could write before (a node's <netdatadir>/sandbox.log, read-only in its
    view only while it runs): no link is followed
    on the way (one planted by an earlier run would point outside the grants) and only a
    regular file is taken (a FIFO would block the start)."""
    path = config["log"]
    try:
        if not path:
            return os.dup(2)
        fd = syscalls.openat2(syscalls.AT_FDCWD, path,
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK,
                              syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS, 0o600)
    except OSError as exc:
        raise EnforcementError("denial monitor", f"denial log {path or 'stderr'}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EnforcementError("denial monitor", f"denial log {path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def open_for(plan: Plan) -> int:
    """The denial log file of `plan`, opened before any step runs (by the launcher, or by a
    process about to restrict itself): before the filesystem view goes up, so the file may
    lie outside everything the component can reach, and it cannot erase or rewrite the
    record of its refusals. -1 when there is no file (no denial log, or stderr). Raises
    EnforcementError("denial monitor", ...)."""
    if not plan.denials or not plan.seccomp_bpf or plan.learn:
        return -1
    _read_image()       # before the view too (a plan made elsewhere: Plan.from_json)
    if not plan.denials.get("log"):
        return -1
    return open_log(plan.denials)


def monitor_config(plan: Plan, target: int) -> dict[str, Any]:
    """What the exec'd monitor needs, as marshal-able data."""
    import base64       # not on every launch's import path (docs/audit.md, "Start-up time")
    config = dict(plan.denials)
    config["bpf"] = base64.b64decode(config.pop("monitor_bpf"))     # sent once, decoded
    config["target"] = target
    config["mdwe"] = plan.memory_deny_write_execute
    config["landlock"] = plan.landlock is not None
    return config


def launch(plan: Plan, out: int | None = None, fork_only: str = "") -> Monitor:
    """Start the monitor as a small program of its own, before the Landlock step and before
    the rlimits step (it must not inherit the component's limits: `fsize = 0` left it unable
    to write a line): a double fork that execs the compiled monitor (`exec_compiled`), holding
    only its channel and the log, with no_new_privs and no capability. It confines itself further before it says it is ready (`start` waits).
    `out`: the log, opened by the launcher (`open_log`); else it is opened here. `fork_only`:
    why the program must not be exec'd here (steps._denial_monitor); the fork then runs the
    same program's `main` itself, as it does where the interpreter cannot be executed."""
    config = plan.denials
    if out is None:
        out = open_log(config)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Written before the fork, by the component's own set-up code: the only input the monitor
    # takes before it is confined.
    ours.sendall(denial_monitor.encode_config(monitor_config(plan, os.getpid())))
    pid = helpers.detached(lambda: _exec_monitor(ours, theirs, out, fork_only))
    theirs.close()
    return Monitor(ours, out, helpers.started(helpers.DENIAL_MONITOR, pid))


def prelaunch() -> Monitor:
    """Start the monitor before the plan exists, for a process about to restrict itself
    (CleanCoin-node, before its own imports): the same double fork as `launch`, holding only
    its channel, with no_new_privs and no capability; it execs the compiled monitor with
    CHANNEL only, which waits for `configure` (not dumpable meanwhile: `exec_compiled`). A
    caller that ends up
    without a denial log closes the channel (`discard`): the monitor then ends, unconfined
    but having taken nothing."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    pid = helpers.detached(lambda: _exec_monitor(ours, theirs, None))
    theirs.close()
    return Monitor(ours, helper=helpers.started(helpers.DENIAL_MONITOR, pid))


def configure(plan: Plan, monitor: Monitor, out: int | None = None) -> Monitor:
    """Hand a prelaunched monitor its configuration and the log (`out`, opened before any
    step by `open_for`; else opened here), from the component's set-up code, before the first
    sandbox step: the only input it takes before it confines itself. A monitor that could not
    start has said why on the channel already: `start` reads that answer either way."""
    if out is None:
        out = open_log(plan.denials)
    monitor.out = out
    # Not the component's rlimits: the monitor keeps its own (denial_monitor.OWN_RLIMITS).
    blob = denial_monitor.encode_config(monitor_config(plan, os.getpid()))
    try:
        socket.send_fds(monitor.channel, [blob[:4]], [out])
        monitor.channel.sendall(blob[4:])
    except OSError:
        pass    # the monitor ended (its answer, X or E, waits in the channel for `start`)
    return monitor


def discard(monitor: Monitor) -> None:
    """A prelaunched monitor that will not be used: hang up (it ends; it took nothing)."""
    monitor.channel.close()


def _exec_monitor(ours: socket.socket, theirs: socket.socket, out: int | None, fork_only: str = "") -> None:
    """In the grandchild: give up what the monitor must not have, then exec. Never returns.
    `out` None: prelaunched, the log comes with the configuration (`configure`). `fork_only`
    (or an interpreter that cannot be executed here): no exec, this fork runs the program's
    `main` itself; it confines itself the same way before it takes anything but its
    configuration, and says why it is a fork (`start` reports it)."""
    from . import capabilities, descriptors
    channel = theirs.fileno()
    kind = "E"          # a failure to give something up: the start fails
    try:
        ours.close()
        descriptors.keep_only({channel} if out is None else {channel, out})
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        # Securebits locked (no root on exec) and every set empty: exec hands nothing back.
        capabilities.drop(())
        kind = "X"
        logs = [] if out is None else [str(out)]
        if fork_only:
            os._exit(denial_monitor.main([str(channel), *logs], forked=fork_only))
        exec_compiled(denial_monitor.NAME, [str(channel), *logs])
    except BaseException as exc:  # noqa: BLE001 - the component decides (see start)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        if kind == "X" and not fork_only:
            # The interpreter cannot be executed here (a view without it): this fork is the
            # monitor, confined by the program's own steps (its filter, Landlock granting
            # nothing), and the report says so.
            os._exit(denial_monitor.main([str(channel), *logs],
                                         forked=f"the compiled monitor could not start: {reason}"))
        try:
            _say_failed(channel, "before exec: " if kind == "E" else "", exc)
        finally:
            os._exit(127)


def _say_failed(channel: int, where: str, exc: BaseException) -> None:
    """A monitor that could not start says so on its channel: `start` reads the "E" and
    fails the component's start, naming `where` and why."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    # Unread data at close would reset the connection instead of delivering the answer.
    os.set_blocking(channel, False)
    try:
        while os.read(channel, 1 << 16):
            pass
    except BlockingIOError:
        pass
    os.write(channel, f"E{where}{reason}".encode())


#: What `ps -f` shows for a monitor forked by a zygote (`serve_forked`), after the name of the
#: component it serves, which the zygote gives; its short name is denial_monitor.NAME, as for
#: the others.
FORKED_TITLE = "denial-monitor (forked)"


def serve_forked(channel: int, component: str) -> int:
    """The monitor for a zygote's launch (zygote.py, `_denial_monitor`: one per launch of a
    component whose plan logs refusals), in a fork of the zygote with nothing of the zygote's
    but `channel` and stdio on /dev/null: no_new_privs and no capability, as `_exec_monitor`
    gives up before its exec; then it execs the compiled monitor, prelaunched, its title
    naming `component` (since 12-08: until then this fork ran the interpreter's program,
    whose writes to the zygote's pages made it about 7.7 MiB of PSS). It waits for
    `configure` (which the component's "denial monitor" step sends, without the component's
    rlimits) and confines itself before it takes anything else. It stays in the zygote's
    namespaces, where the component cannot name it, and in the zygote's user namespace, where
    an exec'd program cannot be traced by the uid. Where the compiled program cannot be
    exec'd, this fork runs the interpreter's program's `main` itself (not dumpable from the
    start: the zygote is not). Returns its exit status."""
    from . import capabilities
    try:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        capabilities.drop(())
    except BaseException as exc:  # noqa: BLE001 - the component's start fails, naming why
        _say_failed(channel, "before serving: ", exc)
        return 127
    try:
        exec_compiled(f"{component} {denial_monitor.NAME}", [str(channel)])
    except OSError:
        pass    # an installation without the compiled program: this fork serves, as until 12-08
    try:
        syscalls.set_title(f"{component} {FORKED_TITLE}", denial_monitor.NAME)
    except OSError:
        pass            # a name only
    return denial_monitor.main([str(channel)])


def exec_compiled(title: str, arguments: list[str]) -> None:
    """Become the compiled monitor (denial_monitor.c), `title` its argv[0] (what ps shows),
    the given descriptors kept: exec'd from a sealed memfd of mode 0111, which its own uid
    cannot read, so that the kernel starts it not dumpable (no process of the uid can attach
    to it before it confines itself: the interpreter's program had that window, about 20 ms).
    Returns only by raising OSError (no program, no memfd, exec refused)."""
    fd = sealed_program.sealed_fd(denial_monitor.NAME, _image(COMPILED_PROGRAM))
    try:
        os.execve(fd, [title, *arguments], {})
    finally:
        os.close(fd)


@functools.cache
def _image(path: str) -> bytes:
    """The compiled monitor's bytes, read once per process: by the launcher as it plans (a
    launched child's "denial monitor" step runs in its filesystem view, which may not hold
    the package), by a zygote or a prelaunching process when it first starts one."""
    with open(path, "rb") as handle:
        return handle.read()


def _read_image() -> None:
    """`_image` now, while the package can be read (see there); without it the monitor is a
    fork running the interpreter's program, and the report says why."""
    try:
        _image(COMPILED_PROGRAM)
    except OSError:
        pass


def start(plan: Plan, monitor: Monitor) -> str:
    """The seccomp step with a denial log: wait for the confined monitor (started by the
    "denial monitor" step, which runs whenever this one does, or prelaunched), load the
    filter, hand it the listener. A monitor that is a fork of the component (`launch`'s
    `fork_only`, or an interpreter that cannot be executed) says so, and the report does."""
    reply = _reply(monitor.channel)
    if monitor.out >= 0:
        os.close(monitor.out)       # the monitor holds its own copy
        monitor.out = -1
    if reply[:1] in (b"R", b"F"):
        _hand_over(plan, monitor.channel)
        text = reply[1:].decode(errors="replace")
        why, _, lacking = text.partition("\n") if reply[:1] == b"F" else ("", "", text)
        lacking = f"; {lacking}" if lacking else ""
        if reply[:1] == b"F":
            return ("denial log: a monitor answers and logs refusals with an errno (a fork of the "
                    f"component, confined by the monitor's own filter: {why}{lacking})")
        return ("denial log: a monitor answers and logs refusals with an errno (its own program, "
                f"confined: no filesystem, its own seccomp filter{lacking})")
    monitor.channel.close()
    if reply.startswith(b"E"):
        raise EnforcementError("denial monitor", "the monitor could not confine itself: "
                                                 + reply[1:].decode(errors="replace"))
    raise EnforcementError("denial monitor", "the monitor ended before it was confined")


def _reply(channel: socket.socket) -> bytes:
    import select
    ready, _, _ = select.select([channel], [], [], _READY_SECONDS)
    if not ready:
        return f"Etimeout: not confined after {_READY_SECONDS:.0f} s".encode()
    try:
        return channel.recv(4096)
    except OSError as exc:
        return f"E{exc.strerror}".encode()


def _hand_over(plan: Plan, channel: socket.socket) -> None:
    listener = notify.load_with_listener(plan.seccomp_bpf)
    # From here on every syscall is filtered: sendmsg and close are allowed (checked when planned).
    socket.send_fds(channel, [b"L"], [listener])
    os.close(listener)
    channel.close()
