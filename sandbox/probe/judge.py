"""What the policy promises: whether each attempt should work, from the policy and its plan."""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .. import bpf_sim, landlock, seccomp
from ..model import Policy, SeccompRule
from ..plan import Plan
from ..policy_spec import SOCKET_FAMILIES
from ..syscalls import MODE_SETTING_SYSCALLS, O_CREAT, O_TMPFILE_BIT, S_ISGID, S_ISUID, TERMINAL_REFUSED
from .kernel_abi import _ALL_CAPS, _CAP_SETPCAP, _CAP_SYS_PTRACE


@dataclass(frozen=True)
class _Host:
    """Facts about this machine and the parent that decide the kernel's own answers."""

    uid: int
    parent_caps: int                    # the parent's permitted capability set
    parent_inheritable: int             # and its inheritable set
    core_hard: int | None               # the parent's RLIMIT_CORE hard limit (None: unlimited)
    sysctl: Mapping[str, int | None]
    ttys: tuple[int, ...] = ()          # which of the parent's fds 0, 1, 2 are terminals

    @classmethod
    def detect(cls) -> "_Host":
        caps = {"CapPrm": 0, "CapInh": 0}
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    key = line.split(":", 1)[0]
                    if key in caps:
                        caps[key] = int(line.split()[1], 16)
        except OSError:
            pass
        hard = resource_hard_core()
        names = {"unprivileged_bpf_disabled": "/proc/sys/kernel/unprivileged_bpf_disabled",
                 "perf_event_paranoid": "/proc/sys/kernel/perf_event_paranoid",
                 "io_uring_disabled": "/proc/sys/kernel/io_uring_disabled",
                 "legacy_tiocsti": "/proc/sys/dev/tty/legacy_tiocsti",
                 "ptrace_scope": "/proc/sys/kernel/yama/ptrace_scope",
                 "max_user_namespaces": "/proc/sys/user/max_user_namespaces"}
        values: dict[str, int | None] = {}
        for key, path in names.items():
            try:
                with open(path) as handle:
                    values[key] = int(handle.read().strip())
            except (OSError, ValueError):
                values[key] = None
        ttys = tuple(fd for fd in (0, 1, 2) if os.isatty(fd))
        return cls(os.getuid(), caps["CapPrm"], caps["CapInh"], hard, values, ttys)


def resource_hard_core() -> int | None:
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def _action_name(value: int) -> str:
    """A filter's return value as a policy action string."""
    kind = value & 0xFFFF0000
    if kind == bpf_sim.RET_ERRNO:
        return f"errno:{errno.errorcode.get(value & 0xFFFF, value & 0xFFFF)}"
    return {bpf_sim.RET_ALLOW: "allow", bpf_sim.RET_LOG: "log",
            bpf_sim.RET_KILL_PROCESS: "kill_process"}.get(kind, hex(value))


