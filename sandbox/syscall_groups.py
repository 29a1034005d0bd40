"""Named seccomp syscall groups, following systemd's `SystemCallFilter=` groups.

The group names (`@system-service`, `@privileged`, `@mount`, ...) and their members follow
systemd's `syscall_filter_sets[]` table in `src/shared/seccomp-util.c`, as of recent upstream main
(the version that already has `@sandbox`, `mseal` and `file_getattr`). They are systemd's facts
written out again as Python data, not code copied from systemd. We reuse systemd's vocabulary
on purpose: people who write policies already know these names from unit files and from
`systemd-analyze syscall-filter`. So "`@system-service` minus `@privileged`" means the same
thing here as it does there, and a policy can be checked against systemd's documentation.

Members are libseccomp syscall names or references to other groups ("@name"). Like systemd,
the table keeps names that the native architecture lacks: multiplexers such as `socketcall`
and `ipc`, 32-bit-only calls such as `_llseek` or `fstat64`, and calls from other
architectures such as `rtas` or `s390_pci_mmio_read`. It also keeps calls newer than the
installed libseccomp. One table then serves every architecture, and the caller skips the
names that libseccomp cannot resolve on the running one. systemd's `@known` group is left
out: it is generated from the kernel's own syscall list, not written by hand.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["GroupDef", "GROUPS", "expand_group", "is_group", "groups_containing"]


@dataclass(frozen=True)
class GroupDef:
    """One named group: `members` holds syscall names and "@group" references, in systemd's order."""

    name: str
    description: str
    members: tuple[str, ...]


