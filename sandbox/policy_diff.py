"""`CleanCoin-sandbox diff A B`: what B grants that A does not, and the other way round.

Compared after `extends` is merged, groups are expanded and `deny` is applied, with
`${variables}` kept as written. Every difference is one `Change` of one of three kinds:

- widen: B lets the component do something A does not (a syscall, a path or a stronger right
  on it, a port, a socket family, a namespace or scope given up, a capability, a higher or
  removed resource limit, a lower compatibility level, ...). A CI job fails on these.
- narrow: B takes something away.
- change: different, but neither wider nor narrower (a new hostname, another errno).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import paths
from .model import Grant, Policy
from .variables import bind_port_text

_LEVELS = {"hard": 0, "soft": 1, "best_effort": 2}


@dataclass(frozen=True)
class Change:
    key: str          # the policy key: "seccomp.allowed", "filesystem.write", "process.rlimits.nofile"
    kind: str         # widen, narrow, change
    item: str         # what changed: a syscall, a path, a port, "true -> false"
    detail: str = ""


@dataclass
class PolicyDiff:
    a: str
    b: str
    changes: list[Change] = field(default_factory=list)

    @property
    def widens(self) -> bool:
        """B grants something A does not (the CI failure)."""
        return any(c.kind == "widen" for c in self.changes)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "widens": self.widens,
                "counts": {k: self.count(k) for k in ("widen", "narrow", "change")},
                "changes": [asdict(c) for c in self.changes]}

    def to_text(self) -> str:
        if not self.changes:
            return f"{self.a} -> {self.b}: no difference in what they allow"
        verdict = "B GRANTS MORE than A" if self.widens else "B grants nothing that A does not"
        lines = [f"{self.a} -> {self.b}: {verdict} ({self.count('widen')} wider, "
                 f"{self.count('narrow')} narrower, {self.count('change')} changed)"]
        mark = {"widen": "+", "narrow": "-", "change": "~"}
        key = None
        for c in self.changes:
            if c.key != key:
                lines.append(c.key)
                key = c.key
            lines.append(f"  {mark[c.kind]} {c.item}" + (f"   ({c.detail})" if c.detail else ""))
        lines.append("(+ B allows more, - B allows less, ~ changed)")
        return "\n".join(lines)


class _Collector:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def add(self, key: str, kind: str, item: str, detail: str = "") -> None:
        self.changes.append(Change(key, kind, item, detail))

    def sets(self, key: str, a: Iterable[str], b: Iterable[str], detail: str = "") -> None:
        """Items only in B widen, items only in A narrow."""
        sa, sb = set(a), set(b)
        for item in sorted(sb - sa):
            self.add(key, "widen", item, detail)
        for item in sorted(sa - sb):
            self.add(key, "narrow", item, detail)

    def flag(self, key: str, a: bool, b: bool, wide_when: bool) -> None:
        """A boolean whose value `wide_when` grants more."""
        if a != b:
            self.add(key, "widen" if b == wide_when else "narrow", f"{_bool(a)} -> {_bool(b)}")


def _bool(value: bool) -> str:
    return "true" if value else "false"


# ------------------------------------------------------------------------ filesystem

_CLASSES = ("read", "write", "execute")
#: Which classes of A cover a grant of each class of B.
_COVERS = {"read": ("read", "write", "execute"), "write": ("write",), "execute": ("execute",)}


def _norm(path: str) -> str:
    return paths.spelled(path)


def _covered(path: str, cls: str, grants: dict[str, list[str]], tmpfs: set[str]) -> str | None:
    """The grant of `grants` that already gives `path` the rights of `cls`, if any. A fresh
    tmpfs between the grant and `path` means the grant covered nothing there of the host."""
    for other in _COVERS[cls]:
        for root in grants[other]:
            if (path == root or paths.beneath(path, root)) and not any(
                    paths.beneath(path, t) and paths.beneath(t, root) for t in tmpfs if t != "/"):
                return f"{other} {root}"
    return None


def _shown(written: str, real: str) -> str:
    return written if written == real else f"{written} (is {real})"


def _tmpfs(policy: Policy) -> set[str]:
    return ({_norm(g.value) for g in policy.filesystem.tmpfs}
            | ({"/tmp"} if policy.namespaces.private_tmp else set()))


def _filesystem(out: _Collector, a: Policy, b: Policy) -> None:
    # Judged on the paths a launch grants (symlinks followed), shown as written: a grant of
    # /usr/lib/ssl/private is /etc/ssl/private, not a place inside A's /usr/lib.
    tmp_a, tmp_b = _tmpfs(a), _tmpfs(b)
    # A grant at a tmpfs path is that fresh tmpfs: nothing of the host (the launch mounts the
    # tmpfs there and binds nothing). A grant beneath one is the host's path, bound over the
    # tmpfs: until 12-07 `diff` called `read = ["${tmpdir}/x"]` "already granted by A's write
    # ${tmpdir}", and the host's ${tmpdir}/x (an ssh-agent or X11 socket directory under /tmp)
    # appeared in the sandbox.
    wa = {c: {_norm(g.value): paths.real_grant(_norm(g.value)) for g in getattr(a.filesystem, c)
              if _norm(g.value) not in tmp_a} for c in _CLASSES}
    wb = {c: {_norm(g.value): paths.real_grant(_norm(g.value)) for g in getattr(b.filesystem, c)
              if _norm(g.value) not in tmp_b} for c in _CLASSES}
    ga = {c: list(dict.fromkeys(wa[c].values())) for c in _CLASSES}
    gb = {c: list(dict.fromkeys(wb[c].values())) for c in _CLASSES}
    for cls in _CLASSES:
        key = f"filesystem.{cls}"
        for path, real in sorted(wb[cls].items()):
            if real in ga[cls]:
                continue
            cover = _covered(real, cls, ga, tmp_a)
            if cover is None:
                out.add(key, "widen", _shown(path, real))
            else:
                out.add(key, "change", _shown(path, real), f"already granted by A's {cover}")
        for path, real in sorted(wa[cls].items()):
            if real in gb[cls]:
                continue
            cover = _covered(real, cls, gb, tmp_b)
            out.add(key, "narrow" if cover is None else "change", _shown(path, real),
                    "" if cover is None else f"still granted by B's {cover}")
    hide_a = {_norm(g.value) for g in a.filesystem.hide}
    hide_b = {_norm(g.value) for g in b.filesystem.hide}
    for path in sorted(hide_a - hide_b):
        out.add("filesystem.hide", "widen", path, "no longer hidden")
    for path in sorted(hide_b - hide_a):
        out.add("filesystem.hide", "narrow", path, "hidden in B")
    for path in sorted(tmp_a - tmp_b):
        out.add("filesystem.tmpfs", "widen", path, "no longer a private tmpfs")
    for path in sorted(tmp_b - tmp_a):
        out.add("filesystem.tmpfs", "narrow", path, "a private tmpfs in B")


# ------------------------------------------------------------------------ network

def _ports(out: _Collector, key: str, a: tuple[Grant, ...] | None, b: tuple[Grant, ...] | None) -> None:
    if a is None and b is None:
        return
    if b is None:
        out.add(key, "widen", "any port", "B leaves TCP unrestricted")
    elif a is None:
        out.add(key, "narrow", f"only {', '.join(g.value for g in b) or 'no port'}", "A allowed any port")
    else:
        # As a launch reads them: "08333" is port 8333, and a bind to port 0 any ephemeral port.
        def shown(value: str) -> str:
            number = str(int(value)) if value.isdigit() else value
            return bind_port_text(number) if key == "network.bind_tcp" else number

        out.sets(key, (shown(g.value) for g in a), (shown(g.value) for g in b))


def _network(out: _Collector, a: Policy, b: Policy) -> None:
    _ports(out, "network.bind_tcp", a.network.bind_tcp, b.network.bind_tcp)
    _ports(out, "network.connect_tcp", a.network.connect_tcp, b.network.connect_tcp)
    fa = {f.name: f.raw for f in a.network.socket_families}
    fb = {f.name: f.raw for f in b.network.socket_families}
    out.sets("network.socket_families", fa, fb)
    for name in sorted(fa.keys() & fb.keys()):
        if fa[name] != fb[name]:
            out.add("network.socket_families", "widen" if fb[name] else "narrow",
                    f"{name} raw {_bool(fa[name])} -> {_bool(fb[name])}")
    # Datagram sockets: allowed when any entry of the family allows them; socketpair_only
    # narrows (no socket(2) for the family).
    for flag, widens in (("datagram", True), ("socketpair_only", False)):
        sa = {f.name for f in a.network.socket_families if getattr(f, flag)}
        sb = {f.name for f in b.network.socket_families if getattr(f, flag)}
        for name in sorted(fa.keys() & fb.keys()):
            if (name in sa) != (name in sb):
                out.add("network.socket_families", "widen" if (name in sb) == widens else "narrow",
                        f"{name} {flag} {_bool(name in sa)} -> {_bool(name in sb)}")
    for scope in ("abstract_unix_socket", "signal"):
        out.flag(f"scopes.{scope}", getattr(a.scopes, scope), getattr(b.scopes, scope), False)


# ------------------------------------------------------------------------ process

def _limit_text(value: int | None) -> str:
    return "infinity" if value is None else str(value)


def _wider_limit(a: int | None, b: int | None) -> bool:
    return (b is None and a is not None) or (a is not None and b is not None and b > a)


def _process(out: _Collector, a: Policy, b: Policy) -> None:
    pa, pb = a.process, b.process
    out.sets("process.capabilities", (g.value for g in pa.capabilities), (g.value for g in pb.capabilities))
    out.flag("process.dumpable", pa.dumpable, pb.dumpable, True)
    out.flag("process.memory_deny_write_execute", pa.memory_deny_write_execute,
             pb.memory_deny_write_execute, False)
    out.flag("process.new_session", pa.new_session, pb.new_session, False)
    out.flag("process.die_with_parent", pa.die_with_parent, pb.die_with_parent, False)
    if pa.stdio != pb.stdio:
        kind = "widen" if pb.stdio == "inherit" else "narrow" if pa.stdio == "inherit" else "change"
        out.add("process.stdio", kind, f"{pa.stdio} -> {pb.stdio}")
    out.sets("process.environment", pa.environment, pb.environment,
             "variables kept from the parent's environment")
    ea, eb = dict(pa.set_environment), dict(pb.set_environment)
    for name in sorted(ea.keys() | eb.keys()):
        if ea.get(name) != eb.get(name):
            out.add("process.set_environment", "change", f"{name}: {ea.get(name)!r} -> {eb.get(name)!r}")
    out.sets("process.fds", (str(f) for f in pa.fds), (str(f) for f in pb.fds))
    ra = {r.name: r for r in pa.rlimits}
    rb = {r.name: r for r in pb.rlimits}
    for name in sorted(ra.keys() | rb.keys()):
        la, lb = ra.get(name), rb.get(name)
        key = f"process.rlimits.{name}"
        if lb is None:
            out.add(key, "widen", f"{_limit_text(la.soft)} -> not set (inherited)")  # type: ignore[union-attr]
            continue
        if la is None:
            out.add(key, "narrow", f"not set (inherited) -> {_limit_text(lb.soft)}")
            continue
        if (la.soft, la.hard) == (lb.soft, lb.hard):
            continue
        wider = _wider_limit(la.soft, lb.soft) or _wider_limit(la.hard, lb.hard)
        narrower = _wider_limit(lb.soft, la.soft) or _wider_limit(lb.hard, la.hard)
        kind = "widen" if wider else "narrow" if narrower else "change"
        out.add(key, kind, f"{_limit_text(la.soft)}/{_limit_text(la.hard)} -> "
                           f"{_limit_text(lb.soft)}/{_limit_text(lb.hard)} (soft/hard)")


# ------------------------------------------------------------------------ seccomp and the rest

def _rule_key(rule: Any) -> str:
    conds = " and ".join(f"arg{c.index} {c.op} {c.value:#x}" + (f"/{c.mask:#x}" if c.op == "masked_eq" else "")
                         for c in rule.args)
    return f"{rule.syscall}: {rule.action}" + (f" when {conds}" if conds else " always")


def _permits(action: str) -> bool:
    return action in ("allow", "log")


def _seccomp(out: _Collector, a: Policy, b: Policy) -> None:
    out.flag("seccomp.enabled", a.seccomp.enabled, b.seccomp.enabled, False)
    da, db = a.seccomp.default_action, b.seccomp.default_action
    if da != db:
        kind = "widen" if _permits(db) else "narrow" if _permits(da) else "change"
        out.add("seccomp.default_action", kind, f"{da} -> {db}")
    allowed_a, allowed_b = a.allowed_syscalls, b.allowed_syscalls
    out.sets("seccomp.allowed", allowed_a, allowed_b)
    rules_a = {_rule_key(r): r for r in a.seccomp.rules}
    rules_b = {_rule_key(r): r for r in b.seccomp.rules}
    # One rule without args decides its syscall, and then it is the syscall's only rule (the
    # loader keeps what the filter applies: sandbox/rule_precedence.py).
    whole_a = {r.syscall: r for r in a.seccomp.rules if not r.args}
    whole_b = {r.syscall: r for r in b.seccomp.rules if not r.args}

    def listed(policy: Policy, syscall: str) -> bool:
        """Whether the syscall runs with no rule of its own: allowed, or a permissive default."""
        return syscall in policy.allowed_syscalls or _permits(policy.seccomp.default_action)

    def otherwise(syscall: str) -> bool:
        """Whether the syscall runs in B when none of its argument rules holds."""
        whole = whole_b.get(syscall)
        return _permits(whole.action) if whole is not None else listed(b, syscall)

    replaced = {name for name in whole_a.keys() & whole_b.keys()
                if _rule_key(whole_a[name]) != _rule_key(whole_b[name])}
    for name in sorted(replaced):
        before, after = _permits(whole_a[name].action), _permits(whole_b[name].action)
        kind = "widen" if after and not before else "narrow" if before and not after else "change"
        out.add("seccomp.rules", kind, f"{name}: {whole_a[name].action} -> {whole_b[name].action} always",
                "rule replaced")
    for key in sorted(rules_b.keys() - rules_a.keys()):
        rule = rules_b[key]
        if not rule.args and rule.syscall in replaced:
            continue
        # An allow rule widens only what would otherwise be refused; a denial narrows only
        # what would otherwise run. A rule without args is judged against the allow list.
        runs = listed(b, rule.syscall) if not rule.args else otherwise(rule.syscall)
        if _permits(rule.action):
            kind = "change" if runs else "widen"
        else:
            kind = "narrow" if runs else "change"
        out.add("seccomp.rules", kind, key, "rule added")
    for key in sorted(rules_a.keys() - rules_b.keys()):
        rule = rules_a[key]
        if not rule.args and rule.syscall in replaced:
            continue
        runs = otherwise(rule.syscall)
        if _permits(rule.action):
            kind = "change" if runs else "narrow"
        else:
            kind = "widen" if runs else "change"
        detail = "rule removed"
        if rule.syscall in whole_b and rule.args:
            detail = f"rule removed: B's rule without args decides every call ({_rule_key(whole_b[rule.syscall])})"
        out.add("seccomp.rules", kind, key, detail)
    # Same rule, another `log`: nothing runs that did not, but refusals go unrecorded (or
    # start to be): a change a reviewer must see.
    for key in sorted(rules_a.keys() & rules_b.keys()):
        if rules_a[key].logged != rules_b[key].logged:
            out.add("seccomp.rules", "change", key,
                    "now in the denial log" if rules_b[key].logged else "no longer in the denial log")


def _namespaces(out: _Collector, a: Policy, b: Policy) -> None:
    for name in ("user", "mount", "pid", "net", "ipc", "uts"):
        out.flag(f"namespaces.{name}", getattr(a.namespaces, name), getattr(b.namespaces, name), False)
    out.flag("namespaces.private_tmp", a.namespaces.private_tmp, b.namespaces.private_tmp, False)
    if a.namespaces.hostname != b.namespaces.hostname:
        out.add("namespaces.hostname", "change", f"{a.namespaces.hostname} -> {b.namespaces.hostname}")


def _compatibility(out: _Collector, a: Policy, b: Policy) -> None:
    for (mech, la), (_, lb) in zip(a.compatibility.levels, b.compatibility.levels):
        if la != lb:
            out.add(f"compatibility.{mech}", "widen" if _LEVELS[lb.value] > _LEVELS[la.value] else "narrow",
                    f"{la.value} -> {lb.value}")
    ma, mb = a.compatibility.landlock_min_abi, b.compatibility.landlock_min_abi
    if ma != mb:
        out.add("compatibility.landlock_min_abi", "widen" if mb < ma else "narrow", f"{ma} -> {mb}")


def diff(a: Policy, b: Policy, name_a: str = "A", name_b: str = "B") -> PolicyDiff:
    """Every difference between what A and B allow (see the module docstring)."""
    out = _Collector()
    _seccomp(out, a, b)
    _filesystem(out, a, b)
    _network(out, a, b)
    _namespaces(out, a, b)
    _process(out, a, b)
    _compatibility(out, a, b)
    return PolicyDiff(name_a, name_b, out.changes)
