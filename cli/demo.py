"""`make demo`: a regtest CleanCoin-node with its sandboxed wallet process, at work.

In a temporary datadir (removed afterwards) and on free ports, it
1. starts `CleanCoin-node -regtest` (sandbox on) and waits for its RPC (cookie auth);
2. creates the wallets "alice" and "bob" (both in the one wallet process), mines 101 blocks
   to alice, sends 1.5 coins from alice to bob, mines one block and shows both balances;
3. shows the process tree below the node (walking /proc by PPid) and, for the node and the
   wallet component, Seccomp, NoNewPrivs and CapEff from /proc/<pid>/status, the network
   namespace, and each one's enforcement report (`getprocessinfo`);
4. shows what can honestly be observed from outside: the interfaces in each process's network
   namespace, and what the node's mount namespace shows where the wallets are;
5. stops the node with the `stop` RPC, shows its exit status and that no process of the tree
   remains;
6. runs the escape battery (`CleanCoin-sandbox probe`) against policies/wallet.toml.

Exit status 0 when all of that went as described, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from cleancoin.components.rpc.client import RpcClient, RpcTransportError
from cleancoin.components.common.conf import cookie_path, net_datadir
from cleancoin.components.rpc.errors import RpcError
from cleancoin.sandbox import Report

CHAIN = "regtest"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SEND_AMOUNT = Decimal("1.5")
SECCOMP_MODES = {"0": "off", "1": "strict", "2": "filter"}


class DemoError(Exception):
    """A step of the demo did not go as described; the message says which and why."""


def heading(title: str) -> None:
    print(f"\n== {title} ==")


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_command() -> list[str]:
    script = Path(sys.executable).parent / "CleanCoin-node"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-P", "-m", "cleancoin.cli.mp_node_main"]   # -P: not the cwd's modules


# ---------------------------------------------------------------------------- /proc

def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict ({} if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: tells a process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, depth) of `root` and every process below it, depth first, by PPid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = proc_status(int(entry)).get("PPid")
            if ppid is not None:
                children.setdefault(int(ppid), []).append(int(entry))
    out: list[tuple[int, int]] = []

    def walk(pid: int, depth: int) -> None:
        out.append((pid, depth))
        for child in sorted(children.get(pid, [])):
            walk(child, depth + 1)

    walk(root, 0)
    return out


def interfaces(pid: int) -> list[str]:
    """The network interfaces of the process's network namespace (/proc/<pid>/net/dev)."""
    try:
        with open(f"/proc/{pid}/net/dev", encoding="utf-8") as handle:
            lines = handle.read().splitlines()[2:]
    except OSError as exc:
        return [f"(unreadable: {exc.strerror})"]
    return [line.split(":", 1)[0].strip() for line in lines]


# ---------------------------------------------------------------------------- steps

