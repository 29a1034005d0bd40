"""CleanCoin-sandbox: check, explain, run and probe sandbox policies.

Exit codes: 0 success; 1 a check found errors or a probe found an escape; 125 the tool
itself could not do its job (a policy file that cannot be read as one: missing, unreadable, a
directory, binary, not UTF-8, empty, too large; a bad policy for run/probe; a sandbox step that
failed); for `run`, otherwise the program's own status (128 + N when killed by signal N, as
shells do). No input ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

from cleancoin.sandbox import launcher, variables
from cleancoin.sandbox.errors import (
    EnforcementError, PolicyError, PolicyErrors, PolicyFileError, SourceRef,
)
from cleancoin.sandbox.explain import explain
from cleancoin.sandbox.model import Policy
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy

EXIT_TOOL_FAILED = 125


def _policy_path(name: str) -> str:
    """A path as given, or the name of a shipped policy (`strict`, `wallet`, `base/python`)."""
    if os.path.exists(name) or name.endswith(".toml"):
        return name
    shipped = shipped_policy(name)
    return shipped if os.path.exists(shipped) else name


def _load(path: str) -> Policy:
    """load_policy, with any failure as PolicyErrors: a loader bug (an exception that is not
    a PolicyError) must still give the user one clean line naming the file, not a traceback."""
    try:
        return load_policy(path)
    except PolicyErrors:
        raise
    except Exception as exc:     # the last line of defence; the fuzz tests look for these
        raise PolicyErrors([PolicyFileError(SourceRef(path, 0, ""),
                                            f"internal error while loading the policy "
                                            f"({type(exc).__name__}); please report it")]) from None


def _failure_status(errors: PolicyErrors) -> int:
    """1 for errors in a policy's content, 125 when a file could not be read as a policy."""
    return EXIT_TOOL_FAILED if errors.unreadable else 1


def _errors_out(errors: PolicyErrors, as_json: bool, path: str) -> None:
    if as_json:
        print(json.dumps({"policy": path, "ok": False, "errors": [e.as_dict() for e in errors.errors]}))
    else:
        for err in errors.errors:
            print(err, file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    status = 0
    for name in args.policy:
        path = _policy_path(name)
        try:
            policy = _load(path)
        except PolicyErrors as errors:
            _errors_out(errors, args.json, path)
            status = max(status, _failure_status(errors))
            continue
        if args.json:
            print(json.dumps({"policy": path, "ok": True, "name": policy.name,
                              "files": list(policy.files)}))
        else:
            print(f"{path}: ok ({policy.name}, {len(policy.allowed_syscalls)} syscalls allowed)")
    return status


def cmd_explain(args: argparse.Namespace) -> int:
    path = _policy_path(args.policy)
    try:
        policy = _load(path)
    except PolicyErrors as errors:
        _errors_out(errors, args.json, path)
        return _failure_status(errors)
    if args.pfc:
        from cleancoin.sandbox import seccomp
        sc = policy.seccomp
        where = sc.allow[0].where if sc.allow else PolicyError  # any SourceRef will do
        print(seccomp.pseudo_code(seccomp.FilterSpec(sc.default_action, policy.allowed_syscalls, sc.rules,
                                                     policy.network.socket_families, where)))  # type: ignore[arg-type]
        return 0
    ex = explain(policy)
    print(json.dumps(ex.to_dict(), indent=2) if args.json else ex.to_text())
    return 0


def _variables(args: argparse.Namespace) -> dict[str, str]:
    # ${tmpdir} is /tmp by default: the policy's fresh tmpfs (base/python), nothing on the host.
    values: dict[str, str] = {}
    if args.datadir:
        values["datadir"] = os.path.abspath(args.datadir)
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or name not in variables.KNOWN:
            raise SystemExit(f"CleanCoin-sandbox: --var {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(variables.KNOWN)}")
        values[name] = value
    return values


def _load_for_launch(args: argparse.Namespace) -> Policy | None:
    try:
        return _load(_policy_path(args.policy))
    except PolicyErrors as errors:
        _errors_out(errors, False, args.policy)
        return None


@contextlib.contextmanager
def _launch_errors() -> Iterator[None]:
    """Turn a policy or sandbox failure at launch into the tool's message (and exit 125)."""
    try:
        yield
    except (PolicyError, EnforcementError, launcher.SpawnError) as exc:
        print(f"CleanCoin-sandbox: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_TOOL_FAILED) from None


def _exit_code(code: int) -> int:
    """A child's return code as a shell reports it: 128 + N when killed by signal N."""
    return 128 - code if code < 0 else code


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("CleanCoin-sandbox run: no command given (… -- CMD [ARG...])", file=sys.stderr)
        return 2
    policy = _load_for_launch(args)
    if policy is None:
        return EXIT_TOOL_FAILED
    with _launch_errors():
        plan = launcher.prepare(policy, _variables(args))
        # The program's output passes through this process: as it is, unless it goes to a
        # terminal, where control characters are shown as text (stdio = "pipe").
        child = launcher.spawn(plan, command, raw_output=True)
    if args.report and child.report is not None:
        print(child.report.to_text(), file=sys.stderr)
    code = child.wait()
    if child.output is not None:
        child.output.join()
    if code < 0:
        print(f"CleanCoin-sandbox: {command[0]} {launcher.describe_status(child.status or 0)}",
              file=sys.stderr)
    return _exit_code(code)


def cmd_probe(args: argparse.Namespace) -> int:
    from cleancoin.sandbox import probe
    policy = _load_for_launch(args)
    if policy is None:
        return EXIT_TOOL_FAILED
    with _launch_errors():
        result = probe.probe(policy, _variables(args), args.script)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    if args.script and result.script_status is not None:
        return _exit_code(result.script_status)   # the script's own status, as `run` does
    return 1 if result.escapes else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="CleanCoin-sandbox", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command_name", required=True)

    check = sub.add_parser("check", help="validate policy files")
    check.add_argument("policy", nargs="+")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)

    exp = sub.add_parser("explain", help="what a policy lets a component do, in plain words")
    exp.add_argument("policy")
    exp.add_argument("--json", action="store_true")
    exp.add_argument("--pfc", action="store_true", help="print the seccomp filter as libseccomp pseudo code")
    exp.set_defaults(func=cmd_explain)

    for name, func, text in (("run", cmd_run, "run a program under a policy"),
                             ("probe", cmd_probe, "try to escape a policy, and report")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--policy", required=True)
        cmd.add_argument("--datadir", help="value of ${datadir}")
        cmd.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                         help="value of another ${variable}; repeatable")
        cmd.set_defaults(func=func)
        if name == "run":
            cmd.add_argument("--report", action="store_true", help="print the enforcement report on stderr")
            cmd.add_argument("command", nargs=argparse.REMAINDER)
        else:
            cmd.add_argument("--script", help="a Python file to run inside instead of the battery")
            cmd.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of CleanCoin-sandbox."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
