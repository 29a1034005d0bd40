"""The environment step: the child sees only the variables its policy names."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping


def scrub(parent: Mapping[str, str], allow: Iterable[str], set_vars: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The child's environment: allowlisted names (globs allowed) from the parent, then `set_vars`."""
    patterns = tuple(allow)
    env = {k: v for k, v in parent.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    env.update(set_vars)
    return env
