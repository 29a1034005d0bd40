"""Functional: the node run by an ordinary user (both node executables), and attacks on it.

CI runs as root; operators do not. Here the operator is a real unprivileged uid (no
capabilities, no supplementary groups) with a home directory of its own outside /tmp, who
runs the real executables of this checkout, reached through a private mount namespace that
makes only the interpreter's directories searchable (tests/functional/as_user.py: nothing on
the host changes, wherever the checkout lies). With CleanCoin-node the whole tree (node,
zygote, sandboxed wallet process, denial monitors, connect broker) runs as that user, so its
user namespaces are made unprivileged and Landlock and seccomp go up without CAP_SYS_ADMIN.

One node start is shared by the first tests (about 3 s), which run in file order: it serves
and is confined at full strength; attacker code inside the confined node goes for the wallet
process and the operator's other processes (CleanCoin-node); it reaches a peer; another local
user goes for the operator's files, sockets and processes; another process of the operator's
own uid for every process's memory; `CleanCoin-sandbox status` tells what is dumpable; the
operator stops it and nothing is left. Then, each with a start of its own: -sandbox=0, the
escape battery as this user, a wallet process started on its own, CleanCoin-gui -sandbox=0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import attacks
from as_user import Account, skip_reason
from framework import NODE_EXECUTABLE, TestNode, free_port, is_multiprocess, node_command, wait_until

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

BIN = Path(sys.executable).parent
HARNESS = Path(__file__).parent / "attack_site" / "sitecustomize.py"
#: uids no account on a test machine has; two runs of this module at once get different ones.
FIRST_UID = 3_100_000 + (os.getpid() % 100_000) * 2
IPC_SECRET = "ipcpw-" + uuid.uuid4().hex


def processes_of(uid: int) -> list[int]:
    """Every process whose real uid is `uid` (from /proc; zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        found.append(int(entry))
                    break
        except OSError:
            continue
    return found


def wait_all_gone(account: Account, timeout: float = 15) -> None:
    """Wait until no process of `account`'s uid is left."""
    wait_until(lambda: processes_of(account.uid) == [], timeout, what="the operator's processes to end")


def kill_all_of(uid: int) -> None:
    for pid in processes_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class People:
    base: Path
    operator: Account
    attacker: Account


@pytest.fixture(scope="module")
def people() -> Iterator[People]:
    """The operator (home 0755, as Debian before 12 and Ubuntu make them: others may look
    in) and another local user, below a directory outside /tmp."""
    base = Path(tempfile.mkdtemp(prefix="cleancoin-users-", dir="/var/tmp"))
    base.chmod(0o755)
    operator = Account(FIRST_UID, str(base), "operator", 0o755)
    attacker = Account(FIRST_UID + 1, str(base), "attacker", 0o700)
    try:
        yield People(base, operator, attacker)
    finally:
        kill_all_of(operator.uid)
        kill_all_of(attacker.uid)
        shutil.rmtree(base, ignore_errors=True)


class OperatorNode:
    """NODE_EXECUTABLE run by `operator` in its default datadir (~/.cleancoin), with the attack
    harness on its PYTHONPATH (CleanCoin-node: attacker code in the confined node)."""

    def __init__(self, people: People, *extra: str, node_attack: str = "") -> None:
        self.operator = people.operator
        self.datadir = Path(self.operator.home) / ".cleancoin"
        self.netdir = self.datadir / "regtest"
        self.rpc_port = free_port()
        self.site = people.base / f"site-{uuid.uuid4().hex[:6]}"
        self.site.mkdir(mode=0o755)
        shutil.copy(HARNESS, self.site / "sitecustomize.py")
        self.result_path = self.netdir / "result_node.json"
        config = {"node": attacks.PRELUDE + node_attack if node_attack else "", "wallet": "", "standalone": "",
                  "node_delay": 0.5, "results": {"node": str(self.result_path), "wallet": "", "standalone": ""},
                  "vars": {"netdir": str(self.netdir), "walletdir": str(self.netdir / "wallets")}}
        (self.site / "attack.json").write_text(json.dumps(config))
        for path in self.site.iterdir():
            path.chmod(0o644)
        self.args = [*node_command("-regtest", f"-port={free_port()}", f"-rpcport={self.rpc_port}",
                                   "-bind=127.0.0.1", "-printtoconsole=0"), *extra]
        self.process: subprocess.Popen[bytes] | None = None
        self.peer_port = 0

    def start(self) -> None:
        self.stderr = self.operator.home + f"/node-stderr-{uuid.uuid4().hex[:6]}.txt"
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(self.operator.command(*self.args, expose=(str(self.site),)),
                                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                            env=self.operator.env(PYTHONPATH=str(self.site)))
        wait_until(self._answers, 40, interval=0.1, what="the operator's node")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the node exited with {self.process.returncode}: "
                                 f"{Path(self.stderr).read_text()[-3000:]}")
        done = self.cli("getblockcount", check=False)
        return done.returncode == 0

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """CleanCoin-cli, run by the operator (its cookie)."""
        done = subprocess.run(self.operator.command(str(BIN / "CleanCoin-cli"), "-regtest", f"-rpcport={self.rpc_port}",
                                                    "-rpcclienttimeout=60", *args),
                              capture_output=True, text=True, timeout=90, env=self.operator.env())
        if check:
            assert done.returncode == 0, (args, done.stderr[-2000:])
        return done

    def stop(self) -> None:
        """`stop` by the operator's CleanCoin-cli: the node exits with status 0."""
        self.cli("stop")
        assert self.process is not None and self.process.wait(30) == 0, Path(self.stderr).read_text()[-2000:]

    def kill(self) -> None:
        """End what a test left running (its clean-up after a failure)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def call(self, *args: str) -> Any:
        out = self.cli(*args).stdout.strip()
        try:
            return json.loads(out)
        except ValueError:
            return out

    def tree(self) -> dict[str, int]:
        """The operator's processes of this node by role (CleanCoin-node: node, zygote, wallet,
        connect broker; CleanCoind: node)."""
        assert self.process is not None
        roles: dict[str, int] = {}
        for pid in processes_of(self.operator.uid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "zygote" in title:
                roles["zygote"] = pid
            elif "connect-broker" in title:
                roles["broker"] = pid
            elif title.startswith("CleanCoin-wallet") and "-datadir=" in title:
                roles["wallet"] = pid
            elif "denial_monitor" in title:
                roles.setdefault("monitor", pid)
            elif Path(NODE_EXECUTABLE).name in title and "as_user" not in title:
                roles["node"] = pid
        return roles

    def node_attack_results(self) -> dict[str, dict[str, Any]]:
        def ready() -> dict[str, dict[str, Any]] | None:
            if not self.result_path.exists():
                return None
            data: dict[str, dict[str, Any]] = json.loads(self.result_path.read_text())
            return data if "_end" in data or "_error" in data else None
        data = wait_until(ready, 60, what="the node attack's results")
        assert "_error" not in data, data["_error"]["detail"]
        data.pop("_end")
        return data


@pytest.fixture(scope="module")
def running(people: People) -> Iterator[OperatorNode]:
    peer = free_port()      # test_..._connects_to_a_peer: a node of root's listens there
    extra = (f"-allowlocalpeer=127.0.0.1:{peer}",
             *(("-ipcbind=unix", f"-ipcauth=op:{IPC_SECRET}") if is_multiprocess() else ()))
    node = OperatorNode(people, *extra, node_attack=attacks.NODE_VS_WALLET if is_multiprocess() else "")
    node.peer_port = peer
    node.start()
    yield node
    node.kill()


def test_the_operators_node_serves_its_wallet_and_is_confined_at_full_strength(running: OperatorNode) -> None:
    """The operator's own allowed operations, and (CleanCoin-node) both processes confined by
    every mechanism at the policy's level: nothing dropped for want of privilege."""
    uid = running.operator.uid
    tree = running.tree()
    assert tree["node"] and all(pid in processes_of(uid) for pid in tree.values()), tree
    running.call("createwallet", "w")
    address = running.call("-rpcwallet=w", "getnewaddress")
    running.call("generatetoaddress", "101", address)
    assert running.call("-rpcwallet=w", "getbalance") == 50
    # Its files are the operator's and private to it, in a home others may look into.
    for path in (running.datadir, running.netdir, running.netdir / "wallets", running.netdir / "wallets" / "w"):
        info = path.stat()
        assert info.st_uid == uid and info.st_mode & 0o077 == 0, (path, oct(info.st_mode))
    for name in (".cookie", "debug.log", "chainstate.sqlite"):
        info = (running.netdir / name).stat()
        assert info.st_uid == uid and info.st_mode & 0o077 == 0, (name, oct(info.st_mode))
    if not is_multiprocess():
        return
    info = running.call("getprocessinfo")
    by_name = {p["name"]: p for p in info["processes"]}
    node_report, wallet = by_name["CleanCoin-node"]["sandbox"], by_name["CleanCoin-wallet"]
    # Started by the createwallet above (with no wallet to load, at the first call that may
    # want one: since 12-08), so not in the tree taken before it.
    tree = running.tree()
    assert wallet["pid"] == tree["wallet"], (wallet, tree)
    for report in (node_report, wallet["sandbox"]):
        statuses = {name: m["status"] for name, m in report["mechanisms"].items()}
        assert set(statuses.values()) == {"fully enforced"}, statuses
        assert {"namespaces", "landlock", "seccomp", "capabilities"} <= set(statuses), statuses
    for role in ("node", "wallet"):
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{tree[role]}/status").read_text().splitlines()
                      if ":\t" in line)
        assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1" and int(fields["CapEff"], 16) == 0, fields
        assert fields["Uid"].split()[0] == str(uid)
    assert os.readlink(f"/proc/{tree['wallet']}/ns/user") != os.readlink("/proc/self/ns/user")
    assert "WITHOUT a sandbox" not in (running.netdir / "debug.log").read_text()


