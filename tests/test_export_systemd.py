"""`export --format systemd`: the policy as a unit drop-in, scored by systemd itself
(`systemd-analyze security --offline=true`), for each shipped policy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
ANALYZE = shutil.which("systemd-analyze")


def _export(tmp_path: Path, policy: str, *extra: str) -> str:
    data = tmp_path / "data"
    (data / "wallets").mkdir(parents=True, exist_ok=True)
    result = subprocess.run([TOOL, "export", "--format", "systemd", policy, "--datadir", str(data),
                             "--var", f"walletdir={data / 'wallets'}", "--var", "port=8333",
                             "--var", "rpcport=8332", "--var", "ipcport=8332", *extra],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _exposure(tmp_path: Path, name: str, dropin: str) -> tuple[float, str]:
    """Score the drop-in as systemd would see it installed: a unit plus NAME.service.d/."""
    root = tmp_path / f"root-{name}"
    unit_dir = root / "etc" / "systemd" / "system"
    (unit_dir / f"{name}.service.d").mkdir(parents=True)
    (unit_dir / f"{name}.service").write_text(f"[Unit]\nDescription={name}\n\n[Service]\n"
                                              "ExecStart=/usr/bin/true\n")
    (unit_dir / f"{name}.service.d" / "50-cleancoin-sandbox.conf").write_text(dropin)
    result = subprocess.run([ANALYZE, "security", "--offline=true", f"--root={root}", f"{name}.service"],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1)), result.stdout


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (make setup installs systemd)")
def test_exported_units_score_low_with_systemd_analyze(tmp_path: Path) -> None:
    scores = {}
    for policy in ("wallet", "node", "strict", "examples/program"):
        dropin = _export(tmp_path, policy)
        assert dropin.count("[Service]") == 1 and "NoNewPrivileges=yes" in dropin
        scores[policy], listing = _exposure(tmp_path, policy.replace("/", "-"), dropin)
        assert "SystemCallFilter=" in dropin and "SystemCallArchitectures=native" in dropin
    print(f"systemd-analyze exposure: {scores}")
    assert scores["wallet"] < 2.0                       # the goal set for the wallet
    assert scores["strict"] < 2.0
    assert scores["node"] < 2.5                         # the host's network, TCP
    # The bare unit (no drop-in) for comparison: systemd calls it unsafe.
    bare, _ = _exposure(tmp_path, "bare", "[Service]\n")
    assert bare > 9.0


def test_the_wallet_unit_says_what_it_maps_and_what_it_cannot(tmp_path: Path) -> None:
    dropin = _export(tmp_path, "wallet")
    data = tmp_path / "data"
    for line in ("PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX", "CapabilityBoundingSet=",
                 "TemporaryFileSystem=/:ro", f"BindPaths={data / 'wallets'}", "LimitCORE=0",
                 "LimitNOFILE=1024", "PrivateTmp=yes", "RestrictNamespaces=yes", "User=cleancoin"):
        assert line in dropin.splitlines(), line
    syscalls = next(line for line in dropin.splitlines() if line.startswith("SystemCallFilter="))
    allowed = set(syscalls.split("=", 1)[1].split())
    assert "read" in allowed and "execve" not in allowed and "connect" not in allowed
    # What systemd cannot say is written down, not dropped.
    assert "# Not expressible in systemd" in dropin and "ioctl is allowed with any argument" in dropin
    node = _export(tmp_path, "node")
    assert "SocketBindAllow=tcp:8333" in node and "SocketBindDeny=any" in node
    # Its own network namespace (since 12-07) is one it enters itself, its listeners bound
    # before: the unit keeps its network (PrivateNetwork= would leave them unreachable); the
    # wallet's, launched into one and listening nowhere, is the unit's.
    assert "PrivateNetwork=yes" not in node.splitlines() and "IPAddressDeny=any" not in node.splitlines()
    assert "enters its own network namespace itself, after binding its listeners" in node
    assert "PrivateNetwork=yes" in dropin.splitlines()
    assert f"InaccessiblePaths={data / 'wallets'}" in node
    whole = _export(tmp_path, "wallet", "--exec-start", "/usr/bin/CleanCoin-wallet -ipcconnect=unix")
    assert whole.startswith("# Generated") and "[Install]" in whole and "ExecStart=/usr/bin/CleanCoin-wallet" in whole


def _condition(expression: str) -> subprocess.CompletedProcess[str]:
    """systemd's own reading of a path word: specifiers expanded as in a unit file."""
    return subprocess.run([ANALYZE, "condition", expression], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (make setup installs systemd)")
def test_a_third_party_policy_cannot_inject_into_the_unit(tmp_path: Path) -> None:
    """A policy's strings reach the unit: a '%' specifier in a path became another path (/%E is
    /etc to systemd, a missing directory to `explain` and the launch, so no reason was asked
    for a write to /etc), a '"' in an environment value started a second assignment, and a ':'
    in a path became a bind destination. Each is read back by systemd itself."""
    policy = tmp_path / "third-party.toml"
    policy.write_text('extends = ["strict"]\n[policy]\ndescription = "reads %E"\n'
                      '[filesystem]\nwrite = [{ path = "/%E", optional = true }]\n'
                      "[process.set_environment]\nA = 'x\" \"B'\n")
    unit = _export(tmp_path, str(policy), "--exec-start", "/usr/bin/true")
    binds = next(line for line in unit.splitlines() if line.startswith("BindPaths=")).split("=", 1)[1].split()
    datadir, grant = binds[0], binds[-1].removeprefix("-")
    assert datadir == str(tmp_path / "data")
    # The datadir bind is the directory it names; the "/%E" grant is the missing "/%E", not /etc.
    assert _condition(f"ConditionPathIsDirectory={datadir}").returncode == 0
    seen = _condition(f"ConditionPathIsDirectory={grant}")
    assert seen.returncode != 0 and "=/%E failed" in seen.stdout + seen.stderr, seen.stdout + seen.stderr
    assert "Description=reads %%E" in unit.splitlines()
    # systemd parses the unit without dropping or adding an environment assignment.
    service = tmp_path / "third-party.service"
    service.write_text(unit)
    verify = subprocess.run([ANALYZE, "verify", "--man=no", str(service)], capture_output=True,
                            text=True, timeout=60)
    assert "Invalid environment assignment" not in verify.stdout + verify.stderr, verify.stderr
    assert 'Environment="A=x\\" \\"B"' in unit.splitlines()

    # A ':' (or a quote, a backslash) in a path has no exact spelling: refused, naming the grant.
    policy.write_text('extends = ["strict"]\n[filesystem]\n'
                      'write = [{ path = "/opt/h30:relative", optional = true }]\n')
    data = tmp_path / "data"
    refused = subprocess.run([TOOL, "export", "--format", "systemd", str(policy), "--datadir", str(data)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and not refused.stdout
    assert f"{policy}:3: filesystem.write[0]: '/opt/h30:relative' holds ':'" in refused.stderr


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (make setup installs systemd)")
def test_a_policy_without_a_mount_namespace_still_limits_what_the_unit_reads(tmp_path: Path) -> None:
    """Landlock alone (namespaces.mount = false) lets the component read /usr/lib and its
    datadir only. The unit had no filesystem view then: ProtectSystem=strict makes the host
    read-only, not unreadable, so the service read everything its user may, and no note said
    so. The view is written whatever namespaces.mount says."""
    policy = tmp_path / "landlock-only.toml"
    policy.write_text('[policy]\nname = "landlock-only"\n[namespaces]\nmount = false\n'
                      '[filesystem]\nread = ["/usr/lib"]\nwrite = ["${datadir}"]\n'
                      '[seccomp]\nallow = ["read", "write", "exit_group"]\n')
    unit = _export(tmp_path, str(policy), "--exec-start", "/usr/bin/true")
    lines = unit.splitlines()
    data = tmp_path / "data"
    for line in ("TemporaryFileSystem=/:ro", "BindReadOnlyPaths=/usr/lib", f"BindPaths={data}",
                 f"ReadWritePaths={data}"):
        assert line in lines, (line, unit)
    assert "PrivateMounts=yes" not in lines          # the mount namespace itself stays the policy's
    service = tmp_path / "landlock-only.service"
    service.write_text(unit)
    verify = subprocess.run([ANALYZE, "verify", "--man=no", str(service)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


def test_what_the_unit_cannot_restrict_is_always_written_down(tmp_path: Path) -> None:
    """`connect_tcp = []` (no TCP connect at all) with inet sockets, and the signal scope
    without a pid namespace, were dropped without a note: the unit allowed both silently."""
    policy = tmp_path / "server.toml"
    policy.write_text('extends = ["examples/program"]\n[namespaces]\nnet = false\npid = false\n'
                      '[network]\nsocket_families = ["unix", "inet"]\nbind_tcp = [8333]\n'
                      'connect_tcp = []\n')
    unit = _export(tmp_path, str(policy))
    notes = [line for line in unit.splitlines() if line.startswith("#  - ")]
    assert any("network.connect_tcp ports (none)" in n for n in notes), notes
    assert any(n.startswith("#  - scopes.signal:") for n in notes), notes
    assert "SocketBindAllow=tcp:8333" in unit.splitlines()       # what systemd can say, it says


def test_a_symlink_planted_in_a_writable_grant_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    """A service writes its datadir; a link it left there (`state -> /`) is what systemd
    binds and makes writable at the next start. `run` refuses such a link at every launch;
    the export wrote `ReadWritePaths=DATADIR/state` and systemd would follow it."""
    data = tmp_path / "data"
    (data / "wallets").mkdir(parents=True)
    host = tmp_path / "host-etc"          # stands for / or /etc: somewhere the policy never grants
    host.mkdir()
    (data / "state").symlink_to(host)
    policy = tmp_path / "stateful.toml"
    policy.write_text('extends = ["strict"]\n[filesystem]\nwrite = ["${datadir}/state"]\n')
    export = subprocess.run([TOOL, "export", "--format", "systemd", str(policy), "--datadir", str(data)],
                            capture_output=True, text=True, timeout=60)
    script = tmp_path / "true.py"
    script.write_text("")
    launch = subprocess.run([TOOL, "probe", "--policy", str(policy), "--datadir", str(data),
                             "--script", str(script)], capture_output=True, text=True, timeout=60)
    for refused in (export, launch):
        assert refused.returncode == 125 and f"{policy}:3: filesystem.write[0]" in refused.stderr, refused.stderr
        assert f"'{data / 'state'}' is a symlink (to '{host}')" in refused.stderr
    assert "ReadWritePaths" not in export.stdout
    # The same through an operator's link to the datadir (~/.cleancoin -> /data/cc).
    alias = tmp_path / "alias"
    alias.symlink_to(data)
    aliased = subprocess.run([TOOL, "export", "--format", "systemd", str(policy), "--datadir", str(alias)],
                             capture_output=True, text=True, timeout=60)
    assert aliased.returncode == 125 and "is a symlink (to" in aliased.stderr, aliased.stderr
    # Without the link the unit is written, and says where a link could be planted later.
    (data / "state").unlink()
    (data / "state").mkdir()
    unit = _export(tmp_path, str(policy))
    assert f"ReadWritePaths={data} {data / 'state'}" in unit.splitlines()
    assert any("grants inside a directory the service can write" in line and str(data / "state") in line
               for line in unit.splitlines())


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (make setup installs systemd)")
def test_what_the_service_writes_does_not_run_as_run_refuses_it(tmp_path: Path) -> None:
    """The view mounts the datadir (a write grant) and the tmpfs noexec: a program the
    component wrote there does not run. The unit bound them executable: until 12-07 the unit of
    a policy allowing execve let the service run what it had downloaded into its datadir."""
    data = tmp_path / "data"
    (data / "wallets").mkdir(parents=True)
    policy = "examples/program"
    script = "cp /usr/bin/true ${D}/t && ${D}/t && echo RAN; /usr/bin/true && echo SYSTEM-RAN"
    launch = subprocess.run([TOOL, "run", "--policy", policy, "--datadir", str(data), "--",
                             "/bin/sh", "-c", script.replace("${D}", str(data))],
                            capture_output=True, text=True, timeout=60)
    assert launch.stdout == "SYSTEM-RAN\n" and "Permission denied" in launch.stderr, launch
    unit = _export(tmp_path, policy)
    assert f"NoExecPaths={data} /tmp" in unit.splitlines(), unit
    assert any(line.startswith("#  - execve of files in read-only grants") for line in unit.splitlines())
    service = tmp_path / "program.service"
    service.write_text(unit.replace("[Service]", "[Service]\nExecStart=/usr/bin/true", 1))
    verify = subprocess.run([ANALYZE, "verify", "--man=no", str(service)], capture_output=True,
                            text=True, timeout=60)
    assert "NoExecPaths" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (make setup installs systemd)")
def test_what_systemd_allows_beyond_the_list_is_written_down_and_rules_are_read_as_the_filter(tmp_path: Path) -> None:
    """systemd.exec(5): an allow-list SystemCallFilter= always lets the @default group run
    (execve, the time and sleep calls, prlimit64 ...). Until 12-08 the unit was called the
    filter's "same" and said nothing: wallet's and node's units ran execve, which their
    filters refuse. The list of @default is the installed systemd's own. And the unit reads
    the filter, not the allow list: personality allowed by a rule is not locked."""
    from cleancoin.sandbox import seccomp
    from cleancoin.sandbox.policy_cache import load_policy
    from cleancoin.sandbox.policy_files import shipped_policy
    listed = subprocess.run([ANALYZE, "syscall-filter", "@default"], capture_output=True, text=True,
                            timeout=60).stdout.splitlines()[1:]
    default = {n.strip() for n in listed if n.strip() and not n.strip().startswith("#")}
    for name in ("wallet", "node", "examples/program"):
        policy = load_policy(shipped_policy(name))
        refused = {n for n in default if not policy.may_run(n) and (seccomp.syscall_number(n) or -1) >= 0}
        notes = [n for n in _export(tmp_path, name).splitlines() if n.startswith("#  - SystemCallFilter=")]
        if name == "examples/program":
            assert not refused and not notes, (refused, notes)    # it allows all of @default
            continue
        assert "execve" in refused and len(notes) == 1, notes
        named = set(notes[0].split("refuses ")[1].split(": they run")[0].split(", "))
        assert refused <= named, refused - named
    policy = tmp_path / "personality.toml"
    policy.write_text('extends = ["examples/program"]\n[[seccomp.rules]]\nsyscall = "personality"\n'
                      'action = "allow"\nreason = "a tool that runs 32-bit programs"\n')
    unit = _export(tmp_path, str(policy)).splitlines()
    assert "LockPersonality=yes" not in unit and "LockPersonality=yes" in _export(tmp_path, "examples/program").splitlines()
