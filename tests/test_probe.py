"""The escape battery of `CleanCoin-sandbox probe`, on the real kernel (no mocks)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cleancoin.sandbox import launcher, probe
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy

# Every kind of attempt the battery must make (the brief of `probe`).
REQUIRED = {
    "fs-read-outside", "fs-write-outside", "fs-write-granted", "exec-bin-true",
    "net-tcp-connect", "net-tcp-bind", "net-raw-socket", "net-packet-socket",
    "net-netlink-socket", "net-abstract-unix", "proc-ptrace-parent", "proc-parent-mem",
    "proc-parent-environ", "signal-parent", "mount-tmpfs", "unshare-user", "unshare-mount",
    "setns-parent-net", "chroot", "keyctl", "bpf", "perf-event-open", "io-uring-setup",
    "userfaultfd", "personality", "ioctl-tiocsti", "arch-i386-int80", "arch-x32",
    "cap-capset", "rlimit-core", "clone3", "thread-start",
    # issue #10's classes
    "grant-symlink-swap", "fd-inherited", "unix-named-socket", "terminal-left-open",
    "memory-launcher-secret", "clone-newuser", "prctl-dumpable", "memory-wx",
    "rlimit-fork-200", "rlimit-fds-8192", "rlimit-file-1tib",
    # found 12-07: the wallet (mlock allowed) kept the launcher's memlock limit
    "rlimit-memlock-4mib",
    # found after #10: a component could make its zygote's output relay hold all it wrote,
    # and a wallet could erase the record of its refusals
    "output-flood", "denial-log-reach",
    # found 12-06: refusals that each look new flooded the denial log and its monitor
    "denial-log-flood",
    # found 12-06 (third session): a log that cannot grow (a full disk) stopped the monitor
    "denial-log-fails",
    # found 12-06 (h32): decoy refusals spent the log's budget and hid a TIOCSTI after them;
    # a set-user-ID program planted in a writable grant (nosuid holds in the view only)
    "denial-log-bury", "fs-setuid",
    # found 12-06 (h33): Landlock's TCP port rules do not hold for an MPTCP socket
    "net-mptcp-bind", "net-mptcp-connect",
    # found 12-07: Landlock's abstract-socket scope refuses connect, not bind; in the host's
    # network namespace the confined node claimed a name that host clients connected to
    "net-abstract-bind",
    # found 12-07 (later): with socketpair only, one end of a pair still took such a name
    "net-abstract-bind-pair",
    # found 12-06 (h39): the wallet gave its files and wallets/ group and other bits
    "fs-loosen-mode",
    # found 12-07: the same uid traced a launched component's denial monitor (not dumpable,
    # but exec'd in a user namespace that uid owns)
    "same-user-trace",
    # 12-07: a listening unix socket inside a read-only grant (Landlock has no right for
    # connect(2) to a named socket)
    "unix-socket-in-read-grant",
    # 12-07: a denial monitor that is a fork was made inside the component's Landlock
    # domain, and a component whose policy allows kill killed it
    "denial-monitor-kill",
    # found 12-08 (h100): a prelaunched monitor, the interpreter's program exec'd from its
    # readable file, could be attached by its uid while it waited for its configuration
    "denial-monitor-early-trace",
}


def _weak_policy(tmp_path: Path) -> str:
    """The general test base plus the host's network, the inet family and TCP connect to any
    port."""
    path = tmp_path / "weak.toml"
    path.write_text(f'''extends = ["{Path(__file__).parent / 'policies' / 'general.toml'}"]
[policy]
name = "weak"
[namespaces]
net = false
[network]
socket_families = ["unix", "inet"]
connect_tcp = "any"
''')
    return str(path)


@pytest.fixture
def strict(base_sandbox, require):  # noqa: ANN001 - conftest fixtures
    policy = load_policy(shipped_policy("strict"))
    require(base_sandbox.landlock_abi >= policy.compatibility.landlock_min_abi,
            f"Landlock ABI {policy.compatibility.landlock_min_abi} (the strict policy's minimum)")
    return policy


@pytest.fixture
def strict_result(strict, sandbox_vars) -> probe.ProbeResult:  # noqa: ANN001
    return probe.probe(strict, sandbox_vars)


def _by_name(result: probe.ProbeResult) -> dict[str, probe.Attempt]:
    return {a.name: a for a in result.attempts}


def test_strict_battery_has_no_escapes(strict_result: probe.ProbeResult) -> None:
    result = strict_result
    text = result.to_text()
    assert not result.escapes, text
    assert len(result.attempts) >= 30
    attempts = _by_name(result)
    assert REQUIRED <= attempts.keys()
    # The controls prove that the sandbox works rather than being merely broken.
    assert attempts["fs-write-granted"].expected == attempts["fs-write-granted"].outcome == "allowed"
    assert attempts["thread-start"].expected == attempts["thread-start"].outcome == "allowed"
    # Everything else is forbidden by strict, and everything ran to a verdict.
    assert [a.name for a in result.attempts if a.expected == "allowed"] == ["fs-write-granted", "thread-start"]
    assert [a.name for a in result.attempts if a.outcome == "error"] == [], text
    assert [a.name for a in result.attempts if a.differs] == [], text
    # Details name the mechanism.
    assert attempts["fs-read-outside"].detail == "ENOENT (not visible in the sandbox's mounts)"
    assert attempts["fs-list-root"].detail == "EACCES (landlock)"
    assert "ENOSYS" in attempts["clone3"].detail
    for name in ("arch-i386-int80", "arch-x32", "exec-bin-true", "mount-tmpfs"):
        assert attempts[name].detail == "killed by SIGSYS (seccomp)", attempts[name]
    assert "EAFNOSUPPORT" in attempts["net-tcp-connect"].detail
    # Since 12-07 (strict's filter kills getpgrp: the attempt dies there, a denial).
    assert attempts["signal-own-group"].expected == attempts["signal-own-group"].outcome == "denied"
    assert attempts["fs-setuid"].expected == "denied" and "EPERM" in attempts["fs-setuid"].detail
    assert text.splitlines()[-1] == f"{len(result.attempts)} attempts, 0 escapes"
    assert result.report.policy == "strict" and result.report.fully_enforced()
    assert result.script_status is None
    data = json.loads(json.dumps(result.to_dict()))
    assert data["escapes"] == [] and len(data["attempts"]) == len(result.attempts)


def test_strict_battery_cleans_up(strict_result: probe.ProbeResult) -> None:
    # The reason of fs-write-outside names the outside directory the probe made for itself.
    reason = _by_name(strict_result)["fs-write-outside"].reason
    outside = os.path.dirname(reason.split(" right on ")[-1])
    assert os.path.basename(outside).startswith("cleancoin-probe-"), reason
    assert not os.path.exists(outside)


def test_expectations_follow_the_policy(base_sandbox, tmp_path: Path, sandbox_vars) -> None:  # noqa: ANN001
    policy = load_policy(_weak_policy(tmp_path))
    result = probe.probe(policy, sandbox_vars)
    attempts = _by_name(result)
    assert not result.escapes, result.to_text()
    connect = attempts["net-tcp-connect"]
    assert (connect.expected, connect.outcome) == ("allowed", "allowed"), connect
    udp = attempts["net-udp-send"]
    assert (udp.expected, udp.outcome) == ("allowed", "allowed"), udp
    # Binding is still not granted (bind_tcp defaults to no port): Landlock refuses it.
    bind = attempts["net-tcp-bind"]
    assert (bind.expected, bind.outcome) == ("denied", "denied") and "landlock" in bind.detail
    # Abstract sockets: no network namespace any more, the Landlock scope still stops it.
    abstract = attempts["net-abstract-unix"]
    assert abstract.outcome == "denied" and abstract.detail.startswith("EPERM"), abstract
    # ... but not a bind: a name claimed here is the host's, and the host's clients of that
    # name reach the sandbox. The policy allows it (no filter rule, no namespace), and the
    # battery says so beside the refused connect (the node's filter refuses it since 12-07).
    claim = attempts["net-abstract-bind"]
    assert (claim.expected, claim.outcome) == ("allowed", "allowed"), claim
    assert "in the parent's network namespace" in claim.detail, claim


def test_set_user_id_bits_are_refused_under_a_logging_default(strict, tmp_path: Path,
                                                               sandbox_vars) -> None:  # noqa: ANN001
    """The derived rule holds wherever a mode-setting call may run, a `log` default included
    (everything not listed runs, logged). Before 12-06 (h33) the filter and the judge both left
    it out there: the battery passed while fs-setuid made modes 4755, 2755 and 4700 on the host
    (with this judge and the old filter: 'ESCAPE succeeded: chmod made mode 4755; ...')."""
    path = tmp_path / "log-default.toml"
    path.write_text(f'extends = ["{shipped_policy("strict")}"]\n[policy]\nname = "log-default"\n'
                    '[seccomp]\ndefault_action = "log"\nreason = "this test"\n'
                    'deny = ["chmod", "fchmod", "fchmodat", "open", "openat", "creat"]\n')
    result = probe.probe(load_policy(str(path)), sandbox_vars)
    setuid = _by_name(result)["fs-setuid"]
    assert (setuid.expected, setuid.outcome) == ("denied", "denied"), setuid
    assert "EPERM" in setuid.detail
    assert "fs-setuid" not in [a.name for a in result.escapes]


def test_derived_rules_hold_beside_a_logging_rule(strict, tmp_path: Path, sandbox_vars) -> None:  # noqa: ANN001
    """A rule without conditions that lets prctl and clone run (logged) made the compiler
    skip their derived rules; with this judge and the old filter the probe said 'clone-newuser
    denied allowed ESCAPE' and 'prctl-dumpable denied allowed ESCAPE'."""
    path = tmp_path / "logged-rules.toml"
    path.write_text(f'extends = ["{shipped_policy("strict")}"]\n[policy]\nname = "logged-rules"\n'
                    '[[seccomp.rules]]\nsyscall = "prctl"\naction = "log"\n'
                    '[[seccomp.rules]]\nsyscall = "clone"\naction = "log"\n')
    result = probe.probe(load_policy(str(path)), sandbox_vars)
    attempts = _by_name(result)
    for name in ("clone-newuser", "prctl-dumpable"):
        assert (attempts[name].expected, attempts[name].outcome) == ("denied", "denied"), attempts[name]
        assert "EPERM" in attempts[name].detail, attempts[name]
    assert attempts["thread-start"].outcome == "allowed"


