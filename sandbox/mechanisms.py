"""The names of the enforcement mechanisms and the verdicts a report gives them.

Kept apart from the policy model so that a sandboxed child, which only reports, does not
import the model.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """How much of a mechanism ended up in force (the report's verdict)."""

    FULL = "fully enforced"
    PARTIAL = "partially enforced"
    NONE = "not enforced"


MECHANISMS = ("namespaces", "landlock", "seccomp", "capabilities", "rlimits")
