"""Seccomp user notification (SECCOMP_RET_USER_NOTIF), with the raw syscalls and ioctls.

A filter whose action is USER_NOTIF stops the calling thread and hands the syscall (number,
arguments, thread id) to whoever holds the filter's listener descriptor; the supervisor
answers with a return value and errno, or lets the syscall go on (FLAG_CONTINUE). `learn`
uses it to record every syscall a component makes, the denial log to name (and answer) the
ones a policy refuses with an errno. pyseccomp only wraps libseccomp's receive and respond for
a filter it loaded itself; ours are loaded as BPF with the raw syscall, so this is ctypes.

Structures and numbers are x86_64's (linux/seccomp.h), the only architecture the loader has.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from . import syscalls
from .errors import EnforcementError
from .syscalls import SECCOMP_SET_MODE_FILTER, SYS_PIDFD_GETFD, SYS_SECCOMP

FILTER_FLAG_TSYNC = syscalls.SECCOMP_FILTER_FLAG_TSYNC
FILTER_FLAG_NEW_LISTENER = 1 << 3
FILTER_FLAG_TSYNC_ESRCH = 1 << 4
USER_NOTIF_FLAG_CONTINUE = 1

# The notification structs and ioctls: one definition, in the monitor's program, which may
# import nothing of this package (it runs with -S).
from .denial_monitor import _NOTIF, _RESP, IOCTL_NOTIF_ID_VALID, IOCTL_NOTIF_RECV, IOCTL_NOTIF_SEND  # noqa: E402

# ioctl with a pointer argument: its own prototype, so that the shared libc's stays as it is.
_ioctl = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                          use_errno=True)(("ioctl", syscalls.libc()))


@dataclass(frozen=True)
class Notification:
    id: int
    pid: int              # thread id, in the receiver's pid namespace (0: not visible there)
    nr: int
    arch: int
    args: tuple[int, ...]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_with_listener(bpf: bytes, step: str = "seccomp") -> int:
    """Install a BPF program on every thread and return its listener descriptor (close-on-exec)."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    flags = FILTER_FLAG_TSYNC | FILTER_FLAG_NEW_LISTENER | FILTER_FLAG_TSYNC_ESRCH
    fd = syscalls.libc().syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
    if fd < 0:
        raise EnforcementError(step, f"seccomp(SET_MODE_FILTER, NEW_LISTENER) failed: "
                                     f"{os.strerror(ctypes.get_errno())}")
    return int(fd)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A copy of another process's descriptor (needs ptrace access to it)."""
    fd = syscalls.libc().syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


class Listener:
    """The supervisor's side: receive notifications, answer them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._recv = ctypes.create_string_buffer(_NOTIF.size)
        self._send = ctypes.create_string_buffer(_RESP.size)

    def receive(self) -> Notification | None:
        """The next notification; None when it was withdrawn (the thread got a signal, or died)."""
        ctypes.memset(self._recv, 0, _NOTIF.size)      # the kernel refuses a buffer that is not zero
        if _ioctl(self.fd, IOCTL_NOTIF_RECV, self._recv) != 0:
            err = ctypes.get_errno()
            if err in (2, 4):          # ENOENT: withdrawn; EINTR
                return None
            raise OSError(err, os.strerror(err))
        nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(self._recv.raw)
        return Notification(nid, pid, nr, arch, tuple(args))

    def _respond(self, nid: int, val: int, error: int, flags: int) -> None:
        _RESP.pack_into(self._send, 0, nid, val, error, flags)
        if _ioctl(self.fd, IOCTL_NOTIF_SEND, self._send) != 0:
            err = ctypes.get_errno()
            if err != 2:               # ENOENT: the syscall was withdrawn meanwhile
                raise OSError(err, os.strerror(err))

    def let_through(self, nid: int) -> None:
        """Let the syscall run as if there were no filter (learning only: it is not a check)."""
        self._respond(nid, 0, 0, USER_NOTIF_FLAG_CONTINUE)

    def answer(self, nid: int, value: int) -> None:
        """The syscall does not run and returns `value` (the receiver did it on its behalf)."""
        self._respond(nid, value, 0, 0)

    def fail(self, nid: int, errno: int) -> None:
        """The syscall does not run and returns -errno."""
        self._respond(nid, 0, -errno, 0)

    def still_valid(self, nid: int) -> bool:
        """Whether the notification is still pending (its memory read meanwhile is its own)."""
        value = ctypes.c_uint64(nid)
        return _ioctl(self.fd, IOCTL_NOTIF_ID_VALID, ctypes.byref(value)) == 0


def read_memory(pid: int, address: int, size: int) -> bytes:
    """Bytes of another process's memory, through /proc/PID/mem (needs ptrace access)."""
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, address)
    finally:
        os.close(fd)


def read_string(pid: int, address: int, limit: int = 4096) -> str | None:
    """A NUL-terminated string from another process's memory (None if unreadable)."""
    if address == 0:
        return None
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        out = b""
        while len(out) < limit:
            # Up to the end of the page first: the next page may not be mapped.
            chunk = 4096 - (address + len(out)) % 4096
            try:
                data = os.pread(fd, chunk, address + len(out))
            except OSError:
                return None
            if not data:
                return None
            end = data.find(b"\0")
            if end >= 0:
                return (out + data[:end]).decode("utf-8", "surrogateescape")
            out += data
        return None
    finally:
        os.close(fd)
