"""Every step of entering a sandbox, in one ordered list (bubblewrap's main(), nsjail's
containProc()), and the one runner that carries them out.

There are two ways in, and both run this list: a fresh fork made by the launcher
(`Entry.LAUNCH`: `CleanCoin-sandbox run` and `probe`, and every component the zygote starts),
and a running process that restricts itself (`Entry.SELF`: CleanCoin-node, a standalone
wallet). A step that makes no sense for one of them (a new session for a running process)
says so in its `applies` and is reported as not applicable, never silently dropped.

The runner times each step, turns a step's failure into `EnforcementError(step, reason)`,
and applies the policy's compatibility level in one place: a step raises `Lacking` when the
kernel lacks what it needs, or returns what it could not do in `Done.missing`; at level hard
either stops the entry, at soft the mechanism must have done something, at best_effort
anything goes. The report is then built from what actually happened (`report.build`).
"""

from __future__ import annotations

import enum
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import (capabilities, descriptors, helpers, landlock, namespaces, pidns, rlimits, rootfs, seccomp, stdio,
               syscalls)
from .errors import EnforcementError
from .mechanisms import PROCESS
from .plan import Plan
from .records import Record, record

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    from . import denial_log


class Entry(enum.Enum):
    LAUNCH = "launch"     # a fresh fork made by the launcher
    SELF = "self"         # a running process restricting itself


@dataclass
class Outcome:
    """What one step did."""

    step: str
    mechanism: str
    status: str                  # applied, partial, lacking (tolerated), skipped (not applicable)
    detail: str = ""
    missing: list[str] = field(default_factory=list)
    duration_us: int = 0
    helpers: list[dict[str, object]] = field(default_factory=list)   # processes it started (helpers.py)


@dataclass
class Done:
    """A step's result: a note for the report, and what it could not do (if anything)."""

    detail: str = ""
    missing: list[str] = field(default_factory=list)
    applied_nothing: bool = False
    #: The sandbox's helper processes it started (helpers.Helper.to_dict): how `status` knows them.
    helpers: list[dict[str, object]] = field(default_factory=list)


class Lacking(Exception):
    """The kernel lacks what the step needs; the policy's level decides whether that is fatal."""


@dataclass
class Context:
    """The state the steps share, in the process that runs them (it forks along)."""

    plan: Plan
    entry: Entry
    keep_fds: set[int]                 # besides the plan's fds: IPC, control socket, ...
    parent_pid: int = 0
    pipes: stdio.Pipes | None = None   # LAUNCH with stdio "pipe"
    devnull: int = -1
    namespaces: list[str] = field(default_factory=list)     # entered
    ids_mapped: bool = False           # the user namespace was joined with its maps written
    env: dict[str, str] = field(default_factory=dict)       # LAUNCH: for exec or the target
    title: str = ""                    # what `ps` shows (LAUNCH); the waiting processes add theirs
    monitor: denial_log.Monitor | None = None   # the denial log's monitor, started before rlimits
    denial_fd: int = -1                # the denial log's file, opened before the steps (open_for)
    learn_fd: int = -1                 # a learning plan's record file, opened before the view
    learn_record: str = ""
    waiter: pidns.Waiter | None = None  # LAUNCH in a pid namespace: the compiled waiter, exec'd
    outcomes: list[Outcome] = field(default_factory=list)


@record
class Step(Record):
    """One step of entering a sandbox: what it does, and when it applies."""

    name: str
    mechanism: str
    run: Callable[[Context], Done | None]
    applies: Callable[[Context], bool] = lambda ctx: True
    # Why a step that does not apply is left out, for the report ("" : say nothing).
    not_applicable: str = ""


def _launched(ctx: Context) -> bool:
    return ctx.entry is Entry.LAUNCH


# ---------------------------------------------------------------------------- the steps
# Each function does one thing; the list at the end is the order, with the reasons.

def _default_signals(ctx: Context) -> Done:
    # An ignored signal survives fork and exec (the zygote ignores SIGINT). SIGPIPE stays as
    # it is: Python ignores it and reports EPIPE, which a Python target relies on.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    return Done()


