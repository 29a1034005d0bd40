"""A policy as systemd unit settings: a drop-in for a service that runs the component.

Each setting is derived from the policy, and `MAPPING` says how well it matches (written to
docs/audit.md): "same" where systemd enforces what the policy says, "stricter" where systemd's
setting goes a little further than the policy (safe for a component that works under the
policy), "near" where systemd has only something close. What systemd cannot express is
returned in `Unit.notes` and written into the file as comments, never silently dropped.

Paths and ports are filled in from the launch variables (systemd has no `${datadir}`): the
same `--var` and `--datadir` as `run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import paths, seccomp, syscall_groups
from ..errors import PolicyError, SourceRef
from ..filter_spec import filter_spec
from ..model import Grant, Policy
from ..plan_compiler import _substituted  # noqa: PLC2701 - the same substitution as a launch
from ..policy_refs import require_values
from ..variables import default_values, substitute
from .own_network import serves_sockets_made_before

#: Directive -> (how well it matches, where it comes from). The table docs/audit.md shows.
MAPPING: dict[str, tuple[str, str]] = {
    "User=": ("near", "the policy runs as the launching user; the unit names one (--user)"),
    "NoNewPrivileges=": ("same", "process.no_new_privs (always on)"),
    "CapabilityBoundingSet=, AmbientCapabilities=": ("same", "process.capabilities"),
    "SecureBits=": ("same", "securebits locked by the capability step"),
    "PrivateUsers=": ("same", "namespaces.user"),
    "PrivateNetwork=, IPAddressDeny=any": ("same", "namespaces.net (or no inet family)"),
    "PrivateIPC=": ("same", "namespaces.ipc"),
    "ProtectHostname=": ("same", "namespaces.uts"),
    "PrivateMounts=": ("same", "namespaces.mount"),
    "ProtectProc=invisible, ProcSubset=pid": ("near", "namespaces.pid: other processes unseen"),
    "TemporaryFileSystem=/:ro, BindReadOnlyPaths=, BindPaths=": (
        "same", "the filesystem view: an empty root with the read, execute and write grants "
                "(Landlock's grants: written with or without namespaces.mount)"),
    "ProtectSystem=strict, ReadWritePaths=": ("same", "filesystem.write (only these are writable)"),
    "NoExecPaths=": ("same", "write grants without execute and the tmpfs mounts are noexec in the view "
                             "(nothing written there runs or is mapped executable)"),
    "ProtectHome=": ("stricter", "home directories hidden unless a grant is there (then tmpfs + binds)"),
    "InaccessiblePaths=": ("same", "filesystem.hide"),
    "PrivateTmp=": ("same", "a tmpfs on /tmp (filesystem.tmpfs, namespaces.private_tmp)"),
    "PrivateDevices=, DevicePolicy=closed": ("same", "no device granted beyond null, zero, full, random, urandom"),
    "ProtectKernelTunables=, ProtectKernelModules=, ProtectKernelLogs=, ProtectControlGroups=,"
    " ProtectClock=": ("same", "no grant under /proc/sys, /sys; @module, syslog and @clock not allowed"),
    "SystemCallFilter=": ("near", "what the filter lets run; systemd adds its @default group (execve ...)"),
    "SystemCallErrorNumber=": ("same", "seccomp.default_action errno:NAME"),
    "SystemCallArchitectures=native": ("same", "foreign architectures are killed"),
    "RestrictAddressFamilies=": ("same", "network.socket_families"),
    "SocketBindAllow=, SocketBindDeny=any": ("same", "network.bind_tcp (cgroup BPF)"),
    "RestrictNamespaces=yes": ("same", "unshare and setns denied, clone with namespace flags refused"),
    "LockPersonality=": ("same", "personality denied"),
    "MemoryDenyWriteExecute=": ("same", "process.memory_deny_write_execute"),
    "RestrictSUIDSGID=": ("same", "every filter refuses the set-user-ID and set-group-ID bits"),
    "RestrictRealtime=": ("stricter", "not in the policy; no component needs it"),
    "KeyringMode=private, UMask=0077, RemoveIPC=": ("stricter", "keyrings denied; files private"),
    "Limit*=": ("same", "process.rlimits"),
    "Environment=": ("same", "process.set_environment (systemd starts with a clean environment)"),
    "StandardInput=null": ("same", "process.stdio pipe or null: no terminal"),
}

_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_HOMES = ("/home", "/root", "/run/user")
_RLIMITS = {"as": "AS", "core": "CORE", "cpu": "CPU", "data": "DATA", "fsize": "FSIZE",
            "memlock": "MEMLOCK", "msgqueue": "MSGQUEUE", "nice": "NICE", "nofile": "NOFILE",
            "nproc": "NPROC", "rss": "RSS", "rtprio": "RTPRIO", "rttime": "RTTIME",
            "sigpending": "SIGPENDING", "stack": "STACK"}


@dataclass
class Unit:
    text: str
    notes: list[str] = field(default_factory=list)


#: Characters a unit file reads as syntax in a path list: quotes and backslashes are unquoted
#: and unescaped, and ':' separates a bind's source from its destination (BindPaths=) or a
#: path from its mount options (TemporaryFileSystem=). The path could be written escaped, but
#: each directive unescapes differently; the export refuses rather than guess.
_PATH_SYNTAX = frozenset("\\\"':")


def _paths(grants: tuple[Grant, ...], values: Mapping[str, str]) -> list[str]:
    """The grants' paths after variables, each one systemd can be given exactly."""
    out = []
    for grant in grants:
        path = _substituted(grant, values)
        if bad := sorted(set(path) & _PATH_SYNTAX):
            raise PolicyError(grant.where, f"'{path}' holds {' '.join(repr(c) for c in bad)}: a "
                                           "systemd unit reads it as syntax (quoting, escapes, "
                                           "':' starts a bind destination or mount options), so "
                                           "the unit would grant another path; rename the path")
        out.append(path)
    return out


