"""Which `${variables}` a policy needs at launch, and one error naming every missing one.

Planning fills variables grant by grant; without this check an author who forgot three
`--var`s would meet them one launch at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from .errors import PolicyError, SourceRef
from .model import Policy
from .variables import referenced


def references(policy: Policy) -> Iterator[tuple[str, SourceRef]]:
    """Every variable the launch fills, with where it is used: paths, ports, environment."""
    fs = policy.filesystem
    for grants in (fs.read, fs.write, fs.execute, fs.hide, fs.tmpfs):
        for grant in grants:
            for name in referenced(grant.value):
                yield name, grant.where
    for ports in (policy.network.bind_tcp, policy.network.connect_tcp):
        for grant in ports or ():
            for name in referenced(grant.value):
                yield name, grant.where
    main = policy.files[-1]
    for key, value in policy.process.set_environment:
        for name in referenced(value):
            yield name, SourceRef(main, 0, f"process.set_environment.{key}")


def missing(policy: Policy, values: Mapping[str, str]) -> dict[str, list[SourceRef]]:
    """Variables used by the policy that have no (or an empty) value, with where each is used."""
    out: dict[str, list[SourceRef]] = {}
    for name, where in references(policy):
        if not values.get(name):
            out.setdefault(name, []).append(where)
    return out


def require_values(policy: Policy, values: Mapping[str, str]) -> None:
    """Raise one PolicyError naming every variable without a value (and the --var for each)."""
    gaps = missing(policy, values)
    if not gaps:
        return
    first = next(iter(gaps.values()))[0]
    names = list(gaps)
    give = " ".join(f"--var {n}=VALUE" for n in names)
    if len(names) == 1:
        raise PolicyError(first, f"variable ${{{names[0]}}} has no value at this launch "
                                 f"(give it with {give})")
    uses = ", ".join(f"${{{n}}} ({os.path.basename(refs[0].file)}:{refs[0].line} {refs[0].key})"
                     for n, refs in gaps.items())
    raise PolicyError(first, f"variables without a value at this launch: {uses} (give them with {give})")
