"""`make demo`: the sandbox at work, until the node exists.

Checks the shipped policies, explains the strict one, then forks a child under it and runs
the escape battery inside, printing the enforcement report and every attempt.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from cleancoin.sandbox import probe
from cleancoin.sandbox.errors import PolicyErrors
from cleancoin.sandbox.explain import explain
from cleancoin.sandbox.launcher import SpawnError
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy


def main() -> int:
    """Run the demo; exit status 1 if the probe found an escape."""
    path = shipped_policy("strict")
    try:
        policy = load_policy(path)
    except PolicyErrors as errors:
        print(errors, file=sys.stderr)
        return 1
    print("== CleanCoin-sandbox explain strict ==")
    print(explain(policy).to_text())
    datadir = tempfile.mkdtemp(prefix="cleancoin-demo-", dir="/var/tmp")
    try:
        print(f"\n== CleanCoin-sandbox probe --policy strict --datadir {datadir} ==")
        try:
            result = probe.probe(policy, {"datadir": datadir, "tmpdir": datadir})
        except SpawnError as exc:
            print(f"the sandbox could not be applied: {exc}", file=sys.stderr)
            return 1
        print(result.report.to_text())
        print()
        print(result.to_text())
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    return 1 if result.escapes else 0


if __name__ == "__main__":
    sys.exit(main())
