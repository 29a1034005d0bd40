"""CleanCoin's sandbox layer: policy files, enforcement steps, launcher and reports.

Data flows one way: a policy file is parsed and validated into a `Policy` model
(`policy_loader`), compiled against this kernel and the launch variables into a `Plan`
(`plan_compiler`, `plan`), carried out by one ordered list of steps (`steps`: the filesystem
view in `rootfs`, the rest in one module per mechanism) by a launched child (`launcher`,
`zygote`) or by a process restricting itself (`self_restrict`), and summed up in a `Report`
(`report`) built from what the steps did. This package knows nothing about coins.
"""

from __future__ import annotations

import importlib

# Not typing's TYPE_CHECKING: every sandboxed program imports this package, and the connect
# broker never needs typing (0.5 MiB of its memory).
TYPE_CHECKING = False

#: The public surface: name -> module it lives in. Everything else in the package is an
#: implementation detail that may change. Imported on first use, so that `import
#: cleancoin.sandbox` costs nothing (a sandboxed child imports only what it runs).
_PUBLIC = {
    # policies
    "load_policy": "policy_loader", "shipped_policy": "policy_files", "Policy": "model",
    "PolicyError": "errors", "PolicyErrors": "errors", "EnforcementError": "errors",
    # plans and entering a sandbox
    "Plan": "plan", "prepare": "launcher", "spawn": "launcher", "SandboxedProcess": "launcher",
    "SpawnError": "launcher", "restrict_self": "self_restrict",
    "Zygote": "zygote", "ComponentSpec": "zygote", "ZygoteError": "zygote", "Limits": "zygote",
    "Exited": "zygote", "Spawned": "zygote",
    # what happened
    "Report": "report", "explain": "explain",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from typing import Any

    from .errors import EnforcementError, PolicyError, PolicyErrors
    from .explain import explain
    from .launcher import SandboxedProcess, SpawnError, prepare, spawn
    from .model import Policy
    from .plan import Plan
    from .policy_files import shipped_policy
    from .policy_loader import load_policy
    from .report import Report
    from .self_restrict import restrict_self
    from .zygote import ComponentSpec, Exited, Limits, Spawned, Zygote, ZygoteError


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'cleancoin.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