def _die_with_parent(ctx: Context) -> Done:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != ctx.parent_pid:   # the parent died between fork and prctl
        raise EnforcementError("die-with-parent", "the launcher is gone")
    return Done()


def _new_session(ctx: Context) -> Done:
    os.setsid()
    return Done("new session: no controlling terminal")


def _stdio(ctx: Context) -> Done:
    ctx.devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    note, relay = stdio.apply(ctx.plan.stdio, ctx.devnull, ctx.pipes, _launched(ctx))
    # The relay to a terminal is a helper `status` must know by the report, as the monitor.
    return Done(note, helpers=[helpers.started(helpers.OUTPUT_RELAY, relay).to_dict()] if relay else [])


def _single_thread(ctx: Context) -> Done:
    # unshare(CLONE_NEWUSER) refuses a multi-threaded caller, and Landlock (before ABI 8)
    # restricts only the calling thread: a thread started earlier would escape both.
    try:
        threads = os.listdir("/proc/self/task")
    except OSError as exc:
        raise EnforcementError("single-thread check", f"cannot list /proc/self/task: {exc.strerror}") from None
    if len(threads) != 1:
        raise EnforcementError("single-thread check",
                               f"{len(threads)} threads are running; a thread started before the "
                               "sandbox would escape Landlock")
    return Done()


def _learning_records(ctx: Context) -> Done:
    from . import learn_recorder
    ctx.learn_fd, ctx.learn_record = learn_recorder.open_record(ctx.plan)
    ctx.keep_fds.add(ctx.learn_fd)
    return Done(f"records go to {ctx.learn_record}, outside the view")


def _pid_waiter(ctx: Context) -> Done:
    # ctx.keep_fds holds the launcher's control socket: an exec of the waiter that fails is
    # reported there, naming this step (closed by the exec that succeeds).
    ctx.waiter = pidns.start_waiter(ctx.title, ctx.parent_pid if ctx.plan.die_with_parent else 0, ctx.keep_fds)
    return Done(f"the waiter (pid {ctx.waiter.pid}) is a compiled program, exec'd before the user namespace")


def _namespaces(ctx: Context) -> Done:
    wanted = [n for n in namespaces.FLAGS if n in ctx.plan.namespaces]
    # The pid namespace is the waiter's to make (step "pid namespace"): its own namespace.
    unshared = [n for n in wanted if n != "pid" or ctx.waiter is None]
    entered, first_error, ctx.ids_mapped = namespaces.enter(unshared, ctx.plan.level("namespaces"),
                                                             ctx.plan.uid, ctx.plan.gid)
    if ctx.waiter is not None:
        entered = [n for n in namespaces.FLAGS if n in entered or n == "pid"]
    ctx.namespaces = entered
    missing = [f"{n} namespace ({first_error})" for n in wanted if n not in entered]
    how = "; user joined from a holder process, its ids mapped from outside" if ctx.ids_mapped else ""
    return Done(f"entered: {', '.join(entered) or 'none'}{how}", missing, applied_nothing=not entered)


def _id_maps(ctx: Context) -> Done:
    # Already mapped (and checked after setns) when the process keeps its memory private: it
    # could write its own maps only by being dumpable for a moment (namespaces.enter).
    if not ctx.ids_mapped:
        namespaces.write_id_maps(ctx.plan.uid, ctx.plan.gid)
    return Done(f"uid {ctx.plan.uid} and gid {ctx.plan.gid} mapped to themselves")


def _pid_namespace(ctx: Context) -> Done:
    assert ctx.waiter is not None
    # returns in the component only; in a process group of the namespace's unless the plan
    # keeps the launcher's session (and group: its job control)
    pidns.split(ctx.waiter, "user" in ctx.namespaces, ctx.plan.new_session)
    ctx.waiter = None
    return Done("PID 1 is a small init (compiled); the component runs below it (pid 3)")


def _private_mounts(ctx: Context) -> Done:
    namespaces.make_mounts_private()
    return Done()


def _filesystem_view(ctx: Context) -> Done:
    notes = rootfs.build(ctx.plan.mounts, fresh_proc="pid" in ctx.namespaces and _launched(ctx))
    return Done("; ".join(notes))