def wait_for_rpc(rpc: RpcClient, node: subprocess.Popen[bytes], stderr_path: str) -> float:
    began = time.monotonic()
    while True:
        if node.poll() is not None:
            with open(stderr_path, encoding="utf-8", errors="replace") as handle:
                raise DemoError(f"CleanCoin-node exited with status {node.returncode} at start:\n"
                                + handle.read()[-3000:])
        try:
            rpc.call("getblockcount")
            return time.monotonic() - began
        except RpcError as exc:
            if exc.code != -28:           # RPC_IN_WARMUP
                raise
        except RpcTransportError:
            pass
        if time.monotonic() - began > START_TIMEOUT:
            raise DemoError(f"no RPC answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def wait_wallet_synced(rpc: RpcClient, wallet: str) -> None:
    """Until the wallet has processed the chain tip (its notifications come over IPC)."""
    tip = rpc.call("getblockcount")
    deadline = time.monotonic() + 10
    while rpc.call("getbalances", wallet=wallet)["lastprocessedblock"]["height"] < tip:
        if time.monotonic() > deadline:
            raise DemoError(f"wallet {wallet} did not catch up with block {tip}")
        time.sleep(0.05)


def payments(rpc: RpcClient) -> tuple[Decimal, Decimal]:
    heading("1. Wallets: alice and bob, both in the one CleanCoin-wallet process")
    for name in ("alice", "bob"):
        rpc.call("createwallet", name)
    print("createwallet alice, createwallet bob       loaded:",
          ", ".join(rpc.call("listwallets")))
    alice_addr = rpc.call("getnewaddress", wallet="alice")
    bob_addr = rpc.call("getnewaddress", wallet="bob")
    rpc.call("generatetoaddress", 101, alice_addr)
    print(f"generatetoaddress 101 {alice_addr}   height {rpc.call('getblockcount')}")
    wait_wallet_synced(rpc, "alice")
    txid = rpc.call("sendtoaddress", bob_addr, SEND_AMOUNT, wallet="alice")
    print(f"alice: sendtoaddress {bob_addr} {SEND_AMOUNT}")
    print(f"    txid {txid}")
    rpc.call("generatetoaddress", 1, alice_addr)
    print(f"generatetoaddress 1                        height {rpc.call('getblockcount')}")
    for name in ("alice", "bob"):
        wait_wallet_synced(rpc, name)
    alice = rpc.call("getbalance", wallet="alice")
    bob = rpc.call("getbalance", wallet="bob")
    print(f"balance alice: {alice}   (two mature 50-coin coinbases, minus {SEND_AMOUNT} and the fee)")
    print(f"balance bob:   {bob}")
    if bob != SEND_AMOUNT:
        raise DemoError(f"bob's balance is {bob}, not {SEND_AMOUNT}")
    return alice, bob


ROLES = {
    "node": "CleanCoin-node (confined by policies/node.toml)",
    "zygote": "zygote (launcher, started before the node restricted itself)",
    "waiter": "launcher fork: waits for the wallet's pid namespace",
    "init": "init of the wallet's pid namespace",
    "wallet": "CleanCoin-wallet (confined by policies/wallet.toml)",
}


def process_tree(node_pid: int, wallet_pid: int) -> dict[int, tuple[str, str | None]]:
    """Print the tree; return {pid: (role, start time)} of every process in it."""
    heading("2. Processes (walking /proc by PPid from the node)")
    tree = descendants(node_pid)
    if wallet_pid not in {pid for pid, _ in tree}:
        raise DemoError(f"the wallet process {wallet_pid} is not below the node {node_pid}")
    members: dict[int, tuple[str, str | None]] = {}
    for pid, depth in tree:
        status = proc_status(pid)
        nspid = status.get("NSpid", "").split()
        if pid == node_pid:
            role = "node"
        elif pid == wallet_pid:
            role = "wallet"
        elif depth == 1:
            # The node's only child: its zygote (a fork of the node, so the same cmdline).
            role = "zygote"
        elif len(nspid) > 1 and nspid[-1] == "1":
            role = "init"
        else:
            role = "waiter"
        inner = f" (pid {nspid[-1]} in its pid namespace)" if len(nspid) > 1 else ""
        print(f"{'   ' * depth}{'└─ ' if depth else ''}{pid}{inner}  {ROLES[role]}")
        members[pid] = (role, start_time(pid))
    return members


def confinement(members: dict[int, tuple[str, str | None]], info: dict[str, Any]) -> None:
    heading("3. Confinement, from /proc/<pid>/status and /proc/<pid>/ns/net")
    print(f"{'':10}{'pid':>7}  {'Seccomp':<10} {'NoNewPrivs':<11} {'CapEff':<17} net namespace")
    namespaces = {}
    for pid, (role, _) in members.items():
        status = proc_status(pid)
        seccomp = status.get("Seccomp", "?")
        namespaces[role] = netns(pid)
        print(f"{role:<10}{pid:>7}  {seccomp + ' (' + SECCOMP_MODES.get(seccomp, '?') + ')':<10} "
              f"{status.get('NoNewPrivs', '?'):<11} {status.get('CapEff', '?'):<17} {namespaces[role]}")
    node_ns, wallet_ns = namespaces["node"], namespaces["wallet"]
    if "unreadable" in node_ns or "unreadable" in wallet_ns:
        print("network namespaces: not readable by this user (run as root to compare them)")
    elif node_ns == wallet_ns:
        raise DemoError("the wallet shares the node's network namespace")
    else:
        print(f"the wallet's network namespace differs from the node's ({wallet_ns} != {node_ns})")
    print("(the waiter and the init give up every capability and set NoNewPrivs once the wallet's\n"
          " namespaces are set up: from then on they only wait; the\n"
          " zygote is unconfined by design: it must keep the rights to set up the wallet's sandbox)")

    processes = {p["name"]: p for p in info["processes"]}
    heading("4. Enforcement reports (getprocessinfo)")
    node_report = processes["CleanCoin-node"]["sandbox"]
    print("CleanCoin-node:")
    print(indent(Report.from_dict(node_report).to_text() if node_report else "not sandboxed"))
    print("CleanCoin-wallet (pids in its report are those of its own pid namespace):")
    print(indent(processes["CleanCoin-wallet"]["sandbox_report"]))


def observed_from_outside(node_pid: int, wallet_pid: int, netdir: str) -> None:
    heading("5. Seen from outside")
    print("network interfaces (/proc/<pid>/net/dev):")
    print(f"    CleanCoin-node:   {', '.join(interfaces(node_pid))}")
    wallet_ifs = interfaces(wallet_pid)
    print(f"    CleanCoin-wallet: {', '.join(wallet_ifs)}   (loopback only)")
    walletdir = os.path.join(netdir, "wallets")
    print(f"{walletdir}:")
    print(f"    on the host:                    {', '.join(sorted(os.listdir(walletdir)))}")
    try:
        seen = sorted(os.listdir(f"/proc/{node_pid}/root{walletdir}"))
        shown = ", ".join(seen) if seen else "(empty)"
    except OSError as exc:
        shown = f"(cannot look: {exc.strerror})"
    print(f"    in the node's mount namespace:  {shown}")
    try:
        with open(f"/proc/{node_pid}/mountinfo", encoding="utf-8") as handle:
            mounts = [line.split(" - ")[1].split()[0] + " " + line.split()[5]
                      for line in handle if line.split()[4] == walletdir]
        if mounts:
            print(f"    mounted there for the node:     {'; '.join(mounts)}")
    except (OSError, IndexError):
        pass
    print("(What the processes try and are refused is not visible from outside; section 7 runs\n"
          " the escape battery inside a process confined like the wallet.)")


def stop(rpc: RpcClient, node: subprocess.Popen[bytes], members: dict[int, tuple[str, str | None]]) -> None:
    heading("6. Stop")
    print(f"stop: {rpc.call('stop')}")
    try:
        status = node.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoError(f"CleanCoin-node still running {STOP_TIMEOUT:.0f} s after stop") from None
    print(f"CleanCoin-node exit status: {status}")
    deadline = time.monotonic() + 5
    while True:
        left = [pid for pid, (_, started) in members.items()
                if started is not None and start_time(pid) == started]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left:
        raise DemoError("still running after the node exited: "
                        + ", ".join(f"{p} ({members[p][0]})" for p in left))
    print(f"processes of the tree still running: none (of {len(members)}: "
          + ", ".join(f"{p} {members[p][0]}" for p in members) + ")")
    if status != 0:
        raise DemoError(f"CleanCoin-node exited with status {status}")


def probe_wallet_policy(tmp: str) -> int:
    heading("7. Escape battery: CleanCoin-sandbox probe --policy wallet")
    from cleancoin.sandbox import probe
    from cleancoin.sandbox import SpawnError, load_policy, shipped_policy
    walletdir = os.path.join(tmp, "probe", "regtest", "wallets")
    os.makedirs(walletdir)
    try:
        result = probe.probe(load_policy(shipped_policy("wallet")),
                             {"walletdir": walletdir, "tmpdir": walletdir})
    except SpawnError as exc:
        raise DemoError(f"the wallet policy could not be applied: {exc}") from None
    by_name = {a.name: a for a in result.attempts}
    for name in ("net-tcp-connect", "net-abstract-unix", "fs-read-outside", "exec-bin-true",
                 "proc-ptrace-parent"):
        attempt = by_name.get(name)
        if attempt is not None:
            print(f"    {name:<20} {attempt.outcome:<8} {attempt.detail}")
    denied = sum(1 for a in result.attempts if a.outcome == "denied")
    print(f"probe of policies/wallet.toml: {len(result.attempts)} attempts, {denied} denied, "
          f"{len(result.escapes)} escapes")
    for attempt in result.escapes:
        print(f"    ESCAPE {attempt.name}: {attempt.detail}")
    return len(result.escapes)


def main() -> int:
    """Run the demo; exit status 1 if a step failed or the probe found an escape."""
    began = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="cleancoin-demo-")
    datadir = os.path.join(tmp, "datadir")
    os.mkdir(datadir)
    netdir = net_datadir(datadir, CHAIN)
    port, rpcport = free_port(), free_port()
    while rpcport == port:
        rpcport = free_port()
    argv = [*node_command(), f"-{CHAIN}", f"-datadir={datadir}", "-printtoconsole=0",
            "-bind=127.0.0.1", f"-port={port}", f"-rpcport={rpcport}"]
    stderr_path = os.path.join(tmp, "node.stderr")
    node: subprocess.Popen[bytes] | None = None
    try:
        print("== CleanCoin-node, regtest, sandbox on ==")
        print("$ " + " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv)))
        with open(stderr_path, "wb") as stderr:
            node = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        rpc = RpcClient("127.0.0.1", rpcport, cookie_path=cookie_path(datadir, CHAIN), timeout=60)
        waited = wait_for_rpc(rpc, node, stderr_path)
        print(f"RPC up after {waited:.1f} s (cookie auth), pid {node.pid}")

        payments(rpc)
        info = rpc.call("getprocessinfo")
        wallet_pid = next(p["pid"] for p in info["processes"] if p["name"] == "CleanCoin-wallet")
        members = process_tree(node.pid, wallet_pid)
        confinement(members, info)
        observed_from_outside(node.pid, wallet_pid, netdir)
        stop(rpc, node, members)
        escapes = probe_wallet_policy(tmp)
    except (DemoError, RpcError, RpcTransportError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        debug_log = os.path.join(netdir, "debug.log")
        if os.path.exists(debug_log):
            with open(debug_log, encoding="utf-8", errors="replace") as handle:
                print("last lines of debug.log:\n" + indent("".join(handle.readlines()[-15:])),
                      file=sys.stderr)
        return 1
    finally:
        if node is not None and node.poll() is None:
            node.kill()                 # the zygote and the wallet die with it
            node.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ndemo done in {time.monotonic() - began:.1f} s; temporary datadir removed")
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())
