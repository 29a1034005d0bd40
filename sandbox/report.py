"""The enforcement report: what is in force, what the kernel lacked, and how long it took.

Built only from what the steps did (`build`): a mechanism is "fully enforced" when every step
of it ran in full, and the plan's description of it is shown beside that verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from .mechanisms import MECHANISMS, PROCESS, Status

TYPE_CHECKING = False     # not typing's: the connect broker imports this and never typing

if TYPE_CHECKING:
    from .plan import Plan
    from .steps import Outcome


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
    steps: list[dict[str, object]] = field(default_factory=list)   # each step's outcome
    #: The sandbox's helper processes (denial monitor, learn recorder) as the set-up recorded
    #: them: pid as the component sees it, start time (sandbox/helpers.py).
    helpers: list[dict[str, object]] = field(default_factory=list)

    def fully_enforced(self) -> bool:
        """True when every mechanism the policy uses is fully in force."""
        return all(m.status == Status.FULL.value for m in self.mechanisms.values()
                   if m.status != Status.DISABLED.value)

    def to_dict(self) -> dict[str, object]:
        """The report as plain data, every container a copy: what dataclasses.asdict gives
        (tests/test_launcher.py compares them), without its deepcopy of every string and
        number (about 1.5 ms of each launch, in the child before it execs)."""
        return _plain(self)

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
        for name in (*MECHANISMS, PROCESS):
            mech = self.mechanisms.get(name)
            if mech is None:
                continue
            lines.append(f"  {name:<13} {mech.status} (level {mech.level})")
            lines.extend(f"      {d}" for d in mech.details)
            lines.extend(f"      lacking: {m}" for m in mech.missing)
        if self.seccomp_sha256:
            lines.append(f"  seccomp filter sha256: {self.seccomp_sha256}")
        if self.timings_us:
            steps = ", ".join(f"{k} {v} us" for k, v in self.timings_us.items())
            lines.append(f"  step timings: {steps}")
        return "\n".join(lines)


def build(plan: "Plan", outcomes: Sequence["Outcome"], pid: int, entered: Sequence[str]) -> Report:
    """The report of an entry into a sandbox, from its plan and its steps' outcomes."""
    by_mechanism: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_mechanism.setdefault(outcome.mechanism, []).append(outcome)
    mechanisms = {}
    for name in (*MECHANISMS, PROCESS):
        planned = plan.mechanisms.get(name)
        if planned is None:
            continue
        ran = by_mechanism.get(name, [])
        details = list(planned.details)
        details += [f"{o.step}: {o.detail}" for o in ran if o.detail]
        missing = list(planned.missing) + [m for o in ran for m in o.missing]
        if planned.disabled:
            status = Status.DISABLED
            details.insert(0, f"off: {planned.disabled}")
        elif not [o for o in ran if o.status != "skipped"]:
            status = Status.NONE
        elif all(o.status == "lacking" for o in ran if o.status != "skipped"):
            status = Status.NONE
        elif missing or any(o.status in ("partial", "lacking") for o in ran):
            status = Status.PARTIAL
        else:
            status = Status.FULL
        mechanisms[name] = MechanismReport(status.value, planned.level, details, missing)
    return Report(
        policy=plan.policy, files=list(plan.files), pid=pid, kernel=plan.kernel,
        namespaces=list(entered), landlock_abi=plan.landlock.abi if plan.landlock else 0,
        seccomp_sha256=plan.seccomp_sha256 if any(o.step == "seccomp" and o.status == "applied"
                                                  for o in outcomes) else "",
        mechanisms=mechanisms,
        timings_us={o.step: o.duration_us for o in outcomes if o.status != "skipped"},
        steps=[_plain(o) for o in outcomes],
        helpers=[h for o in outcomes for h in o.helpers],
    )


def _plain(value: object) -> object:
    """`value` with dataclasses turned into dicts and every dict, list and tuple copied, as
    dataclasses.asdict does; the leaves of a report (str, int, bool, None) are immutable and
    kept, not deep-copied. (No namedtuples: a report holds none.)"""
    if hasattr(type(value), "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    import copy           # anything else as asdict does it (nothing a report holds now)
    return copy.deepcopy(value)
