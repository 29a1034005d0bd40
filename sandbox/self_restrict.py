"""Restrict the calling process itself with a policy, for a process that is not launched.

The multiprocess node (`CleanCoin-node`) and a standalone wallet are started by the user, a
supervisor or the GUI, not by our launcher, yet they must run sandboxed too. They start what
must keep more rights than they do (the node's zygote) and open what they need (log files,
listening sockets), then call `restrict_self`, and only then serve anything.

It runs the same step list as a launch (`steps.STEPS`, entry `SELF`), so nothing is applied
differently: what only a fresh fork can do (a new session, the parent-death signal, a pid
namespace, a new environment) is reported as not applicable. Descriptors are handled as in a
launch, except that the ones not on the list are pointed at /dev/null instead of closed (see
`descriptors.neutralize`): the caller names what it still needs in `keep_fds`.

Any failure raises `EnforcementError(step, reason)`. Steps already applied cannot be undone
(namespaces entered, mounts made, rights dropped), so the process is left half restricted:
the caller must print the error and exit (status 1) without serving anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from . import namespaces, report as reports, report_registry, steps
from .errors import EnforcementError, PolicyError, PolicyErrors
from .plan import Plan
from .report import Report

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    from . import denial_log


def _policy_path(policy: str | os.PathLike[str]) -> str:
    """A path (absolute, ending in .toml, or starting with ./ or ../) as given; anything else
    is a shipped policy's name ("wallet-standalone", "base/python") and only that.

    Until 12-07 a name was first looked up as a file in the working directory: CleanCoin-wallet
    -ipcbind started in a directory holding a file named `wallet-standalone` (a checkout, a
    download directory, /tmp) confined itself with that file, and one planted there with
    `[seccomp] enabled = false` left the wallet process without a filter (Seccomp: 0 in
    /proc/PID/status); the connect broker's `connect-broker` the same."""
    from .policy_files import shipped_policy
    text = os.fspath(policy)
    if os.path.isabs(text) or text.endswith(".toml") or text.startswith(("./", "../")):
        return text
    shipped = shipped_policy(text)
    if os.path.isfile(shipped):
        return shipped
    raise EnforcementError("policy", f"no shipped policy '{text}' (a policy file is named by a path "
                                     "ending in .toml, or starting with /, ./ or ../)")


def prepare_self(policy: str | os.PathLike[str], variables: Mapping[str, str],
                 writable_roots: Iterable[str] = (), denials: object | None = None,
                 learn_dir: str | None = None) -> Plan:
    """Load, validate and fit the policy for this process, refusing what it cannot do itself.

    Has no effect on the process: a failure here leaves it as it was.
    """
    from . import launcher
    from .policy_cache import load_policy    # checked against the files, else loaded in full
    path = _policy_path(policy)
    try:
        model = load_policy(path)
        plan = launcher.prepare(model, variables, tuple(writable_roots), denials,  # type: ignore[arg-type]
                                learn_dir)
    except (PolicyErrors, PolicyError) as exc:
        raise EnforcementError("policy", str(exc)) from None
    except EnforcementError:
        raise   # a kernel that cannot carry the policy at its level (landlock, seccomp, ...)
    except Exception as exc:  # noqa: BLE001 - e.g. libseccomp failing to compile the filter
        raise EnforcementError("policy", f"{type(exc).__name__}: {exc}") from None
    if "pid" in plan.namespaces:
        where = f"{model.files[-1]}: namespaces.pid"
        raise EnforcementError("namespaces", f"{where}: policy '{plan.policy}' asks for a pid "
                                             "namespace, and a process cannot move itself into a "
                                             "new pid namespace (unshare(CLONE_NEWPID) moves only "
                                             "its future children); set pid = false")
    return plan


