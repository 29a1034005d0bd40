"""`export --format kubernetes`: a container's securityContext, its Localhost seccomp profile
and the volume mounts of its write grants (docs/deploy.md uses them)."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def test_wallet_container_and_profile(tmp_path: Path) -> None:
    profile = tmp_path / "wallet.json"
    result = subprocess.run([TOOL, "export", "--format", "kubernetes", "wallet", "--var",
                             "walletdir=/data/wallets", "--profile-out", str(profile), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    text = data["content"]
    for line in ("allowPrivilegeEscalation: false", "readOnlyRootFilesystem: true", "runAsNonRoot: true",
                 "type: Localhost", "localhostProfile: cleancoin/wallet.json", "mountPath: /data/wallets",
                 "kind: NetworkPolicy"):
        assert line in text, line
    assert "drop:\n          - ALL" in text
    seccomp_profile = json.loads(profile.read_text())
    assert seccomp_profile["defaultAction"] == "SCMP_ACT_KILL_PROCESS"
    names = {n for e in seccomp_profile["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" and "args" not in e
             for n in e["names"]}
    assert "read" in names and "execve" not in names and "connect" not in names
    assert any("Landlock" in note for note in data["notes"])


def test_node_has_no_network_policy_and_a_missing_variable_is_named(tmp_path: Path) -> None:
    missing = subprocess.run([TOOL, "export", "--format", "kubernetes", "node"], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 125 and "${datadir}" in missing.stderr and "${port}" in missing.stderr
    result = subprocess.run([TOOL, "export", "--format", "kubernetes", "node", "--var", "datadir=/data",
                             "--var", "port=8333", "--var", "rpcport=8332", "--var", "ipcport=8444"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NetworkPolicy" not in result.stdout and "mountPath: /data" in result.stdout
    # The node's policy hides the wallets beneath its datadir: Kubernetes cannot, and says so.
    assert "note: filesystem.hide (/data/wallets): no Kubernetes form" in result.stderr


def test_the_remote_wallet_of_deploy_md(tmp_path: Path) -> None:
    # docs/deploy.md: the wallet pod's policy is the wallet policy plus one TCP connection.
    diff = subprocess.run([TOOL, "diff", "wallet", "examples/wallet-remote", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert diff.returncode == 1
    widened = {(c["key"], c["item"]) for c in json.loads(diff.stdout)["changes"] if c["kind"] == "widen"}
    assert widened == {("seccomp.allowed", "connect"), ("network.connect_tcp", "${ipcport}"),
                       ("network.socket_families", "inet"), ("network.socket_families", "inet6"),
                       ("namespaces.net", "true -> false")}
    profile = tmp_path / "wallet-remote.json"
    result = subprocess.run([TOOL, "export", "--format", "kubernetes", "examples/wallet-remote",
                             "--var", "walletdir=/data/main/wallets", "--var", "ipcport=27492",
                             "--profile-out", str(profile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "localhostProfile: cleancoin/examples-wallet-remote.json" in result.stdout
    assert "mountPath: /data/main/wallets" in result.stdout and "NetworkPolicy" not in result.stdout
    names = {n for e in json.loads(profile.read_text())["syscalls"] for n in e["names"]}
    assert "connect" in names and "bind" not in names and "listen" not in names


def _claims(policy: str, *variables: str) -> set[str]:
    result = subprocess.run([TOOL, "export", "--format", "kubernetes", policy, *variables],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"claimName: (\S+)", result.stdout))


def test_a_write_grant_cannot_name_another_components_volume(tmp_path: Path) -> None:
    """Volume and claim names came from the path with case and punctuation folded: a node
    policy's write grant of /data-wallets (an odd scratch directory to a reviewer) was the
    claim `data-wallets`, the very claim the wallet's /data/wallets got, so deploying both as
    exported mounted the wallet's keys into the node. Two grants of one policy could share
    one the same way. Each path now has a claim of its own."""
    wallet = _claims("wallet", "--var", "walletdir=/data/wallets")
    node_pr = tmp_path / "node-pr.toml"
    node_pr.write_text('extends = ["node"]\n[filesystem]\nwrite = ["/data-wallets", "/srv/a-b", "/srv/A/b"]\n')
    node = _claims(str(node_pr), "--var", "datadir=/data", "--var", "port=8333", "--var", "rpcport=8332",
                   "--var", "ipcport=8444")
    assert len(wallet) == 1 and len(node) == 4, (wallet, node)
    assert not wallet & node, (wallet, node)
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name) for name in wallet | node)


def test_executable_volumes_are_written_down_where_the_policy_allows_execve(tmp_path: Path) -> None:
    """The view mounts write grants noexec (test_export_systemd's run shows a program written to
    the datadir refused); a pod's volumes are executable and a pod spec cannot say otherwise.
    Since 12-07 the export says so where the policy lets the component run programs."""
    def notes(policy: str) -> list[str]:
        result = subprocess.run([TOOL, "export", "--format", "kubernetes", policy, "--datadir", "/data",
                                 "--var", "walletdir=/data/wallets", "--json"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["notes"]

    assert any(n.startswith("execve with writable volumes (/data, /tmp)") for n in notes("examples/program"))
    assert not any(n.startswith("execve with writable volumes") for n in notes("wallet"))
