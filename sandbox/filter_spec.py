"""The seccomp filter a policy asks for, as `seccomp.FilterSpec`: one place for the launch,
`explain --pfc` and the exporters, so that all of them describe the same filter."""

from __future__ import annotations

from .errors import SourceRef
from .model import Policy
from .seccomp import FilterSpec


def filter_spec(policy: Policy) -> FilterSpec:
    """The policy's syscall filter (its allowed set, rules, socket families and derived rules)."""
    sc = policy.seccomp
    where = sc.allow[0].where if sc.allow else SourceRef(policy.files[-1], 0, "seccomp")
    allowed = policy.allowed_syscalls
    # Namespaces by clone(2) go with unshare(2) as the component can make it, not as listed:
    # until 12-07 `allow = ["unshare"]` beside `{ syscall = "unshare", action = "errno:EPERM" }`
    # showed unshare refused (explain, diff) and let clone(CLONE_NEWUSER) through.
    return FilterSpec(sc.default_action, allowed, sc.rules, policy.network.socket_families, where,
                      deny_namespace_clone="unshare" not in policy.reachable_syscalls,
                      deny_dumpable=not policy.process.dumpable,
                      deny_terminal_input=not policy.process.new_session or policy.process.stdio == "inherit")
