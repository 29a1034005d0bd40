"""The x86_64 kernel interface the battery speaks: syscall numbers, flags, capability
numbers, Landlock access rights, and a raw syscall through libc."""

from __future__ import annotations

import ctypes
import errno

from landlock import FSAccess

# x86_64 syscall numbers (the sandbox is x86_64 only, see docs/sandbox.md).
_NR = {"ioctl": 16, "ptrace": 101, "capget": 125, "capset": 126, "personality": 135,
       "mlock": 149, "iopl": 172, "keyctl": 250, "prlimit64": 302, "process_vm_readv": 310,
       "userfaultfd": 323, "bpf": 321, "perf_event_open": 298, "pidfd_send_signal": 424,
       "io_uring_setup": 425, "clone3": 435, "pidfd_getfd": 438, "clone": 56}
_X32_SYSCALL_BIT = 0x40000000
_X32_GETPID = 39 | _X32_SYSCALL_BIT
# mov eax, 20 (i386 getpid); int 0x80; ret
_INT80_GETPID = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"

_TIOCSTI, _TIOCSCTTY = 0x5412, 0x540E
_PTRACE_ATTACH, _PTRACE_DETACH = 16, 17
_PER_LINUX32 = 0x0008
_RLIMIT_CORE = 4
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_MNT_DETACH = 2
_KEYCTL_GET_KEYRING_ID, _KEY_SPEC_PROCESS_KEYRING = 0, -2
_BPF_MAP_CREATE, _BPF_MAP_TYPE_ARRAY = 0, 2
_PERF_TYPE_SOFTWARE, _PERF_FLAG_FD_CLOEXEC = 1, 8
_UFFD_USER_MODE_ONLY = 1
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _PR_SET_SECUREBITS = 47, 2, 28
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Capability numbers.
_CAP_SETPCAP, _CAP_NET_RAW, _CAP_IPC_LOCK, _CAP_SYS_RAWIO, _CAP_SYS_CHROOT = 8, 13, 14, 17, 18
_CAP_SYS_PTRACE, _CAP_SYS_ADMIN, _CAP_SYS_RESOURCE, _CAP_MKNOD = 19, 21, 24, 27
_CAP_PERFMON, _CAP_BPF = 38, 39
_ALL_CAPS = (1 << 41) - 1
_CAP_NAMES = {_CAP_SETPCAP: "CAP_SETPCAP", _CAP_NET_RAW: "CAP_NET_RAW", _CAP_SYS_RAWIO: "CAP_SYS_RAWIO",
              _CAP_SYS_CHROOT: "CAP_SYS_CHROOT", _CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
              _CAP_SYS_ADMIN: "CAP_SYS_ADMIN", _CAP_SYS_RESOURCE: "CAP_SYS_RESOURCE",
              _CAP_MKNOD: "CAP_MKNOD", _CAP_PERFMON: "CAP_PERFMON", _CAP_BPF: "CAP_BPF"}

_READ_FILE, _READ_DIR = int(FSAccess.READ_FILE), int(FSAccess.READ_DIR)
_WRITE_FILE, _MAKE_REG = int(FSAccess.WRITE_FILE), int(FSAccess.MAKE_REG)
_MAKE_CHAR, _MAKE_SYM = int(FSAccess.MAKE_CHAR), int(FSAccess.MAKE_SYM)
_EXECUTE, _REFER = int(FSAccess.EXECUTE), int(FSAccess.REFER)
_IOCTL_DEV = int(FSAccess.IOCTL_DEV)


# The battery's attempts are the attacker's code: they call the kernel directly, as an
# attacker inside the process would, rather than through the sandbox's own wrappers
# (sandbox/syscalls.py), whose error handling is not what is being tested.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(name_or_nr: str | int, *args: int | ctypes._CData | None) -> tuple[int, int]:
    """A raw syscall: (return value, errno)."""
    nr = _NR[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *conv)
    return ret, (ctypes.get_errno() if ret == -1 else 0)


def _errname(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")