class _Why:
    """The mechanisms that should stop an attempt; none means the policy allows it."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.seccomp: str | None = None     # the seccomp action for the attempt's key syscall

    def need(self, ok: bool, what: str) -> "_Why":
        if not ok:
            self.blocks.append(what)
        return self

    @property
    def expected(self) -> str:
        return "denied" if self.blocks else "allowed"

    @property
    def reason(self) -> str:
        return "; ".join(self.blocks) if self.blocks else "nothing in the policy forbids it"


#: clone(2)'s namespace flags (syscalls.CLONE_NAMESPACE_FLAGS, or-ed).
_CLONE_NAMESPACES = 0x7E020000


def _u64(value: int) -> int:
    return value & (2**64 - 1)


class _Judge:
    """Answers 'should this work?' from the policy and its plan, never from the BPF program.

    Deriving expectations from the compiled filter would make a compiler bug invisible; here
    they come from the policy model (allowed syscalls, rules, families) and the plan (paths,
    ports, scopes, namespaces, capabilities, rlimits), as the documentation describes them.
    Which of several matching argument rules counts is libseccomp's order, asked of
    libseccomp with those rules alone (`_ruled`).
    """

    def __init__(self, policy: Policy, plan: Plan, host: _Host,
                 namespaces: Iterable[str] | None = None) -> None:
        self.policy, self.plan, self.host = policy, plan, host
        # Below level hard the child may enter fewer namespaces than planned; the report it
        # sends says which, and that is what the expectations follow.
        self.ns = set(plan.namespaces if namespaces is None else namespaces)
        # The filesystem view: what the sandbox can see at all (a mount namespace only).
        self.view = [m for m in plan.mounts if m.kind in ("bind", "tmpfs")] if "mount" in self.ns else None
        self.hidden = [m.path for m in plan.mounts if m.kind == "hide"] if "mount" in self.ns else []
        self.mount_proc = "mount" in self.ns and "pid" in self.ns
        self.rules: list[tuple[str, int]] = []
        self._rule_filters: dict[str, bytes] = {}      # _ruled's, by syscall
        ll = plan.landlock
        if ll is not None:
            for path, rights, _optional in ll.paths:
                if not os.path.exists(path):
                    continue
                if not os.path.isdir(path):
                    rights &= landlock.FILE_RIGHTS
                self.rules.append((os.path.realpath(path), rights & ll.handled_fs))
        initial = _ALL_CAPS if "user" in self.ns else host.parent_caps
        kept = sum(1 << c for c in plan.keep_caps)
        self.caps = kept & initial
        self.inheritable = kept & (0 if "user" in self.ns else host.parent_inheritable)
        # capabilities.drop() locks the securebits (NO_CAP_AMBIENT_RAISE among them) whenever
        # the process holds CAP_SETPCAP when it drops.
        self.securebits_locked = bool(initial & (1 << _CAP_SETPCAP))

    # seccomp ----------------------------------------------------------------------------
    def seccomp_action(self, name: str, args: Mapping[int, int] | None = None) -> str:
        """What the filter should do with this call: allow, log, kill_process or errno:NAME."""
        action = self._policy_action(name, args)
        proc = self.policy.process
        # Derived where the process may hold the operator's terminal (kept in the launcher's
        # session, or given its descriptors): the requests that steer it answer EPERM where
        # they would run (a refusal of the policy's own stands).
        if name == "ioctl" and self.plan.seccomp_bpf and action in ("allow", "log") \
                and (not proc.new_session or proc.stdio == "inherit") \
                and _u64((args or {}).get(1, 0)) & 0xFFFFFFFF in TERMINAL_REFUSED:
            return "errno:EPERM"
        return action

    def _policy_action(self, name: str, args: Mapping[int, int] | None = None) -> str:
        args = {i: _u64(v) for i, v in (args or {}).items()}
        if not self.plan.seccomp_bpf:
            return "allow"
        sc = self.policy.seccomp
        if name == "clone3":
            return "errno:ENOSYS"
        allowed_plain = name in self.policy.allowed_syscalls
        rules = [r for r in sc.rules if r.syscall == name]
        unconditional = next((r.action for r in rules if not r.args), None)
        # The rules the compiler derives from the policy (seccomp.rule_table's docstring),
        # wherever the call may run: on the allow list, under an unconditional allow or log
        # rule, or not listed under a log default (seccomp._runs).
        runs = unconditional in ("allow", "log") if unconditional is not None else (
            allowed_plain or sc.default_action == "log")
        if name == "clone" and runs and "unshare" not in self.policy.reachable_syscalls \
                and args.get(0, 0) & _CLONE_NAMESPACES:
            return "errno:EPERM"
        if name == "prctl" and runs and not self.policy.process.dumpable \
                and args.get(0, 0) & 0xFFFFFFFF == 4 and args.get(1, 0) != 0:   # option: an int
            return "errno:EPERM"
        # Derived for every policy: no set-user-ID or set-group-ID bit in a mode; openat2,
        # whose mode the filter cannot read, answers ENOSYS.
        if name == "openat2" and runs:
            return "errno:ENOSYS"
        if unconditional is not None and not (runs and name in MODE_SETTING_SYSCALLS):
            return unconditional
        if name in MODE_SETTING_SYSCALLS and runs:
            mode_index, flags_index = MODE_SETTING_SYSCALLS[name]
            creating = flags_index is None or args.get(flags_index, 0) & (O_CREAT | O_TMPFILE_BIT)
            if creating and args.get(mode_index, 0) & (S_ISUID | S_ISGID):
                return "errno:EPERM"
        if unconditional is not None:
            return unconditional
        allowed = name in self.policy.allowed_syscalls
        if name in ("socket", "socketpair") and allowed:
            # A policy rule refusing a whole family takes that family's place (seccomp.py's
            # _refused_families: the same rule read from the policy, not the compiler's code,
            # so that a compiler that got it wrong shows as a wrong prediction).
            for rule in rules:
                if rule.action in ("allow", "log") or len(rule.args) != 1:
                    continue
                cond = rule.args[0]
                whole = cond.op == "eq" or (cond.op == "masked_eq" and cond.mask & 0xFFFFFFFF == 0xFFFFFFFF)
                if cond.index == 0 and whole and self._matches(cond.op, args.get(0, 0), cond.value, cond.mask):
                    return rule.action
            family, kind = args.get(0, 0), args.get(1, 0)
            for fam in self.policy.network.socket_families:
                if SOCKET_FAMILIES[fam.name] != family:
                    continue
                if name == "socketpair" and fam.name != "unix":
                    continue
                if name == "socket" and fam.socketpair_only:
                    continue
                if fam.name in ("inet", "inet6") and not fam.raw:
                    protocol = {socket.SOCK_STREAM: socket.IPPROTO_TCP,
                                **({socket.SOCK_DGRAM: socket.IPPROTO_UDP} if fam.datagram else {})}.get(kind & 0xF)
                    if protocol is not None and args.get(2, 0) & 0xFFFFFFFF in (0, protocol):
                        return "allow"
                    continue
                return "allow"
            return "errno:EAFNOSUPPORT"
        otherwise = "allow" if allowed else sc.default_action
        conditional = [rule for rule in rules if rule.args]
        if not any(all(self._matches(c.op, args.get(c.index, 0), c.value, c.mask) for c in rule.args)
                   for rule in conditional):
            return otherwise
        return self._ruled(name, conditional, otherwise, args)

    def _ruled(self, name: str, rules: list[SeccompRule], otherwise: str, args: Mapping[int, int]) -> str:
        """Which of the policy's argument rules for `name` holds, where one or more match.

        Not the first in the policy's order: libseccomp merges the rules of a syscall into a
        tree whose every level it orders by argument, operator and value (the larger value
        first: an exact ioctl request ahead of the type it belongs to, wherever each rule
        stands), and what the kernel does is what the policy means (docs/policies.md). So the
        judge asks libseccomp: these rules alone, straight from the policy model (not the
        compiler's rule table, whose mistakes the probe is there to show), as a filter of their
        own that it runs in the BPF simulator."""
        bpf = self._rule_filters.get(name)
        if bpf is None:
            bpf = self._rule_filters[name] = seccomp.rules_only_filter(name, rules)
        number = seccomp.syscall_number(name)
        assert number is not None
        value = bpf_sim.run(bpf, number, [args.get(i, 0) for i in range(6)])
        return otherwise if value & 0xFFFF0000 == bpf_sim.RET_TRAP else _action_name(value)

    @staticmethod
    def _matches(op: str, arg: int, value: int, mask: int) -> bool:
        value = _u64(value)
        return {"eq": arg == value, "ne": arg != value, "lt": arg < value, "le": arg <= value,
                "gt": arg > value, "ge": arg >= value,
                "masked_eq": arg & _u64(mask) == value}[op]

    def sc(self, why: _Why, name: str, args: Mapping[int, int] | None = None) -> _Why:
        action = self.seccomp_action(name, args)
        if why.seccomp is None:
            why.seccomp = action
        return why.need(action in ("allow", "log"), f"seccomp: {name} -> {action}")

    @property
    def seccomp_on(self) -> bool:
        return bool(self.plan.seccomp_bpf)

    # landlock ---------------------------------------------------------------------------
    def ll_rights(self, path: str) -> int:
        """Landlock rights (handled ones only) the sandbox has on `path`; all if no Landlock."""
        if self.plan.landlock is None:
            return -1
        path = os.path.realpath(path)
        rights = 0
        for rule, mask in self.rules:
            if path == rule or path.startswith(rule.rstrip("/") + "/"):
                rights |= mask
        return rights | ~self.plan.landlock.handled_fs

    def ll_allows(self, path: str, access: int) -> bool:
        return self.ll_rights(path) & access == access

    def visible(self, path: str) -> bool:
        """Whether `path` is in the sandbox's filesystem view (always, without one)."""
        if self.view is None:
            return True
        path = os.path.realpath(path)
        if any(path == h or path.startswith(h.rstrip("/") + "/") for h in self.hidden):
            return False
        return path == "/" or path.startswith("/proc/") or path == "/proc" or any(
            path == m.path or path.startswith(m.path.rstrip("/") + "/") for m in self.view)

    def ll(self, why: _Why, path: str, access: int, what: str) -> _Why:
        why.need(self.visible(path), f"view: {path} is not in the sandbox's filesystem view")
        return why.need(self.ll_allows(path, access), f"landlock: no {what} right on {path}")

    def rlimit(self, name: str, hard: bool = False) -> int | None:
        """The soft (or hard) limit the plan sets for `name` (None: not set by the policy,
        or unlimited)."""
        for rname, _number, soft_limit, hard_limit in self.plan.rlimits:
            if rname == name:
                return hard_limit if hard else soft_limit
        return None

    def effective_rlimit(self, name: str, number: int, *, hard: bool = False) -> int:
        """The soft (or hard) limit `name` the sandbox runs under: the plan's, else the one it
        inherits from the probe; RLIM_INFINITY for none."""
        for rname, _number, soft_limit, hard_limit in self.plan.rlimits:
            if rname == name:
                value = hard_limit if hard else soft_limit
                return resource.RLIM_INFINITY if value is None else value
        return resource.getrlimit(number)[1 if hard else 0]

    def file_size(self) -> int | None:
        """The largest file the sandbox may write (RLIMIT_FSIZE's soft limit): the plan's, else
        the one it inherits from the probe (None: unlimited)."""
        fsize = self.rlimit("fsize")
        if fsize is None:
            soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            fsize = None if soft == resource.RLIM_INFINITY else soft
        return fsize

    def ll_port(self, port: int, right: int) -> bool:
        ll = self.plan.landlock
        if ll is None or not ll.handled_net & right:
            return True
        return any(p == port and r & right for p, r in ll.ports)

    def scoped(self, flag: int) -> bool:
        return self.plan.landlock is not None and bool(self.plan.landlock.scoped & flag)

    # capabilities and kernel facts -------------------------------------------------------
    def has_cap(self, cap: int, *, init_ns: bool = False) -> bool:
        """The sandbox holds `cap`; with init_ns, in the initial user namespace too."""
        return bool(self.caps & (1 << cap)) and not (init_ns and "user" in self.ns)

    def ptrace_access(self, why: _Why, *, attach: bool) -> _Why:
        """The checks of ptrace_may_access() against the parent (a process outside)."""
        why.need(self.plan.landlock is None, "landlock: no ptrace access to a process outside "
                                             "the sandbox's domain")
        why.need("user" not in self.ns, "user namespace: the parent is in an ancestor user "
                                        "namespace, where the sandbox has no CAP_SYS_PTRACE")
        why.need(self.host.parent_caps & ~self.caps == 0 or self.has_cap(_CAP_SYS_PTRACE),
                 "capabilities: the parent holds capabilities the sandbox dropped")
        scope = self.host.sysctl.get("ptrace_scope")
        if attach and scope:
            why.need(scope == 1 and self.has_cap(_CAP_SYS_PTRACE, init_ns=True),
                     f"yama: ptrace_scope = {scope}")
        return why
