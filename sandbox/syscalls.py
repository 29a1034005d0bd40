"""The kernel calls of the sandbox layer that Python does not wrap, and their constants.

One place for them: Python 3.11 has no os.unshare, mount(2), pivot_root(2), the new mount API
(open_tree, move_mount, mount_setattr), openat2(2), sethostname(2) or a general prctl(2), so
they are reached through libc with ctypes. python-prctl covers capabilities and a few prctl
options and is used for those (capabilities.py); everything else is here. Numbers are
x86_64's, the only architecture the seccomp loader supports.

Every wrapper raises OSError with the kernel's errno, like the os module does.
"""

from __future__ import annotations

import ctypes
import functools
import os

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
PR_SET_PTRACER = 0x59616D61          # Yama
PR_SET_PTRACER_ANY = 0xFFFFFFFFFFFFFFFF
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1

# clone(2) / unshare(2) namespace flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
#: The flags clone(2) creates namespaces with (CLONE_NEWTIME shares its bit with the exit
#: signal in clone(2), so only unshare(2) and clone3(2) can ask for it).
#: The mode bits that make a program run with its owner's or group's rights (stat.S_ISUID,
#: S_ISGID), and the open(2) flags that create a file with the mode argument (O_CREAT, and
#: __O_TMPFILE: O_TMPFILE is it plus O_DIRECTORY).
S_ISUID, S_ISGID = 0o4000, 0o2000
O_CREAT, O_TMPFILE_BIT = 0o100, 0o20000000
#: The syscalls that set a file's mode from an argument: name -> (index of the mode, index of
#: the open flags or None where the call always sets the mode). mkdir and mkdirat are not
#: here: the kernel keeps neither bit of their mode (a new directory may inherit set-group-ID
#: from its parent, which the confined side could only have set through one of these).
MODE_SETTING_SYSCALLS = {
    "chmod": (1, None), "fchmod": (1, None), "fchmodat": (2, None), "fchmodat2": (2, None),
    "creat": (1, None), "mknod": (1, None), "mknodat": (2, None),
    "open": (2, 1), "openat": (3, 2),
}

CLONE_NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
                         CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET)

# mount(2)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

# open_tree(2), move_mount(2), mount_setattr(2)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# openat2(2)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04

# ioctl(2) commands on terminals, from asm-generic/ioctls.h
TCSETS, TCSETSW, TCSETSF = 0x5402, 0x5403, 0x5404
TCSETA, TCSETAW, TCSETAF = 0x5406, 0x5407, 0x5408
TIOCSTI = 0x5412
TIOCSWINSZ, TCXONC = 0x5414, 0x540A
TIOCLINUX = 0x541C
# Exclusive mode (a later open of the terminal fails with EBUSY), its state, the line
# discipline, the break line.
TIOCEXCL, TIOCNXCL, TIOCGEXCL = 0x540C, 0x540D, 0x80045440
TIOCGETD, TIOCSETD = 0x5424, 0x5423
TIOCSBRK, TIOCCBRK = 0x5427, 0x5428
TIOCSCTTY, TIOCSPGRP, TIOCCONS = 0x540E, 0x5410, 0x541D
#: What a program that may hold the operator's terminal (kept in the launcher's session, or
#: given it on 0-2) must not do to it, whatever its policy's ioctl rules say (seccomp's derived
#: terminal rule): type into it (TIOCSTI, TIOCLINUX's paste on a VT), change what outlives the
#: program (the line discipline: N_NULL discards every key; exclusive mode, set or cleared:
#: sudo's and ssh's open of /dev/tty fail with EBUSY; the window size), or take the terminal or
#: its foreground from the operator's shell (TIOCSCTTY, TIOCSPGRP: tcsetpgrp) or its console
#: output (TIOCCONS). Its modes (TCSETS*) it may set, as an interactive program must: the
#: launcher puts them back when the program ends (sandbox/terminal_state.py).
TERMINAL_REFUSED = (TIOCSTI, TIOCLINUX, TIOCSETD, TIOCEXCL, TIOCNXCL, TIOCSWINSZ, TIOCSCTTY,
                    TIOCSPGRP, TIOCCONS)

SYS_SECCOMP = 317
SYS_PIDFD_GETFD = 438
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

_SYS_PIVOT_ROOT = 155
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442
_SYS_CLOSE_RANGE = 436


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, loaded once: a dlopen costs a few hundred microseconds in a fresh fork."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def check(result: int, what: str) -> int:
    """A libc or raw syscall result: OSError with the kernel's errno when it is negative."""
    return _check(result, what)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments; returns its result."""
    return _check(libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                               ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def set_name(name: str) -> None:
    """The name /proc/<pid>/comm and `top` show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(libc().prctl(PR_SET_NAME, buf, 0, 0, 0), "prctl(PR_SET_NAME)")


def set_title(title: str, name: str = "") -> None:
    """The command line `ps` shows (setproctitle rewrites the process's argv area), and its
    short name. Needs nothing of the filesystem once setproctitle is imported, so a sandboxed
    process can call it; a missing setproctitle leaves the title as it was."""
    try:
        import setproctitle
    except ImportError:
        setproctitle = None  # type: ignore[assignment]
    if setproctitle is not None:
        setproctitle.setproctitle(title)
    if name:
        set_name(name)


def get_title() -> str:
    """The command line `ps` shows now ("" without setproctitle)."""
    try:
        import setproctitle
    except ImportError:
        return ""
    return str(setproctitle.getproctitle())


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc().mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                        ctypes.c_ulong(flags), data and data.encode()),
           f"mount {fstype or source or ''} on {target}")


def umount2(target: str, flags: int) -> None:
    _check(libc().umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc().syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """A new descriptor of a mount: with OPEN_TREE_CLONE a detached copy of it."""
    return _check(libc().syscall(_SYS_OPEN_TREE, dirfd, path.encode(), ctypes.c_uint(flags)),
                  "open_tree")


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _check(libc().syscall(_SYS_MOVE_MOUNT, from_fd, from_path.encode(), to_fd, to_path.encode(),
                          ctypes.c_uint(flags)), f"move_mount to {to_path}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int) -> None:
    """Set mount attributes (read-only, nosuid, ...); with AT_RECURSIVE on every submount."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    _check(libc().syscall(_SYS_MOUNT_SETATTR, dirfd, path.encode(), ctypes.c_uint(flags),
                          ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open with resolution restrictions (RESOLVE_NO_SYMLINKS, ...); `mode` for
    O_CREAT."""
    how = _OpenHow(flags, mode, resolve)
    return _check(libc().syscall(_SYS_OPENAT2, dirfd, path.encode(), ctypes.byref(how),
                                 ctypes.c_size_t(ctypes.sizeof(how))), f"openat2({path})")


def syscall(number: int, *args: object) -> int:
    """A raw syscall (numbers above); the caller checks the result (see `check`)."""
    return int(libc().syscall(ctypes.c_long(number), *args))


def sethostname(name: str) -> None:
    data = name.encode()
    _check(libc().sethostname(data, len(data)), "sethostname")
