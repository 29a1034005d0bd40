"""Which `[[seccomp.rules]]` of a merged policy the filter applies: the model keeps those only.

A rule without `args` decides every call of its syscall: the compiler (`seccomp.rule_table`)
keeps the last such rule and drops every other rule for that syscall, since libseccomp drops a
syscall's conditional rules beside an unconditional one. Until 12-07 the model kept them all,
so the review tools read rules the filter did not have: a policy extending one that refused
`uname` (`{ syscall = "uname", action = "errno:EPERM" }`) and forks (`clone` without
CLONE_THREAD) added `{ syscall = "uname", action = "allow" }` and `{ syscall = "clone", action
= "log" }`; `diff` called both "changed" and "B grants nothing that A does not", `explain`
listed uname as refused and the fork refusal as in force, and the launched program ran uname
and forked.

Now the model holds exactly what the filter applies, so `diff`, `explain`, `export` and the
launcher read one list:

- a later file's rule without `args` replaces the rules of its syscall from earlier files
  (`diff` then shows those removed, and judges what that widens);
- within one file, a rule without `args` beside another rule for the same syscall is an error
  (one of them would silently not apply);
- a rule with `args` after a rule without them for its syscall is an error: it would never
  apply.
"""

from __future__ import annotations

import os

from .errors import PolicyError
from .model import SeccompRule


def _at(rule: SeccompRule) -> str:
    return f"{os.path.basename(rule.where.file)}:{rule.where.line}"


def effective_rules(rules: tuple[SeccompRule, ...], errors: list[PolicyError]) -> tuple[SeccompRule, ...]:
    """The rules the filter applies, in merge order (bases first); an error for each rule that
    would not apply, naming the rule that takes its place (module docstring)."""
    kept: list[SeccompRule] = []
    for rule in rules:
        earlier = [r for r in kept if r.syscall == rule.syscall]
        unconditional = next((r for r in earlier if not r.args), None)
        if rule.args:
            if unconditional is not None:
                errors.append(PolicyError(rule.where, f"this rule for '{rule.syscall}' would never "
                                                      f"apply: the rule without args at "
                                                      f"{_at(unconditional)} decides every call of it "
                                                      "(the filter keeps that one alone)"))
                continue
            kept.append(rule)
            continue
        same_file = [r for r in earlier if r.where.file == rule.where.file]
        if same_file:
            other = same_file[0]
            errors.append(PolicyError(rule.where, f"a rule without args for '{rule.syscall}' decides "
                                                  f"every call of it, so the rule for it at "
                                                  f"{_at(other)} would never apply: remove one, or "
                                                  "give this one args"))
            continue
        # A later file's word on the whole syscall: the bases' rules for it are replaced.
        kept = [r for r in kept if r.syscall != rule.syscall]
        kept.append(rule)
    return tuple(kept)