def test_an_escape_is_reported(strict, tmp_path: Path, sandbox_vars) -> None:  # noqa: ANN001
    # Judge by strict, enforce the weak policy: whatever strict forbids and the weak sandbox
    # lets through must come out as an escape, the condition for the CLI's exit status 1.
    weak = load_policy(_weak_policy(tmp_path))
    result = probe.probe_against(strict, weak, sandbox_vars)
    escaped = {a.name for a in result.escapes}
    assert {"net-tcp-connect", "net-udp-send"} <= escaped, result.to_text()
    connect = _by_name(result)["net-tcp-connect"]
    assert connect.expected == "denied" and connect.outcome == "allowed" and connect.escaped
    assert "ESCAPE" in result.to_text()
    assert result.to_text().splitlines()[-1].startswith(f"{len(result.attempts)} attempts, {len(escaped)} escapes")
    assert set(result.to_dict()["escapes"]) == escaped  # type: ignore[arg-type]
    # Whatever both policies forbid stays denied.
    assert not _by_name(result)["exec-bin-true"].escaped


def test_attempt_verdicts() -> None:
    def attempt(expected: str, outcome: str) -> probe.Attempt:
        return probe.Attempt("x", "d", expected, outcome, "detail")

    assert attempt("denied", "allowed").escaped
    assert not attempt("denied", "denied").escaped
    assert not attempt("denied", "error").escaped
    assert not attempt("allowed", "allowed").escaped
    assert attempt("allowed", "denied").differs
    assert attempt("denied", "allowed").to_dict()["escaped"] is True


