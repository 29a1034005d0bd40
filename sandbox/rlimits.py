"""The rlimit step: resource limits set before exec, so the component starts under them."""

from __future__ import annotations

import resource

from .errors import EnforcementError

#: Every resource limit by the policy's name for it ("nofile" -> RLIMIT_NOFILE): here, not in
#: the policy format (policy_spec re-exports it), so that fitting a plan from a cached policy
#: does not import the format (sandbox/policy_cache.py).
RLIMITS: dict[str, int] = {
    name[len("RLIMIT_"):].lower(): getattr(resource, name)
    for name in dir(resource) if name.startswith("RLIMIT_")
}


def apply(limits: tuple[tuple[str, int, int | None, int | None], ...]) -> None:
    """Set each (name, resource number, soft, hard); None means unlimited."""
    for name, number, soft, hard in limits:
        inf = resource.RLIM_INFINITY
        try:
            resource.setrlimit(number, (inf if soft is None else soft, inf if hard is None else hard))
        except (ValueError, OSError) as exc:
            raise EnforcementError("rlimits", f"setting {name} to {soft}/{hard}: {exc}") from None
