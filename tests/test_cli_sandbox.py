"""CleanCoin-sandbox as a user runs it: the installed executable, its output and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=timeout)


def test_check_accepts_the_shipped_policies_and_rejects_a_broken_one(tmp_path) -> None:
    ok = run("check", "strict", "base/python")
    assert ok.returncode == 0, ok.stderr
    assert "strict" in ok.stdout and "ok" in ok.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text('[seccomp]\nallow = ["opne"]\n')
    bad = run("check", str(broken))
    assert bad.returncode == 1
    assert f"{broken}:2: seccomp.allow[0]: unknown syscall 'opne'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_check_json_lists_every_error(tmp_path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[namespaces]\nuser = "yes"\n[seccomp]\nallow = ["execve"]\n')
    result = run("check", "--json", str(broken))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert {(e["line"], e["key"]) for e in data["errors"]} == {(2, "namespaces.user")}
    # Type errors stop the cross-checks; fix them and the dangerous grant shows up.
    broken.write_text('[namespaces]\nuser = true\n[seccomp]\nallow = ["execve"]\n')
    data = json.loads(run("check", "--json", str(broken)).stdout)
    assert [e["key"] for e in data["errors"]] == ["seccomp.allow[0]"]
    assert "needs a reason" in data["errors"][0]["message"]


def test_explain_groups_what_the_policy_allows() -> None:
    text = run("explain", "strict")
    assert text.returncode == 0
    for heading in ("Files", "Network", "Processes", "Kernel surface"):
        assert f"\n{heading}\n" in text.stdout
    assert "may not run other programs" in text.stdout
    data = json.loads(run("explain", "strict", "--json").stdout)
    assert data["policy"] == "strict"
    assert any("empty network namespace" in line for line in data["sections"]["Network"])
    pfc = run("explain", "strict", "--pfc")
    assert "action KILL_PROCESS" in pfc.stdout and "ioctl" in pfc.stdout


def _run_policy(tmp_path) -> str:
    policy = tmp_path / "run.toml"
    # An ordinary program (a shell that forks): the base, a datadir, no network, and the
    # right to run what is in /usr/bin.
    policy.write_text(
        f'extends = ["{_shipped("base/python")}"]\n'
        + '[namespaces]\nnet = true\n'
        + '[filesystem]\nwrite = ["${datadir}"]\nexecute = ["/usr/bin", "/usr/lib"]\n'
        + '[seccomp]\nallow = [{ syscall = "@system-service", reason = "an ordinary program" }, '
          '"fork", "vfork", { syscall = "execve", reason = "run execs the program" }]\n'
        + 'deny = ["@keyring", "@privileged", "@setuid", "unshare", "setns", "process_vm_readv", '
          '"process_vm_writev", "pidfd_getfd", "io_uring_setup", "userfaultfd", "personality", '
          '"kcmp", "name_to_handle_at", "open_tree", "execveat", "io_uring_enter", "io_uring_register"]\n')
    return str(policy)


def _shipped(name: str) -> str:
    from cleancoin.sandbox.policy_loader import shipped_policy
    return shipped_policy(name)


def test_run_passes_the_exit_status_through_and_confines_the_program(tmp_path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    policy = _run_policy(tmp_path)
    script = f"echo inside > {datadir}/out; cat /etc/passwd; exit 7"
    result = run("run", "--policy", policy, "--datadir", str(datadir), "--", "sh", "-c", script)
    assert result.returncode == 7, result.stderr
    assert (datadir / "out").read_text() == "inside\n"       # allowed: the datadir
    assert "No such file or directory" in result.stderr       # denied: /etc/passwd is not in the view


def test_run_refuses_a_policy_without_execve(tmp_path) -> None:
    result = run("run", "--policy", "strict", "--datadir", str(tmp_path), "--", "true")
    assert result.returncode == 125
    assert "sandbox step 'exec' failed" in result.stderr and "execve" in result.stderr


def test_run_reports_a_missing_variable(tmp_path) -> None:
    result = run("run", "--policy", _run_policy(tmp_path), "--", "true")
    assert result.returncode == 125
    assert "${datadir} has no value" in result.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_probe_under_strict_finds_no_escape(tmp_path, as_json: bool) -> None:
    junit = tmp_path / "probe.xml"
    args = ["probe", "--policy", "strict", "--datadir", str(tmp_path)] + (["--json"] if as_json else
                                                                          ["--junit", str(junit)])
    result = run(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    if as_json:
        data = json.loads(result.stdout)
        assert len(data["attempts"]) >= 30
        assert not [a for a in data["attempts"] if a["expected"] == "denied" and a["outcome"] == "allowed"]
    else:
        assert ", 0 escapes" in result.stdout
        # One JUnit test case per attempt, none failed (an escape would be a failure).
        import xml.etree.ElementTree as ET
        suite = ET.parse(junit).getroot()
        cases = suite.findall("testcase")
        assert len(cases) >= 30 and suite.get("failures") == "0" and int(suite.get("tests")) == len(cases)
        assert {c.get("name") for c in cases} >= {"fs-read-outside", "net-tcp-connect", "exec-bin-true"}
        assert all(c.find("system-out") is not None for c in cases)


@pytest.mark.parametrize("limit", ["as = 5000000", "cpu = 0"])
def test_a_policy_that_keeps_the_attempts_from_running_does_not_pass(tmp_path, limit: str) -> None:
    """A pull request's policy whose rlimits kill the attempt children at start: before 12-06
    `as` made probe end with 141 and no output (a broken pipe to a dead child read as "the
    reader went away"), and `cpu = 0` with "0 escapes, 25 errors" and status 0, which CI
    reads as a pass. Now every such attempt is an error and the probe fails (125)."""
    policy = tmp_path / "starved.toml"
    policy.write_text(f'extends = ["strict"]\n[process.rlimits]\n{limit}\n')
    for as_json in (False, True):
        result = run("probe", "--policy", str(policy), "--datadir", str(tmp_path),
                     *(["--json"] if as_json else []))
        assert result.returncode == 125, (result.returncode, result.stdout[-2000:], result.stderr)
        if as_json:
            data = json.loads(result.stdout)
            assert data.get("errors") or data.get("ok") is False, data
        else:
            assert "could not be made" in result.stderr or "failed" in result.stderr, result.stderr


def test_probe_passes_a_scripts_exit_status_through(tmp_path) -> None:
    # (That an escape makes probe exit 1 is shown in test_probe with probe_against.)
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    result = run("probe", "--policy", "strict", "--datadir", str(tmp_path), "--script", str(script))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "hi" in result.stdout


# ------------------------------------------------------------------ authoring comforts, CI use

def test_help_in_both_spellings() -> None:
    for spelling in ("-help", "--help", "-h", "-?"):
        result = run(spelling)
        assert result.returncode == 0, (spelling, result.stderr)
        assert "usage: CleanCoin-sandbox" in result.stdout and "Exit statuses" in result.stdout
    sub = run("learn", "-help")
    assert sub.returncode == 0 and "--from" in sub.stdout and "--json" in sub.stdout


def test_a_closed_pipe_ends_quietly() -> None:
    # explain --pfc | head: the reader goes away (here before the first line is written).
    proc = subprocess.Popen([TOOL, "explain", "strict", "--pfc"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_every_error_is_json_with_json_and_exit_statuses_are_distinct(tmp_path) -> None:
    usage = run("diff", "strict", "--json")                      # B is missing
    assert usage.returncode == 2
    assert json.loads(usage.stdout)["exit"] == 2
    missing = run("explain", "no-such-policy", "--json")
    assert missing.returncode == 125
    assert "no shipped policy" in json.loads(missing.stdout)["error"]
    broken = tmp_path / "broken.toml"
    broken.write_text('[seccomp]\nallow = ["opne"]\n')
    bad = run("score", str(broken), "--json")
    assert bad.returncode == 125
    data = json.loads(bad.stdout)
    assert data["errors"][0]["key"] == "seccomp.allow[0]" and "opne" in data["errors"][0]["message"]
    probe = run("probe", "--policy", "node", "--json")
    assert probe.returncode == 125
    assert json.loads(probe.stdout)["ok"] is False
    assert "Traceback" not in probe.stdout + probe.stderr


def test_all_missing_variables_are_named_in_one_error() -> None:
    result = run("probe", "--policy", "node")
    assert result.returncode == 125
    for name in ("datadir", "port", "rpcport", "ipcport"):
        assert f"${{{name}}}" in result.stderr and f"--var {name}=VALUE" in result.stderr
    assert result.stderr.count("\n") == 1


def test_explain_says_what_runs_under_a_log_default_and_rules_without_args(tmp_path: Path) -> None:
    """Until 12-07 `explain` read the allow list alone: under `default_action = "log"` it said
    "may not trace or read the memory of other processes" and listed ptrace among the refused
    calls, and the same for a `{ syscall = "ptrace", action = "allow" }` rule, while the
    launched program's ptrace(PTRACE_TRACEME) returned 0."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    data = tmp_path / "data"
    data.mkdir()
    logged = tmp_path / "logged.toml"
    logged.write_text('extends = ["examples/program"]\n[seccomp]\ndefault_action = "log"\nreason = "this test"\n')
    ruled = tmp_path / "ruled.toml"
    ruled.write_text('extends = ["examples/program"]\n[[seccomp.rules]]\nsyscall = "ptrace"\n'
                     'action = "allow"\nreason = "a debugger"\n')
    traceme = "import ctypes; print(ctypes.CDLL(None).ptrace(0, 0, 0, 0))"

    def ptrace(policy: str) -> subprocess.CompletedProcess[str]:
        return run("run", "--policy", policy, "--datadir", str(data), "--", "/usr/bin/python3", "-c", traceme)

    assert ptrace("examples/program").stdout == ""          # killed by the filter
    for policy in (logged, ruled):
        assert ptrace(str(policy)).stdout == "0\n"
        text = run("explain", str(policy)).stdout
        assert "MAY trace other processes (ptrace)" in text, text
        refused = [line for line in text.splitlines() if "refused, among others" in line]
        assert not any("ptrace" in line for line in refused), refused
    assert "dangerous syscalls that RUN under the log default: " in run("explain", str(logged)).stdout
    ruled_text = run("explain", str(ruled)).stdout
    assert "PLUS ptrace, let through by the rules below" in ruled_text
    assert "dangerous syscalls granted: execve, ptrace" in ruled_text


def test_namespaces_by_clone_follow_what_unshare_can_do_not_the_allow_list(tmp_path: Path) -> None:
    """clone with CLONE_NEW* flags is refused unless the policy allows unshare. Until 12-07 the
    filter asked the allow list: `allow = ["unshare"]` beside `{ syscall = "unshare", action =
    "errno:EPERM" }` showed unshare refused (explain; diff: '+ unshare' and '- unshare ...'),
    and clone(CLONE_NEWUSER) made a child in a new user namespace."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    data = tmp_path / "data"
    data.mkdir()
    policy = tmp_path / "unshare-listed.toml"
    policy.write_text('extends = ["examples/program"]\n[seccomp]\n'
                      'allow = [{ syscall = "unshare", reason = "refused by the rule below" }]\n'
                      '[[seccomp.rules]]\nsyscall = "unshare"\naction = "errno:EPERM"\n')
    clone = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
             "pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)   # clone(CLONE_NEWUSER | SIGCHLD)\n"
             "if pid == 0: os._exit(0)\n"
             "print(pid, ctypes.get_errno(), libc.unshare(0x10000000), ctypes.get_errno())")
    result = run("run", "--policy", str(policy), "--datadir", str(data), "--", "/usr/bin/python3", "-c", clone)
    assert result.stdout == "-1 1 -1 1\n", result.stdout + result.stderr     # EPERM both ways
    assert "may not create namespaces (unshare refused; clone with CLONE_NEW* flags answers EPERM)" \
        in run("explain", str(policy)).stdout


def test_explain_json_is_structured() -> None:
    data = json.loads(run("explain", "wallet", "--json").stdout)
    assert data["namespaces"]["net"] is True
    assert {"path": "${walletdir}"} in data["filesystem"]["write"]
    assert data["network"] == {"bind_tcp": [], "connect_tcp": [],
                               "socket_families": [{"family": "unix", "raw": False}]}
    assert "execve" not in data["seccomp"]["allowed"] and "read" in data["seccomp"]["allowed"]
    assert data["seccomp"]["allowed_count"] == len(data["seccomp"]["allowed"])
    assert {"syscall": "fchown", "action": "errno:EPERM", "args": [], "log": False} in data["seccomp"]["rules"]
    assert data["process"]["rlimits"]["nofile"] == {"soft": 1024, "hard": 1024}
    assert data["compatibility"]["landlock_min_abi"] == 6


def test_a_policy_anywhere_extends_a_shipped_one_by_name(tmp_path) -> None:
    own = tmp_path / "own.toml"
    own.write_text('extends = ["base/python"]\n[filesystem]\nwrite = ["${datadir}"]\n')
    ok = run("check", str(own), "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["files"][0].endswith("base/python.toml")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('extends = ["base/pyhton"]\n')
    bad = run("check", str(wrong))
    assert bad.returncode == 1
    assert "no shipped policy has that name" in bad.stderr and "base/python" in bad.stderr


def test_check_says_when_a_file_beside_takes_the_place_of_a_shipped_base(tmp_path) -> None:
    """`extends = ["base/python.toml"]` reads as the shipped base; a file of that name beside
    the policy is taken instead (policies.md, "How extends works"). Until 12-07 `check` said
    only "ok": a base that reads the whole host passed review as the shipped one."""
    own = tmp_path / "own.toml"
    own.write_text('extends = ["base/python.toml"]\n[filesystem]\nwrite = ["${datadir}"]\n')
    assert "NOT the shipped" not in run("check", str(own)).stdout
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "python.toml").write_text('[filesystem]\nread = ["/"]\n')
    said = run("check", str(own))
    assert said.returncode == 0
    assert (f"{own}: extends 'base/python.toml' is {tmp_path}/base/python.toml, beside it, NOT the "
            "shipped policy of that name") in said.stdout
    [shadow] = json.loads(run("check", "--json", str(own)).stdout)["shadows"]
    assert shadow["file"] == str(tmp_path / "base" / "python.toml") and shadow["shipped"].endswith("base/python.toml")


def test_the_shipped_example_runs_an_ordinary_program(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    script = "wc -l a.txt > count; tar -cf - a.txt | wc -c; cat /etc/shadow"
    result = run("run", "--policy", "examples/program", "--datadir", str(tmp_path), "--",
                 "sh", "-c", f"cd {tmp_path} && {script}")
    assert result.returncode == 1, result.stderr        # cat fails: /etc/shadow is not in the view
    assert (tmp_path / "count").read_text().split()[0] == "2"
    assert int(result.stdout.split()[0]) >= 10240       # tar ran (a 10 KiB archive)
    assert "No such file or directory" in result.stderr


def test_the_environment_cannot_switch_run_into_learning() -> None:
    """Attack: a variable in the environment (CLEANCOIN_SANDBOX_LEARN, the name a learning run
    of the test suite uses) once turned every sandbox entry into a recorder, with the host's
    tree in view. A program run under a policy must stay confined whatever the environment
    says: the secret next to its data directory stays out of reach, its own data does not."""
    # Outside /tmp, which every view covers with a fresh tmpfs: a realistic secret's place.
    base = Path(tempfile.mkdtemp(prefix="learnenv-", dir="/var/tmp"))
    try:
        _run_learn_env_attack(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_learn_env_attack(base: Path) -> None:
    secret = base / "secret.txt"
    secret.write_text("operator secret\n")
    datadir = base / "data"
    datadir.mkdir()
    (datadir / "mine.txt").write_text("mine\n")
    env = {**os.environ, "CLEANCOIN_SANDBOX_LEARN": str(base / "records")}

    def cat(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TOOL, "run", "--policy", "examples/program", "--datadir", str(datadir),
                               "--", "/usr/bin/cat", str(path)], capture_output=True, text=True,
                              timeout=60, env=env)

    allowed, denied = cat(datadir / "mine.txt"), cat(secret)
    assert (allowed.returncode, allowed.stdout) == (0, "mine\n"), allowed.stderr
    assert denied.returncode != 0 and "operator secret" not in denied.stdout
    assert not (base / "records").exists()


# Where the sandbox layer may read its process's environment, and why none of it can weaken a
# sandbox: the child's environment is built from the policy (launcher, plan_compiler), and
# the report registry's location only decides where reports are written for `status`;
# import_path reads PYTHONPATH only to take entries off the import path, never to add any.
_ENVIRONMENT_READERS = {"import_path.py": 1, "launcher.py": 4, "plan_compiler.py": 1, "report_registry.py": 5,
                        "zygote.py": 1}


def test_no_new_sandbox_code_reads_the_environment() -> None:
    """The class of the attack above: a sandbox decision taken from an environment variable.
    A new read of os.environ (or getenv) under sandbox/ fails here until it is reviewed and
    listed with its reason."""
    import re
    root = Path(__file__).resolve().parent.parent / "sandbox"
    found = {}
    for path in root.rglob("*.py"):
        if "probe" in path.parts:       # the probe's attempts read it from inside the sandbox
            continue
        count = len(re.findall(r"os\.environ|getenv\(", path.read_text()))
        if count:
            found[path.name] = count
    assert found == _ENVIRONMENT_READERS


# ------------------------------------------------------------------ `run` without argparse

#: Command lines of `run`, as main() hands them on (help spellings normalised), that
#: cli/run_args.py reads itself ...
RUN_PLAIN = [
    ["run", "--policy", "p.toml", "--", "/bin/true"],
    ["run", "--policy", "p.toml", "/bin/true", "-x", "--report"],
    ["run", "--policy=p.toml", "--datadir=/d", "--var", "a=b", "--var=c=d=e", "--report", "--json",
     "--denials", "verbose", "--", "prog", "--", "arg"],
    ["run", "--report", "--policy", "p", "--policy", "q", "--denials=log", "prog"],
    ["run", "--policy", "", "--datadir", "", "--"],
    ["run", "--policy", "p"],
    ["run", "--json", "--policy", "p", "--", "--policy", "x"],
    ["run", "--policy", "p", "prog", "--help"],
]
#: ... and those it leaves to argparse: usage errors, help, abbreviations, values that look
#: like options, other commands.
RUN_LEFT = [
    ["run", "--policy"],
    ["run", "--datadir", "d", "--", "prog"],
    ["run", "--pol", "p", "--", "prog"],
    ["run", "--policy", "p", "--denials", "all", "--", "prog"],
    ["run", "--policy", "-1", "--", "prog"],
    ["run", "--policy", "p", "--report=yes", "--", "prog"],
    ["run", "--policy", "p", "--bogus", "--", "prog"],
    ["run", "--help"],
    ["run", "--policy", "p", "-", "prog"],
    ["run", "--", "--policy", "p"],
    ["check", "p"],
    ["--help", "run"],
]


@pytest.mark.parametrize("argv", RUN_PLAIN + RUN_LEFT, ids=[" ".join(a) for a in RUN_PLAIN + RUN_LEFT])
def test_run_reads_its_arguments_as_argparse_does(argv: list[str], capsys) -> None:
    """What run_args.parse reads is exactly what argparse reads from the same line; what it
    leaves (None) goes to argparse, so every usage error and help text stay argparse's."""
    from cleancoin.cli import run_args, sandbox_main
    fast = run_args.parse(list(argv))
    if argv in RUN_LEFT:
        assert fast is None
        return
    slow = vars(sandbox_main.build_parser(argv[0]).parse_args(list(argv)))
    capsys.readouterr()
    slow.pop("func")
    assert vars(fast) == slow


def test_run_imports_neither_argparse_nor_typing(tmp_path: Path) -> None:
    """The plainly spelled `run` that CI calls imports no argparse (with its gettext and
    locale) and no typing once its policy is in the policy cache (the first run stores it;
    an install the user cannot write loads it every time, and the loader uses typing), and
    a usage error of run still gets argparse's message."""
    policy = tmp_path / "run.toml"
    policy.write_text(f'extends = ["{Path(__file__).parent / "policies" / "general.toml"}"]\n'
                      '[filesystem]\nexecute = ["${base_prefix}", "${prefix}", "/usr/bin", "/usr/lib"]\n'
                      '[seccomp]\nallow = [{ syscall = "execve", reason = "run execs the program" }]\n')
    probe = ("import sys\nfrom cleancoin.cli.sandbox_main import main\nrc = main(sys.argv[1:])\n"
             "print(sorted(m for m in ('argparse', 'gettext', 'locale', 'typing', 'tomllib') "
             "if m in sys.modules), rc)\n")
    argv = [sys.executable, "-c", probe, "run", "--policy", str(policy), "--", "/bin/sh", "-c", "exit 4"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "['argparse'" not in first.stdout and first.stdout.endswith(" 4\n"), first.stdout + first.stderr
    from cleancoin.sandbox import policy_cache
    if not os.access(os.path.dirname(policy_cache.__file__), os.W_OK):
        pytest.skip("the installed package is not writable here: no policy cache, the loader runs each time")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert second.stdout.split("\n")[-2] == "[] 4", second.stdout + second.stderr
    usage = run("run", "--policy", str(policy), "--denials", "all", "--", "/bin/true")
    assert usage.returncode == 2
    assert "argument --denials: invalid choice: 'all' (choose from 'log', 'verbose')" in usage.stderr


#: A program that steers the terminal it was given: it resizes it, then takes the foreground
#: for a process group of its own (job control), as a compromised tool would before it reads
#: what the operator types next.
_STEER_TERMINAL = """
import fcntl, os, signal, struct, termios
done = []
try:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 5, 7, 0, 0))
    done.append("resized")
except OSError as exc:
    done.append(f"resize:{exc.errno}")
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
try:
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpgrp())
    done.append("foreground")
except OSError as exc:
    done.append(f"foreground:{exc.errno}")
open(os.environ["DATADIR"] + "/steered", "w").write(" ".join(done))
"""


def _run_at_a_shell_prompt(tmp_path: Path, policy: Path) -> tuple[str, dict[str, int]]:
    """`CleanCoin-sandbox run --policy POLICY -- python3 -c _STEER_TERMINAL` typed at an
    interactive shell (tests/functional/operator_shell.py: the pty is the shell's controlling
    terminal, the job has the foreground). What the program did, and the job's record."""
    import pty
    data = tmp_path / "data"
    data.mkdir()
    status = tmp_path / "job.json"
    master, slave = pty.openpty()
    try:
        shell = subprocess.run([sys.executable, str(Path(__file__).parent / "functional" / "operator_shell.py"),
                                os.ttyname(slave), str(status), "--", TOOL, "run", "--policy", str(policy),
                                "--datadir", str(data), "--", "python3", "-c", _STEER_TERMINAL],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert shell.returncode == 0
    return (data / "steered").read_text(), json.loads(status.read_text())


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
def test_a_program_keeps_the_operators_terminal_only_when_the_policy_keeps_the_session(tmp_path: Path) -> None:
    """A policy that inherits stdio hands the program the operator's terminal; one that also
    keeps the session (new_session = false) leaves it the controlling terminal. Until 12-08
    (h108) the program resized it in both, and in the kept session took the foreground from
    the operator's shell (job control) and still held it when it ended. Since then the filter
    of a program that may hold the operator's terminal refuses both (EPERM, a derived rule,
    tests/test_terminal_kept_session.py); in a new session the foreground request would
    answer ENOTTY anyway. Either way the job keeps the foreground."""
    results = {}
    for keep in (False, True):
        (tmp_path / str(keep)).mkdir()
        policy = tmp_path / f"keep-{keep}.toml"
        policy.write_text('extends = ["examples/program"]\n[process]\nstdio = "inherit"\n'
                          f'new_session = {str(not keep).lower()}\n'
                          'reason = "an interactive tool on the operator\'s terminal"\n'
                          'set_environment = { DATADIR = "${datadir}" }\n')
        results[keep] = _run_at_a_shell_prompt(tmp_path / str(keep), policy)
    (steered, job), (kept, kept_job) = results[False], results[True]
    assert steered == "resize:1 foreground:1" and job["foreground"] == job["job"], (steered, job)
    assert kept == "resize:1 foreground:1" and kept_job["foreground"] == kept_job["job"], (kept, kept_job)


def test_keeping_the_launchers_session_needs_a_reason_and_explain_says_so(tmp_path: Path) -> None:
    """new_session = false is a risky choice like stdio = "inherit" (the test above shows what
    it hands a program): until 12-07 `check` accepted it without a word and `explain` did not
    mention the session at all."""
    policy = tmp_path / "keep.toml"
    policy.write_text('extends = ["examples/program"]\n[process]\nnew_session = false\n')
    bad = run("check", str(policy))
    assert bad.returncode == 1
    assert f"{policy}:3: process.new_session: a process left in the launcher's session keeps its " \
           "controlling terminal" in bad.stderr and "needs process.reason" in bad.stderr, bad.stderr
    policy.write_text(policy.read_text() + 'reason = "an interactive shell for the operator"\n')
    assert run("check", str(policy)).returncode == 0
    shown = json.loads(run("explain", str(policy), "--json").stdout)["sections"]["Processes"]
    assert any(line.startswith("STAYS in the launcher's session") for line in shown), shown
    assert "reason given for the process's risky settings: an interactive shell for the operator" in shown
    default = json.loads(run("explain", "examples/program", "--json").stdout)["sections"]["Processes"]
    assert "launched in a session of its own (setsid): no controlling terminal" in default, default
    assert not any("reason given" in line for line in default), default


#: What the confined program tries on each socket it is given: connect and say who it is.
_REACH_SOCKETS = """
import os, socket, sys
for path in sys.argv[1:]:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(b"AUTH EXTERNAL from the sandbox\\n")
        s.close()
        print(path, "reached")
    except OSError as exc:
        print(path, os.strerror(exc.errno))
"""


def _session_sockets(where: Path) -> tuple[list[socket.socket], list[bytes]]:
    """A fake D-Bus session bus and ssh-agent in `where` (as in $XDG_RUNTIME_DIR), each
    keeping the first line a client sends."""
    import threading
    heard: list[bytes] = []
    servers = []
    for name in ("bus", "ssh-agent.sock"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(where / name))
        server.listen(4)
        server.settimeout(20)

        def serve(server: socket.socket = server) -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    heard.append(conn.recv(100))
            except OSError:
                pass
        threading.Thread(target=serve, daemon=True).start()
        servers.append(server)
    return servers, heard


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
def test_a_read_only_grant_does_not_keep_a_program_from_the_sockets_in_it(tmp_path: Path) -> None:
    """A policy that grants a runtime directory read-only (for a config file in it, say)
    hands the program every socket listening there: Landlock (ABI <= 7) has no right for
    connect(2) to a named socket. Under examples/program the program reached the fake
    session bus and ssh-agent and wrote to both; a socket beside the grant is not in its view
    (ENOENT). A policy that refuses socket(AF_UNIX) (as connect-broker.toml does since 12-07)
    reaches neither, and `explain` says which of the two a policy is."""
    runtime = tmp_path / "run-user"
    runtime.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    beside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    beside.bind(str(outside / "other.sock"))
    beside.listen(1)
    grant = f'extends = ["examples/program"]\n[filesystem]\nread = ["{runtime}"]\n'
    refusing = grant + ('[[seccomp.rules]]\nsyscall = "socket"\naction = "errno:EAFNOSUPPORT"\n'
                        'args = [{ index = 0, op = "masked_eq", mask = 0xFFFFFFFF, value = 1 }]\n')
    seen = {}
    for name, text in (("grant", grant), ("refusing", refusing)):
        policy = tmp_path / f"{name}.toml"
        policy.write_text(text)
        servers, heard = _session_sockets(runtime)
        try:
            result = run("run", "--policy", str(policy), "--datadir", str(data), "--", "python3", "-c",
                         _REACH_SOCKETS, str(runtime / "bus"), str(runtime / "ssh-agent.sock"),
                         str(outside / "other.sock"))
            # The listeners' threads take what was written in their own time.
            deadline = time.monotonic() + 10
            while len(heard) < result.stdout.count(" reached") and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for server in servers:
                os.unlink(server.getsockname())
                server.close()
        assert result.returncode == 0, result.stderr
        explained = json.loads(run("explain", str(policy), "--json").stdout)["sections"]["Network"]
        seen[name] = (result.stdout.split("\n"), sorted(heard), explained)
    beside.close()
    lines, heard, explained = seen["grant"]
    assert lines[:3] == [f"{runtime}/bus reached", f"{runtime}/ssh-agent.sock reached",
                         f"{outside}/other.sock No such file or directory"], lines
    assert heard == [b"AUTH EXTERNAL from the sandbox\n"] * 2
    assert any(line.startswith("MAY connect to any named unix socket") for line in explained), explained
    lines, heard, explained = seen["refusing"]
    assert lines[:3] == [f"{runtime}/bus Address family not supported by protocol",
                         f"{runtime}/ssh-agent.sock Address family not supported by protocol",
                         f"{outside}/other.sock Address family not supported by protocol"], lines
    assert heard == []
    assert "may not connect to a named unix socket (the filter refuses socket(AF_UNIX) or connect)" in explained


def test_check_and_runs_execve_precheck_read_what_the_filter_lets_run(tmp_path: Path) -> None:
    """Until 12-07 both read the allow list: `check` said "353 syscalls allowed" for a policy
    whose log default let every syscall run, and `run` passed its execve pre-check for an
    execve a rule refused (the program then failed inside: 'Operation not permitted'), and
    refused one a log default let run."""
    data = tmp_path / "data"
    data.mkdir()
    refused = tmp_path / "refused.toml"
    refused.write_text('extends = ["examples/program"]\n[[seccomp.rules]]\nsyscall = "execve"\n'
                       'action = "errno:EPERM"\n')
    logged = tmp_path / "logged.toml"
    logged.write_text('extends = ["strict"]\n[seccomp]\ndefault_action = "log"\nreason = "this test"\n'
                      '[filesystem]\nexecute = ["/usr/bin", "/usr/lib", { path = "/usr/lib64", optional = true }]\n'
                      'read = ["/etc/ld.so.cache"]\n')
    denied = run("run", "--policy", str(refused), "--datadir", str(data), "--", "/bin/true")
    assert denied.returncode == 125 and "does not allow execve" in denied.stderr, denied.stderr
    allowed = run("run", "--policy", str(logged), "--datadir", str(data), "--", "/usr/bin/true")
    assert allowed.returncode == 0, allowed.stderr
    checked = run("check", str(logged), str(refused), "examples/program")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0].endswith("syscalls allowed; every other syscall RUNS (default log))")
    count = {line.split(": ok (")[1].split(", ")[0]: int(line.split(", ")[1].split()[0]) for line in lines}
    assert count["refused"] == count["examples/program"] - 1          # execve, refused by its rule


def test_explain_shows_the_values_it_sets_and_code_paths_the_program_may_write(tmp_path: Path) -> None:
    """Until 12-07 `explain` named the variables a policy sets, not their values:
    `PYTHONPATH = "${datadir}/lib"` read as `set: ..., PYTHONPATH`, and the sitecustomize.py
    one run left in ${datadir}/lib ran in every later run's Python (shown below). A PATH into
    a write grant without execute runs nothing from it (the view mounts it noexec): no warning."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    data = tmp_path / "data"
    data.mkdir()
    python_path, search_path = tmp_path / "pythonpath.toml", tmp_path / "path.toml"
    python_path.write_text('extends = ["examples/program"]\n[process]\nset_environment = { PYTHONPATH = "${datadir}/lib" }\n')
    search_path.write_text('extends = ["examples/program"]\n[process]\nset_environment = { PATH = "${datadir}/bin:/usr/bin" }\n')
    plant = (f"mkdir -p {data}/lib {data}/bin && echo 'print(\"planted\")' > {data}/lib/sitecustomize.py && "
             f"printf '#!/bin/sh\\necho planted\\n' > {data}/bin/hello && chmod +x {data}/bin/hello")
    assert run("run", "--policy", str(python_path), "--datadir", str(data), "--", "/bin/sh", "-c", plant).returncode == 0

    def python(policy: str) -> str:
        return run("run", "--policy", policy, "--datadir", str(data), "--", "/usr/bin/python3", "-c",
                   "print('honest')").stdout

    assert python(str(python_path)) == "planted\nhonest\n"            # what the policy says
    assert python("examples/program") == "honest\n"
    said = run("explain", str(python_path)).stdout
    assert "PYTHONPATH=${datadir}/lib" in said
    assert ("RUNS CODE IT MAY WRITE: PYTHONPATH names ${datadir}/lib, beneath the write grant ${datadir}"
            in said)
    hello = run("run", "--policy", str(search_path), "--datadir", str(data), "--", "hello")
    assert hello.returncode != 0 and "planted" not in hello.stdout    # noexec: nothing runs
    assert "RUNS CODE" not in run("explain", str(search_path)).stdout + run("explain", "examples/program").stdout
    assert "PATH=${datadir}/bin:/usr/bin" in run("explain", str(search_path)).stdout


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
def test_a_program_left_in_the_launchers_group_signals_nothing_of_the_job_outside(tmp_path: Path) -> None:
    """`new_session = false` leaves the program in the launcher's process group (the shell's
    job), where kill(0) reaches every process of the group. Until 12-08 a policy could pair it
    with `[scopes] signal = false`: the program's kill(0, SIGTERM) ended the whole job outside
    the sandbox, the launcher and the operator's other programs of it (found 12-08: the job's
    shell, `sleep 30 | CleanCoin-sandbox run ...`, gone with -15 in 0.3 s). That pairing is
    refused now (and a kernel without the scope refuses the launch); with the scope, the
    program's own signal ends only itself and the job's other program lives on."""
    data = tmp_path / "data"
    data.mkdir()
    head = ('extends = ["examples/program"]\n[process]\nnew_session = false\n'
            'reason = "an interactive tool under the shell\'s job control"\n[scopes]\n')
    unscoped, scoped = tmp_path / "unscoped.toml", tmp_path / "scoped.toml"
    unscoped.write_text(head + "signal = false\n")
    scoped.write_text(head + "signal = true\n")
    refused = run("check", str(unscoped))
    assert refused.returncode == 1 and ("process.new_session: new_session = false needs [scopes] signal = "
                                        "true" in refused.stderr), refused.stderr
    assert run("run", "--policy", str(unscoped), "--datadir", str(data), "--", "/bin/true").returncode != 0
    kill_group = "import os, signal, time; os.kill(0, signal.SIGTERM); time.sleep(5); print('survived')"
    job = subprocess.Popen(["/bin/sh", "-c", f'sleep 30 >/dev/null 2>&1 & echo $! > {tmp_path}/other; '
                            f'{TOOL} run --policy {scoped} --datadir {data} -- /usr/bin/python3 -c "{kill_group}"'],
                           start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = job.communicate(timeout=60)
        other = int((tmp_path / "other").read_text())
        alive = os.path.exists(f"/proc/{other}") and "zombie" not in Path(f"/proc/{other}/status").read_text()
    finally:
        try:
            os.killpg(job.pid, 9)           # the job's group, ours: its sleep too
        except ProcessLookupError:
            pass
    assert job.returncode == 128 + 15 and "killed by SIGTERM" in err and "survived" not in out, (job.returncode, err)
    assert alive                                          # the job's other program: not reached


#: Asks the terminal its size (allowed), then types a command into it, a byte at a time.
_TYPE_INTO_TERMINAL = """
import fcntl, termios
fcntl.ioctl(0, termios.TIOCGWINSZ, bytes(8))
print("size read", flush=True)
for byte in b"touch /tmp/typed-by-the-sandbox\\n":
    fcntl.ioctl(0, termios.TIOCSTI, bytes([byte]))