def test_expected_seccomp_actions_come_from_the_policy(strict, sandbox_vars) -> None:  # noqa: ANN001
    plan = launcher.prepare(strict, sandbox_vars)
    judge = probe._Judge(strict, plan, probe._Host.detect())
    assert judge.seccomp_action("execve") == "kill_process"
    assert judge.seccomp_action("ioctl", {1: 0x5412}) == "errno:EPERM"          # TIOCSTI
    assert judge.seccomp_action("ioctl", {1: 0x5401}) == "allow"                # TCGETS
    assert judge.seccomp_action("socket", {0: 2, 1: 1}) == "errno:EAFNOSUPPORT"  # AF_INET
    assert judge.seccomp_action("socket", {0: 1, 1: 1}) == "allow"              # AF_UNIX
    assert judge.seccomp_action("clone3") == "errno:ENOSYS"
    # Derived for every policy: no set-user-ID or set-group-ID bit in a mode (h32, 12-06).
    assert judge.seccomp_action("chmod", {1: 0o4755}) == "errno:EPERM"
    assert judge.seccomp_action("fchmod", {1: 0o2755}) == "errno:EPERM"
    assert judge.seccomp_action("chmod", {1: 0o700}) == "allow"
    # strict.toml's own rules (h39): no group or other bit by chmod or fchmod.
    assert judge.seccomp_action("chmod", {1: 0o755}) == "errno:EPERM"
    assert judge.seccomp_action("fchmod", {1: 0o604}) == "errno:EPERM"
    assert judge.seccomp_action("fchmod", {1: 0o600}) == "allow"
    assert judge.seccomp_action("openat", {2: os.O_CREAT | os.O_WRONLY, 3: 0o4700}) == "errno:EPERM"
    assert judge.seccomp_action("openat", {2: os.O_RDONLY, 3: 0o4700}) == "allow"
    assert judge.seccomp_action("openat", {2: os.O_CREAT | os.O_WRONLY, 3: 0o600}) == "allow"
    assert not judge.ll_allows("/etc/passwd", probe._READ_FILE)
    assert judge.ll_allows(os.path.join(sandbox_vars["datadir"], "f"), probe._MAKE_REG | probe._WRITE_FILE)


