"""Attempts on the kernel itself: mounts, namespaces, chroot, calls only seccomp stands in front
of (keyctl, bpf, perf, io_uring, userfaultfd, personality, TIOCSTI), foreign architectures,
clone3 and threads."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import struct
import threading
from collections.abc import Callable, Mapping

from .judge import _Judge, _Why
from .kernel_abi import (_BPF_MAP_CREATE, _BPF_MAP_TYPE_ARRAY, _CAP_BPF, _CAP_NAMES, _CAP_PERFMON,
                         _CAP_SYS_ADMIN, _CLONE_NEWNET, _CLONE_NEWUSER, _INT80_GETPID, _IOCTL_DEV,
                         _KEY_SPEC_PROCESS_KEYRING, _KEYCTL_GET_KEYRING_ID, _MNT_DETACH,
                         _PER_LINUX32, _PERF_FLAG_FD_CLOEXEC, _PERF_TYPE_SOFTWARE, _READ_FILE,
                         _TIOCSCTTY, _TIOCSTI, _UFFD_USER_MODE_ONLY, _WRITE_FILE, _X32_GETPID,
                         _errname, _libc, _syscall)
from .runner import Outcome, Runner, _Ctx, _ok, _Out
from .targets import _Targets


def _run_mount(ctx: _Ctx, out: _Out) -> Outcome:
    target = ctx.targets.outside_dir.encode()
    ctypes.set_errno(0)
    ret = _libc.mount(b"cleancoin-probe", target, b"tmpfs", ctypes.c_ulong(0), None)
    if ret != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="landlock denies mounts, or no CAP_SYS_ADMIN")
    _libc.umount2(target, _MNT_DETACH)
    return _ok(f"mounted a tmpfs on {ctx.targets.outside_dir} (and unmounted it)")


def _make_unshare_runner(flag: int, what: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        ctypes.set_errno(0)
        if _libc.unshare(ctypes.c_int(flag)) != 0:
            return ctx.denied(ctypes.get_errno(), EPERM="kernel: no CAP_SYS_ADMIN",
                              EUSERS="kernel: user namespace nesting limit",
                              ENOSPC="kernel: user namespace count limit")
        return _ok(f"unshare({what})")
    return run


def _run_setns(ctx: _Ctx, out: _Out) -> Outcome:
    fd = ctx.fds.get("netns")
    what = "the parent's network namespace (fd handed in)"
    if fd is None:
        try:
            fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            what = "/proc/self/ns/net"
        except OSError as exc:
            out.note(f"open /proc/self/ns/net: {_errname(exc.errno or 0)}")
            fd, what = -1, "an invalid fd"
    ctypes.set_errno(0)
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(_CLONE_NEWNET)) != 0:
        return ctx.denied(ctypes.get_errno(), EPERM="kernel: no CAP_SYS_ADMIN over that namespace",
                          EBADF="no namespace fd to join")
    return _ok(f"setns into {what}")


def _run_chroot(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        os.chroot("/")
    except OSError as exc:
        return ctx.denied(exc, EPERM="kernel: no CAP_SYS_CHROOT")
    return _ok("chroot('/')")


def _run_keyctl(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("keyctl", _KEYCTL_GET_KEYRING_ID, _KEY_SPEC_PROCESS_KEYRING, 1)
    if ret < 0:
        return ctx.denied(err)
    return _ok(f"keyctl created a process keyring (id {ret})")


def _run_bpf(ctx: _Ctx, out: _Out) -> Outcome:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("IIII", attr, 0, _BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    ret, err = _syscall("bpf", _BPF_MAP_CREATE, attr, 128)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: unprivileged BPF disabled and no CAP_BPF")
    os.close(ret)
    return _ok("bpf(BPF_MAP_CREATE) made an array map")


def _run_perf(ctx: _Ctx, out: _Out) -> Outcome:
    attr = ctypes.create_string_buffer(136)
    # type, size, config (PERF_COUNT_SW_CPU_CLOCK), ..., flags: disabled | exclude_kernel | exclude_hv
    struct.pack_into("IIQ", attr, 0, _PERF_TYPE_SOFTWARE, 112, 0)
    struct.pack_into("Q", attr, 40, (1 << 0) | (1 << 5) | (1 << 6))
    ret, err = _syscall("perf_event_open", attr, 0, -1, -1, _PERF_FLAG_FD_CLOEXEC)
    if ret < 0:
        return ctx.denied(err, EACCES="kernel: perf_event_paranoid", EPERM="kernel: perf_event_paranoid")
    os.close(ret)
    return _ok("perf_event_open of a software counter on itself")


def _run_io_uring(ctx: _Ctx, out: _Out) -> Outcome:
    params = ctypes.create_string_buffer(120)
    ret, err = _syscall("io_uring_setup", 1, params)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: io_uring_disabled")
    os.close(ret)
    return _ok("io_uring_setup made a ring")


def _run_userfaultfd(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
    if ret < 0:
        return ctx.denied(err, EPERM="kernel: unprivileged_userfaultfd = 0")
    os.close(ret)
    return _ok("userfaultfd (user-mode faults only)")


def _run_personality(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("personality", _PER_LINUX32)
    if ret < 0:
        return ctx.denied(err)
    return _ok(f"personality(PER_LINUX32), previous 0x{ret:x}")


def _terminal_fd(out: _Out) -> tuple[int, str]:
    """A terminal to make requests on: a pty of its own (its controlling one, in a session of
    its own), else an inherited one on 0-2, else fd 0."""
    try:
        master, slave = os.openpty()
        os.setsid()
        ret, err = _syscall("ioctl", slave, _TIOCSCTTY, 0)
        if ret != 0:
            out.note(f"TIOCSCTTY on a new pty: {_errname(err)}")
        return slave, "a new pty"
    except OSError as exc:
        out.note(f"openpty: {_errname(exc.errno or 0)}")
        ttys = [i for i in (0, 1, 2) if os.isatty(i)]
        fd = ttys[0] if ttys else 0
        return fd, f"fd {fd} ({'a terminal' if ttys else 'not a terminal'})"


def _run_tiocsti(ctx: _Ctx, out: _Out) -> Outcome:
    # The byte pointer is NULL: a kernel that lets the call through to the injection step
    # answers EFAULT, so a weak policy is detected without typing anything into a terminal.
    fd, how = _terminal_fd(out)
    ret, err = _syscall("ioctl", fd, _TIOCSTI, 0)
    if ret == 0 or err == errno.EFAULT:
        return "allowed", (f"TIOCSTI on {how} reached the injection step (EFAULT for the NULL "
                           "byte pointer; nothing was injected)")
    eperm = "seccomp" if ctx.seccomp == "errno:EPERM" else \
        "kernel: not the controlling terminal and no CAP_SYS_ADMIN"
    outcome, detail = ctx.denied(err, EPERM=eperm, EIO="kernel: dev.tty.legacy_tiocsti = 0",
                                 ENOTTY="kernel: not a terminal", EACCES="landlock: no ioctl_dev right")
    return outcome, f"{detail} on {how}"


#: The requests that steer a terminal beyond the program's run (syscalls.TERMINAL_REFUSED, less
#: TIOCSTI, its own attempt, and those without a pointer that would change the terminal:
#: TIOCEXCL, TIOCSCTTY, TIOCCONS), each made with a NULL pointer: a kernel that lets one
#: through answers EFAULT (TIOCSPGRP on a terminal that is not the controlling one: ENOTTY, as
#: refused). TIOCNXCL has no argument and only clears exclusive mode.
_STEER_REQUESTS = (("TIOCSETD", 0x5423), ("TIOCSWINSZ", 0x5414), ("TIOCSPGRP", 0x5410),
                   ("TIOCLINUX", 0x541C), ("TIOCNXCL", 0x540D))


def _run_terminal_steer(ctx: _Ctx, out: _Out) -> Outcome:
    fd, how = _terminal_fd(out)
    reached, refused = [], []
    for name, request in _STEER_REQUESTS:
        ret, err = _syscall("ioctl", fd, request, 0)
        if ret == 0 or err == errno.EFAULT:
            reached.append(name)
        else:
            refused.append(f"{name}: {_errname(err)}")
    if reached:
        return "allowed", (f"{', '.join(reached)} on {how} reached the kernel's handler (EFAULT for "
                           f"the NULL pointer; nothing was changed)")
    return "denied", f"{'; '.join(refused)} on {how}"


def _run_int80(ctx: _Ctx, out: _Out) -> Outcome:
    # The code goes into a memfd that is then mapped read and execute only: W^X memory
    # (PR_SET_MDWE) forbids a page both writable and executable, not a file mapped so.
    try:
        fd = os.memfd_create("probe-int80", os.MFD_CLOEXEC)
        os.write(fd, _INT80_GETPID.ljust(mmap.PAGESIZE, b"\xc3"))
    except OSError as exc:
        return "error", f"could not write the code into a memfd: {_errname(exc.errno or 0)}"
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_long]
    ctypes.set_errno(0)
    address = _libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC, mmap.MAP_PRIVATE, fd, 0)
    os.close(fd)
    if address in (None, ctypes.c_void_p(-1).value):
        return "error", f"could not map an executable page: {_errname(ctypes.get_errno())}"
    func = ctypes.CFUNCTYPE(ctypes.c_int)(address)
    out.if_signal(signal.SIGSEGV, "denied", "killed by SIGSEGV (kernel has no i386 emulation)")
    pid = func()
    return _ok(f"i386 getpid through int 0x80 returned {pid}")


def _run_x32(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall(_X32_GETPID)
    if ret < 0:
        return ctx.denied(err, ENOSYS="kernel has no x32 ABI")
    return _ok(f"x32 getpid returned {ret}")


def _run_clone3(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall("clone3", 0, 0)
    if ret == 0:
        os._exit(0)   # not reached with these arguments
    if err == errno.ENOSYS:
        return "denied", "ENOSYS (seccomp; glibc falls back to clone)"
    if err == errno.EINVAL:
        return "allowed", "reached the kernel (EINVAL for the empty argument)"
    outcome, detail = ctx.denied(err)
    return outcome, f"{detail}; not ENOSYS, so glibc will not fall back to clone"


def _run_thread(ctx: _Ctx, out: _Out) -> Outcome:
    ran = threading.Event()
    try:
        thread = threading.Thread(target=ran.set, daemon=True)
        thread.start()
    except RuntimeError as exc:
        return "denied", f"threading.Thread: {exc}"
    if not ran.wait(3):
        return "denied", "the thread did not run"
    thread.join(1)
    return _ok("a thread started and ran (clone3 ENOSYS, fallback to clone)")


# expectations ------------------------------------------------------------------------------

def _exp_mount(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mount")
    w.need(j.plan.landlock is None, "landlock: no mounts in a Landlock domain")
    w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN dropped")
    return w.need("user" not in j.ns or "mount" in j.ns,
                  "user namespace: the mount namespace belongs to an ancestor")


def _exp_unshare_user(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "unshare")
    return w.need(j.host.sysctl.get("max_user_namespaces") != 0, "kernel: user namespaces disabled")


def _exp_unshare_mount(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "unshare")
    return w.need(j.has_cap(_CAP_SYS_ADMIN), "capabilities: CAP_SYS_ADMIN dropped")


def _exp_setns(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "setns")
    return w.need(j.has_cap(_CAP_SYS_ADMIN, init_ns=True),
                  "capabilities: no CAP_SYS_ADMIN over the parent's namespace")


def _exp_syscall(name: str, *, args: Mapping[int, int] | None = None, cap: int | None = None,
                 init_ns: bool = False, extra: Callable[[_Judge], tuple[bool, str]] | None = None
                 ) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, name, args)
        if cap is not None:
            w.need(j.has_cap(cap, init_ns=init_ns), f"capabilities: {_CAP_NAMES[cap]} dropped"
                   + (" (or only inside a user namespace)" if init_ns else ""))
        if extra is not None:
            w.need(*extra(j))
        return w
    return expect


def _bpf_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("unprivileged_bpf_disabled")
    ok = value == 0 or j.has_cap(_CAP_BPF, init_ns=True) or j.has_cap(_CAP_SYS_ADMIN, init_ns=True)
    return ok, f"kernel: unprivileged_bpf_disabled = {value}"


def _perf_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("perf_event_paranoid")
    ok = value is not None and value <= 2 or j.has_cap(_CAP_PERFMON, init_ns=True)
    return ok, f"kernel: perf_event_paranoid = {value}"


def _io_uring_extra(j: _Judge) -> tuple[bool, str]:
    value = j.host.sysctl.get("io_uring_disabled")
    return not value or (value == 1 and j.has_cap(_CAP_SYS_ADMIN, init_ns=True)), \
        f"kernel: io_uring_disabled = {value}"


def _exp_tiocsti(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "ioctl", {1: _TIOCSTI})
    legacy = j.host.sysctl.get("legacy_tiocsti")
    w.need(legacy != 0 or j.has_cap(_CAP_SYS_ADMIN, init_ns=True), "kernel: dev.tty.legacy_tiocsti = 0")
    rw = _READ_FILE | _WRITE_FILE | _IOCTL_DEV
    own_pty = j.ll_allows("/dev/ptmx", rw) and j.ll_allows("/dev/pts/0", rw)
    # An inherited terminal is not the sandbox's controlling one in a new session: the kernel
    # refuses TIOCSTI on it unless the sandbox holds CAP_SYS_ADMIN in the initial namespace.
    # Kept in the launcher's session (new_session = false) it is, and only the filter's
    # refusal (derived since 12-08, seccomp.FilterSpec.deny_terminal_input) stands.
    inherited = any(fd in j.plan.fds for fd in j.host.ttys) and (
        not j.plan.new_session or j.has_cap(_CAP_SYS_ADMIN, init_ns=True))
    return w.need(own_pty or inherited, "landlock: no pty of its own, and no inherited terminal "
                                        "it may steer without CAP_SYS_ADMIN")


def _exp_terminal_steer(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    # Any one of the requests that reaches the kernel is the attempt's success: refused only
    # where the filter refuses all of them (derived since 12-08, h108, where the process may
    # hold the operator's terminal) or where it holds no terminal.
    actions = [j.seccomp_action("ioctl", {1: request}) for _, request in _STEER_REQUESTS]
    w.seccomp = next((a for a in actions if a in ("allow", "log")), actions[0])
    w.need(any(a in ("allow", "log") for a in actions), f"seccomp: ioctl -> {actions[0]} for each request")
    rw = _READ_FILE | _WRITE_FILE | _IOCTL_DEV
    own_pty = j.ll_allows("/dev/ptmx", rw) and j.ll_allows("/dev/pts/0", rw)
    inherited = any(fd in j.plan.fds for fd in j.host.ttys)
    return w.need(own_pty or inherited, "landlock: no pty of its own, and no inherited terminal")


def _exp_foreign_arch(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(not j.seccomp_on, "seccomp: foreign architectures kill the process")


def _exp_clone3(j: _Judge, t: _Targets) -> _Why:
    return _Why().need(not j.seccomp_on, "seccomp: clone3 answers ENOSYS")


#: The clone(2) flags glibc's pthread_create passes (CLONE_VM | FS | FILES | SIGHAND | THREAD |
#: SYSVSEM | SETTLS | PARENT_SETTID | CHILD_CLEARTID).
_THREAD_FLAGS = 0x3D0F00


def _exp_thread(j: _Judge, t: _Targets) -> _Why:
    return j.sc(_Why(), "clone", {0: _THREAD_FLAGS})


# namespaces through clone, dumpable back on, W+X memory ---------------------------------------

_SIGCHLD = 17


def _run_clone_newuser(ctx: _Ctx, out: _Out) -> Outcome:
    """clone(2) with namespace flags: what unshare(2) does, by another door."""
    flags = _CLONE_NEWUSER | _CLONE_NEWNET | _SIGCHLD
    ret, err = _syscall(56, flags, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)                       # the new child, in its new namespaces
    if ret < 0:
        return ctx.denied(err, EPERM="seccomp or kernel: namespace flags refused")
    # Not waited for: a policy without processes may not allow wait4, and being killed for it
    # read as 'denied' although the clone had succeeded (found 12-06, h33). The child exits at
    # once; the attempt's process ends soon after.
    return _ok("clone(CLONE_NEWUSER | CLONE_NEWNET) made a child in new namespaces")


def _run_dumpable(ctx: _Ctx, out: _Out) -> Outcome:
    ret, err = _syscall(157, 4, 1, 0, 0, 0)       # prctl(PR_SET_DUMPABLE, 1)
    now, _ = _syscall(157, 3, 0, 0, 0, 0)         # prctl(PR_GET_DUMPABLE)
    if now == 1:
        return _ok("prctl(PR_SET_DUMPABLE, 1): the process is dumpable again")
    if ret < 0:
        return ctx.denied(err, EPERM="seccomp: PR_SET_DUMPABLE refused")
    return "denied", f"prctl answered {ret}, but the process is still not dumpable"


def _run_dumpable_high_bits(ctx: _Ctx, out: _Out) -> Outcome:
    """prctl's option is an int: the kernel reads the low 32 bits of the register, a filter
    that compares all 64 sees another option when a high bit is set."""
    option = (1 << 32) | 4                        # PR_SET_DUMPABLE, with bit 32 set
    ret, err = _syscall(157, option, 1, 0, 0, 0)
    now, _ = _syscall(157, 3, 0, 0, 0, 0)         # prctl(PR_GET_DUMPABLE)
    if now == 1:
        return _ok(f"prctl({option:#x}, 1): the kernel read PR_SET_DUMPABLE, and the process is "
                   "dumpable again")
    if ret < 0:
        return ctx.denied(err, EPERM="seccomp: PR_SET_DUMPABLE refused on the low 32 bits")
    return "denied", f"prctl answered {ret}, but the process is still not dumpable"


def _run_wx_memory(ctx: _Ctx, out: _Out) -> Outcome:
    try:
        area = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError as exc:
        return ctx.denied(exc, EACCES="mdwe: no memory both writable and executable")
    area.close()
    return _ok("mapped memory both writable and executable")


def _exp_clone_newuser(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "clone", {0: _CLONE_NEWUSER | _CLONE_NEWNET | _SIGCHLD})
    return w.need(j.host.sysctl.get("max_user_namespaces") != 0, "kernel: user namespaces disabled")


def _exp_dumpable(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    w.need(j.plan.dumpable or not j.seccomp_on or j.seccomp_action("prctl", {0: 4, 1: 1}) == "allow",
           "seccomp: prctl(PR_SET_DUMPABLE, 1) answers EPERM")
    return w


def _exp_wx_memory(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "mmap", {2: mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC})
    return w.need(not j.plan.memory_deny_write_execute, "mdwe: no memory both writable and executable")
