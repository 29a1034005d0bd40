"""The Plan: everything a sandboxed child has to do, as plain data.

It is computed in the parent (`plan_compiler`), before fork, so that a policy that cannot be
applied is refused before any child exists. It is plain data (JSON) because it crosses an
exec: the component receives it on its control socket and carries out the post-exec steps.
This module is on the child's import path, so it imports nothing of the policy model.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field

from . import landlock
from .report import MechanismReport


@dataclass(frozen=True)
class Plan:
    """The resolved, kernel-fitted form of a policy for one launch."""

    policy: str
    files: tuple[str, ...]
    kernel: str
    namespaces: tuple[str, ...]
    namespace_level: str
    private_tmp_keep: tuple[str, ...] | None     # None: no private /tmp
    mount_proc: bool
    hostname: str
    uid: int
    gid: int
    new_session: bool
    die_with_parent: bool
    dumpable: bool
    rlimits: tuple[tuple[str, int, int | None, int | None], ...]
    fds: tuple[int, ...]
    environment: tuple[tuple[str, str], ...]
    keep_caps: tuple[int, ...]
    landlock: landlock.LandlockRules | None
    seccomp_bpf: bytes
    seccomp_sha256: str
    exec_allowed: bool          # the filter lets execve through (`run` needs it)
    mechanisms: dict[str, MechanismReport] = field(default_factory=dict)
    # Absolute, symlink-free paths to cover with an empty read-only tmpfs (filesystem.hide),
    # after the private /tmp. Last, with a default, so older plan JSON still loads.
    hide: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["landlock"] = self.landlock.to_json() if self.landlock else None
        data["seccomp_bpf"] = base64.b64encode(self.seccomp_bpf).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "Plan":
        d = dict(data)
        d["landlock"] = landlock.LandlockRules.from_json(d["landlock"]) if d["landlock"] else None  # type: ignore[arg-type]
        d["seccomp_bpf"] = base64.b64decode(d["seccomp_bpf"])  # type: ignore[arg-type]
        d["mechanisms"] = {k: MechanismReport(**v) for k, v in d["mechanisms"].items()}  # type: ignore[union-attr]
        for key in ("files", "namespaces", "fds", "keep_caps", "hide"):
            if key not in d:
                continue
            d[key] = tuple(d[key])  # type: ignore[arg-type]
        d["rlimits"] = tuple(tuple(r) for r in d["rlimits"])  # type: ignore[union-attr]
        d["environment"] = tuple(tuple(e) for e in d["environment"])  # type: ignore[union-attr]
        if d["private_tmp_keep"] is not None:
            d["private_tmp_keep"] = tuple(d["private_tmp_keep"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]
