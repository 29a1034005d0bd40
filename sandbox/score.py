"""`CleanCoin-sandbox score`: an exposure score per policy, in the spirit of
`systemd-analyze security`.

Every check has a weight and says how exposed the policy leaves the component on that point,
from 0 (closed) to 1 (open). The exposure is 10 times the weighted mean: 0.0 is everything
closed, 10.0 is no sandbox at all. The weights say what matters most for a component that may
be taken over (docs/audit.md lists them; `CHECKS` is the table). A CI job gates on it with
`--threshold`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import seccomp, syscall_groups
from .model import Policy

_DANGEROUS_CLASSES: dict[str, tuple[int, frozenset[str]]] = {
    "run other programs (execve, execveat)": (400, frozenset({"execve", "execveat"})),
    "read or write other processes (ptrace, process_vm_*, pidfd_getfd, kcmp)":
        (800, frozenset({"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp"})),
    "mounts and the root directory (mount, pivot_root, chroot, ...)":
        (800, frozenset({"mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsmount",
                         "fsconfig", "fspick", "mount_setattr", "pivot_root", "chroot"})),
    "new or other namespaces (unshare, setns)": (600, frozenset({"unshare", "setns"})),
    "code in the kernel (bpf, perf_event_open, modules, kexec)":
        (1000, frozenset({"bpf", "perf_event_open", "init_module", "finit_module", "delete_module",
                          "kexec_load", "kexec_file_load"})),
    "io_uring and userfaultfd": (400, frozenset({"io_uring_setup", "io_uring_enter",
                                                 "io_uring_register", "userfaultfd"})),
    "kernel keyrings": (200, frozenset({"keyctl", "add_key", "request_key"})),
    "the machine (reboot, swap, I/O ports, accounting, quotas)":
        (600, frozenset({"reboot", "swapon", "swapoff", "iopl", "ioperm", "acct", "quotactl",
                         "lookup_dcookie"})),
    "execution domain (personality)": (100, frozenset({"personality"})),
    "files by handle (name_to_handle_at, open_by_handle_at)":
        (300, frozenset({"name_to_handle_at", "open_by_handle_at"})),
    "the clock (settimeofday, clock_settime, adjtimex)":
        (200, frozenset({"settimeofday", "clock_settime", "clock_adjtime", "adjtimex"})),
}

#: Directories whose contents belong to the host or its users: reading them is exposure.
_SENSITIVE = ("/etc", "/home", "/root", "/proc", "/sys", "/var", "/run", "/dev", "/boot")


@dataclass(frozen=True)
class Check:
    id: str
    description: str
    weight: int
    exposure: Callable[[Policy], float]     # 0.0 closed .. 1.0 open


@dataclass(frozen=True)
class Finding:
    id: str
    description: str
    weight: int
    exposed: float            # 0..1
    contribution: float       # to the 0..10 score


@dataclass
class Score:
    policy: str
    exposure: float
    level: str
    findings: list[Finding]

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "exposure": self.exposure, "level": self.level,
                "checks": [asdict(f) for f in self.findings]}

    def to_text(self) -> str:
        lines = [f"{'':2}{'check':<74} {'weight':>6} {'open':>5} {'score':>6}"]
        for f in sorted(self.findings, key=lambda f: (-f.contribution, f.id)):
            mark = "✓" if f.exposed == 0 else "✗" if f.exposed == 1 else "~"
            lines.append(f"{mark:2}{f.description[:74]:<74} {f.weight:>6} {f.exposed:>5.2f} {f.contribution:>6.2f}")
        lines.append(f"Overall exposure level for policy '{self.policy}': {self.exposure:.1f} {self.level}")
        return "\n".join(lines)


def _allows(policy: Policy, names: frozenset[str]) -> bool:
    # What the filter lets run (model.Policy.may_run), not the allow list: under a log default
    # a denied or unlisted name runs; a listed one that an unconditional rule refuses does not.
    return any(policy.may_run(name) for name in names)


def _known_syscalls() -> int:
    names: set[str] = set()
    for group in syscall_groups.GROUPS:
        names |= syscall_groups.expand_group(group)
    return max(1, sum(1 for n in names if seccomp.syscall_number(n) is not None))


def _surface(policy: Policy) -> float:
    if not policy.seccomp.enabled:
        return 1.0
    if policy.seccomp.default_action == "log":
        return 1.0          # every syscall runs, only logged
    runs = policy.reachable_syscalls | policy.allowed_by_argument_rule
    return min(1.0, len(runs) / _known_syscalls())


def _default_action(policy: Policy) -> float:
    action = policy.seccomp.default_action
    return 1.0 if action == "log" else 0.2 if action.startswith("errno:") else 0.0


def _processes(policy: Policy) -> float:
    if _allows(policy, frozenset({"fork", "vfork"})):
        return 1.0
    # Only a rule that refuses *every* clone without CLONE_THREAD (0x10000) keeps processes
    # out: one condition, on the flags, testing no bit but CLONE_THREAD. A mask of 0x10001
    # refused only clones with an even exit signal, and fork (SIGCHLD, 17) went through
    # while the score said "no processes".
    clone_rule = any(r.syscall == "clone" and r.action not in ("allow", "log") and len(r.args) == 1
                     and all(c.index == 0 and c.op == "masked_eq" and c.value == 0
                             and not c.mask & ~0x10000 for c in r.args)
                     for r in policy.seccomp.rules)
    return 0.0 if clone_rule or not _allows(policy, frozenset({"clone"})) else 0.5


def _families(policy: Policy) -> float:
    if not _allows(policy, frozenset({"socket"})):
        return 0.0
    weights = {"inet": 0.3, "inet6": 0.3, "netlink": 0.2, "packet": 0.8, "unix": 0.0}
    total = 0.0
    for fam in policy.network.socket_families:
        total += weights.get(fam.name, 0.1) + (0.5 if fam.raw else 0.0)
    return min(1.0, total)


def _inet(policy: Policy) -> bool:
    return any(f.name in ("inet", "inet6") for f in policy.network.socket_families) and not policy.namespaces.net


def _bind(policy: Policy) -> float:
    # A filter that refuses bind(2) (the node's, since 12-07: its listeners are bound before
    # it confines itself) listens on no port, whatever bind_tcp says.
    if not _inet(policy) or not policy.may_run("bind"):
        return 0.0
    ports = policy.network.bind_tcp
    return 1.0 if ports is None else min(1.0, 0.1 * len(ports))


def _connect(policy: Policy) -> float:
    if not _inet(policy) or not policy.may_run("connect"):
        return 0.0
    ports = policy.network.connect_tcp
    return 1.0 if ports is None else min(1.0, 0.1 * len(ports))


def _host_network(policy: Policy) -> float:
    if policy.namespaces.net:
        return 0.0
    return 1.0 if _inet(policy) else 0.3


def _written(policy: Policy, key: str) -> list[str]:
    return ["/" + g.value.strip("/") if g.value.startswith("/") else g.value
            for g in getattr(policy.filesystem, key)]


def _writes(policy: Policy) -> float:
    grants = [p for p in _written(policy, "write") if p not in ("/dev/null",)]
    tmpfs = set(_written(policy, "tmpfs"))
    if "/" in grants:
        return 1.0
    host = [p for p in grants if p not in tmpfs]
    return min(1.0, 0.15 * len(host))


def _reads(policy: Policy) -> float:
    grants = _written(policy, "read") + _written(policy, "write") + _written(policy, "execute")
    if "/" in grants:
        return 1.0
    hit = {root for root in _SENSITIVE for p in grants if p == root}
    inside = sum(1 for p in grants for root in _SENSITIVE if p.startswith(root + "/"))
    return min(1.0, 0.3 * len(hit) + 0.03 * inside)


def _executes(policy: Policy) -> float:
    return min(1.0, 0.5 * len(policy.filesystem.execute))


def _caps(policy: Policy) -> float:
    names = {g.value for g in policy.process.capabilities}
    if names & {"sys_admin", "sys_ptrace", "sys_module", "dac_override", "dac_read_search", "setuid"}:
        return 1.0
    return min(1.0, len(names) / 3)


def _environment(policy: Policy) -> float:
    patterns = policy.process.environment
    if any(p in ("*", "?*") for p in patterns):
        return 1.0
    return min(1.0, 0.05 * len(patterns))


def _fds(policy: Policy) -> float:
    """Descriptors kept beyond 0, 1 and 2: whatever the launcher had open at those numbers (a
    CI job's token file, a socket) is the component's, past every path rule."""
    return min(1.0, 0.5 * sum(1 for fd in policy.process.fds if fd > 2))


def _rlimit_unset(name: str) -> Callable[[Policy], float]:
    def check(policy: Policy) -> float:
        limit = {r.name: r for r in policy.process.rlimits}.get(name)
        return 1.0 if limit is None or limit.hard is None else 0.0
    return check


def _core(policy: Policy) -> float:
    limit = {r.name: r for r in policy.process.rlimits}.get("core")
    return 0.0 if limit is not None and limit.hard == 0 else 1.0


def _level(mechanism: str) -> Callable[[Policy], float]:
    def check(policy: Policy) -> float:
        value = policy.compatibility.level(mechanism).value
        return {"hard": 0.0, "soft": 0.4, "best_effort": 1.0}[value]
    return check


def _flag(getter: Callable[[Policy], bool]) -> Callable[[Policy], float]:
    return lambda policy: 1.0 if getter(policy) else 0.0


CHECKS: tuple[Check, ...] = (
    Check("seccomp", "no syscall filter at all", 1500, _flag(lambda p: not p.seccomp.enabled)),
    Check("seccomp-default", "a syscall not allowed is let through (log) or only fails (errno)",
          300, _default_action),
    Check("seccomp-surface", "share of the kernel's syscalls the filter allows", 600, _surface),
    *(Check(f"syscalls-{i}", f"dangerous syscalls allowed: {text}", weight,
            (lambda names: lambda p: 1.0 if _allows(p, names) else 0.0)(names))
      for i, (text, (weight, names)) in enumerate(_DANGEROUS_CLASSES.items())),
    Check("processes", "may start processes (fork, vfork, clone without CLONE_THREAD)", 200, _processes),
    Check("socket-families", "socket families beyond unix (inet, netlink, packet, raw ...)", 600, _families),
    Check("tcp-bind", "TCP ports it may listen on (any: 1.0)", 400, _bind),
    Check("tcp-connect", "TCP ports it may connect to (any: 1.0)", 300, _connect),
    Check("network-namespace", "shares the host's network (no network namespace)", 600, _host_network),
    Check("user-namespace", "no user namespace", 200, _flag(lambda p: not p.namespaces.user)),
    Check("mount-namespace", "no mount namespace: the host's whole tree is in view", 600,
          _flag(lambda p: not p.namespaces.mount)),
    Check("pid-namespace", "no pid namespace: the host's processes are in view", 300,
          _flag(lambda p: not p.namespaces.pid)),
    Check("ipc-namespace", "no ipc namespace: the host's System V IPC", 100, _flag(lambda p: not p.namespaces.ipc)),
    Check("uts-namespace", "no uts namespace: may set the host's name", 50, _flag(lambda p: not p.namespaces.uts)),
    Check("fs-write", "host paths it may write (beyond /dev/null and its private tmpfs)", 500, _writes),
    Check("fs-read", "reads the root, or host and user directories (/etc, /home, /proc ...)", 800, _reads),
    Check("fs-execute", "paths it may execute", 300, _executes),
    Check("scope-abstract-unix", "may connect to abstract unix sockets outside", 200,
          _flag(lambda p: not p.scopes.abstract_unix_socket)),
    Check("scope-signal", "may signal processes outside", 200, _flag(lambda p: not p.scopes.signal)),
    Check("capabilities", "keeps capabilities", 1000, _caps),
    Check("dumpable", "dumpable: same-user ptrace and core dumps", 500, _flag(lambda p: p.process.dumpable)),
    Check("mdwe", "may map memory writable and executable", 200,
          _flag(lambda p: not p.process.memory_deny_write_execute)),
    Check("stdio", "inherits the launcher's terminal (stdio inherit)", 300,
          _flag(lambda p: p.process.stdio == "inherit")),
    Check("session", "stays in the launcher's session (TIOCSTI, job control)", 200,
          _flag(lambda p: not p.process.new_session)),
    Check("die-with-parent", "outlives its parent", 50, _flag(lambda p: not p.process.die_with_parent)),
    Check("environment", "variables kept from the parent's environment", 300, _environment),
    Check("fds", "descriptors kept from the launcher beyond 0, 1, 2", 300, _fds),
    Check("rlimit-core", "may write core files", 200, _core),
    Check("rlimit-nofile", "no limit on open files", 50, _rlimit_unset("nofile")),
    Check("rlimit-nproc", "no limit on processes and threads", 100, _rlimit_unset("nproc")),
    Check("rlimit-fsize", "no limit on file size", 50, _rlimit_unset("fsize")),
    Check("rlimit-as", "no limit on address space", 50, _rlimit_unset("as")),
    Check("compat-landlock", "Landlock may be dropped on an older kernel (soft 0.4, best_effort 1)",
          400, _level("landlock")),
    Check("compat-seccomp", "the filter may be dropped on an older kernel", 400, _level("seccomp")),
    Check("compat-namespaces", "namespaces may be dropped on an older kernel", 200, _level("namespaces")),
    Check("landlock-abi", "accepts a Landlock ABI older than 6 (no scopes)", 100,
          lambda p: 1.0 if p.compatibility.landlock_min_abi < 6 else 0.0),
)

_LEVELS = ((0.0, "PERFECT"), (2.0, "SAFE"), (5.0, "OK"), (7.0, "MEDIUM"), (8.5, "EXPOSED"))


def level_name(exposure: float) -> str:
    """systemd-analyze's words for an exposure: PERFECT, SAFE, OK, MEDIUM, EXPOSED, UNSAFE."""
    if exposure <= 0.0:
        return "PERFECT"
    for limit, name in _LEVELS[1:]:
        if exposure < limit:
            return name
    return "UNSAFE"


def score(policy: Policy) -> Score:
    """Run every check against the policy."""
    total = sum(c.weight for c in CHECKS)
    findings = []
    for check in CHECKS:
        exposed = max(0.0, min(1.0, float(check.exposure(policy))))
        findings.append(Finding(check.id, check.description, check.weight, round(exposed, 3),
                                round(10.0 * check.weight * exposed / total, 3)))
    exposure = round(sum(f.contribution for f in findings), 1)
    return Score(policy.name, exposure, level_name(exposure), findings)