#: TIOCGPGRP and TIOCSPGRP: two requests of the type 'T' that base/python refuses as a whole.
_TIOCGPGRP, _TIOCSPGRP = 0x540F, 0x5410
#: The same request allowed three ways: the full 32 bits of the request (the form
#: docs/policies.md gives), a narrower mask, and `eq` on all 64 bits of the argument.
_EXACT_FORMS = {"exact": "op = \"masked_eq\", mask = 0xFFFFFFFF", "16 bits": "op = \"masked_eq\", mask = 0xFFFF",
                "eq": "op = \"eq\""}


def _one_more_ioctl(tmp_path: Path, form: str) -> str:
    path = tmp_path / f"ioctl-{form.replace(' ', '-')}.toml"
    path.write_text(f'extends = ["{shipped_policy("base/python")}"]\n[policy]\nname = "one-more-ioctl"\n'
                    f'[[seccomp.rules]]\nsyscall = "ioctl"\naction = "allow"\n'
                    f'args = [{{ index = 1, {_EXACT_FORMS[form]}, value = {_TIOCGPGRP} }}]\n')
    return str(path)


@pytest.mark.parametrize("form", sorted(_EXACT_FORMS))
def test_the_judge_takes_the_rule_the_kernel_takes(base_sandbox, tmp_path: Path, form: str) -> None:  # noqa: ANN001
    """A policy that extends base/python and allows one more request of a type base refuses
    as a whole: the judge took the policy's first matching rule (base's refusal of the type,
    EPERM) where libseccomp orders a syscall's rules by value (the exact request first,
    wherever it stands), so the kernel ran the request and a probe of such a policy saw an
    allowed call it had judged denied, a false escape. Now the judge agrees with the filter
    on every request of the type, in each way of writing the rule (`eq` on all 64 bits loses
    to base's type rule in libseccomp's order: the kernel refuses it, and so does the judge)."""
    from cleancoin.sandbox import bpf_sim, seccomp
    from cleancoin.sandbox.probe.judge import _action_name
    policy = load_policy(_one_more_ioctl(tmp_path, form))
    plan = launcher.prepare(policy, {})
    judge = probe._Judge(policy, plan, probe._Host.detect())
    number = seccomp.syscall_number("ioctl")
    differ = {hex(request): (judge.seccomp_action("ioctl", {1: request}), filtered)
              for request in [*range(0x5400, 0x5500), 1 << 32 | _TIOCGPGRP]
              if judge.seccomp_action("ioctl", {1: request}) != (
                  filtered := _action_name(bpf_sim.run(plan.seccomp_bpf, number, [3, request])))}
    assert differ == {}
    expected = "errno:EPERM" if form == "eq" else "allow"
    assert judge.seccomp_action("ioctl", {1: _TIOCGPGRP}) == expected
    assert judge.seccomp_action("ioctl", {1: _TIOCSPGRP}) == "errno:EPERM"


