"""Grants that need a written `reason` beside them, or the policy is rejected.

These are the ways out of a sandbox that a policy author should never hand out by accident:
running other programs, reading other processes, changing mounts or namespaces, loading code
into the kernel, raw network access and write access to the root or to /proc.
"""

from __future__ import annotations

import os

DANGEROUS_SYSCALLS: frozenset[str] = frozenset({
    "execve", "execveat",                                   # run other programs
    "ptrace", "process_vm_readv", "process_vm_writev",      # read or write other processes
    "pidfd_getfd", "kcmp",
    "mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "pivot_root", "chroot",
    "unshare", "setns",                                      # leave or build namespaces
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "keyctl", "add_key", "request_key", "reboot", "swapon", "swapoff",
    "iopl", "ioperm", "personality", "quotactl", "lookup_dcookie", "name_to_handle_at",
    "open_by_handle_at", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
})

DANGEROUS_FAMILIES: frozenset[str] = frozenset({"packet"})
"""Socket families that reach the link layer; raw inet sockets count too."""


def is_dangerous_write(path: str) -> bool:
    """Write access to the root directory or to anything under /proc."""
    # normpath keeps a leading "//", which the kernel reads as "/".
    normal = "/" + os.path.normpath(path).lstrip("/") if path.startswith("/") else path
    return normal == "/" or normal == "/proc" or normal.startswith("/proc/")
