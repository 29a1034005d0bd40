"""CleanCoin-sandbox: check, explain, run, probe, learn, diff, score, status, export and import
sandbox policies.

Exit statuses (docs/audit.md):
  0    success, nothing found
  1    a finding: check found errors, probe an escape, diff a widening, score above
       --threshold, learn something used that the policy does not grant, status a process
       that is not sandboxed
  2    usage: unknown command or option, missing argument
  125  the tool could not do its job: a policy file that cannot be read as one (missing,
       unreadable, a directory, binary, not UTF-8, empty, too large), a policy that does not
       load for run/probe/..., a missing variable, a sandbox step that failed, a file it
       cannot read or write
No input ends in a traceback.
  141  the reader of standard output went away (as a program killed by SIGPIPE)
  `run` (and `probe --script`) pass the program's own status through (128 + N when it was
  killed by signal N, as shells do).
With --json every result and every error is one JSON document on standard output.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

from cleancoin.sandbox import variables
from cleancoin.sandbox.errors import EnforcementError, PolicyError, PolicyErrors, PolicyFileError, SourceRef
from cleancoin.sandbox.policy_files import shipped_names, shipped_policy

TYPE_CHECKING = False     # not typing's: `run` imports neither typing nor argparse

if TYPE_CHECKING:
    import argparse
    from typing import NoReturn

    from cleancoin.sandbox.model import Policy

# The launcher (and with it every enforcement step, landlock, seccomp, ...) is imported by
# the commands that launch something, not at start-up: `check`, `diff`, `score` and the
# others never need it (docs/audit.md, "Start-up time").

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_TOOL_FAILED, EXIT_PIPE = 0, 1, 2, 125, 141
PROG = "CleanCoin-sandbox"


class ToolError(Exception):
    """The tool cannot do its job: a message (and, for policy errors, each error as data)."""

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None,
                 code: int = EXIT_TOOL_FAILED) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.code = code


# ------------------------------------------------------------------------------ shared helpers

def _methods_done() -> None:
    """Imported and planned: dataclasses gets its own `exec` back, and what was compiled
    through the method cache is written (cli/sandbox_script.py). Nothing when the cache was
    not activated (a test calling `main`)."""
    cache = sys.modules.get("cleancoin.sandbox.method_cache")
    if cache is not None:
        cache.finish()


def _resume_gc() -> None:
    """Before a command launches: dataclasses' own `exec` back (`_methods_done`), the objects
    of the imports and the plan frozen (never scanned again, and a forked child's collector
    does not touch their pages), the cyclic collector on again. Nothing of the collector if
    it was not paused (`script`; a test calling `main`)."""
    _methods_done()
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


def policy_path(name: str) -> str:
    """A path as given (absolute, ending in .toml, or starting with ./ or ../), or the name of
    a shipped policy (`strict`, `wallet`, `base/python`), or else a file of that name. A shipped
    name is the shipped policy even where the working directory holds a file of that name
    (since 12-07; before, `check wallet` in a checkout holding a file `wallet` checked that
    file and printed 'wallet: ok', as a components' name meant it for restrict_self)."""
    if os.path.isabs(name) or name.endswith(".toml") or name.startswith(("./", "../")):
        return name
    shipped = shipped_policy(name)
    return shipped if os.path.isfile(shipped) else name


def _load_policy(path: str, cached: bool = False, edges: list[tuple[str, str, str]] | None = None) -> Policy:
    """load_policy, with any failure as PolicyErrors: a loader bug (an exception that is not
    a PolicyError) must still give the user one clean line naming the file, not a traceback.
    `cached`: from the policy cache when a checked entry is there (sandbox/policy_cache.py),
    which spares `run` the loader's imports; `check` and the others always load in full.
    `edges` receives the `extends` entries followed (policy_loader.load_policy)."""
    try:
        if cached:
            from cleancoin.sandbox.policy_cache import load_policy as load_checked
            return load_checked(path)
        from cleancoin.sandbox.policy_loader import load_policy
        return load_policy(path, edges)
    except PolicyErrors:
        raise
    except Exception as exc:     # the last line of defence; the fuzz tests look for these
        raise PolicyErrors([PolicyFileError(SourceRef(path, 0, ""),
                                            f"internal error while loading the policy "
                                            f"({type(exc).__name__}); please report it")]) from None


def load(name: str, cached: bool = False) -> Policy:
    """Load a policy for a command that needs it; a broken one is a ToolError (exit 125)."""
    path = policy_path(name)
    if not os.path.exists(path):
        raise ToolError(f"no policy file '{name}' and no shipped policy of that name "
                        f"(shipped: {', '.join(shipped_names())})")
    try:
        return _load_policy(path, cached)
    except PolicyErrors as errors:
        raise ToolError(str(errors), [e.as_dict() for e in errors.errors]) from None


def emit(args: argparse.Namespace, data: object, text: str) -> None:
    """Print the result: JSON with --json, else the text."""
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


def _variables(args: argparse.Namespace) -> dict[str, str]:
    # ${tmpdir} is /tmp by default: the policy's fresh tmpfs (base/python), nothing on the host.
    values: dict[str, str] = {}
    if getattr(args, "datadir", None):
        values["datadir"] = os.path.abspath(args.datadir)
    for item in getattr(args, "var", []):
        name, sep, value = item.partition("=")
        if not sep or name not in variables.KNOWN:
            raise ToolError(f"--var {item!r}: expected NAME=VALUE with NAME one of "
                            f"{', '.join(variables.KNOWN)}", code=EXIT_USAGE)
        values[name] = value
    return values


@contextlib.contextmanager
def _launch_errors() -> Iterator[None]:
    """A policy or sandbox failure at launch is the tool's failure (exit 125)."""
    from cleancoin.sandbox import launcher
    try:
        yield
    except (PolicyError, EnforcementError, launcher.SpawnError) as exc:
        errors = [exc.as_dict()] if isinstance(exc, PolicyError) else []
        raise ToolError(str(exc), errors) from None


def _exit_code(code: int) -> int:
    """A child's return code as a shell reports it: 128 + N when killed by signal N."""
    return 128 - code if code < 0 else code


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ToolError(f"cannot write {path}: {exc.strerror}") from None


# ------------------------------------------------------------------------------ commands

def cmd_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in args.policy:
        path = policy_path(name)
        edges: list[tuple[str, str, str]] = []
        try:
            policy = _load_policy(path, edges=edges)
        except PolicyErrors as errors:
            if args.json:
                print(json.dumps({"policy": path, "ok": False, "errors": [e.as_dict() for e in errors.errors]}))
            else:
                for err in errors.errors:
                    print(err, file=sys.stderr)
            # Errors in a policy's content are a finding; a file that is no policy at all
            # (unreadable, binary, too large) means the tool could not do its job.
            status = max(status, EXIT_TOOL_FAILED if errors.unreadable else EXIT_FINDING)
            continue
        # A base beside the policy that takes the place of a shipped one of the name written.
        from cleancoin.sandbox.policy_files import shadowed_shipped
        shadows = [(written, including, target, shipped) for written, including, target in edges
                   if (shipped := shadowed_shipped(written, target)) is not None]
        # A variable naming a place one run writes and the next reads code from (12-08).
        from cleancoin.sandbox.written_code import code_from_written_paths
        persists = code_from_written_paths(policy)
        if args.json:
            print(json.dumps({"policy": path, "ok": True, "name": policy.name,
                              "files": list(policy.files),
                              "shadows": [{"extends": w, "in": i, "file": t, "shipped": s}
                                          for w, i, t, s in shadows],
                              "runs_code_it_may_write": persists}))
        else:
            print(f"{path}: ok ({policy.name}, {_filter_summary(policy)})")
            for written, including, target, _shipped in shadows:
                print(f"  {including}: extends '{written}' is {target}, beside it, NOT the shipped "
                      f"policy of that name")
            for line in persists:
                print(f"  {line}")
    return status


def _filter_summary(policy: Policy) -> str:
    """What the filter lets run, in a few words: the names it lets through whatever the
    arguments (the count `explain` gives), those argument rules let through in part, and a
    default that lets the rest run. Until 12-07 `check` counted the allow list: 353 allowed for
    a policy whose log default let every syscall run, execve counted though a rule refused it."""
    sc = policy.seccomp
    if not sc.enabled:
        return "NO syscall filter"
    text = f"{len(policy.reachable_syscalls)} syscalls allowed"
    if partly := policy.allowed_by_argument_rule:
        text += f", {len(partly)} more for some arguments"
    if sc.default_action == "log":
        text += "; every other syscall RUNS (default log)"
    return text


def cmd_explain(args: argparse.Namespace) -> int:
    policy = load(args.policy)
    if args.pfc:
        from cleancoin.sandbox import seccomp
        from cleancoin.sandbox.filter_spec import filter_spec
        print(seccomp.pseudo_code(filter_spec(policy)), end="")
        return EXIT_OK
    from cleancoin.sandbox.explain import explain
    from cleancoin.sandbox.policy_dump import dump
    ex = explain(policy)
    emit(args, {**dump(policy), "sections": ex.sections}, ex.to_text())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ToolError("run: no command given (... -- CMD [ARG...])", code=EXIT_USAGE)
    from cleancoin.sandbox import launcher
    policy = load(args.policy, cached=True)
    with _launch_errors():
        denials = None
        if args.denials:
            from cleancoin.sandbox.denial_log import DenialLog
            denials = DenialLog("", verbose=args.denials == "verbose")
        plan = launcher.prepare(policy, _variables(args), denials=denials)
        from cleancoin.sandbox.kernel_log import position
        # Only kernel log records written from here on can be this launch's (pids are reused).
        mark = position()
        # Imported and planned: the collector is back on (and what exists frozen) for as
        # long as the program runs (`script`).
        _resume_gc()
        # The program's output passes through this process: as it is, unless it goes to a
        # terminal, where control characters are shown as text (stdio = "pipe").
        child = launcher.spawn(plan, command, raw_output=True)
    if args.report and child.report is not None:
        print(json.dumps({"report": child.report.to_dict()}) if args.json else child.report.to_text(),
              file=sys.stderr)
    component = child.registered or child.component_pid()
    code = child.wait()
    if child.output is not None:
        child.output.join()
    if code < 0:
        message = f"{command[0]} {launcher.describe_status(child.status or 0)}"
        if code == -signal.SIGSYS:
            from cleancoin.sandbox.kernel_log import seccomp_kill
            syscall = seccomp_kill(component, after=mark)
            if syscall:
                message += f": {syscall}, says the kernel log"
        print(json.dumps({"program": command[0], "signal": -code, "message": message}) if args.json
              else f"{PROG}: {message}", file=sys.stderr)
    if mark is not None:
        os.close(mark)
    return _exit_code(code)


def cmd_probe(args: argparse.Namespace) -> int:
    from cleancoin.sandbox import probe
    policy = load(args.policy)
    _resume_gc()         # many launches ahead (`script`)
    with _launch_errors():
        result = probe.probe(policy, _variables(args), args.script)
    if args.junit:
        from cleancoin.sandbox.junit import probe_junit
        _write(args.junit, probe_junit(result, policy.name))
    emit(args, result.to_dict(), result.to_text())
    if args.script and result.script_status is not None:
        return _exit_code(result.script_status)   # the script's own status, as `run` does
    if result.errors and not args.json:
        print(f"{PROG}: {len(result.errors)} attempts could not be made, so nothing is known of "
              f"them: {', '.join(a.name for a in result.errors)}", file=sys.stderr)
    if result.escapes:
        return EXIT_FINDING
    # An attempt that could not be made proves nothing: a policy that kills every child
    # at start (process.rlimits.cpu = 0) must not read as "no escape" in CI.
    return EXIT_TOOL_FAILED if result.errors else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from cleancoin.sandbox.policy_diff import diff
    result = diff(load(args.a), load(args.b), args.a, args.b)
    emit(args, result.to_dict(), result.to_text())
    return EXIT_FINDING if result.widens else EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from cleancoin.sandbox.score import score
    results = [score(load(name)) for name in args.policy]
    over = [r for r in results if args.threshold is not None and r.exposure > args.threshold]
    if args.json:
        print(json.dumps({"threshold": args.threshold, "policies": [r.to_dict() for r in results],
                          "above_threshold": [r.policy for r in over]}, indent=2))
    else:
        print("\n\n".join(r.to_text() for r in results))
        for r in over:
            print(f"{PROG}: policy '{r.policy}' exposure {r.exposure:.1f} is above the threshold "
                  f"{args.threshold:.1f}", file=sys.stderr)
    return EXIT_FINDING if over else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from cleancoin.sandbox.export import oci
    policy = load(args.policy)
    try:
        if args.format == "oci":
            with _launch_errors():       # a rule libseccomp refuses is the policy's error
                exported = oci.export_profile(policy)
            content, notes = json.dumps(exported.profile, indent=2) + "\n", exported.notes
        elif args.format == "systemd":
            from cleancoin.sandbox.export import systemd
            with _launch_errors():
                unit = systemd.export_unit(policy, _variables(args), user=args.user,
                                           exec_start=args.exec_start)
            content, notes = unit.text, unit.notes
        else:
            from cleancoin.sandbox.export import kubernetes
            with _launch_errors():
                k8s = kubernetes.export_container(policy, _variables(args), args.profile_name,
                                                  run_as_user=args.run_as_user)
            content, notes = k8s.yaml, k8s.notes
            if args.profile_out:
                _write(args.profile_out, json.dumps(k8s.profile, indent=2) + "\n")
    except oci.FormatError as exc:
        raise ToolError(str(exc)) from None
    if args.out:
        _write(args.out, content)
    if args.json:
        print(json.dumps({"policy": policy.name, "format": args.format, "out": args.out,
                          "content": None if args.out else content, "notes": notes}, indent=2))
    else:
        if not args.out:
            print(content, end="")
        for note in notes:
            print(f"{PROG}: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from cleancoin.sandbox.export import oci
    try:
        with open(args.file, encoding="utf-8") as handle:
            profile = json.load(handle)
    except OSError as exc:
        raise ToolError(f"cannot read {args.file}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ToolError(f"{args.file}: not JSON: {exc}") from None
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    try:
        result = oci.import_profile(profile, name, os.path.basename(args.file), caps=args.cap)
    except (oci.FormatError, KeyError, TypeError, ValueError) as exc:
        raise ToolError(f"{args.file}: {exc}") from None
    if args.out:
        _write(args.out, result.toml)
    if args.json:
        print(json.dumps({"file": args.file, "out": args.out, "notes": result.notes,
                          "toml": None if args.out else result.toml}, indent=2))
    elif not args.out:
        print(result.toml, end="")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from cleancoin.sandbox import status
    results = [r for pid in args.pid
               for r in (status.inspect_tree(pid) if args.tree else [status.inspect(pid)])]
    if args.json:
        print(json.dumps({"processes": [r.to_dict() for r in results]}, indent=2))
    else:
        print("\n\n".join(r.to_text() for r in results))
    missing = [r for r in results if r.error]
    if missing:
        return EXIT_TOOL_FAILED
    return EXIT_FINDING if any(not r.sandboxed for r in results) else EXIT_OK


def cmd_learn(args: argparse.Namespace) -> int:
    from cleancoin.sandbox import learn
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.records:
        raise ToolError("learn: give a program (... -- CMD [ARG...]) or --from DIR", code=EXIT_USAGE)
    policy = load(args.policy)
    _resume_gc()         # a program to run and records to read (`script`)
    progress = None if args.quiet else (lambda text: print(f"learn: {text}", file=sys.stderr, flush=True))
    with _launch_errors():
        if command:
            # With --json standard output is the report's: the program's goes to stderr.
            saved = os.dup(1) if args.json else -1
            if args.json:
                sys.stdout.flush()
                os.dup2(2, 1)
            try:
                result = learn.learn_program(policy, _variables(args), command, progress=progress)
            finally:
                if saved >= 0:
                    os.dup2(saved, 1)
                    os.close(saved)
        else:
            result = learn.learn_from(policy, args.records)
    if result.observation.empty:
        raise ToolError("learn: nothing was recorded (did the program start? for --from: does "
                        f"the directory hold records of policy '{policy.name}'?)")
    out = args.out or f"{policy.name.replace('/', '-')}.learned.toml"
    _write(out, result.toml)
    emit(args, {**result.to_dict(), "out": out}, result.to_text() + f"\nlearned policy written to {out}")
    return EXIT_FINDING if result.diff.used_not_granted() else EXIT_OK


# ------------------------------------------------------------------------------ the parser

def _policy_vars(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--datadir", help="value of ${datadir}")
    cmd.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                     help=f"value of another ${{variable}} ({', '.join(variables.KNOWN)}); repeatable")


def _json(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", action="store_true", help="the result (and any error) as JSON on standard output")


def _args_check(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("policy", nargs="+", help="policy files or shipped names")
    _json(cmd)
    cmd.set_defaults(func=cmd_check)


def _args_explain(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("policy")
    _json(cmd)
    cmd.add_argument("--pfc", action="store_true", help="print the seccomp filter as libseccomp pseudo code")
    cmd.set_defaults(func=cmd_explain)


def _args_run(cmd: argparse.ArgumentParser) -> None:
    from argparse import REMAINDER      # loaded already: this runs while the parser is built
    cmd.add_argument("--policy", required=True)
    _policy_vars(cmd)
    cmd.add_argument("--report", action="store_true", help="print the enforcement report on stderr")
    cmd.add_argument("--denials", choices=("log", "verbose"),
                     help="log the syscalls the policy refuses with an errno on stderr (verbose: every one)")
    cmd.add_argument("--json", action="store_true", help="the tool's own messages as JSON on stderr")
    cmd.add_argument("command", nargs=REMAINDER)
    cmd.set_defaults(func=cmd_run)


def _args_probe(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--policy", required=True)
    _policy_vars(cmd)
    cmd.add_argument("--script", help="a Python file to run inside instead of the battery")
    cmd.add_argument("--junit", metavar="FILE", help="also write the attempts as JUnit XML (one test case each)")
    _json(cmd)
    cmd.set_defaults(func=cmd_probe)


def _args_learn(cmd: argparse.ArgumentParser) -> None:
    from argparse import REMAINDER      # loaded already: this runs while the parser is built
    cmd.add_argument("--policy", required=True, help="the current policy: namespaces and process "
                                                     "settings, and what the result is compared with")
    _policy_vars(cmd)
    cmd.add_argument("--out", help="where to write the learned policy (default NAME.learned.toml)")
    cmd.add_argument("--from", dest="records", metavar="DIR",
                     help="learn from the records components wrote with CleanCoin-node -sandboxlearn=DIR")
    cmd.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _json(cmd)
    cmd.add_argument("command", nargs=REMAINDER)
    cmd.set_defaults(func=cmd_learn)


def _args_diff(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("a")
    cmd.add_argument("b")
    _json(cmd)
    cmd.set_defaults(func=cmd_diff)


def _args_score(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("policy", nargs="+")
    cmd.add_argument("--threshold", type=float, help="exit 1 when a policy scores above this")
    _json(cmd)
    cmd.set_defaults(func=cmd_score)


def _args_status(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("pid", nargs="+", type=int)
    cmd.add_argument("--tree", action="store_true", help="the processes and all their descendants")
    _json(cmd)
    cmd.set_defaults(func=cmd_status)


def _args_export(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--format", required=True, choices=("oci", "systemd", "kubernetes"))
    cmd.add_argument("policy")
    _policy_vars(cmd)
    cmd.add_argument("--out", help="write to this file instead of standard output")
    cmd.add_argument("--user", default="cleancoin", help="systemd: User= of the unit (default cleancoin)")
    cmd.add_argument("--exec-start", help="systemd: write a whole unit with this ExecStart= "
                                          "instead of a drop-in")
    cmd.add_argument("--profile-name", help="kubernetes: the Localhost profile's path "
                                            "(default cleancoin/NAME.json)")
    cmd.add_argument("--profile-out", help="kubernetes: write the seccomp profile to this file")
    cmd.add_argument("--run-as-user", type=int, default=10001, help="kubernetes: runAsUser (default 10001)")
    _json(cmd)
    cmd.set_defaults(func=cmd_export)


def _args_import(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--format", required=True, choices=("oci",))
    cmd.add_argument("file")
    cmd.add_argument("--name", help="the policy's name (default: the file's)")
    cmd.add_argument("--cap", action="append", default=[], metavar="CAP_NAME",
                     help="a capability the container keeps, for Docker's includes/excludes; repeatable")
    cmd.add_argument("--out", help="write to this file instead of standard output")
    _json(cmd)
    cmd.set_defaults(func=cmd_import)


#: Each command: its name, its line in the top-level help, and what fills in its arguments.
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("check", "validate policy files (exit 1 on errors)", _args_check),
    ("explain", "what a policy lets a component do: words, or --json data", _args_explain),
    ("run", "run a program under a policy (its exit status passes through)", _args_run),
    ("probe", "try to escape a policy (exit 1 on an escape)", _args_probe),
    ("learn", "run a program with a recording filter and write the policy it needs", _args_learn),
    ("diff", "what policy B grants that A does not (exit 1 if B is wider)", _args_diff),
    ("score", "exposure score, 0.0 (closed) to 10.0 (no sandbox)", _args_score),
    ("status", "what the kernel enforces on running processes", _args_status),
    ("export", "write a policy for runc/Docker (oci), systemd or Kubernetes", _args_export),
    ("import", "a policy from an OCI seccomp profile (Docker's default, ...)", _args_import),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line parser. With `command`, only that subcommand is given its arguments
    (the others keep their name and help line): argparse builds a help formatter for every
    add_argument, a few milliseconds for all of them, and one invocation runs one command."""
    from cleancoin.cli.sandbox_parser import Parser, RawDescriptionFormatter
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
                    epilog=__doc__.split("\n\n", 1)[1], formatter_class=RawDescriptionFormatter)
    # prog given: argparse would otherwise build a help formatter to work it out.
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=Parser, prog=PROG)
    for name, help_line, add_arguments in COMMANDS:
        cmd = sub.add_parser(name, help=help_line)
        if command is None or command == name:
            add_arguments(cmd)
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """bitcoind's help spellings (-help, -?, -h) become --help, before any `--`."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        out.append("--help" if arg in ("-help", "-?", "-h") else arg)
    return out


def _report_error(exc: ToolError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": False, "exit": exc.code, "error": str(exc), "errors": exc.errors}))
    else:
        print(f"{PROG}: {exc}", file=sys.stderr)


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone (POLLERR/POLLHUP)."""
    import select
    with contextlib.suppress(OSError, ValueError, AttributeError):
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0))
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of CleanCoin-sandbox."""
    args_in = _normalise(list(sys.argv[1:] if argv is None else argv))
    before = args_in[:args_in.index("--")] if "--" in args_in else args_in
    as_json = "--json" in before
    if not as_json:
        # Policies, learned paths and probed children's answers are others' text (JSON output
        # escapes them itself): no escape sequence of theirs reaches the terminal.
        from cleancoin.sandbox.printable import VisibleWriter
        sys.stdout, sys.stderr = VisibleWriter(sys.stdout), VisibleWriter(sys.stderr)  # type: ignore[assignment]
    # The command is the first word: the top level has no options but --help.
    command = next((arg for arg in before if not arg.startswith("-")), "")
    try:
        from cleancoin.cli import run_args
        # `run`, plainly spelled, is read without argparse (cli/run_args.py); anything else,
        # every usage error included, is argparse's.
        args = run_args.parse(args_in)
        if args is None:
            from cleancoin.cli.sandbox_parser import Parser
            Parser.json_errors = as_json
            args = build_parser(command).parse_args(args_in)
            return int(args.func(args))
        return int(cmd_run(args))
    except ToolError as exc:
        _report_error(exc, as_json)
        return exc.code
    except BrokenPipeError as exc:
        if not _stdout_gone():
            # Another pipe or socket broke (a sandboxed child that died before reading its
            # request): the tool failed, and says so, rather than pass for `... | head`.
            _report_error(ToolError(f"a pipe to another process broke: {exc.strerror}"), as_json)
            return EXIT_TOOL_FAILED
        # `explain --pfc | head`: the reader is gone. Say nothing, as a program killed by
        # SIGPIPE says nothing, and keep Python from complaining when it flushes at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        _methods_done()         # the commands that launch nothing (check, explain, ...)


def script() -> NoReturn:
    """The CleanCoin-sandbox console script: `main` with the cyclic collector off while the
    tool imports and plans (as CleanCoin-node's start-up, components/common/startup_gc.py:
    about 5 ms of CPU for `run`; the commands that launch turn it back on before they do,
    `_resume_gc`), ending without the interpreter's teardown (cli/process_exit.py)."""
    from cleancoin.cli.process_exit import run_and_exit
    gc.disable()
    run_and_exit(main)


if __name__ == "__main__":
    script()