def _planted_links(policy: Policy, values: Mapping[str, str], writes: list[str],
                   tmpfs: list[str]) -> list[str]:
    """Refuse a grant that runs through a symlink in a directory the service can write, as
    `run` does (paths.resolve), and note the grants where one could be planted later.

    systemd follows symlinks when it sets the service up, at every start: a link the service
    planted in its datadir (`state -> /`) would be bound and made writable. One there now is
    refused with run's message; one planted after the export cannot be refused by a unit."""
    roots = [w for w in writes if w not in tmpfs]
    # Real paths, as the plan holds them: a datadir reached through an operator's link
    # (~/.cleancoin -> /data/cc) is still the directory the service writes.
    real_roots = [os.path.realpath(r) for r in roots]
    fs = policy.filesystem
    nested = []
    for grant in (*fs.write, *fs.read, *fs.execute, *fs.hide):
        path = _substituted(grant, values)
        try:
            paths.resolve(path, real_roots)
        except paths.SymlinkRefused as exc:
            raise PolicyError(grant.where, str(exc)) from None
        except OSError:
            pass                       # a loop or an unreadable directory: the launch says so
        if any(path != root and paths.beneath(path, root) for root in roots) and path not in tmpfs:
            nested.append(path)
    if not nested:
        return []
    return [f"grants inside a directory the service can write ({', '.join(dict.fromkeys(nested))}): "
            "systemd follows symlinks when it starts the service, so one the service plants there "
            "between two starts is followed (run refuses it at every launch); keep such grants out "
            "of writable directories where you can"]


def _specifiers(text: str) -> str:
    """`text` with systemd's '%' specifiers escaped: a unit expands %E to /etc, %h to a home
    directory, in paths, Environment= and Description= alike."""
    return text.replace("%", "%%")


def _quote(path: str) -> str:
    """A path as one word of a unit's path list: specifiers escaped, quoted if it has spaces
    (systemd splits on whitespace). `_paths` has refused the characters quoting would change."""
    path = _specifiers(path)
    return f'"{path}"' if any(c.isspace() for c in path) else path


