"""The validated policy model. Built by `policy_loader`, read by everything after it.

Values may still hold `${variable}` placeholders; `plan_compiler.compile_plan` fills them at launch.
Every grant keeps the `SourceRef` it came from, so errors at launch and `explain` can point
at the line that asked for it.
"""

from __future__ import annotations

import enum
from dataclasses import field

from .errors import SourceRef
from .mechanisms import MECHANISMS, Status  # noqa: F401 - part of the model's vocabulary
from .records import Record, record


class Level(enum.Enum):
    """How much of a mechanism must be in force for the component to start.

    Modelled on rust-landlock's compatibility levels.
    """

    HARD = "hard"            # everything the policy asks for, or refuse to start
    SOFT = "soft"            # the mechanism must exist; rights this kernel lacks are dropped
    BEST_EFFORT = "best_effort"  # whatever the kernel offers, possibly nothing


NAMESPACES = ("user", "mount", "pid", "net", "ipc", "uts")


@record
class Grant(Record):
    """One allowed thing (a path, port, family, capability or syscall) and why."""

    value: str
    where: SourceRef
    reason: str | None = None
    optional: bool = False


@record
class Namespaces(Record):
    """The namespaces the component enters, and its hostname."""

    # On unless a policy turns them off (all off needs a reason): bubblewrap's --unshare-all
    # but the network, which is a grant of its own.
    user: bool = True
    mount: bool = True
    pid: bool = True
    net: bool = False
    ipc: bool = True
    uts: bool = True
    private_tmp: bool = False
    hostname: str = "sandbox"
    reason: str | None = None     # why a policy enters no namespace at all

    def entered(self) -> tuple[str, ...]:
        """Names of the namespaces the child enters, in the kernel's order."""
        return tuple(n for n in NAMESPACES if getattr(self, n))


@record
class Filesystem(Record):
    """The paths it may read, write and execute, and the parts of its view hidden or fresh."""

    read: tuple[Grant, ...] = ()
    write: tuple[Grant, ...] = ()
    execute: tuple[Grant, ...] = ()
    # Covered by an empty read-only tmpfs in the component's mount namespace. Landlock rules
    # are hierarchical and cannot take a subdirectory out of a granted one; a mount can.
    hide: tuple[Grant, ...] = ()
    # A fresh, empty tmpfs at each path: writes there never reach the host, and the confined
    # side has no host directory to swap for a symlink.
    tmpfs: tuple[Grant, ...] = ()


@record
class SocketFamily(Record):
    """An address family it may create sockets of, and why."""

    name: str            # "unix", "inet", ...
    where: SourceRef
    raw: bool = False    # inet/inet6: SOCK_RAW too
    reason: str | None = None
    datagram: bool = True  # inet/inet6: SOCK_DGRAM (UDP) too; false: stream (TCP) only
    socketpair_only: bool = False  # unix: socketpair(2) only, socket(2) answers EAFNOSUPPORT


@record
class Network(Record):
    """TCP ports it may bind and connect to, and its socket families."""

    # None means TCP is not restricted by Landlock at all ("any").
    bind_tcp: tuple[Grant, ...] | None = ()
    connect_tcp: tuple[Grant, ...] | None = ()
    socket_families: tuple[SocketFamily, ...] = ()


@record
class Scopes(Record):
    """What outside the sandbox is out of reach (Landlock scopes)."""

    abstract_unix_socket: bool = True
    signal: bool = True


@record
class Rlimit(Record):
    """One resource limit: soft and hard (None: unlimited)."""

    name: str
    soft: int | None       # None: unlimited
    hard: int | None
    where: SourceRef


@record
class Process(Record):
    """Capabilities, environment, descriptors, rlimits and the other process settings."""

    capabilities: tuple[Grant, ...] = ()
    dumpable: bool = False
    no_new_privs: bool = True
    new_session: bool = True
    die_with_parent: bool = True
    environment: tuple[str, ...] = ()
    set_environment: tuple[tuple[str, str], ...] = ()
    fds: tuple[int, ...] = (0, 1, 2)
    rlimits: tuple[Rlimit, ...] = ()
    # "pipe": stdin /dev/null, stdout and stderr through pipes the launcher reads; "null": all
    # three /dev/null; "inherit": the launcher's own (a terminal there is the child's too).
    stdio: str = "pipe"
    memory_deny_write_execute: bool = True      # PR_SET_MDWE: no W+X memory
    # why it is dumpable, may map W+X memory, inherits stdio or keeps the launcher's session
    reason: str | None = None


