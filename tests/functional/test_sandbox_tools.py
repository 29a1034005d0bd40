"""Functional, CleanCoin-node: `CleanCoin-sandbox status` on a running node's process tree,
and `CleanCoin-sandbox learn` of the node and its wallet process as the suite runs them
(CleanCoin-node -sandboxlearn). CleanCoind has neither a sandbox nor a wallet process: these skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework import connect_nodes, is_multiprocess, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")


def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=60)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _listening_sockets(ports: set[int]) -> set[str]:
    """`socket:[INODE]` of each TCP listener on `ports` in this network namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:     # 0A: LISTEN
                found.add(f"socket:[{fields[9]}]")
    return found


def _descriptors(pid: int) -> set[str]:
    """What each open descriptor of `pid` points to."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass            # closed meanwhile
    return out


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_status_reads_the_node_tree_from_the_kernel(node) -> None:
    n = node()
    n.start()
    assert n.process is not None
    # With no wallet to load, the wallet process starts at the first call that may want one
    # (since 12-08): this is one.
    n.rpc.createwallet("w")
    result = sandbox("status", "--tree", str(n.process.pid), "--json")
    processes = json.loads(result.stdout)["processes"]
    assert result.returncode == 0, result.stdout
    by_role: dict[str, list[dict]] = {}
    for p in processes:
        by_role.setdefault(p["role"] or "none", []).append(p)
    node_status = processes[0]
    # The node restricted itself: its own report, and the kernel agrees with it.
    assert node_status["report"]["policy"] == "node" and node_status["seccomp_mode"] == "filter"
    assert node_status["no_new_privs"] and node_status["findings"] == []
    # Its own network namespace since 12-07 (its listeners are bound before, in the host's).
    assert "mnt" in node_status["namespaces_own"] and "net" in node_status["namespaces_own"]
    assert node_status["rlimits"]["nofile"] == {"soft": "4096", "hard": "4096"}
    # The zygote is unconfined by design and says so; the wallet is in its own pid and net
    # namespaces below two waiting processes.
    assert [p["name"] for p in by_role["zygote"]] == ["zygote"]
    wallet = [p for p in by_role["component"] if p["report"]["policy"] == "wallet"]
    assert len(wallet) == 1 and wallet[0]["seccomp_mode"] == "filter"
    assert {"pid", "net", "user", "mnt"} <= set(wallet[0]["namespaces_own"])
    assert wallet[0]["capabilities"]["effective"] == "0x0"
    assert len(by_role["pid namespace waiter"]) == 2
    # The node's denial monitor (prelaunched before it restricted itself) is a double fork, so
    # outside the tree; the wallet's (forked by the zygote, outside the wallet's pid namespace,
    # since 12-07) is in it, below the zygote, its subreaper, which reaps it (since 12-07).
    # Both are known from their components' reports, not by their names (helpers.py; the
    # wallet's by the pid and start time the zygote recorded, `outside`).
    inside = [p for p in processes if p["name"] == "denial-monitor"]
    assert [p["role"] for p in inside] == ["denial monitor"], processes
    assert f"PPid:\t{by_role['zygote'][0]['pid']}\n" in Path(f"/proc/{inside[0]['pid']}/status").read_text()
    group = os.getpgid(n.process.pid)
    # Live ones only: an earlier test's monitor that ended stays a zombie of the same process
    # group where PID 1 does not reap (containers).
    outside = [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in {p["pid"] for p in processes}
               and _comm(int(d)) == "denial-monitor" and _pgid(int(d)) == group and not _zombie(int(d))]
    assert len(outside) == 1, outside
    for pid in outside + [inside[0]["pid"]]:
        alone = json.loads(sandbox("status", "--json", str(pid)).stdout)["processes"][0]
        assert alone["role"] == "denial monitor", alone
    text = sandbox("status", str(wallet[0]["pid"]))
    assert text.returncode == 0 and "policy 'wallet'" in text.stdout and "verdict        sandboxed" in text.stdout
    # The node's listeners, bound before it confines itself (since 12-07), are its own alone:
    # no other process of the tree (zygote, connect broker, denial monitors, the wallet process
    # and its waiting processes) holds one, so none can accept() an RPC client's password or
    # a peer. /proc/PID/fd of a process that is not dumpable is root's to read.
    if os.geteuid() == 0:
        listeners = _listening_sockets({n.p2p_port, n.rpc_port})
        assert len(listeners) >= 2, listeners                    # P2P, and RPC on each address
        holders = {pid: _descriptors(pid) & listeners for pid in [p["pid"] for p in processes] + outside}
        assert holders.pop(node_status["pid"]) == listeners, holders
        assert len(holders) >= 7 and not any(holders.values()), holders


def test_learn_the_node_and_its_wallet_as_the_suite_runs_them(node, tmp_path: Path) -> None:
    records = tmp_path / "records"
    n = node(f"-sandboxlearn={records}")
    n.start()
    # It reaches a peer as a confined node does, through its connect broker: it runs in
    # node.toml's network namespace of its own, and until the broker was started for learning
    # runs too (12-07) it made no connection at all there.
    peer = node()
    peer.start()
    connect_nodes(n, peer)
    n.rpc.createwallet("w")
    address = n.rpc.getnewaddress()
    n.rpc.generatetoaddress(101, address)
    wait_until(lambda: n.client.call("getwalletinfo")["lastprocessedblock"]["height"] == 101,
               what="wallet sync")
    n.rpc.sendtoaddress(n.rpc.getnewaddress(), 1.5)
    # The report says what runs: nothing is enforced while learning.
    info = n.rpc.getprocessinfo()
    assert "learning" in json.dumps(info)
    assert n.stop() == 0
    assert "a LEARNING run" in n.debug_log()
    counts = {}
    for policy in ("wallet", "node"):
        out = tmp_path / f"{policy}.learned.toml"
        result = sandbox("learn", "--policy", policy, "--from", str(records), "--out", str(out), "--json")
        assert result.returncode in (0, 1), result.stdout + result.stderr
        data = json.loads(result.stdout)
        seen = data["observation"]
        assert seen["processes"] >= 1 and not seen["errors"], seen["errors"]
        counts[policy] = (data["diff"]["syscalls_allowed"], data["diff"]["syscalls_used"])
        # Nothing the component needs is missing from the shipped policy's syscalls.
        assert data["diff"]["missing_syscalls"] == [], data["diff"]["missing_syscalls"]
        assert sandbox("check", str(out)).returncode == 0
    print(f"allowed vs used syscalls: {counts}")
    wallet = json.loads(sandbox("learn", "--policy", "wallet", "--from", str(records), "--json",
                                "--out", str(tmp_path / "w.toml")).stdout)
    # The wallet wrote its database in ${walletdir} and made no socket but unix ones.
    assert any(p.startswith("${walletdir}/w") for p in wallet["observation"]["paths"])
    assert {s["family"] for s in wallet["observation"]["sockets"]} <= {"unix"}
    assert "sendmsg" in wallet["observation"]["syscalls"] or "sendto" in wallet["observation"]["syscalls"]
    node_seen = json.loads(sandbox("learn", "--policy", "node", "--from", str(records), "--json",
                                   "--out", str(tmp_path / "n.toml")).stdout)["observation"]
    # It binds nothing once confined (since 12-07 every listener, the RPC port's included, is
    # bound before, and node.toml refuses bind), yet it served RPC on them all along.
    assert node_seen["bind"] == [], node_seen["bind"]
    assert "accept4" in node_seen["syscalls"] and "bind" not in node_seen["syscalls"]


def test_the_environment_cannot_switch_the_node_into_learning(node, tmp_path: Path) -> None:
    """Attack: CLEANCOIN_SANDBOX_LEARN in a node's environment (a stray line in a service
    unit) once made the node and its wallet record instead of being confined. Only
    -sandboxlearn may; with the variable alone both stay enforced and nothing is recorded."""
    records = tmp_path / "records"
    n = node()
    n.start(env={**os.environ, "CLEANCOIN_SANDBOX_LEARN": str(records)})
    info = json.dumps(n.rpc.getprocessinfo())
    assert n.stop() == 0
    assert "learning" not in info and '"landlock"' in info
    assert not records.exists()
    assert "LEARNING run" not in n.debug_log()


@pytest.mark.skipif(os.geteuid() != 0, reason="SQLite calls fchown (refused: EPERM) only as root")
def test_sqlites_known_refusal_stays_out_of_every_log(node) -> None:
    """SQLite, running as root, gives each new -wal file its database's owner with fchown;
    the node and wallet policies answer EPERM with `log = false`. It happens at every start:
    logged, it would fill sandbox.log with the expected and drown what the file is for. The
    refusal holds (the wallet works as before), and no line is written, even under
    -debug=sandbox. sandbox.log is there, 0600, and the confinement report names it."""
    n = node("-debug=sandbox")
    n.start()
    n.rpc.createwallet("w")
    assert n.stop() == 0
    record = n.netdatadir / "sandbox.log"
    assert "fchown" not in record.read_text()
    assert "sandbox: refused" not in n.debug_log()
    assert "sandbox: refused" not in (n.netdatadir / "wallets" / "debug.log").read_text()
    assert "refusals with an errno are answered by a monitor and logged to " \
           f"{record.resolve()}" in n.debug_log()
    assert oct(record.stat().st_mode & 0o777) == oct(0o600)