@pytest.mark.skipif(not is_multiprocess(), reason="attacker code in the confined node: CleanCoin-node")
def test_the_confined_node_of_a_non_root_operator_cannot_reach_the_other_processes_of_its_uid(
        running: OperatorNode) -> None:
    """Attack, from inside the confined node: all its targets run as the same uid, which as
    root would not matter (root's node may not either, for other reasons), and the wallet's
    user namespace was made by that uid: the memory, environment and descriptors of the wallet
    process, the zygote, the connect broker and another process of the operator (a `sleep`
    with a secret in its environment), signals to them, and the wallets' files through the
    node's own view and through the wallet's /proc/PID/root. Every attempt is refused; the
    control is the same reads on the node's own /proc/self."""
    secret = "bystander-" + uuid.uuid4().hex
    bystander = subprocess.Popen(running.operator.command("/bin/sleep", "120"),
                                 env=running.operator.env(SECRET=secret), start_new_session=True)
    try:
        wait_until(lambda: Path(f"/proc/{bystander.pid}/comm").read_text().strip() == "sleep", 20,
                   what="the operator's sleep")
        tree = running.tree()
        targets = {"wallet": tree["wallet"], "zygote": tree["zygote"], "broker": tree["broker"],
                   "bystander": bystander.pid}
        (running.netdir / "targets.json").write_text(json.dumps(targets))
        results = running.node_attack_results()
        # The controls: the attacker code sees the wallet process (its /proc entry), and
        # another process of the operator's, unconfined, reads the sleep's environment.
        assert results.pop("control-wallet-in-view")["detail"] == f"uid {running.operator.uid}", results
        seen = subprocess.run(running.operator.python("import sys; print(open(sys.argv[1], 'rb').read())",
                                                      f"/proc/{bystander.pid}/environ"),
                              capture_output=True, text=True, timeout=60, env=running.operator.env())
        assert secret in seen.stdout, seen.stderr[-2000:]
    finally:
        bystander.kill()
        bystander.wait(10)
    attempted = {f"{role}-{what}" for role in targets for what in ("mem", "environ", "fd", "signal")}
    assert attempted <= set(results), sorted(results)
    escaped = {name: r["detail"] for name, r in results.items() if r["escaped"]}
    assert escaped == {}, escaped
    # Its refusal with an errno is on record: the denial monitor works for this uid too.
    wait_until(lambda: any("refused ioctl(" in line and "0x5412" in line
                           for line in (running.netdir / "sandbox.log").read_text().splitlines()),
               what="the node's refusal in sandbox.log")
    # The node serves on, and its wallet process is the one it had.
    assert running.call("-rpcwallet=w", "getbalance") == 50
    assert running.tree()["wallet"] == targets["wallet"]