def test_an_exact_ioctl_beside_its_refused_type_runs_in_the_kernel(base_sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    """The same, by the kernel: inside the sandbox TIOCGPGRP on a pipe reaches the driver
    (ENOTTY: the filter let it through), TIOCSPGRP beside it is refused by the filter (EPERM),
    as the judge says."""
    script = tmp_path / "ioctls.py"
    script.write_text("import errno, fcntl, os\nr, w = os.pipe()\n"
                      f"for request in ({_TIOCGPGRP}, {_TIOCSPGRP}):\n"
                      "    try:\n        fcntl.ioctl(r, request, bytes(4))\n    except OSError as exc:\n"
                      "        print(hex(request), errno.errorcode[exc.errno])\n")
    policy = load_policy(_one_more_ioctl(tmp_path, "exact"))
    result = probe.probe(policy, {}, str(script))
    assert result.script_status == 0, result.script_output
    assert result.script_output.splitlines() == [f"{_TIOCGPGRP:#x} ENOTTY", f"{_TIOCSPGRP:#x} EPERM"]
    judge = probe._Judge(policy, launcher.prepare(policy, {}), probe._Host.detect())
    assert [judge.seccomp_action("ioctl", {1: r}) for r in (_TIOCGPGRP, _TIOCSPGRP)] == ["allow", "errno:EPERM"]


def test_a_seccomp_kill_is_a_denial_and_a_hang_an_error() -> None:
    note = json.dumps({"note": "step one worked"}).encode() + b"\n"
    assert probe._interpret(note, -signal.SIGSYS, False, 5) == (
        "denied", "step one worked; killed by SIGSYS (seccomp)")
    outcome, detail = probe._interpret(b"", None, True, 0.3)
    assert outcome == "error" and "no answer within 0.3 s" in detail
    result = json.dumps({"result": ["allowed", "succeeded: x"]}).encode() + b"\n"
    assert probe._interpret(note + result, 0, False, 5) == ("allowed", "step one worked; succeeded: x")
    # What the confined side writes is parsed by the (unconfined) probe: a line nested deeper
    # than the JSON parser recurses is skipped like any other non-message, not a traceback.
    assert probe._interpret(b"[" * 100_000 + b"\n" + note + result, 0, False, 5) == (
        "allowed", "step one worked; succeeded: x")


def test_script_runs_inside_instead_of_the_battery(strict, tmp_path: Path, sandbox_vars) -> None:  # noqa: ANN001
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    result = probe.probe(strict, sandbox_vars, str(script))
    assert result.script_status == 3
    assert result.script_output == "hi\n"
    assert result.attempts == [] and result.escapes == []
    assert result.to_text().splitlines()[-1] == "script exited with status 3"


def test_script_killed_by_seccomp_and_failing(strict, tmp_path: Path, sandbox_vars) -> None:  # noqa: ANN001
    run = tmp_path / "run.py"
    run.write_text("print('before', flush=True)\nimport os\nos.execv('/bin/true', ['true'])\n")
    result = probe.probe(strict, sandbox_vars, str(run))
    assert result.script_status == -signal.SIGSYS
    assert result.script_output.startswith("before\n") and "SIGSYS" in result.script_output
    fail = tmp_path / "fail.py"
    fail.write_text("open('/etc/passwd')\n")
    result = probe.probe(strict, sandbox_vars, str(fail))
    assert result.script_status == 1
    # /etc/passwd is not even in the view.
    assert "FileNotFoundError" in result.script_output and 'fail.py", line 1' in result.script_output


# issue #10's classes: each attempt catches its hole -------------------------------------------

def test_new_attempts_escape_under_a_deliberately_weak_sandbox(strict, write_policy, sandbox_vars) -> None:  # noqa: ANN001
    """Judged by strict, enforced by a sandbox without the filesystem view, W^X memory, the
    derived clone and prctl rules, the no-fork rule and the rlimits: every one of those
    attempts must come out as an escape (the condition for probe's exit status 1)."""
    weak = load_policy(write_policy("""
        [policy]
        name = "weak"
        [namespaces]
        net = true
        [filesystem]
        write = ["${datadir}"]
        [process]
        dumpable = true
        memory_deny_write_execute = false
        reason = "a deliberately weak sandbox, to show that probe notices"
        [seccomp]
        allow = [{ syscall = "unshare", reason = "a deliberately weak sandbox" }]
        """, view=False))
    result = probe.probe_against(strict, weak, sandbox_vars)
    escaped = {a.name for a in result.escapes}
    assert {"unix-named-socket", "clone-newuser", "prctl-dumpable", "memory-wx",
            "rlimit-fds-8192", "rlimit-file-1tib"} <= escaped, result.to_text()
    if os.getuid() == 0 or "rlimit-fork-200" in escaped:     # root: only the clone rule stops it
        assert "rlimit-fork-200" in escaped, result.to_text()
    # The mechanisms no policy can turn off still hold.
    for name in ("fd-inherited", "terminal-left-open", "memory-launcher-secret", "grant-symlink-swap",
                 "output-flood", "denial-log-reach", "denial-log-flood", "denial-log-fails",
                 "denial-log-bury", "same-user-trace", "denial-monitor-early-trace"):
        assert name not in escaped, result.to_text()


def _in_a_plain_fork(run) -> tuple[str, str]:  # noqa: ANN001
    """`run(out)` in a child forked without any sandbox step: what the attempt sees when the
    mechanism it tests is missing."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        out = probe._Out(write_end)
        try:
            out.result(*run(out))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return probe._interpret(data, launcher.returncode(status), False, 5)


def _targets(outside: str, secret: bytes = b"canary-secret", **extra) -> probe._Targets:  # noqa: ANN003
    canary = os.path.join(outside, "canary")
    Path(canary).write_bytes(secret)
    return probe._Targets("t", os.getpid(), outside, canary, secret, 0, None, 1, 1, 1, "\0x", **extra)


def test_the_launcher_memory_attempt_finds_a_forked_copy(outside_dir) -> None:  # noqa: ANN001
    import ctypes
    import hashlib
    from cleancoin.sandbox.probe.attempts_inherited import _run_launcher_memory
    secret = os.urandom(32)
    buf = ctypes.create_string_buffer(secret, 32)
    targets = _targets(outside_dir, memory_addr=ctypes.addressof(buf),
                       memory_hash=hashlib.sha256(secret).hexdigest())
    # A fork is a copy of this process: the secret is there, at the same address.
    outcome, detail = _in_a_plain_fork(lambda out: _run_launcher_memory(probe._Ctx(targets), out))
    assert (outcome, detail) == ("allowed", "succeeded: the launcher's secret is in this process's "
                                            "memory, at the launcher's address")


def test_the_descriptor_and_terminal_attempts_find_what_a_careless_launcher_leaves(outside_dir) -> None:  # noqa: ANN001
    from cleancoin.sandbox.probe.attempts_inherited import _run_fd_walk, _run_terminal
    targets = _targets(outside_dir)
    leaked = os.open(outside_dir, os.O_PATH)
    master, slave = os.openpty()
    try:
        walk = _in_a_plain_fork(lambda out: _run_fd_walk(probe._Ctx(targets), out))
        tty = _in_a_plain_fork(lambda out: _run_terminal(probe._Ctx(targets), out))
    finally:
        os.close(leaked)
        os.close(master)
        os.close(slave)
    assert walk[0] == "allowed" and f"fd {leaked} leads to the canary" in walk[1], walk
    assert tty[0] == "allowed" and all(name in tty[1] for name in ("TCSETS", "TIOCSWINSZ", "TCXONC", "TIOCEXCL)",
                                                                   "TIOCSETD", "TIOCSBRK")), tty


def test_a_swapped_grant_is_followed_only_without_the_symlink_rule(tmp_path: Path) -> None:
    """What grant-symlink-swap catches: a path resolved by following every link (as the
    kernel does) lands on /; resolved with the rule, the link is refused by name."""
    from cleancoin.sandbox import paths
    writable = tmp_path / "walletdir"
    writable.mkdir()
    (writable / "tmp").symlink_to("/")
    assert os.path.realpath(writable / "tmp") == "/"
    with pytest.raises(paths.SymlinkRefused) as refused:
        paths.resolve(str(writable / "tmp"), [str(writable)])
    assert refused.value.link == str(writable / "tmp") and refused.value.root == str(writable)
    # A link the sandbox cannot have made (outside every writable root) is followed.
    (tmp_path / "operator-link").symlink_to(writable)
    assert paths.resolve(str(tmp_path / "operator-link"), [str(writable)]) == str(writable)


def test_output_flood_catches_a_relay_that_keeps_whole_lines(strict, sandbox_vars,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """What output-flood catches: a relay that keeps a line back until its end (as the
    zygote's did, holding 32 MiB of one line at a 175 MiB peak) holds the child's 8 MiB;
    the relay as it is holds at most one piece."""
    from cleancoin.sandbox import launcher, stdio
    from cleancoin.sandbox.probe.attempts_inherited import _run_output_flood
    judge = probe._Judge(strict, launcher.prepare(strict, sandbox_vars), probe._Host.detect())
    held, detail = _run_output_flood(judge, None, None, 30)     # type: ignore[arg-type]
    assert held == "denied" and f"at most {stdio.MAX_LINE} bytes" in detail, detail
    monkeypatch.setattr(stdio, "MAX_LINE", 1 << 40)        # the relay before the fix
    escaped, detail = _run_output_flood(judge, None, None, 30)   # type: ignore[arg-type]
    assert escaped == "allowed" and "relay held" in detail, detail


def _wallet_judge(base_sandbox, require, tmp_path: Path):  # noqa: ANN001, ANN202
    """The wallet policy's judge (it refuses some calls with an errno, so it has a denial log)
    over a fresh wallet directory, and that directory."""
    from cleancoin.sandbox import launcher
    wallet = load_policy(shipped_policy("wallet"))
    require(base_sandbox.landlock_abi >= wallet.compatibility.landlock_min_abi,
            f"Landlock ABI {wallet.compatibility.landlock_min_abi} (the wallet policy's minimum)")
    walletdir = tmp_path / "wallets"
    walletdir.mkdir()
    return probe._Judge(wallet, launcher.prepare(wallet, {"walletdir": str(walletdir)}), probe._Host.detect()), walletdir


def test_denial_monitor_kill_catches_a_monitor_in_the_components_reach(base_sandbox, require, tmp_path: Path,
                                                                      outside_dir) -> None:  # noqa: ANN001
    """What denial-monitor-kill catches: under examples/program (kill allowed, signal scope on)
    no process of the sandbox takes the component's signal, its monitor (out of the
    component's Landlock domain) answers the refused call; with the same plan without the
    signal scope the monitor is killed and the refused call answers ENOSYS, unlogged."""
    import dataclasses
    from cleancoin.sandbox import landlock, launcher
    from cleancoin.sandbox.probe.attempts_inherited import _run_denial_monitor_kill
    require(base_sandbox.landlock_abi >= 6, "Landlock ABI 6 (signal scope)")
    program = load_policy(shipped_policy("examples/program"))
    variables = {"datadir": str(tmp_path), "tmpdir": str(tmp_path)}
    plan = launcher.prepare(program, variables)
    held, detail = _run_denial_monitor_kill(probe._Judge(program, plan, probe._Host.detect()), _targets(outside_dir), None, 30)
    assert held == "denied" and "answered EPERM" in detail, detail
    assert plan.landlock is not None
    unscoped = dataclasses.replace(plan, landlock=dataclasses.replace(
        plan.landlock, scoped=plan.landlock.scoped & ~landlock.SCOPE_SIGNAL))
    killed, detail = _run_denial_monitor_kill(probe._Judge(program, unscoped, probe._Host.detect()), _targets(outside_dir), None, 30)
    assert killed == "allowed" and "answered ENOSYS" in detail, detail


def test_denial_log_reach_catches_a_log_the_component_may_write(base_sandbox, require, tmp_path: Path,
                                                                outside_dir) -> None:  # noqa: ANN001
    """What denial-log-reach catches: a denial log in a directory the component may write (as
    the wallet's was, in wallets/) is truncated by its path; outside the grants, opened by the
    launcher, it is out of reach and the child holds no descriptor of it. The wallet policy:
    it refuses some calls with an errno, so it has a denial log."""
    from cleancoin.sandbox.probe.attempts_inherited import _run_denial_log_reach
    judge, walletdir = _wallet_judge(base_sandbox, require, tmp_path)
    held, detail = _run_denial_log_reach(judge, _targets(outside_dir), None, 30)
    assert held == "denied" and "out of reach" in detail, detail
    reached, detail = _run_denial_log_reach(judge, _targets(str(walletdir)), None, 30)
    assert reached == "allowed" and "truncated" in detail, detail


def test_denial_log_flood_catches_a_monitor_without_bounds(base_sandbox, require, tmp_path: Path,
                                                           outside_dir, monkeypatch) -> None:  # noqa: ANN001
    """What denial-log-flood catches: a monitor that remembers every kind and writes every
    line (the monitor before 12-06) lets 20,000 refusals that each look new write 20,000
    lines. The wallet policy refuses clone without CLONE_THREAD with EPERM."""
    from cleancoin.sandbox import denial_log
    from cleancoin.sandbox.probe.attempts_inherited import _run_denial_log_flood
    judge, _walletdir = _wallet_judge(base_sandbox, require, tmp_path)
    held, detail = _run_denial_log_flood(judge, _targets(outside_dir), None, 60)
    assert held == "denied" and "bounded" in detail, detail
    bounded = denial_log.plan_with_denials

    def unbounded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        plan = bounded(*args, **kwargs)
        # The most kinds a monitor's configuration may ask for (denial_monitor._MAX_KINDS_CAP).
        plan.denials.update(max_kinds=1 << 20, lines_per_minute=1 << 30)
        return plan
    monkeypatch.setattr(denial_log, "plan_with_denials", unbounded)
    flooded, detail = _run_denial_log_flood(judge, _targets(outside_dir), None, 60)
    assert flooded == "allowed" and "got 20000 lines" in detail, detail


def test_denial_monitor_early_trace_catches_a_monitor_dumpable_until_it_confines_itself(
        base_sandbox, require, tmp_path: Path, outside_dir, monkeypatch) -> None:  # noqa: ANN001
    """What denial-monitor-early-trace catches: a prelaunched monitor exec'd as the
    interpreter's program from its readable file (until 12-08) is dumpable until its first
    step, and a process of its uid without capabilities attaches to it while it waits for
    its configuration; the compiled monitor, exec'd from a memfd of mode 0111, is not."""
    import sys

    from cleancoin.sandbox import denial_log
    from cleancoin.sandbox.probe.attempts_inherited import _run_denial_monitor_early_trace
    judge, _walletdir = _wallet_judge(base_sandbox, require, tmp_path)
    held, detail = _run_denial_monitor_early_trace(judge, _targets(outside_dir), None, 30)
    assert held == "denied" and "ptrace refused" in detail, detail

    def as_until_12_08(title: str, arguments: list[str]) -> None:
        os.execve(sys.executable, [sys.executable, "-I", "-S", denial_log.MONITOR_PROGRAM, *arguments], {})
    monkeypatch.setattr(denial_log, "exec_compiled", as_until_12_08)
    traced, detail = _run_denial_monitor_early_trace(judge, _targets(outside_dir), None, 30)
    assert traced == "allowed" and "attached with ptrace" in detail, detail


def test_the_base_policy_is_judged_as_the_kernel_treats_it(base_sandbox) -> None:  # noqa: ANN001
    """base/python sets no nproc and no nofile limit: 200 processes and 8192 descriptors at
    once are allowed, and the probe must see them so. Until 12-07 (thirteenth session) the two
    attempts cleaned up with kill and wait4 and read the nofile limit with prlimit64, which
    base refuses by killing: SIGSYS after the forks had started, and the probe reported two
    calls "denied although the policy allows them". An attempt may use only the calls its
    question needs, or the judge must count the others."""
    result = probe.probe(load_policy(shipped_policy("base/python")), {})
    attempts = _by_name(result)
    assert [a.name for a in result.attempts if a.differs or a.outcome == "error"] == [], result.to_text()
    for name in ("rlimit-fork-200", "rlimit-fds-8192"):
        assert (attempts[name].expected, attempts[name].outcome) == ("allowed", "allowed"), attempts[name]
