"""Where the shipped policies are: a module of its own, so that naming a policy does not
import the loader (tomllib, the policy format) on a path that may not load one
(`policy_cache`)."""

from __future__ import annotations

import os


def shipped_policy(name: str) -> str:
    """Path of a policy shipped with CleanCoin, e.g. `wallet` or `base/python`."""
    # The package's folder, not importlib.resources: that import (with pathlib and zipfile)
    # was about a tenth of `CleanCoin-sandbox run`'s start-up; the package is a plain folder
    # (a regular install), as the base policy's grant of site-packages assumes anyway.
    from cleancoin import policies
    return os.path.join(os.path.dirname(policies.__file__), f"{name}.toml")


def shipped_names() -> list[str]:
    """The names of the shipped policies (`strict`, `base/python`, `examples/program`, ...)."""
    root = os.path.dirname(shipped_policy("strict"))
    names = []
    for folder, _dirs, files in os.walk(root):
        for file in files:
            if file.endswith(".toml"):
                rel = os.path.relpath(os.path.join(folder, file), root)
                names.append(rel.removesuffix(".toml"))
    return sorted(names)


def extended_path(name: str, including: str) -> str:
    """Where an `extends` entry points: an absolute path as written; a relative one beside the
    file that names it; failing that, a shipped policy of that name ("base/python" or
    "base/python.toml"), so that a policy anywhere can build on the shipped ones by name."""
    if os.path.isabs(name):
        return name
    beside = os.path.join(os.path.dirname(including), name)
    if os.path.exists(beside):
        return beside
    shipped = shipped_policy(name.removesuffix(".toml"))
    return shipped if os.path.isfile(shipped) else beside


def shadowed_shipped(name: str, target: str) -> str | None:
    """The shipped policy that an `extends` entry `name` would have named, had `target` (the
    file it led to, beside the file that names it) not been there; None when none. A reviewer
    reading `extends = ["base/python"]` takes it for the shipped base: `check` says otherwise."""
    if os.path.isabs(name):
        return None
    shipped = shipped_policy(name.removesuffix(".toml"))
    if not os.path.isfile(shipped) or os.path.realpath(shipped) == os.path.realpath(target):
        return None
    return shipped