def test_the_operators_node_reaches_a_peer_through_its_connect_broker(running: OperatorNode, tmp_path: Path) -> None:
    """The confined node of a non-root operator dials out (CleanCoin-node: through its connect
    broker, started as that uid; CleanCoind: itself) to a peer named by -allowlocalpeer, a
    node of another user (root's), which then holds the operator's chain."""
    peer = TestNode(0, tmp_path)
    peer.p2p_port = running.peer_port
    peer.start()
    try:
        running.call("addnode", f"127.0.0.1:{peer.p2p_port}", "onetry")
        height = running.call("getblockcount")
        wait_until(lambda: peer.rpc.getblockcount() == height, 30, what="the peer to sync the operator's chain")
        assert running.call("getconnectioncount") >= 1
    finally:
        peer.cleanup()


#: Run by the other user: what of the operator's node they reach. Prints a JSON object of
#: attempt -> [went through, detail].
OTHER_USER = r"""
import ctypes, json, os, socket, sys
args = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, action):
    try:
        out[name] = [True, str(action())[:200]]
    except OSError as exc:
        out[name] = [False, exc.strerror or str(exc)]
netdir = args["netdir"]
for name in (".cookie", "debug.log", "sandbox.log", "chainstate.sqlite", "wallets/w/wallet.sqlite",
             "wallets/debug.log"):
    attempt(f"read {name}", lambda: len(open(os.path.join(netdir, name), "rb").read()))
for name in ("debug.log", "sandbox.log", "wallets/debug.log"):
    attempt(f"append {name}", lambda: open(os.path.join(netdir, name), "ab").write(b"forged line\n"))
attempt("list datadir", lambda: os.listdir(netdir))
if args.get("sock"):
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(3)
        s.connect(args["sock"])
        s.close()
        return "connected"
    attempt("connect node.sock", connect)
def rpc():
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", args["rpc_port"], timeout=10)
    c.request("POST", "/", body=b'{"method":"getbalance","params":[]}', headers={"Authorization": "Basic X19jb29raWVfXzp4"})
    status = c.getresponse().status
    if status != 200:
        raise OSError(0, f"HTTP {status}")
    return status
attempt("rpc with a guessed cookie", rpc)
PTRACE_SEIZE = 0x4206
for role, pid in args["pids"].items():
    for what in ("mem", "environ"):
        attempt(f"{role} {what}", lambda: len(open(f"/proc/{pid}/{what}", "rb").read(4096)))
    attempt(f"{role} fd", lambda: os.listdir(f"/proc/{pid}/fd"))
    def seize():
        if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return "attached"
    attempt(f"{role} ptrace", seize)
    attempt(f"{role} signal", lambda: os.kill(pid, 18))         # SIGCONT: harmless if delivered
    attempt(f"{role} cmdline secret", lambda: (_ for _ in ()).throw(OSError(0, "not shown"))
            if args["secret"] not in open(f"/proc/{pid}/cmdline").read() else "shown")
print(json.dumps(out))
"""