"""


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="needs /usr/bin/python3")
@pytest.mark.parametrize("default", ["kill_process", "errno:EPERM"])
def test_a_program_kept_in_the_operators_session_cannot_type_into_the_operators_shell(
        tmp_path: Path, default: str) -> None:
    """A policy that keeps the session (`new_session = false`, with its reason) and replaces
    the bases' ioctl rules with one `allow` (a later file's rule without args does that) was
    accepted by `check`, and the program pushed `touch /tmp/...\\n` into the operator's
    terminal with TIOCSTI (dev.tty.legacy_tiocsti = 1 here): the operator's shell read it as
    typed once the job ended (found 12-08: the shell's next input was that line). Since 12-08
    the filter of a process kept in the session refuses TIOCSTI whatever its rules say
    (seccomp.FilterSpec.deny_terminal_input); other ioctls of the terminal still run."""
    import pty
    policy = tmp_path / "typing.toml"
    policy.write_text('extends = ["examples/program"]\n[process]\nnew_session = false\nstdio = "inherit"\n'
                      'reason = "an interactive tool on the operator\'s terminal"\n'
                      f'[seccomp]\ndefault_action = "{default}"\n'
                      '[[seccomp.rules]]\nsyscall = "ioctl"\naction = "allow"\n')
    data = tmp_path / "data"
    data.mkdir()
    master, slave = pty.openpty()
    try:
        shell = subprocess.run([sys.executable, str(Path(__file__).parent / "functional" / "operator_shell.py"),
                                os.ttyname(slave), str(tmp_path / "job.json"), "--", TOOL, "run", "--policy",
                                str(policy), "--datadir", str(data), "--", "/usr/bin/python3", "-c",
                                _TYPE_INTO_TERMINAL],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=60)
        os.set_blocking(slave, False)
        os.set_blocking(master, False)
        try:
            typed = os.read(slave, 4096)           # what the operator's shell reads next
        except BlockingIOError:
            typed = b""
        screen = os.read(master, 65536)
    finally:
        os.close(slave)
        os.close(master)
    assert shell.returncode == 0
    assert b"size read" in screen and b"PermissionError" in screen, screen
    assert typed == b"", typed


def test_a_home_the_program_may_write_is_flagged_and_the_example_keeps_none(tmp_path: Path) -> None:
    """Until 12-08 examples/program set HOME to ${datadir}, its write grant: the
    usercustomize.py one run left in $HOME/.local ran in the next run's python3, a
    .gitconfig alias in its git, and neither `explain` nor `check` said so (they flagged
    search paths only). The example's HOME is its fresh tmpfs now; a policy that sets HOME (or
    any variable) to a place it may write, or keeps HOME from the launcher beside a write
    grant, is flagged by both."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    data = tmp_path / "data"
    data.mkdir()
    home = tmp_path / "home.toml"        # the example as it shipped until 12-08
    home.write_text('extends = ["examples/program"]\n[process]\nset_environment = { HOME = "${datadir}" }\n')
    kept = tmp_path / "kept.toml"
    kept.write_text('extends = ["examples/program"]\n[process]\nenvironment = ["HOME", "XDG_*"]\n'
                    'set_environment = { MYTOOL_PLUGINS = "${datadir}/plugins" }\n')
    plant = ("import os, site; p = site.getusersitepackages(); os.makedirs(p); "
             "open(p + '/usercustomize.py', 'w').write('print(\"planted\")')")

    def python(policy: str, code: str = "print('honest')") -> str:
        done = run("run", "--policy", policy, "--datadir", str(data), "--", "/usr/bin/python3", "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout

    python("examples/program", plant)
    assert python("examples/program") == "honest\n"                   # planted on its tmpfs: gone
    python(str(home), plant)
    assert python(str(home)) == "planted\nhonest\n"                  # the attack, as it was
    said = run("explain", str(home)).stdout
    checked = run("check", str(home))
    assert checked.returncode == 0
    for out in (said, checked.stdout):
        assert ("RUNS CODE IT MAY WRITE: HOME names ${datadir}, beneath the write grant ${datadir}: "
                "what it leaves there runs at its next start (python's user site-packages" in out)
    flagged = json.loads(run("check", "--json", str(kept)).stdout)["runs_code_it_may_write"]
    assert any(line.startswith("RUNS CODE IT MAY WRITE: MYTOOL_PLUGINS names ${datadir}/plugins")
               for line in flagged)                             # any variable, by its value
    assert [line.split(" lies ")[0] for line in flagged if "the launcher's" in line] == [
        "RUNS CODE IT MAY WRITE where the launcher's XDG_CONFIG_HOME",       # HOME: the example sets it
        "RUNS CODE IT MAY WRITE where the launcher's XDG_DATA_HOME"]
    # No HOME at all: a program looks its home up in the passwd file, here beneath a grant.
    import pwd
    from cleancoin.sandbox.policy_files import shipped_policy
    home = pwd.getpwuid(os.getuid()).pw_dir
    example = Path(shipped_policy("examples/program"))
    unset = tmp_path / "no-home.toml"
    unset.write_text(example.read_text().replace('name = "examples/program"', 'name = "no-home"')
                     .replace(', HOME = "${tmpdir}" }', " }").replace('write = ["${datadir}"', f'write = ["{home}"'))
    flagged = json.loads(run("check", "--json", str(unset)).stdout)["runs_code_it_may_write"]
    assert flagged == [f"RUNS CODE IT MAY WRITE: without HOME its programs take the passwd file's home, "
                       f"{home.rstrip('/')}, beneath the write grant {home.rstrip('/')} (python's user "
                       "site-packages and usercustomize.py, git's ~/.gitconfig, a shell's rc files)"], flagged
    assert run("check", "examples/program").stdout.count("\n") == 1    # the example: nothing flagged
    assert json.loads(run("check", "--json", "examples/program").stdout)["runs_code_it_may_write"] == []


def test_a_shipped_name_is_the_shipped_policy_whatever_the_working_directory_holds(tmp_path) -> None:
    """Until 12-07 `check wallet` in a directory holding a file `wallet` checked that file and
    printed 'wallet: ok': what a reviewer took for the shipped policy. `./wallet` names it."""
    (tmp_path / "wallet").write_text('[policy]\nname = "planted"\n[seccomp]\nenabled = false\nreason = "planted"\n')
    shipped = subprocess.run([TOOL, "check", "wallet"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shipped.stdout.startswith(f"{_shipped('wallet')}: ok (wallet, "), shipped.stdout + shipped.stderr
    planted = subprocess.run([TOOL, "check", "./wallet"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert planted.stdout == "./wallet: ok (planted, NO syscall filter)\n", planted.stdout + planted.stderr
