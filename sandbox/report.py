"""The enforcement report: what is in force, what the kernel lacked, and how long it took."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .mechanisms import MECHANISMS, Status


@dataclass
class MechanismReport:
    """The verdict on one mechanism."""

    status: str                      # a Status value
    level: str                       # the policy's compatibility level
    details: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # rights or features the kernel lacked


@dataclass
class Report:
    """Everything a reader needs to trust (or distrust) a sandboxed process."""

    policy: str
    files: list[str]
    pid: int
    kernel: str
    namespaces: list[str]
    landlock_abi: int
    seccomp_sha256: str
    mechanisms: dict[str, MechanismReport]
    timings_us: dict[str, int] = field(default_factory=dict)

    def fully_enforced(self) -> bool:
        """True when every mechanism the policy uses is fully in force."""
        return all(m.status == Status.FULL.value for m in self.mechanisms.values())

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "Report":
        mechs = {k: MechanismReport(**v) for k, v in data["mechanisms"].items()}  # type: ignore[union-attr]
        rest = {k: v for k, v in data.items() if k != "mechanisms"}
        return cls(mechanisms=mechs, **rest)  # type: ignore[arg-type]

    def to_text(self) -> str:
        """The report as logged at start: one line per mechanism, then the details."""
        lines = [f"sandbox report for policy '{self.policy}' (pid {self.pid})",
                 f"  kernel: {self.kernel}"]
        for name in MECHANISMS:
            mech = self.mechanisms.get(name)
            if mech is None:
                continue
            lines.append(f"  {name:<13} {mech.status} (level {mech.level})")
            lines.extend(f"      {d}" for d in mech.details)
            lines.extend(f"      kernel lacks: {m}" for m in mech.missing)
        if self.namespaces:
            lines.append(f"  namespaces entered: {', '.join(self.namespaces)}")
        if self.seccomp_sha256:
            lines.append(f"  seccomp filter sha256: {self.seccomp_sha256}")
        if self.timings_us:
            steps = ", ".join(f"{k} {v} us" for k, v in self.timings_us.items())
            lines.append(f"  step timings: {steps}")
        return "\n".join(lines)