def _environment(name: str, value: str) -> str:
    """One Environment= assignment: systemd unquotes, C-unescapes and expands specifiers in
    it, so a '"' in the value would end the word and start another assignment."""
    escaped = _specifiers(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{name}={escaped}"'


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _limit(value: int | None) -> str:
    return "infinity" if value is None else str(value)


def export_unit(policy: Policy, variables: Mapping[str, str], user: str = "cleancoin",
                exec_start: str | None = None) -> Unit:
    """The drop-in (or, with `exec_start`, a whole service unit) for the policy."""
    values = {**default_values(), **variables}
    require_values(policy, values)
    notes: list[str] = []
    lines: list[str] = []

    def put(directive: str, comment: str = "") -> None:
        if comment:
            lines.append(f"# {comment}")
        lines.append(directive)

    ns, fs, net, proc, sc = policy.namespaces, policy.filesystem, policy.network, policy.process, policy.seccomp
    # What the filter lets run (Policy.may_run), not the allow list: until 12-08 an allow rule
    # for personality or a log default read as "not allowed" here (LockPersonality=yes ...).
    guarded = syscall_groups.expand_group("@module") | syscall_groups.expand_group("@clock")
    runs = {n for n in guarded | {"syslog", "personality"} if policy.may_run(n)}
    put(f"User={user}", "The component runs as this unprivileged user (the policy runs it as whoever starts it).")
    put("NoNewPrivileges=yes")
    caps = " ".join("CAP_" + g.value.upper() for g in proc.capabilities)
    put(f"CapabilityBoundingSet={caps}")
    put(f"AmbientCapabilities={caps}")
    put("SecureBits=noroot noroot-locked no-setuid-fixup no-setuid-fixup-locked keep-caps-locked")

    # Namespaces
    if ns.user:
        put("PrivateUsers=yes")
    inet = any(f.name in ("inet", "inet6") for f in net.socket_families)
    own_net = serves_sockets_made_before(policy)
    if own_net:
        notes.append("namespaces.net: the component enters its own network namespace itself, after "
                     "binding its listeners, which keep the unit's network: no PrivateNetwork= or "
                     "IPAddressDeny= here (its listeners would be unreachable)")
    elif ns.net:
        put("PrivateNetwork=yes")
    if (ns.net and not own_net) or not inet:
        put("IPAddressDeny=any")
    if ns.ipc:
        put("PrivateIPC=yes")
    if ns.uts:
        put("ProtectHostname=yes")
    if ns.mount:
        put("PrivateMounts=yes")
    if ns.pid:
        put("ProtectProc=invisible")
        put("ProcSubset=pid")
        notes.append("namespaces.pid: systemd 252 has no pid namespace for a service; other "
                     "processes are hidden in /proc (ProtectProc=invisible) but can still be signalled "
                     "by the same user (the policy's Landlock signal scope has no systemd form)")
    elif policy.scopes.signal:
        notes.append("scopes.signal: processes outside the service can be signalled by the same "
                     "user (the policy's Landlock signal scope has no systemd form)")

    # Filesystem
    reads = _paths(fs.read, values)
    writes = _paths(fs.write, values)
    executes = _paths(fs.execute, values)
    hides = _paths(fs.hide, values)
    tmpfs = _paths(fs.tmpfs, values) + (["/tmp"] if ns.private_tmp else [])
    notes.extend(_planted_links(policy, values, writes, tmpfs))
    optional = {_substituted(g, values) for g in (*fs.read, *fs.write, *fs.execute, *fs.hide) if g.optional}

    def binds(paths: list[str]) -> str:
        return " ".join(_quote(("-" if p in optional else "") + p) for p in dict.fromkeys(paths))

    # The view stands for Landlock's grants as much as for the mount namespace: without it a
    # policy with namespaces.mount = false (Landlock alone) became a unit that reads the
    # whole host read-only, and said nothing.
    lines.append("# The filesystem view: an empty read-only root holding only the grants.")
    put("TemporaryFileSystem=/:ro")
    put("MountAPIVFS=yes")
    ro = [p for p in reads + executes if p not in writes and p not in _DEVICES and p not in tmpfs]
    if ro:
        put(f"BindReadOnlyPaths={binds(ro)}")
    rw = [p for p in writes if p not in _DEVICES and p not in tmpfs]
    if rw:
        put(f"BindPaths={binds(rw)}")
    put("ProtectSystem=strict")
    rw_paths = [p for p in writes if p not in _DEVICES and p not in tmpfs]
    if rw_paths:
        put(f"ReadWritePaths={binds(rw_paths)}")
    # The view mounts a written-to grant (unless it is an execute grant too) and every tmpfs
    # noexec (rootfs._attrs): nothing the component writes runs, nor is mapped executable.
    # systemd binds and its tmpfs are executable: until 12-07 the unit of a policy allowing
    # execve (examples/program) ran a program the service had written into its datadir.
    noexec = [p for p in writes if p not in _DEVICES and p not in executes] + tmpfs
    if noexec:
        put(f"NoExecPaths={binds(noexec)}")
    if sc.enabled and (policy.may_run("execve") or policy.may_run("execveat")) and reads:
        notes.append("execve of files in read-only grants: the policy's Landlock refuses it (no execute "
                     "right), the unit does not (NoExecPaths= there would also refuse the executable "
                     "mappings of libraries, which Landlock allows)")
    homes = [p for p in reads + writes + executes if _under(p, _HOMES)]
    put("ProtectHome=tmpfs" if homes else "ProtectHome=yes")
    if hides:
        put(f"InaccessiblePaths={binds(hides)}")
    if "/tmp" in tmpfs:
        put("PrivateTmp=yes")
    for path in tmpfs:
        if path != "/tmp":
            put(f"TemporaryFileSystem={_quote(path)}")
    devices = [p for p in reads + writes + executes if _under(p, ("/dev",))]
    if all(p in _DEVICES for p in devices):
        put("PrivateDevices=yes")
        put("DevicePolicy=closed")
    else:
        notes.append(f"device grants {', '.join(p for p in devices if p not in _DEVICES)}: "
                     "PrivateDevices= left off; add DeviceAllow= lines for them")
    if not any(_under(p, ("/proc/sys", "/sys")) for p in writes):
        put("ProtectKernelTunables=yes")
    put("ProtectControlGroups=yes")
    if not runs & syscall_groups.expand_group("@module"):
        put("ProtectKernelModules=yes")
    if "syslog" not in runs and not any(_under(p, ("/dev/kmsg", "/proc/kmsg")) for p in reads + writes):
        put("ProtectKernelLogs=yes")
    if not runs & syscall_groups.expand_group("@clock"):
        put("ProtectClock=yes")

    # Network
    families = " ".join("AF_" + f.name.upper() for f in net.socket_families) or "none"
    put(f"RestrictAddressFamilies={families}")
    raw = [f.name for f in net.socket_families if f.raw]
    if not raw and inet:
        notes.append("socket types: the policy allows inet and inet6 stream and datagram sockets "
                     "only; systemd cannot restrict the type (raw sockets still need CAP_NET_RAW, "
                     "which the unit does not keep)")
    if net.bind_tcp is not None and inet:
        for grant in net.bind_tcp:
            put(f"SocketBindAllow=tcp:{substitute(grant.value, values, grant.where)}")
        put("SocketBindDeny=any")
    if net.connect_tcp is not None and inet and not ns.net:
        # An empty list too: "no TCP connect at all" is the policy's word, not the unit's.
        ports = ", ".join(g.value for g in net.connect_tcp) or "none"
        notes.append(f"network.connect_tcp ports ({ports}): systemd restricts addresses "
                     "(IPAddressAllow=), not ports; TCP connect is not limited to the policy's ports")
    if not ns.net and policy.scopes.abstract_unix_socket:
        notes.append("scopes.abstract_unix_socket: without PrivateNetwork= the host's abstract unix "
                     "sockets stay reachable (no systemd setting scopes them)")

    # Syscalls
    if sc.enabled:
        if not policy.reachable_syscalls & {"unshare", "setns"}:
            put("RestrictNamespaces=yes")
        if "personality" not in runs:
            put("LockPersonality=yes")
        table = seccomp.rule_table(filter_spec(policy))
        plain = sorted({r.syscall for r in table.rules if r.action == "allow" and not r.args and not r.always}
                       | {r.syscall for r in table.rules if r.always})
        conditional = sorted({r.syscall for r in table.rules if r.args and r.action == "allow"})
        lines.append("# The syscalls the policy allows (its argument rules are listed below).")
        put("SystemCallFilter=" + " ".join(n for n in plain + conditional if seccomp.syscall_number(n) is not None
                                              and seccomp.syscall_number(n) >= 0))  # type: ignore[operator]
        put("SystemCallArchitectures=native")
        for rule in table.rules:
            if rule.action.startswith("errno:") and not rule.args and not rule.always and rule.syscall != "clone3":
                # An allow list cannot give one syscall its own errno: it is not allowed, and
                # the filter's action (kill) applies. Stricter; say so.
                notes.append(f"seccomp rule {rule.syscall}: {rule.action} always: an allow list in "
                             f"systemd cannot answer one syscall with an errno, so {rule.syscall} "
                             "kills the process (it is not in SystemCallFilter=)")
        if sc.default_action.startswith("errno:"):
            put(f"SystemCallErrorNumber={sc.default_action.split(':', 1)[1]}")
        elif sc.default_action == "log":
            put("SystemCallLog=~")
            notes.append("seccomp.default_action log: systemd logs and kills; the unit kills")
        cond_rules = [r for r in policy.seccomp.rules if r.args]
        for rule in cond_rules:
            conds = " and ".join(f"(arg{c.index} & {c.mask:#x}) == {c.value:#x}" if c.op == "masked_eq"
                                 else f"arg{c.index} {c.op} {c.value:#x}" for c in rule.args)
            notes.append(f"seccomp rule {rule.syscall}: {rule.action} when {conds}: systemd has no "
                         f"argument conditions, {rule.syscall} is allowed with any argument")
        if implicit := sorted(n for n in syscall_groups.expand_group("@default")
                              if not policy.may_run(n) and (seccomp.syscall_number(n) or -1) >= 0):
            # systemd.exec(5): an allow list always lets @default run (execve among them:
            # systemd execs the service with the filter in force). Until 12-08 the unit was
            # called the filter's "same" while node's and wallet's ran execve in it.
            notes.append("SystemCallFilter=: systemd lets its @default group run whatever the list "
                         f"says, and the policy's filter refuses {', '.join(implicit)}: they run in "
                         "the unit (execve too: systemd starts the service under the filter); a "
                         "program that restricts itself with the policy (the components do) refuses "
                         "them from then on")
        notes.append("socket(): allowed families are RestrictAddressFamilies=; clone with namespace "
                     "flags: RestrictNamespaces=; clone3 answers ENOSYS in systemd's filter too")
    else:
        notes.append(f"seccomp off ({sc.reason}): no SystemCallFilter=")
    if proc.memory_deny_write_execute:
        put("MemoryDenyWriteExecute=yes")
    put("RestrictRealtime=yes")
    put("RestrictSUIDSGID=yes")
    put("KeyringMode=private")
    put("UMask=0077")
    put("RemoveIPC=yes")

    # Process
    for limit in sorted(proc.rlimits, key=lambda r: r.name):
        soft, hard = _limit(limit.soft), _limit(limit.hard)
        put(f"Limit{_RLIMITS[limit.name]}={soft if soft == hard else soft + ':' + hard}")
    for name, value in proc.set_environment:
        filled = substitute(value, values, SourceRef(policy.files[-1], 0, f"process.set_environment.{name}"))
        put(_environment(name, filled))
    if proc.stdio != "inherit":
        put("StandardInput=null")
    if proc.dumpable:
        notes.append("process.dumpable = true: systemd has no setting for it")
    else:
        notes.append("process.dumpable = false: systemd has no setting for it; LimitCORE=0 stops "
                     "core files, and a component that restricts itself turns dumpable off itself")

    head = [f"# Generated by `CleanCoin-sandbox export --format systemd` from policy '{policy.name}'",
            f"# ({' + '.join(policy.files)}). What systemd cannot express is listed at the end."]
    tail = ["", "# Not expressible in systemd (the policy enforces these, this unit does not):"]
    tail += [f"#  - {n}" for n in notes]
    if exec_start is None:
        body = head + ["[Service]"] + lines + tail
    else:
        body = head + ["[Unit]", f"Description={_specifiers(policy.description or policy.name)}", "",
                       "[Service]", "Type=simple", f"ExecStart={exec_start}"] + lines + tail \
            + ["", "[Install]", "WantedBy=multi-user.target"]
    return Unit("\n".join(body) + "\n", notes)
