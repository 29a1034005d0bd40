"""What the probe found: `Attempt`, `ProbeResult`, and their text and JSON forms."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass

from ..report import Report


@dataclass(frozen=True)
class Attempt:
    """One escape attempt: what the policy expects, and what happened."""

    name: str
    description: str
    expected: str        # "denied" or "allowed"
    outcome: str         # "denied", "allowed" or "error"
    detail: str          # "EACCES (landlock)", "killed by SIGSYS (seccomp)", "succeeded: ..."
    reason: str = ""     # why the expectation is what it is (which mechanism should stop it)

    @property
    def escaped(self) -> bool:
        """The policy forbids it, and it worked."""
        return self.expected == "denied" and self.outcome == "allowed"

    @property
    def differs(self) -> bool:
        """The policy allows it, and it did not work (not an escape; worth a look)."""
        return self.expected == "allowed" and self.outcome != "allowed"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["escaped"] = self.escaped
        return data


@dataclass
class ProbeResult:
    """The enforcement report of the probe child and every attempt (or the script's result)."""

    report: Report
    attempts: list[Attempt]
    script_status: int | None = None     # exit status; negative: killed by that signal
    script_output: str = ""

    @property
    def escapes(self) -> list[Attempt]:
        return [a for a in self.attempts if a.escaped]

    @property
    def errors(self) -> list[Attempt]:
        """Attempts that could not be made: nothing is known of what they try."""
        return [a for a in self.attempts if a.outcome == "error"]

    def to_dict(self) -> dict[str, object]:
        return {"report": self.report.to_dict(),
                "attempts": [a.to_dict() for a in self.attempts],
                "escapes": [a.name for a in self.escapes],
                "errors": [a.name for a in self.errors],
                "script_status": self.script_status,
                "script_output": self.script_output}

    def to_text(self) -> str:
        lines: list[str] = []
        if self.attempts:
            name_w = max(len("attempt"), *(len(a.name) for a in self.attempts))
            lines.append(f"{'attempt':<{name_w}}  {'expected':<8}  {'outcome':<8}  {'verdict':<7}  detail")
            for a in self.attempts:
                mark = ("ESCAPE" if a.escaped else "error" if a.outcome == "error"
                        else "differs" if a.differs else "ok")
                lines.append(f"{a.name:<{name_w}}  {a.expected:<8}  {a.outcome:<8}  {mark:<7}  {a.detail}")
            errors = sum(1 for a in self.attempts if a.outcome == "error")
            differs = sum(1 for a in self.attempts if a.differs and a.outcome == "denied")
            summary = f"{len(self.attempts)} attempts, {len(self.escapes)} escapes"
            if differs:
                summary += f", {differs} denied although the policy allows them"
            if errors:
                summary += f", {errors} errors"
            if self.escapes:
                summary += f" (escaped: {', '.join(a.name for a in self.escapes)})"
            lines.append(summary)
        if self.script_status is not None:
            if self.script_output:
                lines.append(self.script_output.rstrip("\n"))
            lines.append(f"script {_status_words(self.script_status)}")
        return "\n".join(lines)


def _status_words(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by {name}" + (" (seccomp)" if -code == signal.SIGSYS else "")
    return f"exited with status {code}"
