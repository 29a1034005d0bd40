"""Errors of the sandbox layer: every one names where it comes from."""

from __future__ import annotations

from .records import Record, record


@record
class SourceRef(Record):
    """Where a value was written: file, line (0 when the parser gives none) and dotted key."""

    file: str
    line: int
    key: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}" if self.key else where


class PolicyError(Exception):
    """A policy that cannot be loaded: names the file, the line and the key."""

    def __init__(self, where: SourceRef, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")

    def as_dict(self) -> dict[str, object]:
        """The error as plain data for `--json` output."""
        return {"file": self.where.file, "line": self.where.line, "key": self.where.key,
                "message": self.message}


class PolicyFileError(PolicyError):
    """The file itself cannot be read as a policy: missing, unreadable, a directory or other
    non-regular file, too large, binary, not UTF-8, or empty. `CleanCoin-sandbox` exits 125
    for these (the tool could not do its job), and 1 for errors in a policy's content."""


class PolicyErrors(Exception):
    """Several policy errors found in one pass, so an author sees them all at once."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    @property
    def unreadable(self) -> bool:
        """True when a file could not be read as a policy at all (see PolicyFileError)."""
        return any(isinstance(e, PolicyFileError) for e in self.errors)


class EnforcementError(Exception):
    """A step that could not be applied. The component never runs after one of these."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"sandbox step '{step}' failed: {reason}")

    def as_dict(self) -> dict[str, str]:
        """The error as plain data, as it travels from a child to its parent."""
        return {"step": self.step, "reason": self.reason}