def test_another_local_user_gets_nothing_of_a_non_root_operators_node(running: OperatorNode, people: People) -> None:
    """Attack: another ordinary user of the host (no group in common) goes for the running
    node of a non-root operator whose home they may enter: its datadir files (the cookie, the
    wallets, the logs), appending forged lines to debug.log and sandbox.log, node.sock
    (CleanCoin-node -ipcbind=unix), RPC without the cookie, and each process of the tree: its
    memory, environment, descriptors, ptrace, a signal, and -ipcauth's password on its command
    line. Everything is refused; the same reads by the operator (the control) work."""
    tree = running.tree()
    args = {"netdir": str(running.netdir), "rpc_port": running.rpc_port, "pids": tree, "secret": IPC_SECRET,
            "sock": str(running.netdir / "node.sock") if is_multiprocess() else ""}
    log_size = (running.netdir / "debug.log").stat().st_size
    done = subprocess.run(people.attacker.python(OTHER_USER, json.dumps(args)), capture_output=True, text=True,
                          timeout=60, env=people.attacker.env())
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert len(results) == 11 + bool(args["sock"]) + 6 * len(tree), sorted(results)
    through = {name: detail for name, (ok, detail) in results.items() if ok}
    assert through == {}, through
    assert b"forged line" not in (running.netdir / "debug.log").read_bytes()[log_size:]
    # The control: the operator's own process reads the same.
    mine = subprocess.run(running.operator.python(
        "import sys; print(len(open(sys.argv[1], 'rb').read()) > 0, open(f'/proc/{sys.argv[2]}/cmdline').read())",
        str(running.netdir / ".cookie"), str(tree["node"])), capture_output=True, text=True, timeout=60,
        env=running.operator.env())
    assert mine.returncode == 0 and mine.stdout.startswith("True"), mine.stderr[-2000:]
    if is_multiprocess():
        assert "-ipcauth=***" in mine.stdout and IPC_SECRET not in mine.stdout, mine.stdout


#: Run as the operator: for each pid, whether /proc/PID/mem opens and how often the needle is
#: in the readable memory.
MEMORY_READER = r"""
import json, sys
needle, found = sys.argv[1].encode(), {}
for pid in sys.argv[2:]:
    try:
        mem = open(f"/proc/{pid}/mem", "rb")
    except OSError as exc:
        found[pid] = exc.strerror
        continue
    count = 0
    for line in open(f"/proc/{pid}/maps"):
        span, perms = line.split()[:2]
        if perms.startswith("r"):
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                count += mem.read(end - start).count(needle)
            except (OSError, OverflowError, ValueError):
                pass
    found[pid] = count
print(json.dumps(found))
"""


def unlock_and_read(node: OperatorNode, wallet: str, passphrase: str,
                    pids: dict[str, int] | None = None) -> dict[str, Any]:
    """An encrypted wallet of `node` unlocked, then another process of the operator reads the
    memory of `pids` (default: every process of the operator, by role where it has one) and of
    a `sleep` of the operator's (the control): {role: the count of the passphrase, or the
    error of the open}."""
    node.call("createwallet", wallet)
    node.call(f"-rpcwallet={wallet}", "encryptwallet", passphrase)
    node.call(f"-rpcwallet={wallet}", "walletpassphrase", passphrase, "600")

    def every_process(control: int) -> dict[str, int]:
        found = node.tree()
        found.update({f"pid {pid}": pid for pid in processes_of(node.operator.uid)
                      if pid not in found.values() and pid != control})
        return found
    return beside_a_control(node.operator, MEMORY_READER, pids if pids is not None else every_process, passphrase,
                            timeout=120)


