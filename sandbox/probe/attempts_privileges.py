"""Attempts to gain privileges back: capset, ambient capabilities, securebits, rlimits, iopl."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import signal
import time
from collections.abc import Callable

from .. import syscalls
from .judge import _Judge, _Why
from .kernel_abi import (_CAP_IPC_LOCK, _CAP_SETPCAP, _CAP_SYS_ADMIN, _CAP_SYS_RESOURCE,
                         _LINUX_CAPABILITY_VERSION_3, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE,
                         _PR_SET_SECUREBITS, _RLIMIT_CORE, _errname, _libc, _syscall)
from .runner import Outcome, _Ctx, _ok, _Out
from .targets import _Targets


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _run_capset(ctx: _Ctx, out: _Out) -> Outcome:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    ret, err = _syscall("capget", ctypes.byref(header), data)
    if ret != 0:
        out.note(f"capget: {_errname(err)}")
    data[0].effective |= 1 << _CAP_SYS_ADMIN
    data[0].permitted |= 1 << _CAP_SYS_ADMIN
    ret, err = _syscall("capset", ctypes.byref(header), data)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: not in the permitted/bounding set")
    return _ok("capset raised CAP_SYS_ADMIN")


def _run_ambient(ctx: _Ctx, out: _Out) -> Outcome:
    ctypes.set_errno(0)
    if _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_SYS_ADMIN, 0, 0) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: not permitted and inheritable, "
                                                    "or securebits forbid it")
    return _ok("raised CAP_SYS_ADMIN in the ambient set")


def _run_securebits(ctx: _Ctx, out: _Out) -> Outcome:
    ctypes.set_errno(0)
    if _libc.prctl(_PR_SET_SECUREBITS, 0, 0, 0, 0) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: locked or no CAP_SETPCAP")
    return _ok("cleared the securebits")


def _run_rlimit(ctx: _Ctx, out: _Out) -> Outcome:
    new = (ctypes.c_uint64 * 2)(1, 1)
    ret, err = _syscall("prlimit64", 0, _RLIMIT_CORE, new, 0)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: above the hard limit, no CAP_SYS_RESOURCE")
    return _ok("raised RLIMIT_CORE to 1/1")


def _run_iopl(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("iopl", 3)
    if ret != 0:
        return ctx.denied(err, EPERM="kernel: no CAP_SYS_RAWIO", ENOSYS="kernel built without iopl")
    return _ok("iopl(3)")


# expectations ------------------------------------------------------------------------------

def _exp_capset(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "capset")
    return w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN is not in the permitted set")


def _exp_ambient(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prctl")
    w.need(not j.securebits_locked, "securebits: SECBIT_NO_CAP_AMBIENT_RAISE is locked")
    return w.need(j.has_cap(_CAP_SYS_ADMIN) and bool(j.inheritable & (1 << _CAP_SYS_ADMIN)),
                  "capabilities: CAP_SYS_ADMIN is not permitted and inheritable")


def _exp_securebits(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prctl")
    w.need(not j.securebits_locked, "securebits: locked")
    return w.need(j.has_cap(_CAP_SETPCAP), "capabilities: no CAP_SETPCAP")


def _exp_rlimit(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "prlimit64")
    hard: int | None = j.host.core_hard
    for name, _number, _soft, limit_hard in j.plan.rlimits:
        if name == "core":
            hard = limit_hard
    return w.need(hard is None or hard >= 1 or j.has_cap(_CAP_SYS_RESOURCE),
                  f"rlimits: core hard limit {hard}, no CAP_SYS_RESOURCE")


# resource exhaustion ----------------------------------------------------------------------

_FORKS, _FDS, _BIG_OFFSET, _LOCKED = 200, 8192, 1 << 40, 4 << 20


def _run_fork_many(ctx: _Ctx, out: _Out) -> Outcome:
    # Only fork, prctl and sleep: the question is whether the processes start, and a policy
    # may refuse kill, wait4 and pipe2 (base/python and the wallet do) without limiting that.
    # The children die with this attempt's process (it exits once its result is written), and
    # SIGCHLD ignored has the kernel reap them: no zombies, no wait4.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    started = 0
    error = ""
    for _ in range(_FORKS):
        try:
            pid = os.fork()
        except OSError as exc:
            error = _errname(exc.errno or 0)
            break
        if pid == 0:
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            time.sleep(60)
            os._exit(0)
        started += 1
    if started >= _FORKS:
        return _ok(f"{_FORKS} processes at once")
    return "denied", f"{started} processes, then {error} (no fork, or the nproc limit)"


def _raise_soft_limit(number: int) -> bool:
    """Raise the soft limit `number` to the hard one, as anyone may: only the hard limit binds
    where prlimit64 is allowed. Called only once the soft limit stopped an attempt, so that a
    policy refusing prlimit64 is not judged on a call the attacker did not need. Whether it
    was raised."""
    try:
        _soft, hard = resource.getrlimit(number)
        resource.setrlimit(number, (hard, hard))
    except (OSError, ValueError):
        return False
    return True


def _run_fds_many(ctx: _Ctx, out: _Out) -> Outcome:
    fds: list[int] = []
    error = ""

    def fill() -> None:
        nonlocal error
        try:
            while len(fds) < _FDS:
                fds.append(os.dup(0))
        except OSError as exc:
            error = _errname(exc.errno or 0)

    fill()
    if len(fds) < _FDS and _raise_soft_limit(resource.RLIMIT_NOFILE):
        fill()
    for fd in fds:
        os.close(fd)
    if len(fds) >= _FDS:
        return _ok(f"{_FDS} descriptors at once")
    return "denied", f"{len(fds)} descriptors, then {error} (the nofile limit)"


def _run_memlock(ctx: _Ctx, out: _Out) -> Outcome:
    """Pin memory the kernel can neither swap nor reclaim, as much as the policy's memlock
    limit must refuse (mlock is allowed where a component keeps secrets out of swap)."""
    region = mmap.mmap(-1, _LOCKED)
    view = ctypes.c_char.from_buffer(region)
    address = ctypes.addressof(view)
    del view                # an exported buffer would keep the mapping from closing
    try:
        ret, err = _syscall("mlock", address, _LOCKED)
        if ret != 0 and err == errno.ENOMEM and _raise_soft_limit(resource.RLIMIT_MEMLOCK):
            ret, err = _syscall("mlock", address, _LOCKED)
        if ret != 0:
            return ctx.denied(err, ENOMEM="rlimits: the memlock limit", EPERM="rlimits: a memlock limit of 0")
        return _ok(f"locked {_LOCKED >> 20} MiB in RAM")
    finally:
        region.close()      # munmap: unlocked with it


def _run_file_size(ctx: _Ctx, out: _Out) -> Outcome:
    path = ctx.targets.probe_file("sparse")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return "error", f"cannot create {path}: {_errname(exc.errno or 0)}"
    try:
        os.pwrite(fd, b"x", _BIG_OFFSET)
    except OSError as exc:
        return ctx.denied(exc, EFBIG="rlimits: the fsize limit")
    finally:
        os.close(fd)
        os.unlink(path)
    return _ok("wrote a byte at 1 TiB (a sparse file that large)")


def _exp_fork_many(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "clone", {0: 0x01200011})          # glibc's fork: CLONE_CHILD_SETTID|CLEARTID|SIGCHLD
    nproc = j.rlimit("nproc")
    # The kernel does not apply RLIMIT_NPROC to root (kuid 0) even in a user namespace.
    return w.need(nproc is None or nproc >= _FORKS + 5 or j.host.uid == 0,
                  f"rlimits: nproc {nproc}")


def _exp_fds_many(j: _Judge, t: _Targets) -> _Why:
    return _limit_allows(j, _Why(), "nofile", resource.RLIMIT_NOFILE, lambda value: value > _FDS + 64)


def _exp_memlock(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mlock")
    if j.has_cap(_CAP_IPC_LOCK, init_ns=True):      # the limit does not apply
        return w
    return _limit_allows(j, w, "memlock", resource.RLIMIT_MEMLOCK, lambda value: value >= _LOCKED)


def _limit_allows(j: _Judge, w: _Why, name: str, number: int, enough: Callable[[int], bool]) -> _Why:
    """`w` needing the rlimit `name` to be `enough` (or unlimited). Without a limit in the
    policy the child has the launcher's. The soft limit binds unless prlimit64 may raise it to
    the hard one."""
    def ok(value: int) -> bool:
        return value == resource.RLIM_INFINITY or enough(value)

    if ok(j.effective_rlimit(name, number)):
        return w
    raise_soft = j.seccomp_action("prlimit64") in ("allow", "log")
    value = j.effective_rlimit(name, number, hard=raise_soft)
    return w.need(ok(value), f"rlimits: {name} {value}"
                  + ("" if raise_soft else " (soft; seccomp refuses prlimit64, which would raise it)"))


def _exp_file_size(j: _Judge, t: _Targets) -> _Why:
    fsize = j.file_size()
    return _Why().need(fsize is None or fsize > _BIG_OFFSET, f"rlimits: fsize {fsize}")
