"""The Plan: everything a sandbox entry has to do, as plain data.

It is computed before anything is changed (`plan_compiler`, in the parent before fork, or in
`restrict_self` before the first step), so that a policy that cannot be applied is refused
while nothing has happened yet. It is plain data (JSON) because it crosses processes: the
zygote receives its components' plans from its parent. It holds only real, symlink-free paths
(`paths.resolve`), and says nothing about whether it worked: the report is built from the
steps' outcomes (`steps`, `report`).
"""

from __future__ import annotations

from dataclasses import asdict, field

from . import landlock
from .records import Record, record

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    from typing import Any


@record
class Mount(Record):
    """One entry of the component's filesystem view, in the order it is made.

    kind: "bind" (a grant, cloned from the host with its submounts), "tmpfs" (fresh and
    writable), "hide" (empty and read-only, over part of a bind), "proc" (a fresh procfs in a
    pid namespace, else the host's bound read-only), "symlink" (recreated: `target`).
    """

    kind: str
    path: str
    writable: bool = False
    executable: bool = False
    optional: bool = False
    target: str = ""


@record
class MechanismPlan(Record):
    """What planning found out about one mechanism: its level, a description of what will be
    applied, and what this kernel lacks (dropped at level soft or best_effort)."""

    level: str
    details: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    disabled: str = ""          # the policy turned it off, and why


@record
class Plan(Record):
    """The resolved, kernel-fitted form of a policy for one entry into a sandbox."""

    policy: str
    files: tuple[str, ...]
    kernel: str
    namespaces: tuple[str, ...]
    hostname: str
    uid: int
    gid: int
    new_session: bool
    die_with_parent: bool
    stdio: str                                    # pipe, null or inherit
    # The filesystem view, built on an empty root (mount namespace only; empty otherwise).
    mounts: tuple[Mount, ...]
    dumpable: bool
    memory_deny_write_execute: bool
    rlimits: tuple[tuple[str, int, int | None, int | None], ...]
    fds: tuple[int, ...]
    environment: tuple[tuple[str, str], ...]
    keep_caps: tuple[int, ...]
    landlock: landlock.LandlockRules | None
    seccomp_bpf: bytes
    seccomp_sha256: str
    exec_allowed: bool          # the filter lets execve through (`run` needs it)
    mechanisms: dict[str, MechanismPlan] = field(default_factory=dict)
    # A learning plan (`learn_plan`): {"dir": where records go, "variables": the launch's
    # values}. Empty for every plan that enforces.
    learn: dict[str, Any] = field(default_factory=dict)
    # A denial log (`denial_log`): where refusals with an errno are logged, and the table its
    # monitor answers them from. Empty: the filter answers them itself, silently.
    denials: dict[str, Any] = field(default_factory=dict)
    # Real paths the confined side (or another confined process) can write: a symlink at or
    # beneath one could have been planted (paths.resolve's untrusted roots, as the compiler
    # used them for the grants; the denial log's path is resolved against them too).
    untrusted: tuple[str, ...] = ()

    def level(self, mechanism: str) -> str:
        """The compatibility level of a mechanism ("hard" unless the policy says otherwise)."""
        plan = self.mechanisms.get(mechanism)
        return plan.level if plan is not None else "hard"

    def to_json(self) -> dict[str, object]:
        # base64 here and in from_json, not at import: only a plan sent to the zygote (by a
        # parent, and read by the zygote before it serves) is encoded, never a launched child's.
        import base64
        data = asdict(self)
        data["landlock"] = self.landlock.to_json() if self.landlock else None
        data["seccomp_bpf"] = base64.b64encode(self.seccomp_bpf).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "Plan":
        import base64
        d = dict(data)
        d["landlock"] = landlock.LandlockRules.from_json(d["landlock"]) if d["landlock"] else None  # type: ignore[arg-type]
        d["seccomp_bpf"] = base64.b64decode(d["seccomp_bpf"])  # type: ignore[arg-type]
        d["mechanisms"] = {k: MechanismPlan(v["level"], tuple(v["details"]), tuple(v["missing"]),  # type: ignore[index]
                                            v["disabled"])  # type: ignore[index]
                           for k, v in d["mechanisms"].items()}  # type: ignore[union-attr]
        d["mounts"] = tuple(Mount(**m) for m in d["mounts"])  # type: ignore[union-attr, arg-type]
        for key in ("files", "namespaces", "fds", "keep_caps", "untrusted"):
            d[key] = tuple(d[key])  # type: ignore[arg-type]
        d["rlimits"] = tuple(tuple(r) for r in d["rlimits"])  # type: ignore[union-attr]
        d["environment"] = tuple(tuple(e) for e in d["environment"])  # type: ignore[union-attr]
        return cls(**d)  # type: ignore[arg-type]
