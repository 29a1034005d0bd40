"""Restrict the calling process itself with a policy, for a process that is not launched.

The multiprocess node (`CleanCoin-node`) is started by the GUI or by hand, not by our
launcher, yet it must run sandboxed too. It starts its zygote first (which keeps the right to
launch the wallet with the wallet's own policy), then calls `restrict_self("node", ...)`, and
only then serves P2P and RPC.

Order of the steps, the launcher's order minus what only a fresh child can do:

1. Load, validate and fit the policy exactly as the launcher does (`launcher.prepare`). A
   policy asking for a pid namespace is refused here: `unshare(CLONE_NEWPID)` moves only the
   caller's future children into the new namespace, never the caller, so the process would
   stay where it is while the report claimed otherwise.
2. Single-thread check: `unshare(CLONE_NEWUSER)` refuses a multi-threaded caller, and
   Landlock (before ABI 8) and seccomp without TSYNC restrict only the calling thread.
3. Namespaces a process can enter itself: user (with the id maps of its own uid and gid),
   mount (private propagation, private /tmp if asked, the `filesystem.hide` covers), ipc,
   uts (hostname), net.
4. rlimits.
5. The post-exec steps of `enforce.apply_restrictions`: dumpable off, no_new_privs, Landlock,
   capabilities, seccomp last.

Deliberately not done, unlike a launch:

- Descriptors are not closed: the process keeps its log file, its zygote sockets and any
  listening socket it opened; they were opened by the process itself, not inherited from an
  untrusted parent, and closing them would break it.
- The environment is not scrubbed: nothing is exec'd, so a new environment would only be
  copied into `os.environ` of a process that already read what it needed.
- No new session and no parent-death signal: those belong to a fork made by a launcher.

Any failure raises `EnforcementError(step, reason)`. Steps already applied cannot be undone
(namespaces entered, mounts made, rights dropped), so the process is left half restricted:
the caller must print the error and exit (status 1) without serving anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from . import enforce, namespaces, rlimits
from .errors import EnforcementError, PolicyError, PolicyErrors
from .mechanisms import Status
from .plan import Plan
from .report import Report

#: Namespaces a running process can move itself into with unshare(2).
SELF_NAMESPACES = ("user", "mount", "ipc", "uts", "net")


def _policy_path(policy: str | os.PathLike[str]) -> str:
    """A path as given, or a shipped policy's name ("node", "base/python")."""
    from .policy_loader import shipped_policy
    text = os.fspath(policy)
    if text.endswith(".toml") or os.path.isfile(text):
        return text
    shipped = shipped_policy(text)
    if os.path.isfile(shipped):
        return shipped
    raise EnforcementError("policy", f"no policy file '{text}' and no shipped policy of that name")


def prepare_self(policy: str | os.PathLike[str], variables: Mapping[str, str]) -> Plan:
    """Load, validate and fit the policy for this process, refusing what it cannot do itself.

    Has no effect on the process: a failure here leaves it as it was.
    """
    from . import launcher
    from .policy_loader import load_policy
    path = _policy_path(policy)
    try:
        model = load_policy(path)
        plan = launcher.prepare(model, variables)
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


def restrict_self(policy: str | os.PathLike[str], variables: Mapping[str, str]) -> Report:
    """Apply `policy` to the calling process, for good; returns the enforcement report.

    `policy` is a path or the name of a shipped policy ("node"); `variables` fills its
    `${...}` references (`${prefix}` and `${base_prefix}` are filled automatically). Raises
    `EnforcementError(step, reason)`; after one the process is partly restricted and must exit.
    """
    plan = prepare_self(policy, variables)
    timings: dict[str, int] = {}

    def step(name: str, func: object, *args: object) -> object:
        start = time.perf_counter_ns()
        try:
            return func(*args)  # type: ignore[operator]
        except EnforcementError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure names its step
            raise EnforcementError(name, f"{type(exc).__name__}: {exc}") from None
        finally:
            timings[name] = (time.perf_counter_ns() - start) // 1000

    step("single-thread check", enforce.check_single_threaded)
    entered = step("namespaces", _enter_namespaces, plan)
    assert isinstance(entered, list)
    if "user" in entered:
        step("id maps", namespaces.write_id_maps, plan.uid, plan.gid)
    if "mount" in entered:
        step("private mounts", namespaces.make_mounts_private)
        if plan.private_tmp_keep is not None:
            step("private /tmp", namespaces.private_tmp, plan.private_tmp_keep)
        if plan.hide:
            step("hide", namespaces.hide, plan.hide)
    elif plan.hide:
        raise EnforcementError("hide", "no mount namespace was entered, so the hidden paths "
                                       f"{', '.join(plan.hide)} cannot be covered")
    if "uts" in entered:
        step("hostname", namespaces.set_hostname, plan.hostname)
    step("rlimits", rlimits.apply, plan.rlimits)
    try:
        report = enforce.apply_restrictions(plan, timings)
    except EnforcementError:
        raise
    except Exception as exc:  # noqa: BLE001 - the steps raise EnforcementError; anything else
        # is a bug, but it must still reach the caller as a failed step, never as success.
        raise EnforcementError("post-exec steps", f"{type(exc).__name__}: {exc}") from None
    if set(entered) != set(plan.namespaces):
        mech = report.mechanisms["namespaces"]
        missing = [n for n in plan.namespaces if n not in entered]
        mech.status = (Status.NONE if not entered else Status.PARTIAL).value
        mech.details = [f"entered: {', '.join(entered) or 'none'}"]
        mech.missing = [f"{n} namespace" for n in missing]
        report.namespaces = list(entered)
    return report


def _enter_namespaces(plan: Plan) -> list[str]:
    """Unshare the plan's namespaces; below level hard, as many as the kernel allows."""
    wanted = [n for n in namespaces.FLAGS if n in plan.namespaces]
    unknown = [n for n in wanted if n not in SELF_NAMESPACES]
    if unknown:   # prepare_self refuses pid already; this guards against a new kind
        raise EnforcementError("namespaces", f"cannot enter {', '.join(unknown)} namespaces itself")
    entered, _ = namespaces.enter(wanted, plan.namespace_level)
    return entered