def _hostname(ctx: Context) -> Done:
    syscalls.sethostname(ctx.plan.hostname)
    return Done()


def _rlimits(ctx: Context) -> Done:
    rlimits.apply(ctx.plan.rlimits)
    return Done()


def _descriptors(ctx: Context) -> Done:
    keep = set(ctx.plan.fds) | ctx.keep_fds
    devnull, ctx.devnull = ctx.devnull, -1
    if _launched(ctx):
        descriptors.keep_only(keep)        # /dev/null too: its copies are on 0-2 if needed
        return Done(f"kept: {', '.join(map(str, sorted(keep)))}")
    # A running process: libraries hold descriptors it cannot close under them (pycapnp's
    # schema loader keeps / and the cwd open), so each one not on the list is replaced by
    # /dev/null: it stays a valid number, and leads nowhere.
    replaced = descriptors.neutralize(keep, devnull)
    os.close(devnull)
    return Done(f"kept: {', '.join(map(str, sorted(keep)))}; "
                f"{len(replaced)} others replaced by /dev/null")


def _environment(ctx: Context) -> Done:
    ctx.env = dict(ctx.plan.environment)
    return Done(f"{len(ctx.env)} variables")


def _denial_monitor(ctx: Context) -> Done:
    if ctx.monitor is not None and _launched(ctx):
        # Forked by the zygote that launches this component (zygote._denial_monitor): outside
        # this sandbox's namespaces, nothing of the zygote's but its channel. Configured now,
        # by this set-up code; it keeps limits of its own, never this component's.
        from . import denial_log
        denial_log.configure(ctx.plan, ctx.monitor, ctx.denial_fd if ctx.denial_fd >= 0 else None)
        return Done("the compiled monitor, exec'd by a fork of the zygote outside this sandbox's "
                    "namespaces, configured now: confines itself (no filesystem, its own seccomp "
                    "filter) before the seccomp step hands it the listener")
    if ctx.monitor is not None:
        # Prelaunched by a process that restricts itself (denial_log.prelaunch), configured
        # before the first step (self_restrict): its interpreter started during the process's
        # own set-up; what it holds and how it confines itself are the same.
        return Done("started before the steps (during this process's set-up), "
                    "configured before the first: confines itself (no filesystem, its own seccomp "
                    "filter) before the seccomp step hands it the listener")
    from . import denial_log
    fork_only = ""
    if ctx.ids_mapped and _launched(ctx):
        # A program exec'd in a user namespace is tied to it for life (the kernel's mm->user_ns),
        # and the uid that owns the namespace has CAP_SYS_PTRACE there: any process of this
        # uid could attach to such a monitor, not dumpable or not, and answer the component's
        # refused syscalls in its place (let them through, put descriptors into it). A fork
        # stays tied to the namespace its program started in, where this uid has no such
        # right: the monitor is this process's fork, not exec'd; what it copies is a zygote's
        # fork, which holds no secret yet. (A process that restricts itself starts its monitor
        # before the steps instead: self_restrict.)
        fork_only = "a program exec'd in this user namespace could be traced by any process of this uid"
    ctx.monitor = denial_log.launch(ctx.plan, ctx.denial_fd if ctx.denial_fd >= 0 else None, fork_only)
    if fork_only:
        return Done("a fork of this process, not exec'd (any process of this uid could trace a program "
                    "exec'd in this user namespace): confines itself (no filesystem, its own seccomp "
                    "filter) before the seccomp step hands it the listener")
    return Done("started: confines itself (no filesystem, its own seccomp filter) before the "
                "seccomp step hands it the listener")


def wants_monitor(plan: Plan) -> bool:
    """Whether entering `plan` starts a denial monitor (the "denial monitor" step applies)."""
    return bool(plan.denials) and bool(plan.seccomp_bpf) and not plan.learn


def _wants_monitor(ctx: Context) -> bool:
    return wants_monitor(ctx.plan)


def _dumpable(ctx: Context) -> Done:
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    return Done("not dumpable: no ptrace attach, no /proc/<pid>/mem, no core file")