@record
class ArgCondition(Record):
    """A condition on one syscall argument: `value` compared by `op` (masked_eq: under `mask`)."""

    index: int
    op: str              # eq ne lt le gt ge masked_eq
    value: int
    mask: int = 0        # masked_eq only


@record
class SeccompRule(Record):
    """A seccomp rule: one syscall, its action, and the argument conditions it needs."""

    syscall: str
    action: str          # allow, kill_process, log, errno:NAME
    args: tuple[ArgCondition, ...]
    where: SourceRef
    reason: str | None = None
    # An errno refusal the denial log leaves out (`log = false`): a known, harmless refusal
    # (SQLite's fchown as root) whose lines would drown the ones worth reading.
    logged: bool = True


@record
class Seccomp(Record):
    """The syscall filter: default action, allowed and denied names, rules."""

    default_action: str = "kill_process"
    allow: tuple[Grant, ...] = ()       # syscall names and @groups
    deny: tuple[Grant, ...] = ()        # removed from `allow` after groups are expanded
    rules: tuple[SeccompRule, ...] = ()
    enabled: bool = True
    reason: str | None = None     # why the filter is off


@record
class Compatibility(Record):
    """How much of each mechanism must be in force for the component to start."""

    levels: tuple[tuple[str, Level], ...] = tuple((m, Level.HARD) for m in MECHANISMS)
    landlock_min_abi: int = 1

    def level(self, mechanism: str) -> Level:
        """The compatibility level of one mechanism (hard unless the policy says otherwise)."""
        return dict(self.levels).get(mechanism, Level.HARD)


@record
class Policy(Record):
    """A whole, validated policy: the file and everything it extends, merged."""

    name: str
    description: str
    files: tuple[str, ...]
    namespaces: Namespaces = field(default_factory=Namespaces)
    filesystem: Filesystem = field(default_factory=Filesystem)
    network: Network = field(default_factory=Network)
    scopes: Scopes = field(default_factory=Scopes)
    process: Process = field(default_factory=Process)
    seccomp: Seccomp = field(default_factory=Seccomp)
    compatibility: Compatibility = field(default_factory=Compatibility)
    allowed_syscalls: frozenset[str] = frozenset()   # groups expanded, denials removed

    @property
    def refused_by_rule(self) -> frozenset[str]:
        """Names that an unconditional rule answers with an errno or a kill: never reached,
        listed or not (SQLite's fchown as root, the wallet's unused calls). A `log` rule lets
        the call run: until 12-07 it counted here, and `explain` showed a logged call refused."""
        return frozenset(r.syscall for r in self.seccomp.rules
                         if not r.args and r.action not in ("allow", "log"))

    @property
    def allowed_by_rule(self) -> frozenset[str]:
        """Names that an unconditional `allow` or `log` rule lets run, listed or not (a rule is
        not affected by `deny`)."""
        return frozenset(r.syscall for r in self.seccomp.rules
                         if not r.args and r.action in ("allow", "log"))

    @property
    def reachable_syscalls(self) -> frozenset[str]:
        """What the component can call whatever the arguments: `allowed_syscalls` less
        `refused_by_rule`, plus `allowed_by_rule` (the loader keeps one rule without args per
        syscall and no other rule beside it: sandbox/rule_precedence.py). Calls that argument
        rules let through in part are not in it."""
        return (self.allowed_syscalls - self.refused_by_rule) | self.allowed_by_rule

    @property
    def allowed_by_argument_rule(self) -> frozenset[str]:
        """Names outside `reachable_syscalls` that an `allow` or `log` rule with arguments lets
        run for some arguments."""
        return frozenset(r.syscall for r in self.seccomp.rules
                         if r.args and r.action in ("allow", "log")) - self.reachable_syscalls

    def may_run(self, name: str) -> bool:
        """Whether the filter lets `name` run for some arguments: no filter; reachable; let
        through by an argument rule; or, unless an unconditional rule refuses it, by a `log`
        default (a denied or unlisted name included). `check`'s count, `run`'s execve
        pre-check and `score` ask this, as the filter compiles (plan_compiler.py): until 12-07
        they read the allow list, and under a log default `score` marked ptrace, mount and bpf
        as not allowed while every one of them ran."""
        if not self.seccomp.enabled or name in self.reachable_syscalls:
            return True
        if name in self.allowed_by_argument_rule:
            return True
        return self.seccomp.default_action == "log" and name not in self.refused_by_rule