def test_no_process_of_the_tree_lets_the_same_user_read_its_memory(running: OperatorNode) -> None:
    """Attack: another process of the operator's own uid (what h38 keeps CleanCoind's memory
    from: a compromised program of the same user) opens /proc/PID/mem of every process of the
    confined node's tree while a wallet is unlocked. The node and its wallet process are not
    dumpable by their policies; before 12-06 the zygote was: the launcher of every wallet
    process, unconfined, its memory readable and writable by the same user (code written into
    it runs in the next wallet process it starts, before that one's sandbox is up)."""
    found = unlock_and_read(running, "enc", "PassOfTheTree" + uuid.uuid4().hex[:8])
    assert isinstance(found.pop("control"), int), found
    opened = {role: result for role, result in found.items() if result != "Permission denied"}
    assert opened == {}, opened
    # ptrace, which the kernel judges apart from /proc/PID/mem's file mode: before 12-07 it
    # attached to the wallet process's denial monitor, a program exec'd in the wallet's user
    # namespace (which the operator's uid owns), though it was not dumpable.
    everyone = {f"{Path(f'/proc/{pid}/comm').read_text().strip()} {pid}": pid
                for pid in processes_of(running.operator.uid)}
    reach = same_user_reach(running.operator, everyone)
    assert reach.pop("control") == ["opened", "attached"], reach
    attached = {who: got for who, got in reach.items() if got[1] != "Operation not permitted"}
    assert attached == {}, attached


@pytest.mark.skipif(not is_multiprocess(), reason="the tree of CleanCoin-node")
def test_sandbox_status_run_by_the_operator_tells_what_is_dumpable(running: OperatorNode) -> None:
    """`CleanCoin-sandbox status --tree` run by the operator on their node. The kernel shows
    another process's dumpable flag only through the owner of its /proc/PID files (root's when
    it is not dumpable). Before 12-06 status read the owner of the /proc/PID directory, which
    the kernel always gives the process's uid: every process of a non-root operator's tree was
    "dumpable on" (node, zygote and wallet were not), so a real regression could not have shown
    either; as root it answers from the reports, which is all CI saw. Now it reads a file's
    owner, says off for them and on for a `sleep` of the operator (the control), and a process
    whose report says not dumpable while the kernel says it is, is a finding."""
    sleeper = subprocess.Popen(running.operator.command("/bin/sleep", "60"), env=running.operator.env())
    try:
        wait_until(lambda: Path(f"/proc/{sleeper.pid}/comm").read_text().strip() == "sleep", 20, what="sleep")
        tree = running.tree()
        status = [str(BIN / "CleanCoin-sandbox"), "status", "--json"]
        done = subprocess.run(running.operator.command(*status, "--tree", str(tree["node"])), capture_output=True,
                              text=True, timeout=60, env=running.operator.env())
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        shown = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
        control = subprocess.run(running.operator.command(*status, str(sleeper.pid)), capture_output=True,
                                 text=True, timeout=60, env=running.operator.env())
    finally:
        sleeper.kill()
        sleeper.wait(10)
    dumpable = {role: shown[tree[role]]["dumpable"] for role in ("node", "zygote", "wallet")}
    assert dumpable == {"node": "off", "zygote": "off", "wallet": "off"}, dumpable
    assert all(p["sandboxed"] and not p["findings"] for p in shown.values()), shown
    assert json.loads(control.stdout)["processes"][0]["dumpable"] == "on", control.stdout[-2000:]


def test_the_operator_stops_the_node_and_nothing_is_left(running: OperatorNode) -> None:
    """`stop` by the operator's CleanCoin-cli: exit status 0, and no process of the operator
    remains (zygote, wallet process, denial monitors, connect broker)."""
    running.stop()
    wait_all_gone(running.operator)


def test_without_the_sandbox_the_same_user_cannot_read_the_unlocked_wallet(people: People,
                                                                          running: OperatorNode) -> None:
    """Attack: CleanCoin-node -sandbox=0 (CleanCoind: as it always runs) by a non-root operator,
    an encrypted wallet unlocked; another process of the operator's uid reads the memory of
    every process of the tree. Before 12-06 CleanCoin-node, its zygote and its wallet process
    were dumpable without the sandbox: the reader found the passphrase in the node (the
    JSON-RPC bodies) and in the wallet process. Now the node executable keeps its memory
    private as CleanCoind does, before the zygote is forked, and the processes it starts
    inherit that; the reader still reads a `sleep` of the operator's (the control)."""
    if running.process is not None and running.process.poll() is None:     # run on its own: the datadir's lock
        running.cli("stop")
        running.process.wait(30)
    plain = OperatorNode(people, *(("-sandbox=0",) if is_multiprocess() else ()))
    plain.start()
    try:
        passphrase = "PassWithoutSandbox" + uuid.uuid4().hex[:8]
        found = unlock_and_read(plain, "plain", passphrase)
        assert isinstance(found.pop("control"), int), found
        if is_multiprocess():
            assert {"node", "zygote", "wallet"} <= set(found), found
        opened = {role: result for role, result in found.items() if result != "Permission denied"}
        assert opened == {}, f"the same user opened the memory of {opened} (passphrase copies found)"
        plain.stop()
    finally:
        plain.kill()
    wait_all_gone(people.operator)