def restrict_self(policy: str | os.PathLike[str], variables: Mapping[str, str], *,
                  keep_fds: Iterable[int] = (), writable_roots: Iterable[str] = (),
                  denials: object | None = None, learn_dir: str | None = None,
                  monitor: denial_log.Monitor | None = None) -> Report:
    """Apply `policy` to the calling process, for good; returns the enforcement report.

    `policy` is a path or the name of a shipped policy ("node"); `variables` fills its
    `${...}` references (`${prefix}`, `${base_prefix}` and `${tmpdir}` have defaults);
    `keep_fds` are the descriptors the process still needs besides the policy's `fds`
    (0, 1, 2 by default); `denials` (a `denial_log.DenialLog`) logs the refusals that answer
    with an errno; `learn_dir` makes it a learning run that records instead of enforcing
    (docs/audit.md); `monitor`, from `denial_log.prelaunch()` called earlier, is the denial
    log's monitor, configured here before the first step (hung up on if the plan has no denial
    log, or on a failure). Raises `EnforcementError(step, reason)`; after one the process is
    partly restricted and must exit.
    """
    from . import denial_log       # lazily, as steps.py does: not every caller logs refusals
    try:
        plan = prepare_self(policy, variables, writable_roots, denials, learn_dir)
        # Before the view: the log may lie outside it (the GUI window's: the node's sandbox.log).
        denial_fd = denial_log.open_for(plan)
        if monitor is not None and not steps.wants_monitor(plan):
            denial_log.discard(monitor)
            monitor = None
        elif monitor is not None:
            # Before the first step, from this set-up code: the monitor confines itself while
            # the steps run (denial_monitor.py); it takes nothing from the process after that
            # but the listener, at the seccomp step.
            denial_log.configure(plan, monitor, denial_fd if denial_fd >= 0 else None)
        elif steps.wants_monitor(plan) and "user" in plan.namespaces and namespaces.memory_private():
            # The "denial monitor" step would exec it inside this process's new user namespace,
            # which its uid owns: a program started there stays tied to it (mm->user_ns), and
            # any process of that uid could trace it, not dumpable or not, and answer this
            # process's refused syscalls in its place (since 12-07). Started now, in the
            # namespace this process started in, as CleanCoin-node starts its own.
            monitor = denial_log.configure(plan, denial_log.prelaunch(), denial_fd if denial_fd >= 0 else None)
    except BaseException:
        if monitor is not None:
            denial_log.discard(monitor)
        raise
    return _apply(plan, keep_fds, denial_fd, monitor)


def apply_plan(plan: Plan, *, keep_fds: Iterable[int] = ()) -> Report:
    """Apply a plan that prepare_self made, maybe in another process (Plan.to_json and
    from_json: CleanCoin-node makes its connect broker's), to the calling process, for good;
    as restrict_self does after its preparation. So a small program confines itself without
    loading the policy loader, TOML or libseccomp (the connect broker: 1.7 MiB less). Plans
    with a denial log are restrict_self's only. Raises `EnforcementError(step, reason)`."""
    if plan.denials:
        raise EnforcementError("policy", f"policy '{plan.policy}': a plan with a denial log is applied "
                                         "by restrict_self only")
    if "pid" in plan.namespaces:
        raise EnforcementError("namespaces", f"policy '{plan.policy}' asks for a pid namespace, which a "
                                             "process cannot move itself into")
    return _apply(plan, keep_fds, -1, None)


def _apply(plan: Plan, keep_fds: Iterable[int], denial_fd: int, monitor: "denial_log.Monitor | None") -> Report:
    if monitor is not None:
        from . import denial_log
    # Opened now: once Landlock is up this process could not create it (for `status`).
    entry = report_registry.reserve(os.getpid())
    keep = set(keep_fds) | ({entry.fd} if entry else set()) | ({denial_fd} if denial_fd >= 0 else set())
    if monitor is not None:
        keep |= {monitor.channel.fileno(), monitor.out}
    ctx = steps.Context(plan, steps.Entry.SELF, keep, denial_fd=denial_fd, monitor=monitor)
    try:
        steps.run(ctx)
    except BaseException:
        if entry is not None:
            entry.abandon()
        if monitor is not None:
            denial_log.discard(monitor)
        raise
    report = reports.build(plan, ctx.outcomes, os.getpid(), ctx.namespaces)
    if entry is not None:
        entry.write({"kind": "self", "report": report.to_dict()})
    return report