def _dumpable_on(ctx: Context) -> Done:
    # A zygote's fork (and CleanCoin-node itself) starts out not dumpable; a policy that wants
    # the process dumpable (a learning run: its recorder reads the syscalls' arguments) says so.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
    return Done("dumpable, as the policy asks: same-user ptrace and core files are possible")


def _no_new_privs(ctx: Context) -> Done:
    # Before Landlock: it refuses to restrict a process without CAP_SYS_ADMIN unless
    # no_new_privs is set (every unprivileged user).
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    return Done()


def _mdwe(ctx: Context) -> Done:
    try:
        syscalls.prctl(syscalls.PR_SET_MDWE, syscalls.PR_MDWE_REFUSE_EXEC_GAIN)
    except OSError as exc:
        if exc.errno == 22:    # EINVAL: a kernel before 6.3
            raise Lacking("PR_SET_MDWE (Linux 6.3)") from None
        raise
    return Done()


def _landlock(ctx: Context) -> Done:
    assert ctx.plan.landlock is not None
    notes = landlock.apply(ctx.plan.landlock)
    return Done("; ".join(notes))


def _capabilities(ctx: Context) -> Done:
    return Done("; ".join(capabilities.drop(ctx.plan.keep_caps)))


def _seccomp(ctx: Context) -> Done:
    if ctx.plan.learn:
        # A learning plan (CleanCoin-sandbox learn): a recorder notes every syscall instead.
        from . import learn_recorder
        fd, ctx.learn_fd = ctx.learn_fd, -1
        ctx.keep_fds.discard(fd)
        note, recorder = learn_recorder.start(ctx.plan, ctx.entry.value, fd, ctx.learn_record)
        return Done(note, helpers=[recorder.to_dict()])
    if ctx.plan.denials:
        from . import denial_log
        assert ctx.monitor is not None        # the "denial monitor" step ran (same condition)
        note = denial_log.start(ctx.plan, ctx.monitor)
        return Done(note, helpers=[ctx.monitor.helper.to_dict()] if ctx.monitor.helper else [])
    seccomp.load_filter(ctx.plan.seccomp_bpf)
    return Done()


def _has(kind: str) -> Callable[[Context], bool]:
    return lambda ctx: kind in ctx.namespaces