# The table is written as (name, description, members) rows. Keeping systemd's row and member
# order makes it easy to compare line by line with seccomp-util.c when systemd adds a call.
_TABLE: tuple[GroupDef, ...] = (
    GroupDef(
        "@default",
        "System calls that are always permitted",
        (
            # systemd puts @sandbox in @default so that every service may tighten its own
            # sandbox further (seccomp, landlock): tightening never hurts the policy author.
            "@sandbox",
            # Used by ld-linux.so during start-up on x86_64.
            "arch_prctl",
            "brk", "cacheflush",
            "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
            "clock_nanosleep", "clock_nanosleep_time64",
            "execve", "exit", "exit_group",
            "futex", "futex_time64", "futex_waitv",
            "get_robust_list", "get_thread_area",
            "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
            "getgroups", "getgroups32", "getpgid", "getpgrp", "getpid", "getppid",
            "getrandom",
            "getresgid", "getresgid32", "getresuid", "getresuid32",
            # Processes need to read their own stack size and similar limits.
            "getrlimit",
            "getsid", "gettid", "gettimeofday", "getuid", "getuid32",
            "lsm_get_self_attr", "lsm_list_modules",
            "membarrier",
            "mmap", "mmap2", "mprotect", "mseal", "munmap",
            "nanosleep", "pause", "prlimit64", "restart_syscall",
            "riscv_flush_icache", "riscv_hwprobe",
            "rseq", "rt_sigreturn", "sched_getaffinity", "sched_yield",
            "set_robust_list", "set_thread_area", "set_tid_address", "set_tls",
            "sigreturn", "time", "ugetrlimit", "uretprobe",
        ),
    ),
    GroupDef(
        "@aio",
        "Asynchronous IO",
        (
            "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
            "io_setup", "io_submit",
            "io_uring_enter", "io_uring_register", "io_uring_setup",
        ),
    ),
    GroupDef(
        "@basic-io",
        "Basic IO",
        (
            "_llseek", "close", "close_range", "dup", "dup2", "dup3", "llseek", "lseek",
            "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2",
            "read", "readv", "write", "writev",
        ),
    ),
    GroupDef(
        "@chown",
        "Change ownership of files and directories",
        ("chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32"),
    ),
    GroupDef(
        "@clock",
        "Change the system time",
        (
            "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
            "settimeofday",
        ),
    ),
    GroupDef(
        "@cpu-emulation",
        "System calls for CPU emulation functionality",
        ("modify_ldt", "subpage_prot", "switch_endian", "vm86", "vm86old"),
    ),
    GroupDef(
        "@debug",
        "Debugging, performance monitoring and tracing functionality",
        (
            "lookup_dcookie", "perf_event_open", "pidfd_getfd", "ptrace", "rtas",
            "s390_runtime_instr", "sys_debug_setcontext",
        ),
    ),
    GroupDef(
        "@file-system",
        "File system operations",
        (
            "access", "chdir", "chmod", "close", "creat",
            "faccessat", "faccessat2", "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2",
            "fcntl", "fcntl64",
            "fgetxattr", "file_getattr", "file_setattr", "flistxattr", "fremovexattr", "fsetxattr",
            "fstat", "fstat64", "fstatat", "fstatat64", "fstatfs", "fstatfs64",
            "ftruncate", "ftruncate64", "futimesat",
            "getcwd", "getdents", "getdents64", "getxattr", "getxattrat",
            "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
            "lgetxattr", "link", "linkat", "listmount", "listxattr", "listxattrat",
            "llistxattr", "lremovexattr", "lsetxattr", "lstat", "lstat64",
            "mkdir", "mkdirat", "mknod", "mknodat",
            "newfstat", "newfstatat", "oldfstat", "oldlstat", "oldstat",
            # open_tree() without OPEN_TREE_CLONE is just an O_PATH open, so it sits with the
            # file calls; the cloning form still needs CAP_SYS_ADMIN in the kernel.
            "open", "open_tree", "openat", "openat2",
            "readlink", "readlinkat", "removexattr", "removexattrat",
            "rename", "renameat", "renameat2", "rmdir",
            "setxattr", "setxattrat",
            "stat", "stat64", "statfs", "statfs64", "statmount", "statx",
            "symlink", "symlinkat", "truncate", "truncate64", "unlink", "unlinkat",
            "utime", "utimensat", "utimensat_time64", "utimes",
        ),
    ),
    GroupDef(
        "@io-event",
        "Event loop system calls",
        (
            "_newselect",
            "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
            "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
            "eventfd", "eventfd2",
            "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select",
        ),
    ),
    GroupDef(
        "@ipc",
        "SysV IPC, POSIX Message Queues or other IPC",
        (
            "ipc", "memfd_create",
            "mq_getsetattr", "mq_notify", "mq_open",
            "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
            "mq_unlink",
            "msgctl", "msgget", "msgrcv", "msgsnd",
            "pipe", "pipe2",
            "process_madvise", "process_vm_readv", "process_vm_writev",
            "semctl", "semget", "semop", "semtimedop", "semtimedop_time64",
            "shmat", "shmctl", "shmdt", "shmget",
        ),
    ),
    GroupDef(
        "@keyring",
        "Kernel keyring access",
        ("add_key", "keyctl", "request_key"),
    ),
    GroupDef(
        "@memlock",
        "Memory locking control",
        ("mlock", "mlock2", "mlockall", "munlock", "munlockall"),
    ),
    GroupDef(
        "@module",
        "Loading and unloading of kernel modules",
        ("delete_module", "finit_module", "init_module"),
    ),
    GroupDef(
        "@mount",
        "Mounting and unmounting of file systems",
        (
            "chroot", "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr",
            "move_mount", "open_tree_attr", "pivot_root", "umount", "umount2",
        ),
    ),
    GroupDef(
        "@network-io",
        "Network or Unix socket IO, should not be needed if not network facing",
        (
            "accept", "accept4", "bind", "connect",
            "getpeername", "getsockname", "getsockopt", "listen",
            "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
            "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
            "socket", "socketcall", "socketpair",
        ),
    ),
    GroupDef(
        "@obsolete",
        "Unusual, obsolete or unimplemented system calls",
        (
            # Several of these are unknown even to libseccomp; systemd keeps them anyway so
            # that a deny-list also covers them on any architecture where they still exist.
            "_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime",
            "get_kernel_syms", "getpmsg", "gtty", "idle", "lock", "mpx", "prof", "profil",
            "putpmsg", "query_module", "security", "sgetmask", "ssetmask", "stime", "stty",
            "sysfs", "tuxcall", "ulimit", "uselib", "ustat", "vserver",
        ),
    ),
    GroupDef(
        "@pkey",
        "System calls used for memory protection keys",
        ("pkey_alloc", "pkey_free", "pkey_mprotect"),
    ),
    GroupDef(
        "@privileged",
        "All system calls which need super-user capabilities",
        (
            "@chown", "@clock", "@module", "@raw-io", "@reboot", "@swap",
            "_sysctl", "acct", "bpf", "capset", "chroot", "fanotify_init", "fanotify_mark",
            "nfsservctl", "open_by_handle_at", "pivot_root", "quotactl", "quotactl_fd",
            "setdomainname", "setfsuid", "setfsuid32", "setgroups", "setgroups32",
            "sethostname", "setresuid", "setresuid32", "setreuid", "setreuid32",
            # The uid calls are listed one by one rather than as @setuid, because @setuid also
            # holds setgid() and friends, which are not necessarily privileged.
            "setuid", "setuid32",
            "vhangup",
        ),
    ),
    GroupDef(
        "@process",
        "Process control, execution, namespacing operations",
        (
            # capget() is here because it can query any process, not only the caller.
            "capget",
            # clone2 (ia64 only) is left out: ia64 never had seccomp.
            "clone", "clone3", "execveat", "fork", "getrusage", "kill",
            "pidfd_open", "pidfd_send_signal", "prctl", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
            "setns",
            # powerpc32 and others use it for user-space context switches.
            "swapcontext",
            "tgkill", "times", "tkill", "unshare", "vfork", "wait4", "waitid", "waitpid",
        ),
    ),
    GroupDef(
        "@raw-io",
        "Raw I/O port access",
        (
            "ioperm", "iopl", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
            "s390_pci_mmio_read", "s390_pci_mmio_write",
        ),
    ),
    GroupDef(
        "@reboot",
        "Reboot and reboot preparation/kexec",
        ("kexec_file_load", "kexec_load", "reboot"),
    ),
    GroupDef(
        "@resources",
        "Alter resource settings",
        (
            "ioprio_set", "mbind", "migrate_pages", "move_pages", "nice",
            "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
            "set_mempolicy", "set_mempolicy_home_node", "setpriority", "setrlimit",
        ),
    ),
    GroupDef(
        "@sandbox",
        "Sandbox functionality",
        ("landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "seccomp"),
    ),
    GroupDef(
        "@setuid",
        "Operations for changing user/group credentials",
        (
            "setgid", "setgid32", "setgroups", "setgroups32", "setregid", "setregid32",
            "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
            "setuid", "setuid32",
        ),
    ),
    GroupDef(
        "@signal",
        "Process signal handling",
        (
            "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigsuspend",
            "rt_sigtimedwait", "rt_sigtimedwait_time64",
            "sigaction", "sigaltstack", "signal", "signalfd", "signalfd4",
            "sigpending", "sigprocmask", "sigsuspend",
        ),
    ),
    GroupDef(
        "@swap",
        "Enable/disable swap devices",
        ("swapoff", "swapon"),
    ),
    GroupDef(
        "@sync",
        "Synchronize files and memory to storage",
        ("fdatasync", "fsync", "msync", "sync", "sync_file_range", "sync_file_range2", "syncfs"),
    ),
    GroupDef(
        "@system-service",
        "General system service operations",
        (
            "@aio", "@basic-io", "@chown", "@default", "@file-system", "@io-event", "@ipc",
            "@keyring", "@memlock", "@network-io", "@process", "@resources", "@setuid",
            "@signal", "@sync", "@timer",
            "arm_fadvise64_64", "capget", "capset", "copy_file_range",
            "fadvise64", "fadvise64_64", "flock", "get_mempolicy", "getcpu", "getpriority",
            "ioctl", "ioprio_get", "kcmp", "madvise", "mremap", "name_to_handle_at",
            "oldolduname", "olduname", "personality", "readahead", "readdir",
            "remap_file_pages",
            "sched_get_priority_max", "sched_get_priority_min", "sched_getattr",
            "sched_getparam", "sched_getscheduler",
            "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_yield",
            "sendfile", "sendfile64", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
            "setpgid", "setsid", "splice", "sysinfo", "tee", "umask", "uname",
            "userfaultfd", "vmsplice",
        ),
    ),
    GroupDef(
        "@timer",
        "Schedule operations by time",
        (
            "alarm", "getitimer", "setitimer",
            "timer_create", "timer_delete", "timer_getoverrun",
            "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
            "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
            "timerfd_settime", "timerfd_settime64",
            "times",
        ),
    ),
)

# Read-only so that no caller can change what a group name means while the process runs.
GROUPS: Mapping[str, GroupDef] = types.MappingProxyType({g.name: g for g in _TABLE})


def is_group(name: str) -> bool:
    """True for a group reference such as "@system-service"; says nothing of whether it is defined."""
    return name.startswith("@")


@functools.lru_cache(maxsize=None)
def expand_group(name: str) -> frozenset[str]:
    """All syscall names in group `name`, following nested "@group" members.

    Raises `KeyError` for a name that is not in `GROUPS`, including a nested reference to an
    undefined group, and `ValueError` if groups include each other in a cycle.
    """
    if name not in GROUPS:
        raise KeyError(name)
    return frozenset(_expand(name, ()))


def _expand(name: str, path: tuple[str, ...]) -> set[str]:
    # `path` holds the groups being expanded further up. A cycle is a mistake in the table, so
    # report it by name instead of letting the recursion limit hide where it is.
    if name in path:
        raise ValueError("syscall group cycle: " + " -> ".join((*path, name)))
    try:
        group = GROUPS[name]
    except KeyError:
        raise KeyError(name) from None
    result: set[str] = set()
    for member in group.members:
        if is_group(member):
            result |= _expand(member, (*path, name))
        else:
            result.add(member)
    return result


@functools.lru_cache(maxsize=None)
def groups_containing(syscall: str) -> tuple[str, ...]:
    """Names of the groups whose full expansion contains `syscall`, sorted.

    This is what `explain` uses to say why a call was allowed or denied.
    """
    return tuple(sorted(name for name in GROUPS if syscall in expand_group(name)))
