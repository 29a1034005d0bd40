"""A loaded policy as plain data: every grant as lists and tables, nothing in prose.

This is what `explain --json` prints and what `diff`, `score` and the exporters read: one
canonical form of a policy after `extends` is merged, groups are expanded and `deny` is
applied. Values keep their `${variable}` references (a policy is compared as written, not as
one launch fills it).
"""

from __future__ import annotations

from typing import Any

from . import dangerous, syscall_groups
from .model import Grant, Policy


def _grant(grant: Grant) -> dict[str, Any]:
    out: dict[str, Any] = {"path": grant.value}
    if grant.optional:
        out["optional"] = True
    if grant.reason:
        out["reason"] = grant.reason
    return out


def _ports(grants: tuple[Grant, ...] | None) -> list[str] | str:
    return "any" if grants is None else [g.value for g in grants]


def _limit(value: int | None) -> int | str:
    return "infinity" if value is None else value


def dump(policy: Policy) -> dict[str, Any]:
    """The policy as JSON-ready data (see the module docstring)."""
    ns, fs, net, proc, sc = policy.namespaces, policy.filesystem, policy.network, policy.process, policy.seccomp
    allowed = sorted(policy.allowed_syscalls)
    whole_groups = sorted(g for g in syscall_groups.GROUPS
                          if syscall_groups.expand_group(g) <= policy.allowed_syscalls)
    return {
        "policy": policy.name,
        "description": policy.description,
        "files": list(policy.files),
        "namespaces": {"entered": list(ns.entered()), "private_tmp": ns.private_tmp,
                       "hostname": ns.hostname,
                       **{n: getattr(ns, n) for n in ("user", "mount", "pid", "net", "ipc", "uts")}},
        "filesystem": {key: [_grant(g) for g in getattr(fs, key)]
                       for key in ("read", "write", "execute", "hide", "tmpfs")},
        "network": {
            "bind_tcp": _ports(net.bind_tcp),
            "connect_tcp": _ports(net.connect_tcp),
            "socket_families": [{"family": f.name, "raw": f.raw, **({"datagram": False} if not f.datagram else {}),
                                 **({"socketpair_only": True} if f.socketpair_only else {}),
                                 **({"reason": f.reason} if f.reason else {})}
                                for f in net.socket_families],
        },
        "scopes": {"abstract_unix_socket": policy.scopes.abstract_unix_socket,
                   "signal": policy.scopes.signal},
        "process": {
            "capabilities": [{"name": g.value, **({"reason": g.reason} if g.reason else {})}
                             for g in proc.capabilities],
            "dumpable": proc.dumpable,
            "no_new_privs": proc.no_new_privs,
            "new_session": proc.new_session,
            "die_with_parent": proc.die_with_parent,
            "environment": list(proc.environment),
            "set_environment": dict(proc.set_environment),
            "fds": list(proc.fds),
            "rlimits": {r.name: {"soft": _limit(r.soft), "hard": _limit(r.hard)}
                        for r in sorted(proc.rlimits, key=lambda r: r.name)},
            "stdio": proc.stdio,
            "memory_deny_write_execute": proc.memory_deny_write_execute,
            "reason": proc.reason,
        },
        "seccomp": {
            "enabled": sc.enabled,
            "reason": sc.reason,
            "default_action": sc.default_action,
            "allowed": allowed,
            "allowed_count": len(allowed),
            "allowed_from": [g.value for g in sc.allow],
            "denied_from": [g.value for g in sc.deny],
            "dangerous_allowed": sorted(policy.reachable_syscalls & dangerous.DANGEROUS_SYSCALLS),
            "groups_fully_allowed": whole_groups,
            "rules": [{"syscall": r.syscall, "action": r.action,
                       "args": [{"index": c.index, "op": c.op, "value": c.value,
                                 **({"mask": c.mask} if c.op == "masked_eq" else {})} for c in r.args],
                       **({"reason": r.reason} if r.reason else {}),
                       **({"log": False} if not r.logged else {})}
                      for r in sc.rules],
        },
        "compatibility": {**{m: lvl.value for m, lvl in policy.compatibility.levels},
                          "landlock_min_abi": policy.compatibility.landlock_min_abi},
    }
