"""`CleanCoin-sandbox diff A B`: a semantic diff after extends, groups and variables; exit 1
when B grants more, so that CI can fail a change that widens a sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=60)


def _changes(result: subprocess.CompletedProcess[str]) -> set[tuple[str, str, str]]:
    return {(c["key"], c["kind"], c["item"]) for c in json.loads(result.stdout)["changes"]}


def test_a_change_that_widens_the_wallet_fails_and_says_what(tmp_path) -> None:
    # What a pull request might do to the wallet: let it run programs and talk TCP, read
    # /etc, keep a capability, give up its network namespace and raise a limit.
    wider = tmp_path / "wallet-pr.toml"
    wider.write_text(
        'extends = ["wallet"]\n'
        '[namespaces]\nnet = false\n'
        '[filesystem]\nread = ["/etc", "/usr/lib/python3"]\n'
        '[network]\nsocket_families = ["inet"]\nconnect_tcp = [8333]\n'
        '[process]\ncapabilities = [{ name = "net_raw", reason = "ping" }]\n'
        '[process.rlimits]\nnofile = 65536\n'
        '[seccomp]\nallow = [{ syscall = "execve", reason = "run a helper" }, "connect"]\n'
        '[compatibility]\nlandlock = "soft"\n')
    result = run("diff", "wallet", str(wider), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    changes = _changes(result)
    for expected in (("seccomp.allowed", "widen", "execve"), ("seccomp.allowed", "widen", "connect"),
                     ("filesystem.read", "widen", "/etc"), ("network.socket_families", "widen", "inet"),
                     ("network.connect_tcp", "widen", "8333"), ("namespaces.net", "widen", "true -> false"),
                     ("process.capabilities", "widen", "net_raw"),
                     ("process.rlimits.nofile", "widen", "1024/1024 -> 65536/65536 (soft/hard)"),
                     ("compatibility.landlock", "widen", "hard -> soft")):
        assert expected in changes, (expected, changes)
    # /usr/lib/python3 is inside the base's /usr/lib grant: no wider.
    assert ("filesystem.read", "change", "/usr/lib/python3") in changes
    text = run("diff", "wallet", str(wider))
    assert text.returncode == 1 and "B GRANTS MORE than A" in text.stdout and "  + execve" in text.stdout


def test_narrowing_and_equal_policies_pass(tmp_path) -> None:
    same = run("diff", "wallet", "wallet")
    assert same.returncode == 0 and "no difference" in same.stdout
    narrow = tmp_path / "narrow.toml"
    narrow.write_text('extends = ["wallet"]\n[seccomp]\ndeny = ["mremap", "madvise"]\n'
                      '[process.rlimits]\nnofile = 256\n')
    narrower = run("diff", "wallet", str(narrow), "--json")
    assert narrower.returncode == 0, narrower.stdout
    data = json.loads(narrower.stdout)
    assert data["widens"] is False and data["counts"] == {"widen": 0, "narrow": 3, "change": 0}
    assert ("seccomp.allowed", "narrow", "mremap") in _changes(narrower)
    assert ("process.rlimits.nofile", "narrow", "1024/1024 -> 256/256 (soft/hard)") in _changes(narrower)
    # The other way round the same changes are widenings.
    assert run("diff", str(narrow), "wallet").returncode == 1
    # strict -> wallet: an fchown rule and a memory limit narrower, but another directory, a
    # bigger file size limit and sendfile wider.
    mixed = _changes(run("diff", "strict", "wallet", "--json"))
    assert ("filesystem.write", "widen", "${walletdir}") in mixed
    assert ("seccomp.allowed", "widen", "sendfile") in mixed
    assert ("seccomp.rules", "narrow", "fchown: errno:EPERM always") in mixed


def test_rules_are_judged_by_what_they_change(tmp_path) -> None:
    base = tmp_path / "a.toml"
    base.write_text('extends = ["base/python"]\n')
    no_tiocsti_rule = tmp_path / "b.toml"
    # The same base without its ioctl rules: TIOCSTI (type 'T', refused since 12-07 with the
    # rest of the terminal requests not on the allow-list) becomes possible.
    lines = open(_shipped("base/python")).read().split("# Terminals and the console")[0]
    no_tiocsti_rule.write_text(lines.replace("[policy]\nname = \"base/python\"", "[policy]\nname = \"b\""))
    result = run("diff", str(base), str(no_tiocsti_rule), "--json")
    assert result.returncode == 1
    widened = {c["item"] for c in json.loads(result.stdout)["changes"] if c["kind"] == "widen"}
    assert "ioctl: errno:EPERM when arg1 masked_eq 0x5400/0xff00" in widened, widened


def _shipped(name: str) -> str:
    from cleancoin.sandbox.policy_loader import shipped_policy
    return shipped_policy(name)


def test_a_rule_taken_out_of_the_denial_log_is_shown(tmp_path) -> None:
    """Nothing more runs when a refusal stops being logged, so it does not fail the diff, but
    a reviewer must see that attempts of that kind would now go unrecorded."""
    rule = '[[seccomp.rules]]\nsyscall = "fchown"\naction = "errno:EPERM"\n'
    logged, quiet = tmp_path / "logged.toml", tmp_path / "quiet.toml"
    logged.write_text('extends = ["base/python"]\n[policy]\nname = "logged"\n' + rule)
    quiet.write_text('extends = ["base/python"]\n[policy]\nname = "quiet"\n' + rule + "log = false\n")
    result = run("diff", str(logged), str(quiet), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    changes = json.loads(result.stdout)["changes"]
    assert [(c["key"], c["kind"], c["detail"]) for c in changes] == [
        ("seccomp.rules", "change", "no longer in the denial log")], changes
    back = json.loads(run("diff", str(quiet), str(logged), "--json").stdout)["changes"]
    assert [c["detail"] for c in back] == ["now in the denial log"]


def test_a_grant_through_a_symlink_is_judged_where_it_points(tmp_path) -> None:
    """A read grant of a symlink inside A's grant is the link's target at launch (Debian's
    /usr/lib/ssl/private -> /etc/ssl/private: the TLS keys). `diff` called it "already granted
    by A's execute /usr/lib" and passed; it is a widening, shown with where it points."""
    system = tmp_path / "system"       # stands for /usr/lib: not writable by the sandbox
    (system / "ssl").mkdir(parents=True)
    (system / "ssl" / "openssl.cnf").write_text("[ ca ]\n")
    keys = tmp_path / "etc-ssl-private"
    keys.mkdir()
    (keys / "server.key").write_text("PRIVATE KEY\n")
    (system / "ssl" / "private").symlink_to(keys)
    data = tmp_path / "data"
    data.mkdir()
    a = tmp_path / "a.toml"
    a.write_text(f'extends = ["examples/program"]\n[filesystem]\nread = ["{system}"]\n')
    b = tmp_path / "b.toml"
    b.write_text(f'extends = ["{a}"]\n[filesystem]\nread = ["{system}/ssl/private"]\n')

    def cat(policy, path: str) -> subprocess.CompletedProcess[str]:
        return run("run", "--policy", str(policy), "--datadir", str(data), "--", "cat", path)

    # What each policy really lets a program read.
    assert cat(a, f"{system}/ssl/openssl.cnf").stdout == "[ ca ]\n"
    assert cat(a, f"{system}/ssl/private/server.key").returncode != 0
    assert cat(b, f"{system}/ssl/private/server.key").stdout == "PRIVATE KEY\n"
    result = run("diff", str(a), str(b), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("filesystem.read", "widen", f"{system}/ssl/private (is {keys})") in _changes(result)
    assert f"{system}/ssl/private (is {keys})" in run("explain", str(b)).stdout
    # The other way round it narrows; a grant that stays inside A's is still no wider.
    assert run("diff", str(b), str(a)).returncode == 0
    c = tmp_path / "c.toml"
    c.write_text(f'extends = ["{a}"]\n[filesystem]\nread = ["{system}/ssl"]\n')
    same = run("diff", str(a), str(c), "--json")
    assert same.returncode == 0 and ("filesystem.read", "change", f"{system}/ssl") in _changes(same)
    if os.path.islink("/usr/lib/ssl/private"):         # the real one, where openssl is installed
        real = tmp_path / "real.toml"
        real.write_text('extends = ["examples/program"]\n[filesystem]\nread = ["/usr/lib/ssl/private"]\n')
        found = run("diff", "examples/program", str(real), "--json")
        assert found.returncode == 1 and ("filesystem.read", "widen", "/usr/lib/ssl/private (is "
                                          f"{os.path.realpath('/usr/lib/ssl/private')})") in _changes(found)


def test_socket_kinds_within_a_family_are_widened_and_narrowed() -> None:
    """Plain unix sockets over socket pairs only (the node's -ipcconnect=unix variant) widen;
    the reverse narrows; UDP given up on inet and inet6 narrows (stream only)."""
    wider = run("diff", "node", "node-ipcconnect-unix", "--json")
    assert wider.returncode == 1, wider.stdout + wider.stderr
    assert ("network.socket_families", "widen", "unix socketpair_only true -> false") in _changes(wider)
    narrower = run("diff", "node-ipcconnect-unix", "node", "--json")
    assert narrower.returncode == 0, narrower.stdout + narrower.stderr
    assert ("network.socket_families", "narrow", "unix socketpair_only false -> true") in _changes(narrower)
    stream = _changes(run("diff", "connect-broker", "node", "--json"))
    assert {("network.socket_families", "narrow", f"{family} datagram true -> false")
            for family in ("inet", "inet6")} <= stream, stream


def test_a_rule_without_args_is_judged_by_what_it_replaces(tmp_path) -> None:
    """A rule without args decides every call of its syscall, and the filter drops the other
    rules for it. Until 12-07 `diff` judged the added rules alone: a change adding
    `{ syscall = "uname", action = "allow" }` over a base that refuses uname, and `{ syscall =
    "clone", action = "log" }` over one that refuses clone without CLONE_THREAD (a fork), was
    "B grants nothing that A does not (2 changed)", and `explain` showed uname refused and the
    fork refusal in force; the program it ran printed the system name and forked."""
    a = tmp_path / "a.toml"
    a.write_text('extends = ["examples/program"]\n[policy]\nname = "a"\n'
                 '[[seccomp.rules]]\nsyscall = "clone"\naction = "errno:EPERM"\n'
                 'args = [{ index = 0, op = "masked_eq", mask = 0x10000, value = 0 }]\n'
                 '[[seccomp.rules]]\nsyscall = "uname"\naction = "errno:EPERM"\n')
    b = tmp_path / "b.toml"
    b.write_text(f'extends = ["{a}"]\n[policy]\nname = "b"\n'
                 '[[seccomp.rules]]\nsyscall = "clone"\naction = "log"\n'
                 '[[seccomp.rules]]\nsyscall = "uname"\naction = "allow"\n')
    data = tmp_path / "data"
    data.mkdir()

    def sh(policy, script: str) -> subprocess.CompletedProcess[str]:
        return run("run", "--policy", str(policy), "--datadir", str(data), "--", "/bin/sh", "-c", script)

    # What each really lets a shell do: a uname(2) and a fork (a subshell).
    assert sh(a, "uname -s").returncode != 0 and sh(b, "uname -s").stdout == "Linux\n"
    fork = "(echo forked); echo $?"
    assert "forked" not in sh(a, fork).stdout and sh(b, fork).stdout == "forked\n0\n"
    result = run("diff", str(a), str(b), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    changes = _changes(result)
    assert ("seccomp.rules", "widen", "uname: errno:EPERM -> allow always") in changes, changes
    assert ("seccomp.rules", "widen", "clone: errno:EPERM when arg0 masked_eq 0x0/0x10000") in changes
    explained = run("explain", str(b)).stdout
    assert "clone: log when always" in explained and "clone: errno:EPERM" not in explained
    assert "uname: errno:EPERM" not in explained and "minus clone" not in explained, explained
    # The other way round: narrower, and a replacement by another refusal is no wider.
    assert run("diff", str(b), str(a)).returncode == 0
    c = tmp_path / "c.toml"
    c.write_text(f'extends = ["{a}"]\n[policy]\nname = "c"\n'
                 '[[seccomp.rules]]\nsyscall = "uname"\naction = "errno:EACCES"\n')
    other = run("diff", str(a), str(c), "--json")
    assert other.returncode == 0, other.stdout
    assert ("seccomp.rules", "change", "uname: errno:EPERM -> errno:EACCES always") in _changes(other)


def test_a_grant_beneath_a_private_tmpfs_is_the_hosts_path(tmp_path) -> None:
    """A grant beneath a tmpfs is the host's path, bound into the view over the fresh tmpfs.
    Until 12-07 `diff` called `read = ["${tmpdir}/x"]` "already granted by A's write
    ${tmpdir}" (A's ${tmpdir} is a fresh tmpfs: nothing of the host) and passed, while the
    launched program read the host's ${tmpdir}/x (with the default ${tmpdir}, /tmp: an
    ssh-agent's or the X server's socket directory)."""
    host_tmp = tmp_path / "host-tmp"
    (host_tmp / "x").mkdir(parents=True)
    (host_tmp / "x" / "secret").write_text("TOPSECRET\n")
    a = tmp_path / "a.toml"
    a.write_text('extends = ["examples/program"]\n[policy]\nname = "a"\n')   # tmpfs ${tmpdir}
    b = tmp_path / "b.toml"
    b.write_text(f'extends = ["{a}"]\n[policy]\nname = "b"\n[filesystem]\nread = ["${{tmpdir}}/x"]\n')
    data = tmp_path / "data"
    data.mkdir()

    def cat(policy) -> subprocess.CompletedProcess[str]:
        return run("run", "--policy", str(policy), "--datadir", str(data), "--var", f"tmpdir={host_tmp}",
                   "--", "cat", f"{host_tmp}/x/secret")

    assert cat(a).returncode != 0 and cat(b).stdout == "TOPSECRET\n"
    result = run("diff", str(a), str(b), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert _changes(result) == {("filesystem.read", "widen", "${tmpdir}/x")}
    assert "SEES THE HOST'S paths beneath its tmpfs, bound in over it: ${tmpdir}/x" in run("explain", str(b)).stdout
    # The tmpfs itself, however spelled, is nothing of the host: no difference.
    same = tmp_path / "same.toml"
    same.write_text(f'extends = ["{a}"]\n[policy]\nname = "same"\n[filesystem]\n'
                    'read = ["${tmpdir}/", "${tmpdir}//."]\n')
    assert run("diff", str(a), str(same)).stdout.endswith("no difference in what they allow\n")


def test_a_bind_rule_for_port_0_is_any_ephemeral_port(tmp_path) -> None:
    """bind(2) to port 0 asks the kernel for an ephemeral port, and Landlock checks the port
    asked for: `bind_tcp = [0]` lets the component listen on whichever port it gets. Until
    12-07 `explain` said "may bind TCP ports 0 only" and `diff` "+ 0"."""
    none = tmp_path / "none.toml"
    none.write_text('extends = ["examples/program"]\n[network]\nsocket_families = ["unix", "inet"]\n')
    zero = tmp_path / "zero.toml"
    zero.write_text(f'extends = ["{none}"]\n[network]\nbind_tcp = ["00"]\n')
    data = tmp_path / "data"
    data.mkdir()
    listen = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
              "print(s.getsockname()[1] > 0)")

    def python(policy) -> subprocess.CompletedProcess[str]:
        return run("run", "--policy", str(policy), "--datadir", str(data), "--", "/usr/bin/python3", "-c", listen)

    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (a program examples/program can run)")
    assert "PermissionError" in python(none).stderr and python(zero).stdout == "True\n"
    assert "may bind TCP ports 0 (any ephemeral port the kernel picks) only" in run("explain", str(zero)).stdout
    changes = _changes(run("diff", str(none), str(zero), "--json"))
    assert changes == {("network.bind_tcp", "widen", "0 (any ephemeral port the kernel picks)")}, changes