@pytest.mark.skipif(not is_multiprocess(), reason="starts no node: run once, in the CleanCoin-node pass")
@pytest.mark.parametrize("policy", ["node", "wallet", "connect-broker"])
def test_the_escape_battery_finds_nothing_as_a_non_root_user(people: People, policy: str) -> None:
    """`CleanCoin-sandbox probe` of the shipped component policies, run by the non-root
    operator (CI runs it as root in tests/test_probe_components.py): zero escapes, no attempt
    that could not be judged, every mechanism at full strength with the user namespace made
    unprivileged: what root's run cannot tell (a step only root gets through, a right the
    kernel gives root alone) shows here. Here the denial monitor is a fork, not exec'd (a
    program exec'd in the user namespace this uid owns could be traced); until 12-07 it was
    forked at the seccomp step, after the rlimits, and connect-broker's `fsize = 0` kept it
    from writing a line (`denial-log-bury` escaped)."""
    datadir = Path(people.operator.home) / f"probe-{policy}"
    (datadir / "wallets").mkdir(parents=True)
    for path in (datadir, datadir / "wallets"):
        os.chown(path, people.operator.uid, people.operator.gid)
        path.chmod(0o700)
    variables = {"node": [f"--var=datadir={datadir}", f"--var=port={free_port()}", f"--var=rpcport={free_port()}",
                          f"--var=ipcport={free_port()}"],
                 "wallet": [f"--var=walletdir={datadir / 'wallets'}"]}.get(policy, [])
    done = subprocess.run(people.operator.command(str(BIN / "CleanCoin-sandbox"), "probe", "--json", "--policy", policy,
                                                  *variables),
                          capture_output=True, text=True, timeout=120, env=people.operator.env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data["escapes"] == [] and data["errors"] == [], (data["escapes"], data["errors"])
    unjudged = [a["name"] for a in data["attempts"] if a["outcome"] == "error"]
    assert unjudged == [], unjudged
    statuses = {name: m["status"] for name, m in data["report"]["mechanisms"].items()}
    assert set(statuses.values()) == {"fully enforced"}, statuses
    steps = {s["step"]: s["detail"] for s in data["report"]["steps"]}
    ids = people.operator.uid
    assert steps["id maps"] == f"uid {ids} and gid {ids} mapped to themselves", steps


@pytest.mark.skipif(not is_multiprocess(), reason="a wallet process joins CleanCoin-node (-ipcallowwallet)")
def test_a_wallet_process_started_on_its_own_keeps_its_memory_from_the_same_user(people: People) -> None:
    """Attack: `CleanCoin-wallet -ipcconnect=unix -sandbox=0` started on its own by the non-root
    operator, an encrypted wallet unlocked through the node, and another process of the
    operator's uid reads its memory. Before 12-06 it was dumpable: the reader found the
    passphrase 5 times (CleanCoin-wallet kept its memory private as the offline tool only).
    Now it does so first thing in every mode (a confined one also until it confines itself;
    that a process which is not dumpable still confines itself as this uid, the node shows)."""
    node = OperatorNode(people, "-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1")
    node.start()
    try:
        wallet = subprocess.Popen(people.operator.command(str(BIN / "CleanCoin-wallet"), "-regtest", "-ipcconnect=unix",
                                                          "-sandbox=0"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=people.operator.env())
        try:
            wait_until(lambda: node.cli("listwallets", check=False).returncode == 0, 30,
                       what="the wallet process's registration")
            found = unlock_and_read(node, "standalone", "PassStandalone" + uuid.uuid4().hex[:8], {"wallet": wallet.pid})
            assert isinstance(found.pop("control"), int), found
            assert found == {"wallet": "Permission denied"}, found
        finally:
            wallet.terminate()
            wallet.communicate(timeout=30)
        node.stop()
    finally:
        node.kill()
    wait_all_gone(people.operator)


@contextlib.contextmanager
def operators_gui(people: People, secret: str, env: dict[str, str], *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """CleanCoin-gui started by the operator (`extra` options) with `secret` as its RPC
    password, once its node answers the operator's cli; stopped after, with every process
    of the operator's gone."""
    rpc_port = free_port()
    gui = subprocess.Popen(people.operator.command(str(BIN / "CleanCoin-gui"), "-regtest", *extra, "-noipcconnect",
                                                   "-rpcuser=op", f"-rpcpassword={secret}", f"-rpcport={rpc_port}",
                                                   f"-port={free_port()}", "-bind=127.0.0.1", "-printtoconsole=0"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    cli = people.operator.command(str(BIN / "CleanCoin-cli"), "-regtest", f"-rpcport={rpc_port}", "-rpcuser=op",
                                  f"-rpcpassword={secret}", "getblockcount")
    try:
        def answers() -> bool:
            assert gui.poll() is None, gui.communicate()[1][-2000:]
            return subprocess.run(cli, capture_output=True, timeout=60, env=people.operator.env()).returncode == 0
        wait_until(answers, 60, interval=0.2, what="the GUI's node")
        yield gui
    finally:
        gui.terminate()
        try:
            gui.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            gui.kill()
            gui.communicate()
    wait_all_gone(people.operator, 20)


@pytest.mark.skipif(not is_multiprocess(), reason="CleanCoin-gui runs CleanCoin-node: in that pass")
def test_the_gui_window_without_the_sandbox_keeps_its_memory_from_the_same_user(people: People) -> None:
    """Attack: CleanCoin-gui -sandbox=0 (its window unconfined, as its node and wallet process)
    run by the non-root operator with -rpcpassword; another process of the operator's uid
    reads the window's memory, where the password (and any passphrase typed into a dialog)
    lies. Before 12-06 the window process was dumpable: the reader found the password 4 times
    (CleanCoin-qt kept its memory private, CleanCoin-gui did not; confined, its window was
    readable until it confined itself). Now it is private first thing."""
    pytest.importorskip("PySide6")
    secret = "GuiPw" + uuid.uuid4().hex
    env = people.operator.env(QT_QPA_PLATFORM="offscreen")
    with operators_gui(people, secret, env, "-sandbox=0") as gui:
        found = beside_a_control(people.operator, MEMORY_READER, {"window": gui.pid}, secret, timeout=120)
        assert isinstance(found["control"], int), found          # the control
        assert found["window"] == "Permission denied", found


#: Run as the operator: for each pid, whether /proc/PID/mem opens and whether ptrace attaches
#: ({pid: [mem, ptrace]}): the two ways of the same user into a process's memory.
SAME_USER_REACH = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
out = {}
for pid in sys.argv[1:]:
    try:
        open(f"/proc/{pid}/mem", "rb").close()
        mem = "opened"
    except OSError as exc:
        mem = exc.strerror
    attached = libc.ptrace(0x4206, int(pid), None, None) == 0       # PTRACE_SEIZE, no stop
    out[pid] = [mem, "attached" if attached else os.strerror(ctypes.get_errno())]
print(json.dumps(out))
"""


def beside_a_control(account: Account, script: str, pids: dict[str, int] | Callable[[int], dict[str, int]],
                     *args: str, timeout: float = 60) -> dict[str, Any]:
    """`script` run by `account` with `args`, then the pids of `pids` (or of `pids(control)`)
    and of a `sleep` of its own, "control": its JSON answer, by role."""
    sleeper = subprocess.Popen(account.command("/bin/sleep", "60"), env=account.env())
    try:
        wait_until(lambda: Path(f"/proc/{sleeper.pid}/comm").read_text().strip() == "sleep", 20, what="sleep")
        tree = {**(pids(sleeper.pid) if callable(pids) else pids), "control": sleeper.pid}
        done = subprocess.run(account.python(script, *args, *map(str, tree.values())), capture_output=True,
                              text=True, timeout=timeout, env=account.env())
    finally:
        sleeper.kill()
        sleeper.wait(10)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    return {role: found[str(pid)] for role, pid in tree.items()}


def same_user_reach(account: Account, pids: dict[str, int]) -> dict[str, list[str]]:
    """SAME_USER_REACH run by `account` on `pids` and on a `sleep` of its own, "control"
    ([mem, ptrace] by role); the tracer ends at once, which detaches it."""
    return beside_a_control(account, SAME_USER_REACH, pids)


def status_of(account: Account, pid: int, **env: str) -> list[dict[str, Any]]:
    """`CleanCoin-sandbox status --json --tree PID` run by `account` (with `env` added to its
    environment): every process below."""
    done = subprocess.run(account.command(str(BIN / "CleanCoin-sandbox"), "status", "--json", "--tree", str(pid)),
                          capture_output=True, text=True, timeout=60, env=account.env(**env))
    assert done.stdout, done.stderr[-2000:]
    processes: list[dict[str, Any]] = json.loads(done.stdout)["processes"]
    return processes


def assert_confined_in_full(shown: dict[str, Any]) -> None:
    """A component whose report is found and says every mechanism is fully enforced, which
    the kernel confirms (no finding), not dumpable."""
    assert shown["role"] == "component" and shown["report"], shown
    statuses = {name: m["status"] for name, m in shown["report"]["mechanisms"].items()}
    assert set(statuses.values()) == {"fully enforced"}, (shown["name"], statuses)
    assert {"namespaces", "landlock", "seccomp", "capabilities"} <= set(statuses), statuses
    assert shown["seccomp_mode"] == "filter" and shown["no_new_privs"] and shown["dumpable"] == "off", shown
    # (Its namespaces the operator cannot see: /proc/PID/ns of a process that is not
    # dumpable is root's to read. The report's "namespaces" is checked above.)
    assert shown["findings"] == [], shown


@pytest.mark.skipif(not is_multiprocess(), reason="a wallet process joins CleanCoin-node (-ipcallowwallet)")
@pytest.mark.parametrize("joined", ["-ipcconnect", "-ipcbind"])
def test_a_confined_wallet_process_started_on_its_own_is_confined_in_full_and_private(people: People,
                                                                                     joined: str) -> None:
    """`CleanCoin-wallet` confined (its default), started on its own by the non-root operator
    and joined to CleanCoin-node (-ipcconnect=unix to the node's node.sock, or -ipcbind=unix
    with the node's -ipcconnect=auto): every mechanism fully enforced as this uid, and, with a
    wallet created through the node, another process of the operator's uid can neither open
    its memory nor attach with ptrace (the control: a sleep of the operator's)."""
    wallet_args = ["-ipcconnect=unix"] if joined == "-ipcconnect" else ["-ipcbind=unix"]
    node_args = (("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1") if joined == "-ipcconnect"
                 else ("-ipcconnect=auto",))
    datadir = Path(people.operator.home) / ".cleancoin"
    wallet = None
    node = OperatorNode(people, *node_args)
    try:
        if joined == "-ipcconnect":       # the node first: the wallet connects to its socket
            node.start()
        else:                             # the wallet first: the node connects to its socket
            (datadir / "regtest").mkdir(parents=True, exist_ok=True)
            for path in (datadir, datadir / "regtest"):
                os.chown(path, people.operator.uid, people.operator.gid)
                path.chmod(0o700)
        wallet = subprocess.Popen(people.operator.command(str(BIN / "CleanCoin-wallet"), "-regtest", *wallet_args),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=people.operator.env())
        if joined == "-ipcbind":
            wait_until(lambda: (datadir / "regtest" / "wallet.sock").exists() or wallet.poll() is not None, 30,
                       what="the wallet's socket")
            node.start()
        wait_until(lambda: node.cli("listwallets", check=False).returncode == 0, 30,
                   what="the wallet process's registration")
        [shown] = [p for p in status_of(people.operator, wallet.pid) if p["pid"] == wallet.pid]
        assert_confined_in_full(shown)
        node.call("createwallet", f"own{joined}")          # it serves, and holds keys now
        # The wallet process and every other process of the operator's (its denial monitor,
        # the node's tree): before 12-07 the wallet's monitor, exec'd inside its user
        # namespace, was attached to.
        everyone = {f"{Path(f'/proc/{pid}/comm').read_text().strip()} {pid}": pid
                    for pid in processes_of(people.operator.uid)}
        reach = same_user_reach(people.operator, everyone)
        assert reach.pop("control") == ["opened", "attached"], reach
        assert any(pid == wallet.pid for pid in everyone.values()), everyone
        through = {who: got for who, got in reach.items() if got != ["Permission denied", "Operation not permitted"]}
        assert through == {}, through
        node.stop()
    finally:
        if wallet is not None:
            wallet.terminate()
            try:
                wallet.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                wallet.kill()
                wallet.communicate()
        node.kill()
    wait_all_gone(people.operator)


@pytest.mark.skipif(not is_multiprocess(), reason="CleanCoin-gui runs CleanCoin-node: in that pass")
def test_the_confined_gui_is_confined_in_full_and_private(people: People) -> None:
    """CleanCoin-gui confined (its default; offscreen platform), run by the non-root operator
    with -rpcpassword: its window, its node and the node's wallet process each confined with
    every mechanism fully enforced as this uid, and no process of its tree lets another process
    of the operator's uid open its memory or attach with ptrace (the control: a sleep of the
    operator's). Before 12-07 two did: the window's output relay (dumpable: memory opened,
    ptrace attached) and the wallet process's denial monitor (not dumpable, yet attached: a
    program exec'd in the wallet's user namespace, which the operator's uid owns)."""
    pytest.importorskip("PySide6")
    secret = "GuiPw" + uuid.uuid4().hex
    # A login session's runtime directory: the reports go there, the zygote's launches' too
    # (before 12-07 the zygote, which keeps no XDG_RUNTIME_DIR, wrote the wallet process's to
    # /tmp, where status did not look).
    runtime = Path(people.operator.home) / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.chown(runtime, people.operator.uid, people.operator.gid)
    env = people.operator.env(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(runtime))
    with operators_gui(people, secret, env) as gui:
        tree = status_of(people.operator, gui.pid, XDG_RUNTIME_DIR=str(runtime))
        by_role: dict[str, list[dict[str, Any]]] = {}
        for shown in tree:
            by_role.setdefault(shown["role"] or shown["name"], []).append(shown)
        components = by_role.get("component", [])
        assert len(components) == 3, by_role           # the window, the node, its wallet process
        assert os.listdir(runtime / "cleancoin-sandbox"), "no report in the runtime directory"
        for shown in components:
            assert_confined_in_full(shown)
        # Every process of the operator's: the tree, and what left it (the node's own denial
        # monitor and its connect broker, double forks).
        everyone = {f"{Path(f'/proc/{pid}/comm').read_text().strip()} {pid}": pid
                    for pid in processes_of(people.operator.uid)}
        reach = same_user_reach(people.operator, everyone)
        assert reach.pop("control") == ["opened", "attached"], reach
        assert any(who.startswith("python") for who in reach), reach       # the output relay
        through = {who: got for who, got in reach.items() if got != ["Permission denied", "Operation not permitted"]}
        assert through == {}, through
