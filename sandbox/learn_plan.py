"""A learning plan: the policy's plan, with what refuses replaced by what records.

`CleanCoin-sandbox learn` and CleanCoin-node -sandboxlearn turn a plan into one that lets the
component do what it tries and writes down what that was:

- seccomp: a filter that sends every syscall (clone3 aside: it always answers ENOSYS) to a
  recorder as a user notification, which notes it and lets it run (`learn_recorder`), but
  makes connects and address-carrying sends itself, to the sockets the view shows
  (`learn_sockets`: the "sockets" grants, and "abstract_scoped");
- Landlock: off, and the filesystem view is the host's whole tree, read-only, with the
  policy's private tmpfs mounts, its read grants beneath them (read-only) and its write grants
  (writable) on top: the paths a component
  opens are learned from the notifications of open, exec, mkdir, ..., and a write outside the
  write grants fails (EROFS) after it is recorded, so that learning never changes the host
  beyond what the policy lets the component change;
- dumpable: on, so that the recorder may read the syscalls' arguments (paths, addresses);
- everything else as the policy says: namespaces, capabilities dropped, no_new_privs, rlimits,
  descriptors, environment. A learning run is not a sandbox, and its report says so.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from collections.abc import Mapping

from . import landlock, seccomp
from .errors import EnforcementError
from .model import Policy
from .plan import MechanismPlan, Mount, Plan


_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


def learning_filter() -> bytes:
    """Every syscall to the listener; clone3 ENOSYS; other architectures killed; and, as in
    every policy's filter, a mode with the set-user-ID or set-group-ID bit EPERM (openat2,
    whose mode a filter cannot read, ENOSYS): the write grants are the host's directories, and
    until 12-06 a learned program (as root) left set-user-ID root programs in them."""
    lib = seccomp._lib()  # noqa: SLF001
    flt = lib.SyscallFilter(lib.NOTIFY)
    flt.set_attr(lib.Attr.ACT_BADARCH, lib.KILL_PROCESS)
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    flt.add_rule(lib.ERRNO(errno.ENOSYS), "clone3")
    flt.add_rule(lib.ERRNO(errno.ENOSYS), "openat2")
    for name, rules in seccomp.suid_sgid_refusals().items():
        for conds in rules:
            flt.add_rule(lib.ERRNO(errno.EPERM), name, *[seccomp._arg(c) for c in conds])  # noqa: SLF001
    return seccomp._export(flt, "export_bpf")  # noqa: SLF001


def _beneath(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _view(plan: Plan, directory: str) -> tuple[Mount, ...]:
    if not plan.mounts:
        return ()
    # The host's tree, read-only (reads are what is learned; a write outside the policy's write
    # grants fails with EROFS, and is recorded all the same), the policy's private tmpfs
    # mounts and its write grants writable on top, a fresh /proc.
    kept = [m for m in plan.mounts if m.kind == "tmpfs"]
    # A read grant beneath a private tmpfs (the X11 socket in /tmp/.X11-unix, a Wayland socket
    # in a runtime directory under /tmp) is bound again on top, read-only, as the policy's view
    # shows it: the host's tree under the tmpfs is covered, and without it the window's display
    # socket was not there at all (ENOENT: Qt could not load its platform plugin).
    covered = [dataclasses.replace(m, executable=True) for m in plan.mounts if m.kind == "bind" and not m.writable
               and any(_beneath(m.path, t.path) for t in kept)]
    writable = [dataclasses.replace(m, executable=True) for m in plan.mounts if m.kind == "bind" and m.writable]
    # The root's clone is nodev: devices are bound one by one (the kernel's usual ones).
    bound = {m.path for m in writable}
    devices = [Mount("bind", d, writable=True) for d in _DEVICES if os.path.exists(d) and d not in bound]
    # The record directory is NOT in the view: what is learned there becomes the next policy, so
    # the learning component (and any other component learning into the same directory) must
    # not write or read it. Each record file is opened before the view is built and only its
    # recorder keeps it (`learn_recorder.open_record`). Where the host's tree would show the
    # directory, an empty read-only tmpfs covers it.
    # Inside or around a write grant, the component could still reach it (rename a directory
    # on the way, write beside the cover): refused.
    clash = [m.path for m in writable if _beneath(m.path, directory) or _beneath(directory, m.path)]
    if clash:
        raise EnforcementError("learning", f"the record directory {directory} overlaps the write grant "
                                           f"{clash[0]}: the component could write its own records; "
                                           "pick a directory outside every write grant")
    hidden = not any(_beneath(directory, m.path) for m in kept) or any(_beneath(directory, m.path) for m in covered)
    return (Mount("bind", "/", writable=False, executable=True), *kept, *covered, *writable, *devices,
            *((Mount("hide", directory),) if hidden else ()), Mount("proc", "/proc"))


def _abstract_scoped(plan: Plan) -> bool:
    scoped = plan.landlock is not None and bool(plan.landlock.scoped & landlock.SCOPE_ABSTRACT_UNIX_SOCKET)
    return scoped and "net" not in plan.namespaces


def learning_plan(plan: Plan, policy: Policy, directory: str, values: Mapping[str, str]) -> Plan:
    """The plan with recording in place of refusing (see the module docstring)."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    bpf = learning_filter()
    mechanisms = dict(plan.mechanisms)
    note = "learning (CleanCoin-sandbox learn): recorded, not enforced"
    for name in ("landlock", "seccomp"):
        old = mechanisms.get(name)
        level = old.level if old else "hard"
        mechanisms[name] = MechanismPlan(level, disabled=note)
    old_process = mechanisms.get("process")
    if old_process is not None:
        mechanisms["process"] = dataclasses.replace(
            old_process, details=(*old_process.details, "dumpable on while learning: the recorder "
                                                         "reads the syscalls' arguments"))
    return dataclasses.replace(
        plan,
        mounts=_view(plan, directory),
        landlock=None,
        dumpable=True,
        seccomp_bpf=bpf,
        seccomp_sha256=hashlib.sha256(bpf).hexdigest(),
        exec_allowed=True,
        mechanisms=mechanisms,
        learn={"dir": directory, "variables": dict(values), "policy_files": list(policy.files),
               # Where the policy's own view would show a named unix socket (its grants and its
               # private tmpfs mounts, kept in the learning view): the recorder connects and
               # sends to those only (learn_sockets). No view: anywhere.
               "sockets": [m.path for m in plan.mounts if m.kind in ("bind", "tmpfs")] if plan.mounts else ["/"],
               # ... and where it hides part of a grant (an empty cover in its view).
               "hidden": [m.path for m in plan.mounts if m.kind == "hide"],
               # Where the enforced policy's Landlock scope refuses abstract unix sockets made
               # outside the component (EPERM) and no network namespace of its own hides the
               # host's: the recorder refuses them as the scope would.
               "abstract_scoped": _abstract_scoped(plan)},
    )
