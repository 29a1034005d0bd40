"""`CleanCoin-sandbox score`: an exposure per policy, 0.0 (closed) to 10.0 (no sandbox), and
--threshold for CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=60)


def _exposure(*args: str) -> dict[str, float]:
    result = run("score", "--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return {p["policy"]: p["exposure"] for p in json.loads(result.stdout)["policies"]}


def test_shipped_policies_score_low_and_an_open_policy_high(tmp_path) -> None:
    open_policy = tmp_path / "open.toml"
    open_policy.write_text(
        '[namespaces]\nuser = false\nmount = false\npid = false\nipc = false\nuts = false\n'
        'reason = "none at all"\n'
        '[filesystem]\nwrite = [{ path = "/", reason = "everything" }]\n'
        '[network]\nsocket_families = ["unix", "netlink", { family = "inet", raw = true, reason = "raw" }]\n'
        'bind_tcp = "any"\nconnect_tcp = "any"\n'
        '[scopes]\nabstract_unix_socket = false\nsignal = false\n'
        '[process]\ndumpable = true\nmemory_deny_write_execute = false\nstdio = "inherit"\n'
        'reason = "none"\ncapabilities = [{ name = "sys_admin", reason = "all" }]\n'
        'fds = [0, 1, 2, 3, 4]\n'
        '[seccomp]\nenabled = false\nreason = "none"\n')
    scores = _exposure("wallet", "strict", "node", str(open_policy))
    assert scores["wallet"] < 1.0 and scores["strict"] < 1.0
    assert scores["wallet"] <= scores["node"] < 2.5          # the node has TCP listeners and no pid namespace
    assert scores["open"] > 8.5


def test_a_threshold_fails_ci_and_the_text_lists_the_checks() -> None:
    result = run("score", "node", "--threshold", "0.5")
    assert result.returncode == 1
    assert "above the threshold 0.5" in result.stderr
    assert "Overall exposure level for policy 'node'" in result.stdout
    # The node's largest finding was the host's network until 12-07 (later): it has a network
    # namespace of its own since, its listeners bound before (1.0 -> 0.6 overall). So TCP
    # connect and bind are closed too; since 12-07 also for -ipcconnect=tcp (its connect
    # broker reaches the wallet's port; node-ipcconnect-tcp.toml, the host's network, is gone).
    lines = [line for line in result.stdout.splitlines() if line.startswith(("✗", "~"))]
    assert not any("shares the host's network" in line or "TCP ports" in line for line in lines), lines
    assert run("score", "node-ipcconnect-tcp").returncode != 0
    assert run("score", "wallet", "--threshold", "2.0").returncode == 0


def _check(policy: str, check: str) -> float:
    result = run("score", "--json", policy)
    assert result.returncode == 0, result.stderr
    [scored] = json.loads(result.stdout)["policies"]
    return next(c for c in scored["checks"] if c["id"] == check)["exposed"]


def _processes_check(policy: str) -> float:
    return _check(policy, "processes")


def test_a_clone_rule_that_lets_fork_through_is_not_scored_as_no_processes(tmp_path) -> None:
    """The score took any refusing clone rule whose mask has CLONE_THREAD for "no processes".
    With mask 0x10001 it refuses only clones with an even exit signal: fork (clone with
    SIGCHLD, 17) runs, as the script below shows, and the score said 0.0 for processes."""
    rule = ('extends = ["base/python"]\n[namespaces]\nnet = true\n[filesystem]\nwrite = ["${{datadir}}"]\n'
            '[seccomp]\nallow = ["clone"]\n[[seccomp.rules]]\nsyscall = "clone"\naction = "errno:EPERM"\n'
            'args = [{{ index = 0, op = "masked_eq", mask = {mask:#x}, value = 0 }}]\n')
    partial, whole = tmp_path / "partial.toml", tmp_path / "whole.toml"
    partial.write_text(rule.format(mask=0x10001))
    whole.write_text(rule.format(mask=0x10000))
    script = tmp_path / "fork.py"
    script.write_text("import os\nif os.fork() == 0:\n    os._exit(0)\nprint('forked')\n")
    data = tmp_path / "data"
    data.mkdir()
    forked = run("probe", "--policy", str(partial), "--datadir", str(data), "--script", str(script))
    assert forked.returncode == 0 and "forked" in forked.stdout, forked.stdout + forked.stderr
    refused = run("probe", "--policy", str(whole), "--datadir", str(data), "--script", str(script))
    assert refused.returncode != 0 and "Operation not permitted" in refused.stdout + refused.stderr
    assert _processes_check(str(partial)) > 0.0
    assert _processes_check(str(whole)) == 0.0


def test_descriptors_kept_from_the_launcher_count(tmp_path) -> None:
    """`process.fds = [0, 1, 2, 3]` hands the program whatever the launcher had open as fd 3,
    past every path rule (below: a secret outside the grants, read through it). The score
    did not look at `fds`: the policy scored the same as without it."""
    secret = tmp_path / "ci-token"
    secret.write_text("TOKEN-1234\n")
    data = tmp_path / "data"
    data.mkdir()
    plain, keeps = tmp_path / "plain.toml", tmp_path / "keeps.toml"
    plain.write_text('extends = ["examples/program"]\n')
    keeps.write_text('extends = ["examples/program"]\n[process]\nfds = [0, 1, 2, 3]\n')

    def cat_fd3(policy) -> subprocess.CompletedProcess[str]:
        # The launcher holds the secret open as fd 3 (a shell redirection, as a CI step might).
        return subprocess.run(["sh", "-c", 'exec 3<"$1"; exec "$2" run --policy "$3" --datadir "$4" '
                               '-- sh -c "cat <&3"', "sh", str(secret), TOOL, str(policy), str(data)],
                              capture_output=True, text=True, timeout=60)

    assert cat_fd3(keeps).stdout == "TOKEN-1234\n"            # the grant the score must see
    assert "TOKEN" not in cat_fd3(plain).stdout
    assert _check(str(keeps), "fds") > 0.0 and _check(str(plain), "fds") == 0.0


def test_what_runs_under_a_log_default_is_scored_as_allowed(tmp_path) -> None:
    """Until 12-07 the score read the allow list: under `default_action = "log"` a denied
    ptrace ran (the script below printed 0 for PTRACE_TRACEME) while its class scored 0.00
    (and mount, bpf, io_uring ... likewise, the surface 0.76); an execve listed but refused by
    a rule scored 1.00."""
    if not os.path.exists("/usr/bin/python3"):
        import pytest
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    data = tmp_path / "data"
    data.mkdir()
    logged, killed = tmp_path / "logged.toml", tmp_path / "killed.toml"
    body = ('extends = ["examples/program"]\n[seccomp]\n{default}deny = ["ptrace"]\n'
            'rules = [{{ syscall = "execveat", action = "errno:EPERM" }}]\n')
    logged.write_text(body.format(default='default_action = "log"\nreason = "this test"\n'))
    killed.write_text(body.format(default=""))
    traceme = "import ctypes; print(ctypes.CDLL(None).ptrace(0, 0, 0, 0))"
    traced = [run("run", "--policy", str(p), "--datadir", str(data), "--", "/usr/bin/python3", "-c", traceme).stdout
              for p in (logged, killed)]
    assert traced == ["0\n", ""]                         # runs under log; killed under the default kill
    trace_class = next(c["id"] for c in json.loads(run("score", "--json", str(killed)).stdout)["policies"][0]["checks"]
                       if "ptrace" in c["description"])
    assert (_check(str(logged), trace_class), _check(str(killed), trace_class)) == (1.0, 0.0)
    assert _check(str(logged), "seccomp-surface") == 1.0 > _check(str(killed), "seccomp-surface")
