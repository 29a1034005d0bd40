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
    DISABLED = "turned off by the policy"


#: The mechanisms a policy's [compatibility] table sets a level for, in report order.
MECHANISMS = ("namespaces", "landlock", "seccomp", "capabilities", "mdwe", "rlimits")

#: What every launch does whatever the policy's levels (descriptors, terminal, environment,
#: dumpable, no_new_privs): reported under this name, never optional.
PROCESS = "process"
