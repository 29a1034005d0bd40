"""The post-exec steps, run inside the component once it is set up.

Order (see docs/sandbox.md): single-thread check, dumpable off, no_new_privs, Landlock,
capabilities, seccomp last. no_new_privs comes before Landlock rather than after the
capability drop: Landlock demands it of a process without CAP_SYS_ADMIN, which is every
unprivileged user, and setting it earlier weakens nothing. Seccomp is last so that the steps
before it may use syscalls the filter forbids.
"""

from __future__ import annotations

import os
import time

import prctl

from . import capabilities, landlock, seccomp
from .errors import EnforcementError
from .plan import Plan
from .report import Report


def check_single_threaded() -> None:
    """Landlock (before ABI 8) restricts only the calling thread: refuse if there are others."""
    try:
        threads = os.listdir("/proc/self/task")
    except OSError as exc:
        raise EnforcementError("single-thread check", f"cannot list /proc/self/task: {exc.strerror}") from None
    if len(threads) != 1:
        raise EnforcementError("single-thread check",
                               f"{len(threads)} threads are running; a thread started before the "
                               "sandbox would escape Landlock")


def apply_restrictions(plan: Plan, timings: dict[str, int] | None = None) -> Report:
    """Carry out the post-exec steps of a plan on this process; returns the report."""
    timings = timings if timings is not None else {}
    mechanisms = {k: v for k, v in plan.mechanisms.items()}

    def step(name: str, func: object, *args: object) -> object:
        start = time.perf_counter_ns()
        result = func(*args)  # type: ignore[operator]
        timings[name] = (time.perf_counter_ns() - start) // 1000
        return result

    step("single-thread check", check_single_threaded)
    if not plan.dumpable:
        step("dumpable", _set, prctl.set_dumpable, 0, "dumpable")
    step("no_new_privs", _set, prctl.set_no_new_privs, 1, "no_new_privs")
    if plan.landlock is not None:
        notes = step("landlock", landlock.apply, plan.landlock)
        mechanisms["landlock"].details.extend(notes)  # type: ignore[arg-type]
    notes = step("capabilities", capabilities.drop, plan.keep_caps)
    mechanisms["capabilities"].details.extend(notes)  # type: ignore[arg-type]
    if plan.seccomp_bpf:
        step("seccomp", seccomp.load_filter, plan.seccomp_bpf)
    return Report(policy=plan.policy, files=list(plan.files), pid=os.getpid(), kernel=plan.kernel,
                  namespaces=list(plan.namespaces),
                  landlock_abi=plan.landlock.abi if plan.landlock else 0,
                  seccomp_sha256=plan.seccomp_sha256, mechanisms=mechanisms, timings_us=timings)


def _set(setter: object, value: int, name: str) -> None:
    try:
        setter(value)  # type: ignore[operator]
    except OSError as exc:
        raise EnforcementError(name, exc.strerror or str(exc)) from None