#: The order, and why. A step that needs a syscall the filter forbids must come before
#: seccomp, which is last; rights are given up before anything untrusted can run.
STEPS: tuple[Step, ...] = (
    # A fresh fork inherits its launcher's dispositions: start from the defaults.
    Step("signals", PROCESS, _default_signals, _launched, "a running process keeps its own"),
    # Never outlive the launcher (the zygote, the tool): an orphan sandbox nobody watches.
    Step("die-with-parent", PROCESS, _die_with_parent,
         lambda ctx: _launched(ctx) and ctx.plan.die_with_parent, "not a launched child"),
    # No controlling terminal: TIOCSTI and job control cannot reach the user's shell.
    Step("new-session", PROCESS, _new_session, lambda ctx: _launched(ctx) and ctx.plan.new_session,
         "a running process keeps its session"),
    # Before the namespaces, so that the waiting processes of a pid namespace hold no terminal.
    Step("stdio", PROCESS, _stdio),
    Step("single-thread check", PROCESS, _single_thread),
    # A learning plan's record file, on the host before the namespaces and the view: the
    # record directory is not in the view, so the component cannot forge what is learned.
    Step("learning records", "seccomp", _learning_records, lambda ctx: bool(ctx.plan.learn)),
    # Before the namespaces: the pid namespace's waiter is exec'd while this process is still
    # in its launcher's user namespace, so that its memory is out of reach of the same uid.
    Step("pid namespace waiter", "namespaces", _pid_waiter,
         lambda ctx: _launched(ctx) and "pid" in ctx.plan.namespaces,
         "a running process cannot move into a new pid namespace"),
    # All at once: the kernel makes the user namespace first and the others belong to it.
    Step("namespaces", "namespaces", _namespaces, lambda ctx: bool(ctx.plan.namespaces)),
    Step("id maps", "namespaces", _id_maps, _has("user")),
    # Only a fork can be in a new pid namespace; the component is the grandchild.
    Step("pid namespace", "namespaces", _pid_namespace, lambda ctx: ctx.waiter is not None,
         "a running process cannot move into a new pid namespace"),
    # Mount events must not travel back to the host's namespace.
    Step("private mounts", "namespaces", _private_mounts, _has("mount")),
    # After the pid split: a fresh /proc must be mounted from inside the pid namespace.
    Step("filesystem view", "namespaces", _filesystem_view,
         lambda ctx: "mount" in ctx.namespaces and bool(ctx.plan.mounts)),
    Step("hostname", "namespaces", _hostname, _has("uts")),
    # Every descriptor opened before restriction keeps the rights of the namespace and
    # domain it was opened in: none may survive but those on the list.
    Step("descriptors", PROCESS, _descriptors),
    Step("environment", PROCESS, _environment, _launched, "a running process keeps its environment"),
    # The denial log's monitor is a program of its own (not a copy of the component's heap):
    # exec needs the interpreter's execute right, so before Landlock; after the namespaces, the
    # view and the descriptor step, so that it starts from what the component is left with.
    Step("denial monitor", "seccomp", _denial_monitor, _wants_monitor),
    # After the monitor, which must not inherit the component's limits (a file size limit of
    # 0 left it unable to write a line of the log: until 12-07 this step came before it); before
    # anything of the component's runs. The monitor keeps limits of its own (denial_monitor.py).
    Step("rlimits", "rlimits", _rlimits, lambda ctx: bool(ctx.plan.rlimits)),
    # From here on the process gives up rights for good.
    Step("dumpable", PROCESS, _dumpable, lambda ctx: not ctx.plan.dumpable),
    Step("dumpable on", PROCESS, _dumpable_on, lambda ctx: ctx.plan.dumpable),
    Step("no_new_privs", PROCESS, _no_new_privs),
    Step("mdwe", "mdwe", _mdwe, lambda ctx: ctx.plan.memory_deny_write_execute),
    Step("landlock", "landlock", _landlock, lambda ctx: ctx.plan.landlock is not None),
    Step("capabilities", "capabilities", _capabilities),
    # Last: the steps before it may use what it forbids.
    Step("seccomp", "seccomp", _seccomp, lambda ctx: bool(ctx.plan.seccomp_bpf)),
)


def run(ctx: Context) -> list[Outcome]:
    """Carry out every step that applies, in order; raises EnforcementError on the first that
    fails at the policy's level. Returns the outcomes (also in `ctx.outcomes`)."""
    for step in STEPS:
        if not step.applies(ctx):
            if step.not_applicable:
                ctx.outcomes.append(Outcome(step.name, step.mechanism, "skipped", step.not_applicable))
            continue
        start = time.perf_counter_ns()
        try:
            done = step.run(ctx) or Done()
            status = "partial" if done.missing else "applied"
            if done.applied_nothing:
                status = "lacking"
            outcome = Outcome(step.name, step.mechanism, status, done.detail, list(done.missing),
                              helpers=list(done.helpers))
        except Lacking as exc:
            outcome = Outcome(step.name, step.mechanism, "lacking", "", [str(exc)])
        except EnforcementError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure names its step
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, OSError) and exc.filename:
                reason = f"{exc.filename}: {reason}"
            raise EnforcementError(step.name, str(reason)) from None
        outcome.duration_us = (time.perf_counter_ns() - start) // 1000
        _judge(ctx.plan, outcome)
        ctx.outcomes.append(outcome)
    return ctx.outcomes


def _judge(plan: Plan, outcome: Outcome) -> None:
    """The compatibility level, in one place: hard takes nothing less than everything, soft
    takes less but not nothing, best_effort takes whatever happened."""
    if outcome.status in ("applied", "skipped"):
        return
    level = plan.level(outcome.mechanism)
    lacks = "; ".join(outcome.missing) or "nothing could be applied"
    if level == "hard":
        raise EnforcementError(outcome.step, f"the kernel or system lacks {lacks}, and the "
                                             "policy's level is hard")
    if level == "soft" and outcome.status == "lacking":
        raise EnforcementError(outcome.step, f"the kernel or system lacks {lacks}, and the "
                                             "policy's level soft needs the mechanism itself")
