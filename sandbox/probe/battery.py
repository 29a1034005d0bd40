"""The battery: every attempt, in order, with its expectation."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from .attempts_files import (_exp_create, _exp_write_granted, _exp_hidden, _exp_protected, _run_modify_protected, _run_read_hidden, _exp_hardlink, _exp_list_root, _exp_mknod, _exp_setuid, _run_setuid,
                             _exp_loosen_mode, _run_loosen_mode,
                             _exp_modify_canary, _exp_read, _exp_symlink, _run_hardlink,
                             _run_list_root, _run_mknod, _run_modify_canary, _run_read_outside,
                             _run_read_passwd, _run_symlink, _run_write_granted,
                             _run_write_outside)
from .attempts_inherited import (_exp_fd_self, _exp_named_socket, _exp_never, _exp_socket_in_read_grant,
                                 _exp_terminal, _exp_terminal_escape_self, _exp_terminal_modes_self, _exp_terminal_self,
                                 _run_launcher_memory, _run_named_socket)
from .attempts_kernel import (_exp_clone_newuser, _exp_dumpable, _exp_wx_memory, _run_clone_newuser,
                              _run_dumpable, _run_dumpable_high_bits, _run_wx_memory)
from .attempts_privileges import (_exp_fds_many, _exp_file_size, _exp_fork_many, _exp_memlock, _run_fds_many,
                                  _run_file_size, _run_fork_many, _run_memlock)
from .attempts_kernel import (_bpf_extra, _exp_clone3, _exp_foreign_arch, _exp_mount, _exp_setns,
                              _exp_syscall, _exp_terminal_steer, _exp_thread, _exp_tiocsti, _exp_unshare_mount,
                              _exp_unshare_user, _io_uring_extra, _make_unshare_runner,
                              _perf_extra, _run_bpf, _run_chroot, _run_clone3, _run_int80,
                              _run_io_uring, _run_keyctl, _run_mount, _run_perf, _run_personality,
                              _run_setns, _run_terminal_steer, _run_thread, _run_tiocsti, _run_userfaultfd, _run_x32)
from .attempts_network import (_exp_abstract, _exp_abstract_bind, _exp_abstract_bind_pair, _run_abstract_bind,
                               _run_abstract_bind_pair, _exp_mptcp_bind, _exp_mptcp_connect, _exp_socket,
                               _exp_tcp_bind, _exp_tcp_connect, _exp_udp, _make_socket_runner,
                               _run_abstract_connect, _run_mptcp_bind, _run_mptcp_connect,
                               _run_connect_loopback, _run_tcp_bind, _run_tcp_connect, _run_udp_send)
from .attempts_privileges import (_exp_ambient, _exp_capset, _exp_rlimit, _exp_securebits,
                                  _run_ambient, _run_capset, _run_iopl, _run_rlimit,
                                  _run_securebits)
from .attempts_processes import (_exp_execve, _exp_kill_init, _exp_kill_monitor, _exp_kill_parent, _exp_pidfd_getfd,
                                 _exp_pidfd_signal, _exp_proc, _exp_process_vm_readv, _exp_ptrace,
                                 _exp_signal_group, _make_proc_runner, _run_execve, _run_kill_init,
                                 _run_kill_parent, _run_pidfd_getfd, _run_pidfd_signal,
                                 _run_process_vm_readv, _run_ptrace, _run_signal_group)
from .judge import _Judge, _Why
from .kernel_abi import (_CAP_NET_RAW, _CAP_SYS_CHROOT, _CAP_SYS_RAWIO, _CLONE_NEWNS,
                         _CLONE_NEWUSER, _PER_LINUX32)
from .runner import Runner
from .targets import _Targets


@dataclass(frozen=True)
class _Spec:
    name: str
    description: str
    expect: Callable[[_Judge, _Targets], _Why]
    run: Runner
    needs_writable: bool = False
    needs_hidden: bool = False    # only when the policy hides a directory (filesystem.hide)
    needs_protected: bool = False  # only when a read-only grant lies inside a writable one
    parent_run: bool = False      # run by the parent (attempts_inherited.PARENT_RUNS), not inside
    needs_self: bool = False      # only for a policy a running process can apply (no pid namespace)


def _parent(run_name: str) -> Runner:
    def unused(ctx, out):  # type: ignore[no-untyped-def]
        raise AssertionError(f"{run_name} runs in the parent")
    return unused


def _battery() -> list[_Spec]:
    return [
        _Spec("fs-read-outside", "read a canary file outside every granted path",
              _exp_read(lambda t: t.canary), _run_read_outside),
        _Spec("fs-read-etc-passwd", "read /etc/passwd", _exp_read(lambda t: "/etc/passwd"),
              _run_read_passwd),
        _Spec("fs-read-hidden", "list a hidden directory (filesystem.hide) and read a canary "
              "the parent planted in it", _exp_hidden, _run_read_hidden, needs_hidden=True),
        _Spec("fs-modify-protected", "change, replace or remove each file granted read-only inside a "
              "writable directory (node.toml's conf file, which the next, unconfined start reads, "
              "and sandbox.log, the record of refusals)",
              _exp_protected, _run_modify_protected, needs_protected=True),
        _Spec("fs-list-root", "list the root directory", _exp_list_root, _run_list_root),
        _Spec("fs-write-outside", "create a file in a directory outside every granted path",
              _exp_create(lambda t: t.created), _run_write_outside),
        _Spec("fs-modify-outside", "open the outside canary for writing and append to it",
              _exp_modify_canary, _run_modify_canary),
        _Spec("fs-write-granted", "control: create, write and remove a file in the granted "
              "writable directory", _exp_write_granted, _run_write_granted,
              needs_writable=True),
        _Spec("fs-symlink-outside", "plant a symlink to the canary in the writable directory "
              "and read through it", _exp_symlink, _run_symlink, needs_writable=True),
        _Spec("fs-hardlink-outside", "hard-link the canary into the writable directory",
              _exp_hardlink, _run_hardlink, needs_writable=True),
        _Spec("fs-mknod", "create a character device (/dev/null's 1:3) in the writable directory",
              _exp_mknod, _run_mknod, needs_writable=True),
        _Spec("fs-setuid", "give a file in the writable directory the set-user-ID bit (chmod, "
              "fchmod, open): nosuid holds in the view only, the file stays on the host",
              _exp_setuid, _run_setuid, needs_writable=True),
        _Spec("fs-loosen-mode", "give a file in the writable directory group and other bits "
              "(chmod 0644, fchmod 0606): with the datadir reachable by others (-sysperms), modes "
              "keep a component's files private", _exp_loosen_mode, _run_loosen_mode, needs_writable=True),
        _Spec("exec-bin-true", "execve /bin/true", _exp_execve, _run_execve),
        _Spec("net-tcp-connect", "TCP connect to the parent's listening 127.0.0.1 port",
              _exp_tcp_connect, _run_tcp_connect),
        _Spec("net-connect-loopback", "TCP connect to the parent's port as 0.0.0.0 and ::ffff:127.0.0.1 "
              "(the host's other spellings of its loopback)", _exp_tcp_connect, _run_connect_loopback),
        _Spec("net-tcp-bind", "bind and listen on a TCP port", _exp_tcp_bind, _run_tcp_bind),
        _Spec("net-mptcp-connect", "connect to the parent's 127.0.0.1 port with an MPTCP socket "
              "(Landlock's TCP rules hold for IPPROTO_TCP only; MPTCP falls back to TCP)",
              _exp_mptcp_connect, _run_mptcp_connect),
        _Spec("net-mptcp-bind", "bind and listen on a TCP port with an MPTCP socket",
              _exp_mptcp_bind, _run_mptcp_bind),
        _Spec("net-udp-send", "send a UDP datagram to the parent's 127.0.0.1 port",
              _exp_udp, _run_udp_send),
        _Spec("net-raw-socket", "open a raw socket (AF_INET, SOCK_RAW)",
              _exp_socket(socket.AF_INET, socket.SOCK_RAW, _CAP_NET_RAW),
              _make_socket_runner(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP,
                                  "a raw ICMP socket")),
        _Spec("net-packet-socket", "open a packet socket (AF_PACKET)",
              _exp_socket(socket.AF_PACKET, socket.SOCK_RAW, _CAP_NET_RAW),
              _make_socket_runner(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003),
                                  "an AF_PACKET socket")),
        _Spec("net-netlink-socket", "open a netlink socket (AF_NETLINK, NETLINK_ROUTE)",
              _exp_socket(socket.AF_NETLINK, socket.SOCK_RAW, None),
              _make_socket_runner(socket.AF_NETLINK, socket.SOCK_RAW, 0, "a NETLINK_ROUTE socket")),
        _Spec("net-abstract-unix", "connect to the parent's listening abstract unix socket",
              _exp_abstract, _run_abstract_connect),
        _Spec("net-abstract-bind", "bind an abstract unix socket name in the parent's network "
              "namespace, where the host's clients of that name would connect to the sandbox "
              "(Landlock's scope refuses connect, not bind)", _exp_abstract_bind, _run_abstract_bind),
        _Spec("net-abstract-bind-pair", "bind an abstract unix socket name in the parent's network "
              "namespace with one end of a socket pair (no socket(2) needed): a squat, the "
              "service started later cannot have its name", _exp_abstract_bind_pair,
              _run_abstract_bind_pair),
        _Spec("proc-ptrace-parent", "ptrace(PTRACE_ATTACH) the parent", _exp_ptrace, _run_ptrace),
        _Spec("proc-parent-mem", "open /proc/<parent>/mem", _exp_proc("mem"), _make_proc_runner("mem")),
        _Spec("proc-parent-environ", "open /proc/<parent>/environ", _exp_proc("environ"),
              _make_proc_runner("environ")),
        _Spec("proc-vm-readv-parent", "process_vm_readv the canary out of the parent's memory",
              _exp_process_vm_readv, _run_process_vm_readv),
        _Spec("signal-parent", "kill(parent, 0): signal a process outside", _exp_kill_parent,
              _run_kill_parent),
        _Spec("signal-pid1", "kill(1, 0): signal PID 1 (outside the sandbox's Landlock domain)",
              _exp_kill_init, _run_kill_init),
        _Spec("signal-own-group", "kill(0, SIGCONT): signal its process group, which held its waiter "
              "outside its pid namespace until 12-07", _exp_signal_group, _run_signal_group),
        _Spec("signal-pidfd-parent", "pidfd_send_signal(parent, 0) with a pidfd handed in",
              _exp_pidfd_signal, _run_pidfd_signal),
        _Spec("pidfd-getfd-parent", "pidfd_getfd: copy fd 2 out of the parent", _exp_pidfd_getfd,
              _run_pidfd_getfd),
        _Spec("mount-tmpfs", "mount a tmpfs", _exp_mount, _run_mount),
        _Spec("unshare-user", "unshare(CLONE_NEWUSER)", _exp_unshare_user,
              _make_unshare_runner(_CLONE_NEWUSER, "CLONE_NEWUSER")),
        _Spec("unshare-mount", "unshare(CLONE_NEWNS)", _exp_unshare_mount,
              _make_unshare_runner(_CLONE_NEWNS, "CLONE_NEWNS")),
        _Spec("setns-parent-net", "setns into the parent's network namespace (fd handed in)",
              _exp_setns, _run_setns),
        _Spec("chroot", "chroot('/')", _exp_syscall("chroot", cap=_CAP_SYS_CHROOT), _run_chroot),
        _Spec("keyctl", "keyctl: create a process keyring", _exp_syscall("keyctl"), _run_keyctl),
        _Spec("bpf", "bpf(BPF_MAP_CREATE)", _exp_syscall("bpf", extra=_bpf_extra), _run_bpf),
        _Spec("perf-event-open", "perf_event_open of a software counter",
              _exp_syscall("perf_event_open", extra=_perf_extra), _run_perf),
        _Spec("io-uring-setup", "io_uring_setup", _exp_syscall("io_uring_setup", extra=_io_uring_extra),
              _run_io_uring),
        _Spec("userfaultfd", "userfaultfd (user-mode only)", _exp_syscall("userfaultfd"),
              _run_userfaultfd),
        _Spec("personality", "personality(PER_LINUX32)",
              _exp_syscall("personality", args={0: _PER_LINUX32}), _run_personality),
        _Spec("ioctl-tiocsti", "TIOCSTI: push input into a terminal", _exp_tiocsti, _run_tiocsti),
        _Spec("ioctl-terminal-steer", "steer a terminal beyond the run: line discipline, size, "
              "foreground, VT paste, exclusive mode (TIOCSETD, TIOCSWINSZ, TIOCSPGRP, TIOCLINUX, "
              "TIOCNXCL)", _exp_terminal_steer, _run_terminal_steer),
        _Spec("arch-i386-int80", "an i386 syscall through int 0x80 (getpid)", _exp_foreign_arch,
              _run_int80),
        _Spec("arch-x32", "an x32 syscall (getpid | 0x40000000)", _exp_foreign_arch, _run_x32),
        _Spec("cap-capset", "capset: raise CAP_SYS_ADMIN", _exp_capset, _run_capset),
        _Spec("cap-ambient", "prctl(PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN)", _exp_ambient, _run_ambient),
        _Spec("cap-securebits", "prctl(PR_SET_SECUREBITS, 0): unlock the securebits",
              _exp_securebits, _run_securebits),
        _Spec("iopl", "iopl(3): direct I/O port access",
              _exp_syscall("iopl", cap=_CAP_SYS_RAWIO, init_ns=True), _run_iopl),
        _Spec("rlimit-core", "raise RLIMIT_CORE above its hard limit (1/1)", _exp_rlimit, _run_rlimit),
        _Spec("clone3", "clone3 (must answer ENOSYS)", _exp_clone3, _run_clone3),
        _Spec("thread-start", "control: start a thread (glibc falls back from clone3 to clone)",
              _exp_thread, _run_thread),
        _Spec("clone-newuser", "clone(CLONE_NEWUSER | CLONE_NEWNET): namespaces without unshare",
              _exp_clone_newuser, _run_clone_newuser),
        _Spec("prctl-dumpable", "prctl(PR_SET_DUMPABLE, 1): undo 'not dumpable'", _exp_dumpable,
              _run_dumpable),
        # The same call as the kernel reads it: the option is 32 bits wide (an int).
        _Spec("prctl-dumpable-high-bits", "prctl(PR_SET_DUMPABLE | 1 << 32, 1): the same, with "
              "a high bit the kernel drops", _exp_dumpable, _run_dumpable_high_bits),
        _Spec("memory-wx", "map memory both writable and executable", _exp_wx_memory, _run_wx_memory),
        _Spec("rlimit-fork-200", "start 200 processes at once", _exp_fork_many, _run_fork_many),
        _Spec("rlimit-fds-8192", "hold 8192 descriptors at once", _exp_fds_many, _run_fds_many),
        _Spec("rlimit-memlock-4mib", "lock 4 MiB of memory in RAM (never swapped, never reclaimed)",
              _exp_memlock, _run_memlock),
        _Spec("rlimit-file-1tib", "write a byte at 1 TiB into a file in the writable directory",
              _exp_file_size, _run_file_size, needs_writable=True),
        _Spec("unix-named-socket", "connect to a named unix socket listening outside every grant",
              _exp_named_socket, _run_named_socket),
        _Spec("unix-socket-in-read-grant", "connect to a listening unix socket (a fake ssh-agent) "
              "in a directory the policy grants read-only", _exp_socket_in_read_grant,
              _parent("unix-socket-in-read-grant"), parent_run=True),
        _Spec("memory-launcher-secret", "find a secret of the launcher at its address in this "
              "process's memory", _exp_never("zygote: components start from a fresh interpreter, "
                                             "never as a copy of the launcher's memory"),
              _run_launcher_memory),
        _Spec("fd-inherited", "walk out through descriptors to / and outside that the launcher "
              "left open", _exp_never("descriptors: only the allowlist survives a launch"),
              _parent("fd-inherited"), parent_run=True),
        _Spec("fd-before-self-restriction", "walk out through descriptors to / and outside opened "
              "before restrict_self", _exp_fd_self, _parent("fd-before-self-restriction"),
              parent_run=True, needs_self=True),
        _Spec("terminal-self-restriction", "read what the user types through stdout and stderr "
              "on a terminal, kept by restrict_self", _exp_terminal_self,
              _parent("terminal-self-restriction"), parent_run=True, needs_self=True),
        _Spec("terminal-modes-self-restriction", "set the modes of the terminal kept by "
              "restrict_self (echo off): TCSETS, the old termio and termios2 requests, TIOCSETD",
              _exp_terminal_modes_self, _parent("terminal-modes-self-restriction"), parent_run=True,
              needs_self=True),
        _Spec("terminal-escape-self-restriction", "write an escape sequence (OSC 52, the desktop's "
              "clipboard) to the terminal on stdout and stderr, kept by restrict_self",
              _exp_terminal_escape_self, _parent("terminal-escape-self-restriction"), parent_run=True,
              needs_self=True),
        _Spec("terminal-left-open", "use a terminal the launcher left open: read it, TCSETS, "
              "TIOCSTI, TIOCSWINSZ, TCXONC, TIOCEXCL, TIOCSETD, TIOCSBRK", _exp_terminal, _parent("terminal-left-open"), parent_run=True),
        _Spec("grant-symlink-swap", "swap a writable grant for a symlink to /, then be launched "
              "again (old plan and new plan) and read the canary through it",
              _exp_never("paths: grants resolve without symlinks the sandbox could have planted"),
              _parent("grant-symlink-swap"), parent_run=True, needs_writable=True),
        _Spec("output-flood", "write 8 MiB to stdout without a newline, to make the launcher's "
              "line-by-line relay (a zygote's) hold all of it",
              _exp_never("stdio: the relay passes a long line on in pieces"),
              _parent("output-flood"), parent_run=True),
        _Spec("denial-log-reach", "with a denial log kept outside the grants, reach it (by its path "
              "or a descriptor) to erase the record of a refusal",
              _exp_never("denial log: opened by the launcher before the view; only the monitor "
                         "holds it"),
              _parent("denial-log-reach"), parent_run=True),
        _Spec("denial-log-flood", "with a denial log, make 20,000 refused calls that each look "
              "new (clone with other flag bits), to bury the log and grow its monitor",
              _exp_never("denial log: kinds remembered and lines a minute are bounded"),
              _parent("denial-log-flood"), parent_run=True),
        _Spec("denial-log-bury", "with a denial log, spend its lines a minute on 150 decoy "
              "refusals (clone with other flag bits), then make a TIOCSTI that must still be named",
              _exp_never("denial log: the first refusal by each of the policy's decisions is "
                         "written past every budget"),
              _parent("denial-log-bury"), parent_run=True),
        _Spec("denial-log-fails", "with a denial log that cannot grow (as on a full disk), make a "
              "refused call, then another, to stop the monitor so that no refusal is logged again",
              _exp_never("denial log: a monitor whose write fails counts the lost lines and goes on"),
              _parent("denial-log-fails"), parent_run=True),
        _Spec("denial-monitor-kill", "with a denial log, launched as a zygote launches, SIGKILL every "
              "other process of the sandbox's pid namespace (its denial monitor), then make a "
              "refused call, so that no refusal is logged again", _exp_kill_monitor,
              _parent("denial-monitor-kill"), parent_run=True),
        _Spec("same-user-trace", "as another process of the same (non-root) uid, attach with ptrace "
              "to the component and every process of its sandbox (pid namespace waiters, denial "
              "monitor), launched as a zygote launches",
              _exp_never("dumpable off, and nothing exec'd in a user namespace this uid owns (the "
                         "denial monitor is forked there)"),
              _parent("same-user-trace"), parent_run=True),
        _Spec("denial-monitor-early-trace", "as another process of the same uid without "
              "capabilities, attach with ptrace to a denial monitor started before the steps (as "
              "CleanCoin-node starts its own) while it waits for its configuration",
              _exp_never("the monitor is exec'd from a memfd its uid cannot read: not dumpable "
                         "from its exec"),
              _parent("denial-monitor-early-trace"), parent_run=True),
    ]
