"""Functional, CleanCoin-node only: attacker code inside the real confined processes.

Each test starts a real CleanCoin-node whose datadir lies outside /tmp (as ~/.cleancoin does;
a private /tmp would hide some of these by accident), runs attacker code inside its sandboxed
wallet process or inside the confined node itself (attack_site/sitecustomize.py puts it there),
and checks from outside that every attempt was refused: issue #10's escapes, one test each.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import pty
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import attacks
import cloud_services
from cleancoin.components.common.diskfail import free_bytes
from cleancoin.components.node.connect_rule import own_addresses
from cleancoin.components.rpc.client import RpcClient, RpcTransportError

from cleancoin.components.rpc.errors import RpcError
from framework import TEST_ADDRESS, CountingListener, TestNode, end_process, free_port, is_multiprocess, memory_holds, resolve_executable, wait_until

pytestmark = pytest.mark.skipif(not is_multiprocess(), reason="needs CleanCoin-node (CleanCoinD=CleanCoin-node)")

HARNESS = Path(__file__).parent / "attack_site" / "sitecustomize.py"


@pytest.fixture
def home_base() -> Iterator[Path]:
    """A directory outside /tmp, where operators keep datadirs (~/.cleancoin). Every node
    started there (TestNode's stderr.txt marks its datadir) is stopped before it goes."""
    base = Path.home() / ".cache" / "cleancoin-attack-tests" / uuid.uuid4().hex[:12]
    base.mkdir(parents=True)
    yield base
    _stop_nodes_under(base)
    shutil.rmtree(base, ignore_errors=True)
    with_parent = base.parent
    if with_parent.exists() and not any(with_parent.iterdir()):
        with_parent.rmdir()


def _stop_nodes_under(base: Path) -> None:
    """Kill what a failed test left running with a datadir under `base` (by command line)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(base) in cmdline and int(entry) != os.getpid():
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


class AttackedNode:
    """A TestNode whose processes run attacker code, and where the results arrive."""

    def __init__(self, base: Path, *, node: str = "", wallet: str = "", standalone: str = "",
                 extra: tuple[str, ...] = (), variables: dict[str, Any] | None = None) -> None:
        self.base = base
        self.node = TestNode(0, base, extra)
        self.outside = base / "outside"
        self.outside.mkdir(exist_ok=True)
        (self.outside / "canary").write_text("outside-canary-secret")
        self.site = base / "attack_site"
        self.site.mkdir(exist_ok=True)
        shutil.copy(HARNESS, self.site / "sitecustomize.py")
        netdir = self.node.netdatadir
        self.results = {"node": str(netdir / "result_node.json"),
                        "wallet": str(netdir / "wallets" / "result_wallet.json"),
                        "standalone": str(netdir / "wallets" / "result_standalone.json")}
        self.config = {
            "node": attacks.PRELUDE + node if node else "",
            "wallet": attacks.PRELUDE + wallet if wallet else "",
            "standalone": attacks.PRELUDE + standalone if standalone else "",
            "results": self.results,
            "vars": {"netdir": str(netdir), "walletdir": str(netdir / "wallets"),
                     "canary": str(self.outside / "canary"), "outside_dir": str(self.outside),
                     "cwd": os.getcwd(), **(variables or {})},
        }

    def arm(self) -> None:
        (self.site / "attack.json").write_text(json.dumps(self.config))

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.site)}

    def start(self, **popen: Any) -> None:
        self.arm()
        self.node.start(env=self.env(), **popen)
        if self.config["wallet"] and popen.get("wait", True):
            self.wake_wallet()

    def wake_wallet(self) -> None:
        """A node with no wallet to load starts its wallet process at the first call that may
        want one (since 12-08): this is such a call, so that the wallet's attack runs."""
        with contextlib.suppress(RpcError, RpcTransportError, OSError):
            self.node.rpc.getprocessinfo()

    def result(self, role: str, timeout: float = 20.0, *, to_the_end: bool = True) -> dict[str, dict[str, Any]]:
        """The attempts of the `role` attack. The file is rewritten after every attempt: wait
        until the attack ran to its end, or (`to_the_end=False`, for an attack the sandbox
        kills) read it once the caller saw the process die."""
        path = Path(self.results[role])
        if role == "wallet" and not path.exists() and self.node.process is not None:
            self.wake_wallet()

        def ready() -> dict[str, dict[str, Any]] | None:
            if not path.exists():
                return None
            data: dict[str, dict[str, Any]] = json.loads(path.read_text())
            return data if "_error" in data or "_end" in data or not to_the_end else None
        wait_until(lambda: ready() is not None, timeout, what=f"the {role} attack's results")
        data = ready()
        assert data is not None
        assert "_error" not in data, data["_error"]["detail"]
        data.pop("_end", None)
        return data


def wallet_pid(node: TestNode) -> int:
    wallet = [p for p in node.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-wallet"]
    assert len(wallet) == 1 and wallet[0]["pid"], wallet
    return int(wallet[0]["pid"])


def escapes(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The attempts that went through (escaped None: the sandbox killed the process in the
    middle of that attempt, which is a denial)."""
    return {name: r["detail"] for name, r in results.items() if r["escaped"]}


def killed_during(results: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, r in results.items() if r["escaped"] is None]


def test_a_symlinked_grant_gives_the_restarted_wallet_nothing(home_base: Path) -> None:
    """Item 1: the wallet swaps its writable tmpdir for a symlink to / and dies. Its
    restarted process must not gain the filesystem (and the node must notice the swap or
    make it harmless)."""
    a = AttackedNode(home_base, wallet=attacks.SYMLINK_SWAP)
    a.start()
    # First wallet process: swaps its tmpdir, then crashes (killed here); the node restarts it.
    stage1 = a.node.netdatadir / "wallets" / "attack-stage1.json"
    wait_until(stage1.exists, what="the first wallet process's swap")
    os.kill(wallet_pid(a.node), signal.SIGKILL)
    results = a.result("wallet", timeout=30)
    assert escapes(results) == {}, results
    wait_until(lambda: a.node.rpc.getprocessinfo()["processes"][1]["restarts"] >= 1,
               what="the wallet process's restart")
    stage1_detail = json.loads(stage1.read_text())["detail"]
    assert "TMPDIR='/tmp'" in stage1_detail, stage1_detail
    assert not (a.node.netdatadir / "pwned-by-wallet").exists()
    assert not (a.outside / "pwned-by-wallet").exists()


def test_descriptors_opened_before_restriction_do_not_reach_the_wallets(home_base: Path) -> None:
    """Item 2: inside the confined node, every descriptor it holds is tried as a directory
    to walk from into wallets/ (pycapnp's schema loader keeps fds to / and the cwd)."""
    plain = TestNode(0, home_base)
    plain.start()
    plain.rpc.createwallet("w")
    plain.stop()
    seed = plain.netdatadir / "wallets" / "w" / "wallet.sqlite"
    assert seed.exists()
    a = AttackedNode(home_base, node=attacks.FD_WALK, variables={"seed_file": str(seed)})
    a.start()
    results = a.result("node")
    assert escapes(results) == {}, results
    assert not any(p.name.startswith("pwned") for p in (a.node.netdatadir / "wallets").iterdir())


def _listener(path: Path) -> CountingListener:
    """A named unix socket outside every grant, in a directory outside /tmp."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    return CountingListener(sock)


def test_named_unix_sockets_outside_the_grants_are_out_of_reach(home_base: Path) -> None:
    """Item 3: the wallet tries the node's node.sock and a host socket; the node tries the
    host socket, and (since 12-07) an abstract socket of the host's, as X11's and systemd's
    are: the node is in the host's network namespace, where Landlock's abstract-socket scope
    refuses the connect (EPERM); since 12-07 (later) the node's filter refuses socket(AF_UNIX)
    before it. Neither may connect (the wallet has no business with sockets)."""
    outside_sock = home_base / "outside.sock"
    listener = _listener(outside_sock)
    abstract_name = f"cleancoin-test-x11-{uuid.uuid4().hex[:8]}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    abstract.listen(8)
    abstract_listener = CountingListener(abstract)
    try:
        a = AttackedNode(home_base, node=attacks.UNIX_SOCKETS, wallet=attacks.UNIX_SOCKETS,
                         extra=("-ipcbind=unix",),
                         variables={"outside_sock": str(outside_sock), "abstract_name": abstract_name})
        a.config["vars"]["node_sock"] = str(a.node.netdatadir / "node.sock")
        a.config["wallet_delay"] = 1.0          # once the node is up and node.sock exists
        a.start()
        node_results = a.result("node")
        # The wallet has no use for sockets at all: its filter kills it on the first try
        # (socket(2), before any connect), and the node says so (then starts a new one).
        wait_until(lambda: "killed by SIGSYS" in a.node.debug_log(), what="the node's log of the kill")
        wallet_results = a.result("wallet", to_the_end=False)
        assert escapes(wallet_results) == {}, wallet_results
        # node.sock is the node's own listener (bound before it confines itself since 12-07):
        # reaching it gives the node nothing it does not have.
        assert set(escapes(node_results)) <= {"connect-node-sock"}, node_results
        assert listener.accepted == 0 and abstract_listener.accepted == 0
        # Until 12-07 Landlock's abstract-socket scope refused the connect (EPERM); since then
        # the node makes no unix socket at all (its filter refuses socket(AF_UNIX)).
        for name in ("connect-outside-socket", "connect-node-sock", "connect-host-abstract-socket"):
            assert node_results[name]["detail"] == "Address family not supported by protocol", node_results
        assert killed_during(wallet_results) == ["connect-outside-socket"], wallet_results
    finally:
        listener.sock.close()
        abstract.close()


def _send_as_another_user(name: str, secret: bytes) -> str:
    """A host client of the service whose abstract name is `name`, run as another uid (nobody,
    in a forked child): connects and sends `secret`, as an X11 client sends its cookie.
    Returns what happened ("sent", or the connect's error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:       # pragma: no cover - the child
        answer = "sent"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect("\0" + name)
                client.sendall(secret)
                time.sleep(0.5)
        except OSError as exc:
            answer = type(exc).__name__ + ": " + (exc.strerror or str(exc))
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as answer_file:
            answer = answer_file.read().decode()
    finally:
        os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="the host's client runs as another uid (needs root)")
@pytest.mark.parametrize("policy", ["node", "node-ipcconnect-unix"])
def test_the_confined_node_cannot_claim_an_abstract_socket_name_of_the_host(home_base: Path, policy: str) -> None:
    """Found 12-07: Landlock's abstract-socket scope refuses the node's connect to the host's
    abstract sockets (the test above), not its bind. The node was in the host's network
    namespace, so an abstract name it bound was the host's: it listened on the name of a
    service not started yet (here X11's display socket, as @/tmp/.X11-unix/X<n> of a display
    started later), and a client of that service, of another uid, connected to it and sent
    its secret, which the node read. node.toml's socketpair_only (12-07) left one end of a
    socket pair able to take the name (a squat); node-ipcconnect-unix.toml (-ipcconnect=unix,
    a running wallet process's socket) left the whole hole. Since 12-07 (later) the node runs
    in a network namespace of its own (its listeners are bound before, in the host's) and
    bind(2) is refused: no name of the host's is taken, by either policy; the event loop's
    socketpair(AF_UNIX) still works (the control)."""
    name = f"cleancoin-test-x11-{uuid.uuid4().hex[:8]}"
    secret = b"MIT-MAGIC-COOKIE-1 " + uuid.uuid4().hex.encode()
    wallet = None
    extra: tuple[str, ...] = ()
    a = AttackedNode(home_base, node=attacks.ABSTRACT_CLAIM, variables={"claim_name": name})
    if policy == "node-ipcconnect-unix":
        # A running wallet process that waits for nodes on wallet.sock (-ipcconnect=unix).
        wallet = subprocess.Popen([str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest",
                                   f"-datadir={a.node.datadir}", "-ipcbind=unix"], stderr=subprocess.DEVNULL)
        wait_until(lambda: (a.node.netdatadir / "wallet.sock").exists(), what="wallet.sock")
        extra = ("-ipcconnect=unix",)
    try:
        a.arm()
        a.node.start(extra, env=a.env())
        claimed = a.result("node")
        assert claimed["control-socketpair"]["detail"] == "socketpair(AF_UNIX) works: b'ok'", claimed
        sent = _send_as_another_user(name, secret)
        pair = _send_as_another_user(name + "-pair", secret)
        if sent == "sent":
            wait_until(lambda: "read-a-host-clients-secret" in a.result("node"), 15,
                       what="the node's read of the client's secret")
        results = a.result("node")
        assert escapes(results) == {}, f"the host's client: {sent}; {results}"
        # Nothing of the node's is reachable under either name from the host's namespace.
        assert sent.startswith("ConnectionRefusedError"), (sent, results)
        assert pair.startswith("ConnectionRefusedError"), (pair, results)
        # node.toml makes no unix socket of its own (socketpair_only); both refuse bind(2).
        refused = "Address family not supported by protocol" if policy == "node" else "Operation not permitted"
        assert results["claim-host-abstract-name"]["detail"] == refused, results
        assert results["bind-a-socketpair-socket"]["detail"] == "Operation not permitted", results
        # The service whose names they are can still start: both are free in the host's
        # namespace (before: EADDRINUSE, the node held them).
        for taken in (name, name + "-pair"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as service:
                service.bind("\0" + taken)
        # The node's network namespace is not the host's (the test's).
        assert os.readlink(f"/proc/{a.node.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert _answers(a.node)
    finally:
        if wallet is not None:
            wallet.terminate()
            wallet.wait(20)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_the_node_stops_when_its_network_namespace_cannot_be_made(home_base: Path) -> None:
    """Fail closed (since 12-07): the node's own network namespace is part of its
    confinement, so a kernel that will not make one stops it before it serves, naming the
    step. The refusal is real: the node runs in a user namespace whose limit of network
    namespaces is 0 (user namespaces carry their own /proc/sys/user limits). The control: in
    the same wrapper, with the limit as it was, it starts and answers."""
    node = TestNode(0, home_base)
    wrapper = ["unshare", "-U", "-r", "sh", "-c"]
    probe = subprocess.run([*wrapper, "echo 0 > /proc/sys/user/max_net_namespaces"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace here: {probe.stderr.decode(errors='replace')}")
    refused = subprocess.run([*wrapper, 'echo 0 > /proc/sys/user/max_net_namespaces && exec "$@"', "sh",
                              *node.args()], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "sandbox step 'namespaces' failed: unshare(" in refused.stderr and "net" in refused.stderr, refused.stderr
    assert "No space left on device" in refused.stderr, refused.stderr
    assert not node.cookie_path.exists()        # it served nothing
    log = open(node.datadir / "stderr.txt", "ab")
    node.process = subprocess.Popen([*wrapper, 'exec "$@"', "sh", *node.args()],
                                    stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    try:
        node.wait_for_rpc()
        assert _answers(node)
    finally:
        assert node.stop() == 0


def _start_on_a_terminal(a: AttackedNode) -> tuple[int, int]:
    """Start the attacked node with a fresh pty on stdin, stdout and stderr, as a shell would,
    the operator having typed a line already; returns (master, slave)."""
    master, slave = pty.openpty()
    os.write(master, b"typed-by-the-operator\n")
    a.arm()
    a.node.process = subprocess.Popen(a.node.args(), stdin=slave, stdout=slave, stderr=slave,
                                      env=a.env(), start_new_session=True)
    return master, slave


def _read_terminal(master: int, until: bytes | None = None, timeout: float = 10.0) -> bytes:
    """What reached the terminal: what is there now, or everything up to `until`, waited for
    at most `timeout` seconds (a relay passes the output on a moment after it was written)."""
    import select
    seen = b""
    os.set_blocking(master, False)
    deadline = time.monotonic() + (timeout if until is not None else 0)
    try:
        while until is None or until not in seen:
            if until is not None:
                select.select([master], [], [], max(deadline - time.monotonic(), 0))
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                continue
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    return seen


def test_the_wallet_gets_no_terminal_and_none_of_the_nodes_secrets(home_base: Path) -> None:
    """Item 4: the node runs on a terminal with secrets in its conf file and on its command
    line. The wallet must not read keystrokes, change the terminal or write to it, and its
    memory must not hold the node's secrets."""
    marker = "attack-" + uuid.uuid4().hex[:8]
    rpc_secret = "rpcpw-" + uuid.uuid4().hex
    ipc_secret = "ipcpw-" + uuid.uuid4().hex
    a = AttackedNode(home_base, wallet=attacks.TERMINAL, variables={"marker": marker},
                     extra=(f"-ipcbind=tcp:127.0.0.1:{free_port()}", f"-ipcauth=op:{ipc_secret}"))
    # Secrets as an operator keeps them: the RPC password in the conf file, the IPC
    # password on the command line.
    (a.node.datadir / "CleanCoin.conf").write_text(f"rpcuser=op\nrpcpassword={rpc_secret}\n")
    a.node.client = RpcClient("127.0.0.1", a.node.rpc_port, user="op", password=rpc_secret, timeout=60)
    a.node.rpc = type(a.node.rpc)(a.node.client)
    master, slave = _start_on_a_terminal(a)
    try:
        wait_until(lambda: _answers(a.node), what="RPC with the conf file's password")
        results = a.result("wallet")
        wpid = wallet_pid(a.node)
        held = memory_holds(wpid, [rpc_secret.encode(), ipc_secret.encode()])
    finally:
        os.close(slave)
        seen = _read_terminal(master)
        a.node.cleanup()
        os.close(master)
    assert escapes(results) == {}, results
    assert held == [], f"the wallet's memory holds the node's secrets {held}"
    assert b"\x1b]0;" + marker.encode() not in seen


def test_the_confined_node_cannot_read_the_terminal_it_writes_to(home_base: Path) -> None:
    """CleanCoin-node started on a terminal, which a shell opens for reading and writing and
    puts on 0, 1 and 2. Attacker code in the confined node reads through them what the
    operator types, then writes a line to stdout and one to stderr holding OSC 52 (the
    desktop's clipboard set to a command) and CSI 2J (the screen cleared). Before d74c6a3 it
    read 'typed-by-the-operator' through fd 1; until 12-06 the terminal was reopened
    write-only, and both escape sequences reached it raw. Now restrict_self puts pipes to a
    relay program on 1 and 2 (stdio.apply): the node holds no descriptor of the terminal, its
    reads fail with EBADF, and its lines still reach the terminal, escape sequences as text.
    The relay is the node's helper, named in its report: `CleanCoin-sandbox status` shows it
    as the output relay, without capabilities and with no_new_privs."""
    marker = "node-output-" + uuid.uuid4().hex[:8]
    a = AttackedNode(home_base, node=attacks.NODE_TERMINAL, variables={"marker": marker})
    master, slave = _start_on_a_terminal(a)
    try:
        results = a.result("node", timeout=60)
        a.node.wait_for_rpc()
        node = next(p for p in a.node.rpc.getprocessinfo()["processes"] if p["name"] == "CleanCoin-node")
        relays = [h["pid"] for h in node["sandbox"]["helpers"] if h["role"] == "output relay"]
        assert len(relays) == 1, node["sandbox"]["helpers"]
        tool = Path(sys.executable).parent / "CleanCoin-sandbox"
        shown = subprocess.run([str(tool), "status", "--json", str(relays[0])], capture_output=True,
                               text=True, timeout=30)
        relay = json.loads(shown.stdout)["processes"][0]
        assert relay["role"] == "output relay" and relay["sandboxed"] and relay["no_new_privs"], relay
        assert int(relay["capabilities"]["effective"], 16) == 0, relay
    finally:
        os.close(slave)
        seen = _read_terminal(master, until=f"{marker}-fd2".encode())
        seen += _read_terminal(master, until=f"{marker}-fd1".encode())
        a.node.cleanup()
        os.close(master)
    # Its output still reaches the terminal, both lines, with the escape sequences shown as
    # text: nothing of OSC 52 (the clipboard) or CSI 2J (the screen) reaches the terminal.
    assert f"{marker}-fd1".encode() in seen and f"{marker}-fd2".encode() in seen, seen[-2000:]
    assert b"\x1b" not in seen and b"\\x1b]52;c;" in seen, seen[-2000:]
    assert escapes(results) == {}, results
    for fd in (1, 2):
        assert results[f"read-fd{fd}"]["detail"] == "Bad file descriptor", results


def test_the_confined_node_cannot_change_the_terminals_modes(home_base: Path) -> None:
    """The filter refuses TCSETS, TCSETSW and TCSETSF (base/python.toml: a terminal inherited
    by mistake must not be put into raw mode or have its echo turned off), but the kernel sets
    the modes through six other requests: TCSETA, TCSETAW, TCSETAF (struct termio) and TCSETS2,
    TCSETSW2, TCSETSF2 (struct termios2). Attacker code in a real CleanCoin-node after
    restrict_self, started on a pty (stdout and stderr write-only since d74c6a3, which does
    not stop ioctls; pipes to a relay since 12-06): on the old code each of the six turned the
    operator's echo off (the pty's ECHO flag read 0 afterwards). Now all seven answer EPERM
    (the filter answers before the kernel looks at the descriptor), and echo stays on."""
    a = AttackedNode(home_base, node=attacks.NODE_TERMIOS)
    master, slave = _start_on_a_terminal(a)
    try:
        results = a.result("node", timeout=60)
        echo = bool(termios.tcgetattr(master)[3] & termios.ECHO)
    finally:
        os.close(slave)
        a.node.cleanup()
        os.close(master)
    assert escapes(results) == {}, results
    for name in ("TCSETA", "TCSETAW", "TCSETAF", "TCSETS2", "TCSETSW2", "TCSETSF2", "TCSETS"):
        assert results[name]["detail"] == "Operation not permitted", results
    assert echo


@pytest.mark.parametrize("role", ["node", "standalone"])
def test_a_process_started_from_a_shell_cannot_reach_its_controlling_terminal(home_base: Path, role: str) -> None:
    """CleanCoin-node, or CleanCoin-wallet on its own, typed at an interactive shell's prompt
    (operator_shell.py): the pty is its controlling terminal, its job has the foreground, the
    shell is its session leader (the other terminal tests start their processes in a new
    session, without one). Attacker code in the confined process looks for the terminal
    through every descriptor, by /dev/tty, by the pty's name and through other processes'
    /proc/PID/fd, would push input, turn echo off, resize it, take the foreground, give it up,
    take the console and hang it up with what it found, writes a line (allowed: it reaches
    the terminal), sends SIGKILL to the shell and to its group, and calls vhangup(2). On the
    code of 12-07 every attempt was refused: no terminal in the mount namespace nor in
    Landlock's grants, no descriptor of it (the output relay), EPERM for the signals (the
    Landlock signal scope), and the filter kills the process for vhangup (or for kill, which
    the standalone wallet's list lacks). Afterwards the shell is alive, the job had the
    foreground to its end, and the terminal's modes and size are what they were."""
    marker = "ctty-" + uuid.uuid4().hex[:8]
    master, slave = pty.openpty()
    variables = {"marker": marker, "pty": os.ttyname(slave)}
    if role == "node":
        a = AttackedNode(home_base, node=attacks.CONTROLLING_TERMINAL, variables=variables)
        command = a.node.args()
        a.arm()
    else:
        a = AttackedNode(home_base, standalone=attacks.CONTROLLING_TERMINAL, variables=variables,
                         extra=("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1"))
        a.start()
        command = [str(Path(sys.executable).parent / "CleanCoin-wallet"), "-regtest",
                   f"-datadir={a.node.datadir}", "-ipcconnect=unix", "-server", f"-rpcport={free_port()}"]
    os.write(master, b"typed-by-the-operator\n")
    modes = termios.tcgetattr(master)
    size = fcntl.ioctl(master, termios.TIOCGWINSZ, bytes(8))
    status = home_base / "job-status.json"
    shell = subprocess.Popen([sys.executable, str(Path(__file__).parent / "operator_shell.py"),
                              os.ttyname(slave), str(status), "--", *command], env=a.env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if role == "node":
        a.node.process = shell
    try:
        seen = _read_terminal(master, until=f"{marker}-allowed-output".encode(), timeout=60)
        # The filter kills the process in its last attempts (SIGSYS): the job ends, the shell
        # takes the foreground back and says so.
        wait_until(status.exists, 60, what="the job's end")
        shell_code = shell.wait(10)
        results = a.result(role, to_the_end=False)
    finally:
        os.close(slave)
        if shell.poll() is None:
            shell.kill()
            shell.wait(10)
        a.node.cleanup()
        modes_after = termios.tcgetattr(master)
        size_after = fcntl.ioctl(master, termios.TIOCGWINSZ, bytes(8))
        os.close(master)
    job = json.loads(status.read_text())
    assert escapes(results) == {}, results
    assert results["inherited-terminal"]["detail"] == "no descriptor is a terminal", results
    assert results["open-terminal"]["detail"] == "no path opened a terminal", results
    # The filter refuses every request that steers a terminal, whatever the descriptor is.
    for name in ("TIOCSCTTY", "TIOCSPGRP", "TIOCSWINSZ", "TIOCCONS", "TIOCNOTTY", "TIOCVHANGUP",
                 "TCFLSH", "TCXONC", "TIOCSTI"):
        assert results[f"filter-{name}"]["detail"] == "Operation not permitted", {k: v["detail"] for k, v in results.items()}
    # The node's allowed output reaches the terminal (through its relay).
    assert f"{marker}-allowed-output".encode() in seen, seen[-2000:]
    # The node has kill(2) (for its zygote), and the signal scope refuses it outside; the
    # standalone wallet has none. The first call not on the list kills the process.
    if role == "node":
        for name in ("kill-session-leaders-group", "kill-session-leader"):
            assert results[name]["detail"] == "Operation not permitted", results
        assert killed_during(results) == ["vhangup"], results
    else:
        assert killed_during(results) == ["kill-session-leaders-group"], results
    assert job["status"] == -signal.SIGSYS, (job, results)
    # The shell lived to take its terminal back; the job had the foreground to its end.
    assert shell_code == 0 and job["foreground"] == job["job"], job
    assert modes_after == modes and size_after == size


def _answers(node: TestNode) -> bool:
    assert node.process is not None and node.process.poll() is None, "the node exited"
    try:
        node.rpc.getblockcount()
        return True
    except (RpcTransportError, OSError):
        return False


def test_the_smaller_holes_are_closed_in_the_wallet(home_base: Path) -> None:
    """Item 5: clone with namespace flags, dumpable back on, W+X memory, and resource
    exhaustion by forks, descriptors and a huge sparse file."""
    a = AttackedNode(home_base, wallet=attacks.SMALL_HOLES)
    a.start()
    results = a.result("wallet", timeout=60)
    assert escapes(results) == {}, results


def test_the_wallet_cannot_pin_memory_beyond_its_own_memlock_limit(home_base: Path) -> None:
    """mlock is the wallet's (its seeds stay out of swap), so its RLIMIT_MEMLOCK is what bounds
    the RAM a compromised wallet can pin, which the kernel can neither swap nor reclaim: before
    12-07 it kept the launcher's (8 MiB here, unlimited on some hosts: it locked 4 MiB here).
    Its policy's 64 KiB now: one page locks (the control), 4 MiB do not."""
    lock_bytes = 4 << 20
    saved = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    with contextlib.suppress(ValueError, OSError):          # as far as this launcher may
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (saved[1], saved[1]))
    try:
        if resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] < 2 * lock_bytes:
            pytest.skip(f"the launcher's own memlock limit is below {2 * lock_bytes} bytes: nothing to show")
        a = AttackedNode(home_base, wallet=attacks.MEMLOCK, variables={"lock_bytes": lock_bytes})
        a.start()
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, saved)
    results = a.result("wallet", timeout=60)
    assert results["control-mlock-one-page"]["detail"] == "locked", results
    assert escapes(results) == {}, results


def test_a_wallet_started_on_its_own_is_confined(home_base: Path) -> None:
    """Item 7: `CleanCoin-wallet -ipcconnect -server` confines itself once its sockets are
    open: it serves the node and its own RPC, and sees nothing but its wallet directory. Its
    refusals are logged to its stderr, which it cannot erase (before 12-06 they were not
    logged at all)."""
    outside_sock = home_base / "outside.sock"
    listener = _listener(outside_sock)
    a = AttackedNode(home_base, standalone=attacks.STANDALONE,
                     extra=("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1"),
                     variables={"outside_sock": str(outside_sock)})
    a.arm()
    a.node.start(env=a.env())      # the node itself runs no attack
    rpc_port = free_port()
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    # Its stderr is a pipe, as under a supervisor: where its refusals are logged.
    wallet = subprocess.Popen([str(wallet_bin), "-regtest", f"-datadir={a.node.datadir}", "-ipcconnect=unix",
                               "-server", f"-rpcport={rpc_port}"], stderr=subprocess.PIPE, env=a.env())
    try:
        _, stderr = wallet.communicate(timeout=30)
        results = a.result("standalone", to_the_end=False)
        assert escapes(results) == {}, results
        assert killed_during(results) == ["connect-outside-socket"], results
        assert listener.accepted == 0
        assert wallet.returncode == -signal.SIGSYS        # its filter killed it on socket(2)
        # The record of its refused call survived its attempt to erase it.
        refused = [line for line in stderr.decode(errors="replace").splitlines()
                   if "[sandbox:CleanCoin-wallet]" in line and "refused ioctl(" in line and "0x5412" in line]
        assert refused, stderr.decode(errors="replace")[-3000:]
    finally:
        if wallet.poll() is None:
            wallet.kill()
            wallet.communicate()
        listener.sock.close()
    # Unattacked, the same process serves: a fresh one registers with the node and answers.
    clean = subprocess.Popen([str(wallet_bin), "-regtest", f"-datadir={a.node.datadir}", "-ipcconnect=unix",
                              "-server", f"-rpcport={rpc_port}"], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _lists_wallets(a.node), what="the wallet's registration")
        a.node.rpc.createwallet("w")
        own = RpcClient("127.0.0.1", rpc_port, cookie_path=str(a.node.netdatadir / "wallets" / ".cookie"))
        assert own.call("listwallets") == ["w"]
        status = Path(f"/proc/{clean.pid}/status").read_text()
        assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
        assert os.readlink(f"/proc/{clean.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert "confined" in (a.node.netdatadir / "wallets" / "debug.log").read_text()
    finally:
        clean.terminate()
        clean.wait(20)


#: Run by _wallet_run in a fresh interpreter: start argv[2:] (stderr inherited), kill it after
#: argv[1] seconds, print its exit status and ru_maxrss (KiB) from wait4.
_PEAK_LAUNCHER = """
import os, subprocess, sys, threading
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
timer = threading.Timer(float(sys.argv[1]), proc.kill)
timer.start()
_, status, usage = os.wait4(proc.pid, 0)
timer.cancel()
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _wallet_run(args: list[str], out: Path, timeout: float = 60.0) -> tuple[int, int, str]:
    """Run CleanCoin-wallet with `args` to its end: (exit status, its peak RSS in bytes,
    its stderr). The peak comes from wait4's rusage, so nothing is sampled and missed; the
    wallet is started by a fresh small interpreter, not by this one, because a child's
    ru_maxrss starts from its parent's peak RSS (subprocess starts it by vfork, and exec
    keeps the larger of the old address space's peak and the new one's): started from this
    pytest process, the wallet was reported with pytest's peak whenever that was higher than
    its own (32 MiB here): 271 MiB once pytest had peaked at 200 MiB, and 170 MiB in a CI run."""
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    with open(out, "wb") as err:
        launcher = subprocess.run([sys.executable, "-I", "-c", _PEAK_LAUNCHER, str(timeout), str(wallet_bin), *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                  timeout=timeout + 30, check=True)
    code, peak_kib = (int(word) for word in launcher.stdout.split())
    return code, peak_kib * 1024, out.read_text(errors="replace")


def test_an_ipc_cookie_the_confined_node_bloats_is_not_read_whole_by_a_wallet_started_on_its_own(
        home_base: Path) -> None:
    """Attack: the confined node (-ipcbind=tcp) swaps the .ipccookie it wrote for a sparse
    file of 256 MiB (no disk used; its fsize limit allows 64 GiB). CleanCoin-wallet
    -ipcconnect=tcp reads the node's cookie before it confines itself, as the operator, under
    none of the node's rlimits. Before 12-06 it read the whole file (open().read()): a peak of
    about twice its size, and with 64 GiB the host's memory. Now the cookie is read as
    CleanCoin-cli reads .cookie (components/common/private_files.read_small_file: no link, a
    regular file, at most 1 KiB, a cookie's form): refused at once, naming the file. The
    control: with the node's real cookie put back, the same command registers its wallet."""
    port = free_port()
    size = 256 << 20
    a = AttackedNode(home_base, node=attacks.IPC_COOKIE_BLOAT, variables={"size": size},
                     extra=(f"-ipcbind=tcp:127.0.0.1:{port}", "-disablewallet", "-ipcallowwallet=1"))
    a.config["node_delay"] = 0.01          # in a thread: the cookie is written after restrict_self
    a.start()
    planted = a.result("node", timeout=60)["plant-huge-ipccookie"]
    assert planted["detail"].startswith(f"{size} bytes"), planted
    cookie = a.node.netdatadir / ".ipccookie"
    args = ["-regtest", f"-datadir={a.node.datadir}", f"-ipcconnect=tcp:127.0.0.1:{port}"]
    code, peak, stderr = _wallet_run(args, home_base / "wallet-attacked.err")
    assert peak < size // 2, f"the wallet peaked at {peak >> 20} MiB reading a {size >> 20} MiB cookie"
    assert code == 1 and f"{cookie}" in stderr and "larger than" in stderr, (code, stderr[-2000:])
    assert not _lists_wallets(a.node)
    # The control: the node's own cookie back in place, the same command joins the node.
    os.replace(cookie.with_name(".ipccookie.orig"), cookie)
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    honest = subprocess.Popen([str(wallet_bin), *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _lists_wallets(a.node), what="the wallet's registration")
    finally:
        end_process(honest)
    assert a.node.stop() == 0


def _lists_wallets(node: TestNode) -> bool:
    try:
        node.rpc.listwallets()
        return True
    except Exception:   # noqa: BLE001 - -28 / -32601 until the wallet registered
        return False


def test_what_the_confined_node_plants_is_not_trusted_at_the_next_start(home_base: Path) -> None:
    """Attack: the confined node changes what the next, unconfined start-up reads from the
    directory it may write, then dies. Its conf file lies in that directory, as on mainnet
    (sandbox=0 there would start it unconfined next time), and a debug.log that is a link
    would have the next start append log lines to a file of the attacker's choice, as the
    node's user, before the sandbox is up. Neither may work; the operator's conf is intact."""
    victim = home_base / "outside" / "victim.txt"
    # Mainnet's place for it: the network datadir is the datadir there.
    conf = home_base / "node0" / "regtest" / "CleanCoin.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# the operator's settings\n")
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("victim-original\n")
    a = AttackedNode(home_base, node=attacks.PERSIST, extra=(f"-conf={conf}",),
                     variables={"victim": str(victim), "conf": str(conf)})
    a.arm()
    a.node.start(env=a.env(), wait=False)
    assert a.node.process is not None
    # The results file is rewritten after every attempt: read it once the node is gone.
    code = a.node.process.wait(30)
    results = a.result("node", to_the_end=False)
    assert escapes(results) == {}, results
    # symlink(2) is outside the node's filter: the attempt kills it.
    assert killed_during(results) == ["plant-log-link"] and code == -signal.SIGSYS, (results, code)
    assert conf.read_text() == "# the operator's settings\n"
    # The supervisor starts it again, without the attacker: confined, as configured.
    (a.site / "attack.json").unlink()
    a.node.process = None
    a.node.start(env=a.env())
    info = a.node.rpc.getprocessinfo()
    assert a.node.stop() == 0
    assert "WITHOUT a sandbox" not in a.node.debug_log()
    by_name = {p["name"]: p for p in info["processes"]}
    node_entry, wallet_entry = by_name["CleanCoin-node"], by_name["CleanCoin-wallet"]
    assert node_entry["sandbox"] and "fully enforced" in wallet_entry["sandbox_report"], info
    assert victim.read_text() == "victim-original\n"
    # Another conf file inside that directory is not started with at all.
    other = conf.parent / "node.conf"
    other.write_text("")
    refused = subprocess.run(a.node.args([f"-conf={other}"]), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "which the confined node can write" in refused.stderr, refused.stderr


def _monitor_of(proc: Any, log: Path, wallet: bool) -> int:
    """The live denial monitor that writes `log` (the node's sandbox.log): the node's own, or
    (`wallet`) its wallet process's, a fork of the zygote whose title names the wallet (since
    12-07). Its pid as the host numbers it."""
    found = [pid for pid in proc.monitors(writing=str(log))
             if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"CleanCoin-wallet denial-monitor") == wallet]
    assert found, f"no denial monitor of the {'wallet' if wallet else 'node'} writes {log}"
    return found[0]


def test_the_confined_node_and_wallet_cannot_reach_their_denial_monitors(home_base: Path, proc: Any) -> None:
    """The monitor is a program of its own in a Landlock domain of its own: the process it
    serves can neither signal it nor read its memory or descriptors. On the old code (a fork
    at the seccomp step, in the node's Landlock domain) the node's kill-monitor escaped. The
    wallet's monitor is a fork of the zygote (since 12-07), outside the wallet's pid namespace:
    the wallet cannot even name it, and is given its host pid to try."""
    a = AttackedNode(home_base, node=attacks.MONITOR, wallet=attacks.MONITOR)
    # In a thread each: the node and its wallet finish starting meanwhile.
    a.config["node_delay"] = a.config["wallet_delay"] = 0.5
    a.start()
    node_monitor = _monitor_of(proc, a.node.netdatadir / "sandbox.log", wallet=False)
    (a.node.netdatadir / "monitor_pid").write_text(str(node_monitor))
    node_results = a.result("node", timeout=60)
    assert escapes(node_results) == {}, node_results
    wallet_monitor = _monitor_of(proc, a.node.netdatadir / "sandbox.log", wallet=True)
    wpid = wallet_pid(a.node)
    assert os.readlink(f"/proc/{wallet_monitor}/ns/pid") != os.readlink(f"/proc/{wpid}/ns/pid")
    (a.node.netdatadir / "wallets" / "monitor_pid").write_text(str(wallet_monitor))
    # The wallet's filter does not even let it call kill(2): it dies trying (and is restarted).
    wait_until(lambda: "killed by SIGSYS" in a.node.debug_log(), what="the node's log of the kill")
    wallet_results = a.result("wallet", to_the_end=False)
    assert escapes(wallet_results) == {}, wallet_results
    assert killed_during(wallet_results) == ["kill-monitor"], wallet_results
    assert Path(f"/proc/{node_monitor}").exists()
    assert a.node.rpc.getblockcount() == 0


def _fd_targets(pid: int) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def test_the_wallets_denial_monitor_is_a_fork_of_the_zygote_that_holds_nothing_of_the_wallets(
        home_base: Path, proc: Any) -> None:
    """Since 12-07 the wallet's monitor is forked by the zygote (issue #16: no interpreter of
    its own) instead of exec'd by the wallet at its "denial monitor" step. It must still be
    confined by its own steps and keep none of the wallet's: its filter, no_new_privs and no
    capability (the zygote, run as root here, holds them all), not the wallet's resource
    limits, no descriptor but stdio on /dev/null, the log and the filter's listener (so no
    socket the wallet could write to), outside the wallet's pid and user namespaces; and a
    refusal in the real wallet is still logged, by it."""
    a = AttackedNode(home_base, wallet=attacks.REFUSED)
    a.config["wallet_delay"] = 0.5
    a.start()
    results = a.result("wallet", timeout=60)
    assert escapes(results) == {}, results
    log = a.node.netdatadir / "sandbox.log"
    monitor, wpid = _monitor_of(proc, log, wallet=True), wallet_pid(a.node)
    status = proc.status(monitor)
    assert (status["Seccomp"], status["NoNewPrivs"], status["CapEff"], status["CapPrm"]) == \
        ("2", "1", "0000000000000000", "0000000000000000"), status
    assert len(status["NSpid"].split()) == 1 and status["Name"] == "denial-monitor", status
    for ns in ("pid", "user", "mnt", "net"):
        assert os.readlink(f"/proc/{monitor}/ns/{ns}") != os.readlink(f"/proc/{wpid}/ns/{ns}"), ns
    limits = {pid: [line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                    if line.startswith("Max file size")] for pid in (monitor, wpid)}
    assert "4294967296" in limits[wpid][0] and "4294967296" not in limits[monitor][0], limits
    targets = _fd_targets(monitor)
    assert targets == sorted(["/dev/null"] * 3 + [str(log), "anon_inode:seccomp notify"]), targets
    wait_until(lambda: any("[sandbox:CleanCoin-wallet]" in line and "refused ioctl(" in line and "0x5412" in line
                           for line in log.read_text().splitlines()), what="the wallet's TIOCSTI in sandbox.log")


def test_the_wallets_output_cannot_make_the_zygote_hold_it(home_base: Path) -> None:
    """The wallet writes 48 MiB to its stderr without a newline. The zygote that relays its
    output line by line (unconfined: what it holds, the host pays) must pass the line on in
    pieces, each with the wallet's name and pid, and not keep it back whole: on the old
    relay its memory grew with every byte (175 MiB peak for 32 MiB)."""
    a = AttackedNode(home_base, wallet=attacks.OUTPUT_FLOOD, variables={"flood_mib": 48})
    a.start()
    results = a.result("wallet", timeout=60)
    assert escapes(results) == {}, results
    wpid = wallet_pid(a.node)
    zygote = [p for p in a.node.rpc.getprocessinfo()["processes"] if "zygote" in p["name"]]
    assert len(zygote) == 1 and zygote[0]["pid"], zygote
    wait_until(lambda: b"end of the flood" in (a.node.datadir / "stderr.txt").read_bytes(),
               what="the flood's end on the node's stderr")
    status = Path(f"/proc/{zygote[0]['pid']}/status").read_text()
    peak, now = (int(status.split(f"{field}:")[1].split()[0]) for field in ("VmHWM", "VmRSS"))
    a.node.cleanup()
    # The zygote holds the wallet's preloaded code (about 40 MiB): what the flood added is
    # its peak over what it holds after.
    assert peak - now < 16 * 1024, f"the zygote peaked {(peak - now) // 1024} MiB above its {now // 1024} MiB"
    pieces = [line for line in (a.node.datadir / "stderr.txt").read_bytes().split(b"\n") if b"WWWW" in line]
    assert pieces and all(line.startswith(f"[CleanCoin-wallet {wpid}] ".encode()) and len(line) <= 17 * 1024
                          for line in pieces), [line[:60] for line in pieces[:3]]
    assert sum(line.count(b"W") for line in pieces) == 48 << 20


def test_the_wallet_cannot_erase_the_record_of_its_refusals(home_base: Path) -> None:
    """Attacker code in the wallet makes a refused call, then tries to erase its record. The
    wallet may rewrite wallets/debug.log (its own log), so its monitor writes to the node's
    sandbox.log instead, opened by the zygote outside the wallet's view, and the wallet holds
    no descriptor of it. Before 12-06 the line was in wallets/debug.log: truncated, gone."""
    # -nodebuglogfile: the record does not depend on the debug log (before 12-06 it followed it).
    a = AttackedNode(home_base, wallet=attacks.ERASE_DENIALS, extra=("-nodebuglogfile",))
    a.config["wallet_delay"] = 0.5          # once it serves: the node waits for it to start
    a.start()
    results = a.result("wallet", timeout=60)
    assert escapes(results) == {}, results
    assert results["erase-wallet-log"]["detail"].startswith("truncated "), results
    a.node.cleanup()
    record = (a.node.netdatadir / "sandbox.log").read_text()
    refused = [line for line in record.splitlines()
               if "[sandbox:CleanCoin-wallet]" in line and "refused ioctl(" in line and "0x5412" in line]
    assert refused, record[-3000:]


def _geteuid_program() -> bytes:
    """A static x86_64 program of 136 bytes that exits with its effective uid (& 0xFF)."""
    import struct
    code = bytes.fromhex("b86b0000000f05" "89c7" "b83c0000000f05")     # geteuid; exit(euid)
    base, size = 0x400000, 64 + 56 + len(code)
    header = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, bytes(7), 2, 0x3E, 1,
                         base + 64 + 56, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + segment + code


def _run_as_nobody(path: Path) -> int:
    """Run `path` as uid and gid 65534 through a descriptor (the datadir's own permissions
    are not what is tested): its exit status, the effective uid it got."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               f"/proc/self/fd/{fd}"], pass_fds=[fd], timeout=30).returncode
    finally:
        os.close(fd)


def test_the_wallet_cannot_plant_a_set_user_id_program_on_the_host(home_base: Path) -> None:
    """Attacker code in the wallet writes a program into wallets/ and sets its set-user-ID bit
    (chmod, fchmod, or open with the bit in the mode). The grant is mounted nosuid in the
    sandbox, not on the host: there the file is a set-user-ID program of the node's user. On the
    old code all three were set, and the program, run by uid 65534, got effective uid 0 (the
    node runs as root here): a local root for anyone who reaches the datadir (-sysperms, a
    shared group). Now the filter refuses the set-user-ID and set-group-ID bits in every call
    that sets a mode (systemd's RestrictSUIDSGID), and a plain chmod still works."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("runs the planted program as another user (needs root and setpriv)")
    a = AttackedNode(home_base, wallet=attacks.PLANT_SUID, variables={"program": _geteuid_program().hex()})
    a.config["wallet_delay"] = 0.5
    a.start()
    results = a.result("wallet", timeout=60)
    assert results["plain-chmod"]["detail"] == "mode 700", results
    walletdir = a.node.netdatadir / "wallets"
    for name in ("suid-by-chmod", "suid-by-fchmod", "suid-by-open"):
        assert results[name]["detail"] == "refused: Operation not permitted", results
        path = walletdir / name
        assert not path.exists() or path.stat().st_mode & 0o6000 == 0, (name, oct(path.stat().st_mode))
    for name in ("suid-by-chmod", "suid-by-fchmod"):        # the two with the program in them
        path = walletdir / name
        path.chmod(0o755)
        assert _run_as_nobody(path) == 65534 & 0xFF        # control: it runs, as nobody
    assert escapes(results) == {}, results


def test_the_wallet_cannot_loosen_its_files_modes(home_base: Path) -> None:
    """Attacker code in the wallet, on a node run with -sysperms (the datadir shared with a
    group, or others): it gives group and other bits to a file it made, to the wallets
    directory and to a wallet's database, with chmod and fchmod. On the old code all five went
    through (wallets/ 0755 and 0711, the database 0640, the file 0644 and 0606): the keys
    readable by whoever reaches the datadir. Now the wallet's filter refuses a mode with any
    group or other bit (policies/wallet.toml, `masked_ne`), and a change among the owner's
    bits still works. (umask is not on the wallet's allow list at all.)"""
    plain = TestNode(0, home_base, ("-sysperms",))
    plain.start()
    plain.rpc.createwallet("w")
    plain.stop()
    database = plain.netdatadir / "wallets" / "w" / "wallet.sqlite"
    before = {path: path.stat().st_mode & 0o7777 for path in (database, database.parent.parent)}
    a = AttackedNode(home_base, wallet=attacks.LOOSEN_MODES, extra=("-sysperms",),
                     variables={"database": str(database)})
    a.config["wallet_delay"] = 0.5
    a.start()
    results = a.result("wallet", timeout=60)
    assert results["owner-chmod"]["detail"] == "mode 600", results
    for name in ("file-by-chmod", "file-by-fchmod", "dir-by-chmod", "dir-by-fchmod", "database-by-chmod"):
        assert results[name]["detail"] == "refused: Operation not permitted", results
    assert escapes(results) == {}, results
    assert {path: path.stat().st_mode & 0o7777 for path in before} == before
    assert a.node.rpc.getblockcount() == 0


def test_the_wallet_cannot_bury_its_refusals_under_decoys(home_base: Path) -> None:
    """Attacker code in the wallet spends the denial log's budget (120 lines a minute) on 150
    decoy refusals, each a new kind (clone with namespace flags and other high bits), then
    pushes input into a terminal (TIOCSTI) and turns dumpable back on. Both are refused; the
    record must still say so. On the old code the log held the 120 decoys and "32 more lines of
    refusals not logged": neither the TIOCSTI nor the prctl was named. Now the first refusal by
    each of the policy's decisions (its rule, or its default for that syscall) is written
    whatever the budget, and the decoys beyond it are still only counted."""
    a = AttackedNode(home_base, wallet=attacks.BURY_DENIALS, variables={"decoys": 150})
    a.config["wallet_delay"] = 0.5
    a.start()
    results = a.result("wallet", timeout=60)
    assert escapes(results) == {}, results
    a.node.cleanup()                      # the monitor says what it left out as it ends
    lines = [line for line in (a.node.netdatadir / "sandbox.log").read_text().splitlines()
             if "[sandbox:CleanCoin-wallet]" in line]
    decoys = [line for line in lines if "refused clone(" in line]
    assert 0 < len(decoys) <= 120, (len(decoys), lines[-3:])          # the budget still holds
    assert any("refused ioctl(" in line and "0x5412" in line for line in lines), lines[-5:]
    assert any("refused prctl(option=4," in line for line in lines), lines[-5:]
    assert any("not logged" in line for line in lines), lines[-5:]


def test_the_confined_node_cannot_erase_the_record_of_its_refusals(home_base: Path) -> None:
    """Attacker code in the confined node makes a refused call, then erases its debug.log
    (its own, which it may rewrite) and tries to change, replace or remove its sandbox log.
    The record of the refusal must survive somewhere the operator reads. On the old code the
    refusals of the node (and of its wallet) went to the node's debug.log: truncated, gone."""
    a = AttackedNode(home_base, node=attacks.NODE_ERASE_DENIALS, extra=("-debug=sandbox",))
    a.config["node_delay"] = 0.5
    a.start()
    results = a.result("node", timeout=60)
    assert escapes(results) == {}, results
    a.node.cleanup()
    logs = [a.node.netdatadir / name for name in ("debug.log", "sandbox.log")]
    text = "".join(path.read_text(errors="replace") for path in logs if path.exists())
    refused = [line for line in text.splitlines() if "refused ioctl(" in line and "0x5412" in line]
    assert refused, text[-3000:]
    assert all(", thread " in line for line in refused), refused      # -debug=sandbox's form


def test_a_full_disk_neither_loses_nor_stops_the_record_of_refusals(home_base: Path) -> None:
    """The confined node fills the filesystem of its datadir (an 80 MiB tmpfs here), makes a
    refused call while nothing can be written, frees the space and makes another. On the old
    code the monitor's write failed with ENOSPC: the first line was lost, and the monitor
    stopped, so the second refusal (answered ENOSYS by the kernel) went unrecorded too, as would
    every later one. Now sandbox.log keeps space of its own, and a monitor that cannot write
    counts what it lost and goes on."""
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs for the datadir (needs root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m,mode=0700", "cleancoin-attack", str(home_base)],
                   check=True)
    try:
        a = AttackedNode(home_base, node=attacks.NODE_FILL_DISK)
        a.config["node_delay"] = 0.5
        a.start()
        results = a.result("node", timeout=90)
        assert escapes(results) == {}, results
        assert results["fill-disk"]["detail"].startswith("full; refused"), results
        assert results["refused-after"]["detail"] == "refused: Operation not permitted", results
        a.node.cleanup()
        record = (a.node.netdatadir / "sandbox.log").read_text(errors="replace")
        lines = [line for line in record.splitlines() if "refused ioctl(" in line and "0x5412" in line]
        assert any("ioctl(fd=0," in line for line in lines), record[-3000:]      # made while full
        assert any("ioctl(fd=2," in line for line in lines), record[-3000:]      # made after
    finally:
        _stop_nodes_under(home_base)
        subprocess.run(["umount", "-l", str(home_base)], check=False)


@pytest.mark.parametrize("mode", ["all", "read"])
def test_a_compromised_node_cannot_spend_through_a_wallet_started_with_forwardrpc_read(home_base: Path,
                                                                                    mode: str) -> None:
    """Attacker code in the confined node calls the registered wallet handler directly, as a
    compromised node would. With the default -forwardrpc=all it reaches sendtoaddress (here the
    wallet has no funds: -6, but it would spend them); with -forwardrpc=read the wallet process
    registered the read-only methods only, and sendtoaddress is "Method not found" in the
    wallet process itself, whatever the node sends. The wallet's own RPC port still spends."""
    a = AttackedNode(home_base, node=attacks.NODE_CALLS_WALLET,
                     extra=("-ipcbind=unix", "-disablewallet", "-ipcallowwallet=1"))
    a.config["node_delay"] = 0.5
    wallet_bin = Path(sys.executable).parent / "CleanCoin-wallet"
    datadir = a.node.datadir
    subprocess.run([str(wallet_bin), "-regtest", f"-datadir={datadir}", "-wallet=w", "create"],
                   check=True, capture_output=True, timeout=60)
    a.start()
    rpc_port = free_port()
    wallet = subprocess.Popen([str(wallet_bin), "-regtest", f"-datadir={datadir}", "-ipcconnect=unix",
                               "-wallet=w", "-server", f"-rpcport={rpc_port}", f"-forwardrpc={mode}"],
                              stderr=subprocess.PIPE)
    try:
        results = a.result("node", timeout=60)
        assert "read-method" in results and json.loads(results["read-method"]["detail"])["ok"], results
        spent = json.loads(results["spend"]["detail"])
        if mode == "all":
            assert results["spend"]["escaped"] and spent["code"] == -6, results     # insufficient funds
        else:
            assert escapes(results) == {}, results
            assert spent["code"] == -32601 and "Method not found" in spent["message"], spent
            # Through the node's RPC: the same; on the wallet's own port the method is there.
            address = a.node.rpc.getnewaddress()
            with pytest.raises(Exception, match="Method not found"):
                a.node.rpc.sendtoaddress(address, 1)
            assert a.node.rpc.getbalance() == 0
            own = RpcClient("127.0.0.1", rpc_port, cookie_path=str(a.node.netdatadir / "wallets" / ".cookie"))
            with pytest.raises(Exception, match="Insufficient funds"):
                own.call("sendtoaddress", address, 1)
    finally:
        end_process(wallet)


def test_a_learning_node_cannot_write_the_records_of_its_wallet(home_base: Path) -> None:
    """Attack: during a learning run (-sandboxlearn=DIR, as the suite learns the shipped
    policies) the node writes a record file of policy 'wallet' into DIR, claiming that the wallet
    made an inet socket and connected to a host, and adds a line to its own record. `learn
    --from DIR --policy wallet` then wrote a wallet policy with socket/connect and inet that the
    wallet never used (went through before 12-06). The record directory is no longer in any
    learning component's view: each record file is opened before the view is built, and only
    its recorder holds it."""
    records = home_base / "records"
    a = AttackedNode(home_base, node=attacks.FORGE_RECORDS, extra=(f"-sandboxlearn={records}",),
                     variables={"records": str(records)})
    a.start()
    results = a.result("node")
    a.node.rpc.createwallet("w")
    assert a.node.stop() == 0
    assert escapes(results) == {}, results
    learned = subprocess.run([str(Path(sys.executable).parent / "CleanCoin-sandbox"), "learn", "--policy", "wallet",
                              "--from", str(records), "--json", "--quiet", "--out", str(home_base / "w.toml")],
                             capture_output=True, text=True, timeout=60)
    assert learned.returncode in (0, 1), learned.stdout + learned.stderr
    seen = json.loads(learned.stdout)["observation"]
    assert seen["processes"] >= 1                      # the real wallet's record is there
    assert {s["family"] for s in seen["sockets"]} <= {"unix"}, seen["sockets"]
    assert seen["connect"] == [] and "connect" not in seen["syscalls"], seen
    assert not any("canary" in p for p in seen["paths"])


def test_a_wallet_that_fills_the_shared_disk_stops_the_node_cleanly(home_base: Path) -> None:
    """Attacker code in the confined wallet process fills the filesystem its wallets/ shares
    with the node (an 80 MiB tmpfs as the network datadir). The wallet may write there, and
    the kernel offers no quota per directory on tmpfs (nor on ext4 without project quotas set
    up by the operator), so the sandbox cannot stop the filling. On the old code the node went
    on with nothing written: generatetoaddress answered -32603 with sqlite3.OperationalError in
    debug.log, blocks from peers cost them their connection. Now the next block meets
    bitcoind's CheckDiskSpace: the RPC caller reads "Disk space is too low!", the node stops
    cleanly with exit status 1 and says why on stderr; nothing is lost, and once the operator
    removed the files it starts and goes on."""
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs for the datadir (needs root)")
    a = AttackedNode(home_base, wallet=attacks.WALLET_FILL_DISK)
    netdir = a.node.netdatadir
    netdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m,mode=0700", "cleancoin-attack", str(netdir)],
                   check=True)
    try:
        a.config["wallet_delay"] = 0.5
        a.start()
        wait_until(lambda: free_bytes(str(netdir)) < 8192, 60, what="the wallet process to fill the disk")
        assert a.node.process is not None and a.node.process.poll() is None    # nothing written yet
        try:
            a.node.rpc.generatetoaddress(1, TEST_ADDRESS)
            raise AssertionError("a block was stored on a full disk")
        except RpcError as exc:
            assert exc.code == -20 and "Disk space is too low!" in exc.message, exc
            assert "Internal error" not in exc.message, exc
        assert a.node.process.wait(30) == 1
        a.node.process = None
        stderr = (a.node.datadir / "stderr.txt").read_text(errors="replace")
        assert "Error: Disk space is too low!" in stderr, stderr[-2000:]
        assert not [line for line in stderr.splitlines() if "Traceback" in line], stderr[-2000:]
        # The operator removes the files: the node starts (without the attacker) and goes on.
        for filler in (netdir / "wallets").glob("filler*"):
            filler.unlink()
        a.node.start()
        assert a.node.rpc.getblockcount() == 0
        a.node.rpc.generatetoaddress(1, TEST_ADDRESS)
        assert a.node.rpc.getblockcount() == 1
    finally:
        _stop_nodes_under(home_base)
        subprocess.run(["umount", "-l", str(netdir)], check=False)


def test_a_wallet_that_fills_wallets_on_its_own_filesystem_does_not_stop_the_node(home_base: Path) -> None:
    """The remedy docs/sandbox.md gives: wallets/ on a filesystem of its own (a 16 MiB tmpfs
    mounted there). The same attack fills it to the last byte; the node's chain is elsewhere,
    so it goes on mining, and the wallet process, whose own writes now fail, stays up."""
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs for wallets/ (needs root)")
    a = AttackedNode(home_base, wallet=attacks.WALLET_FILL_DISK)
    walletdir = a.node.netdatadir / "wallets"
    walletdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "cleancoin-attack", str(walletdir)],
                   check=True)
    try:
        a.config["wallet_delay"] = 0.5
        a.start()
        pid = wallet_pid(a.node)
        wait_until(lambda: free_bytes(str(walletdir)) < 8192, 60, what="the wallet process to fill wallets/")
        a.node.rpc.generatetoaddress(3, TEST_ADDRESS)
        assert a.node.rpc.getblockcount() == 3
        assert wallet_pid(a.node) == pid
        assert a.node.stop() == 0
    finally:
        _stop_nodes_under(home_base)
        subprocess.run(["umount", "-l", str(walletdir)], check=False)


def test_sql_planted_by_the_wallet_process_never_runs_in_an_unconfined_cleancoind(home_base: Path) -> None:
    """A database file carries SQL that SQLite runs in the program that opens it. The
    confined wallet process plants a trigger in its own wallet.sqlite (it may write the
    file); the operator then runs CleanCoind, the drop-in executable, unconfined, on the same
    datadir. Before components/common/sqlite_schema.py, CleanCoind loaded the wallet and ran
    the trigger on the first label it wrote: the wallet process's SQL executed outside its
    sandbox. Now loadwallet refuses the file, naming the trigger, and CleanCoind goes on."""
    a = AttackedNode(home_base, wallet=attacks.PLANT_SQL, variables={"wallet": "w"})
    a.node.start()
    a.node.rpc.createwallet("w")
    assert a.node.stop() == 0
    a.start()
    assert a.result("wallet")["plant-trigger"]["detail"] == "planted in its own wallet file"
    assert a.node.stop() == 0
    classic = resolve_executable("CleanCoind")
    args = [classic, *a.node.args()[1:]]
    assert "-sandboxlearn" not in " ".join(args)
    a.node.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=open(a.node.datadir / "stderr.txt", "ab"))
    try:
        a.node.wait_for_rpc()
        try:
            a.node.rpc.loadwallet("w")
            a.node.rpc.getnewaddress("operator label")
            raise AssertionError("CleanCoind loaded the planted wallet and wrote to it")
        except RpcError as exc:
            assert "trigger 'planted'" in exc.message and "Not opened" in exc.message, exc
        assert a.node.rpc.getblockcount() == 0        # CleanCoind goes on
        assert a.node.stop() == 0
    finally:
        _stop_nodes_under(home_base)
    import sqlite3
    conn = sqlite3.connect(a.node.netdatadir / "wallets" / "w" / "wallet.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM meta WHERE key = 'planted'").fetchone()[0] == 0
    finally:
        conn.close()


def _classic_on(a: AttackedNode) -> None:
    """Start CleanCoind, unconfined, on the attacked node's datadir (as an operator may)."""
    classic = resolve_executable("CleanCoind")
    args = [classic, *a.node.args()[1:]]
    assert "-sandboxlearn" not in " ".join(args)
    a.node.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=open(a.node.datadir / "stderr.txt", "ab"))
    a.node.wait_for_rpc()


@pytest.mark.parametrize("plant, logged", [
    (attacks.PLANT_SETTINGS, "Unable to parse settings file"),
    (attacks.PLANT_SETTINGS_NAMES, "Skipping -wallet name that cannot name a wallet: '../x'"),
], ids=["nested", "names"])
def test_a_settings_file_the_wallet_process_planted_stops_no_start(home_base: Path, plant: str, logged: str) -> None:
    """wallets/settings.json (the wallets loaded at start) lies where the confined wallet
    process writes; its own next start reads it, and so do CleanCoind and CleanCoin-qt,
    unconfined, on the same datadir. On the old code a file nested 200000 deep made the
    wallet process fail to load (RecursionError: CleanCoin-node then stopped, "did not come
    up") and CleanCoind's start fail the same way. Now it is refused as a corrupt settings
    file is (logged; no wallet loaded from it), and both start. Before 12-07 a well-formed
    list naming "../x" or "debug.log" (names no wallet can have) stopped both starts the same
    way ("Failed to load wallet '../x': Invalid wallet name"); now each such name is skipped
    with a warning, as a listed wallet that no longer exists is."""
    a = AttackedNode(home_base, wallet=plant)
    a.start()
    assert a.result("wallet", timeout=60)["plant-settings"]["escaped"] is False
    assert a.node.rpc.listwallets() == []
    wallet_log = a.node.netdatadir / "wallets" / "debug.log"
    assert logged in wallet_log.read_text()
    assert a.node.stop() == 0
    try:
        _classic_on(a)
        assert a.node.rpc.getblockcount() == 0
        assert logged in a.node.debug_log()
        assert a.node.stop() == 0
    finally:
        _stop_nodes_under(home_base)


def test_blocks_the_confined_node_plants_in_its_chain_database_are_not_believed_at_the_next_start(
        home_base: Path) -> None:
    """Attack: the confined node, compromised, stores two blocks in its chain database
    (attacks.NODE_PLANTS_BLOCKS): one on the tip without proof of work, one forking five below
    the tip with a made-up chain work of 2**200. Before 12-06 the next start believed the
    stored chain work and reorganised to the planted branch (the tip fell from height 10 to
    6), and would have connected the block without proof of work on top of it. CleanCoind
    loads the same file the same way (tests/test_chain_tampered.py). Now every entry is
    checked against its parent at load, and its work computed: the real tip stays, the block
    without proof of work is marked invalid and said so in debug.log."""
    a = AttackedNode(home_base, node=attacks.NODE_PLANTS_BLOCKS)
    a.config["node_delay"] = 0.5
    a.start()
    node = a.node
    node.rpc.generatetoaddress(10, TEST_ADDRESS)
    tip = node.rpc.getbestblockhash()
    (node.netdatadir / "plant.now").touch()
    results = a.result("node", timeout=60)
    nopow, side = results["plant-blocks"]["detail"].split()
    assert node.stop() == 0
    node.start()
    try:
        assert (node.rpc.getblockcount(), node.rpc.getbestblockhash()) == (10, tip)
        tips = {t["hash"]: t["status"] for t in node.rpc.getchaintips()}
        assert tips[nopow] == "invalid" and tips[side] in ("valid-headers", "valid-fork"), tips
        log = (node.netdatadir / "debug.log").read_text()
        assert f"block index entry {nopow} fails its header checks (high-hash" in log
        assert "block index entries stored a height or chain work their headers do not give" in log
    finally:
        node.stop()


class _SecretService:
    """A stand-in for an unauthenticated local service (Redis): it serves `secret` to every
    TCP client on 127.0.0.1 and ::1, and counts the UDP datagrams that reach it on 127.0.0.1.
    Kernel-chosen ports: outside the range the framework names to the node (-allowlocalpeer)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.served = 0
        self.datagrams: list[bytes] = []
        self.tcp4 = self._listen(socket.AF_INET, "127.0.0.1")
        self.tcp6 = self._listen(socket.AF_INET6, "::1")
        # As a Redis bound to every address (IPv4 and IPv6: "::" takes both here): reachable
        # on each of the host's own addresses.
        self.tcp_any = self._listen(socket.AF_INET6, "::")
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        threading.Thread(target=self._receive, daemon=True).start()

    def _listen(self, family: int, host: str) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(8)
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        return sock

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.served += 1
            with conn:
                conn.sendall(self.secret)

    def _receive(self) -> None:
        while True:
            try:
                self.datagrams.append(self.udp.recv(512))
            except OSError:
                return

    def ports(self) -> dict[str, int]:
        return {"tcp4_port": self.tcp4.getsockname()[1], "tcp6_port": self.tcp6.getsockname()[1],
                "udp_port": self.udp.getsockname()[1], "any_port": self.tcp_any.getsockname()[1]}

    def close(self) -> None:
        for sock in (self.tcp4, self.tcp6, self.tcp_any, self.udp):
            sock.close()


def test_the_confined_node_cannot_reach_services_on_the_hosts_loopback(home_base: Path) -> None:
    """Attacker code in the confined node connects to TCP services on 127.0.0.1, ::1,
    0.0.0.0 and ::ffff:127.0.0.1, and sends a UDP datagram to 127.0.0.1, none of which the
    operator named as a peer; every attempt is refused and the service sees nothing. Since
    12-07 it also asks its broker for the loopback in the spellings libc takes as numbers
    (127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1; with a trailing dot it is a name that does
    not resolve), for the host's own non-loopback addresses (a service bound to every
    address; IPv4 ones plainly and IPv4-mapped, since 12-07 the IPv6 ones too), and for the
    link-local cloud metadata address: each refused by the rule (they were on the code before too: no escape found). Since 12-07 also the
    IPv6 forms that carry the loopback or an own address to a NAT64 gateway, a SIIT
    translator, a 6to4 or a Teredo relay (64:ff9b::7f00:1, ::ffff:0:7f00:1, 2002:7f00:1::1,
    a Teredo client 127.0.0.1, 64:ff9b::<own address>) and 0.1.2.3 (0.0.0.0/8): before, the
    broker tried each as a remote peer (here none connected: no gateway on this host)."""
    secret = "redis-secret-" + uuid.uuid4().hex[:8]
    service = _SecretService(secret.encode())
    own = sorted(str(a) for a in own_addresses()
                 if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                 and not a.is_loopback and not a.is_link_local)
    # A local peer the operator named (in the range the framework passes as -allowlocalpeer).
    allowed = socket.socket()
    allowed.bind(("127.0.0.1", free_port()))
    allowed.listen(4)
    served_allowed: list[int] = []

    def serve_allowed() -> None:
        while True:
            try:
                conn, _ = allowed.accept()
            except OSError:
                return
            served_allowed.append(1)
            with conn:
                conn.sendall(b"allowed-peer-hello")
    threading.Thread(target=serve_allowed, daemon=True).start()
    try:
        a = AttackedNode(home_base, node=attacks.LOOPBACK,
                         variables={"secret": secret, "allowed_port": allowed.getsockname()[1], "own": own,
                                    **service.ports()})
        a.start()
        results = a.result("node")
        own4 = [a for a in own if ":" not in a]
        assert escapes(results) == {}, results
        assert service.served == 0
        assert service.datagrams == []
        # The broker answered each with the rule's refusal, and a malformed request with an
        # error; and it still connects the node to the endpoint the operator named.
        assert "broker-channel" not in results, results      # found, and asked
        assert "refused by the connect rule" in results["broker-127.0.0.1"]["detail"], results
        assert "refused by the connect rule" in results["broker-::ffff:127.0.0.1"]["detail"], results
        for name in ("broker-127.1", "broker-2130706433", "broker-0x7f.0.0.1", "broker-0177.0.0.1",
                     "broker-169.254.169.254", *(f"broker-own-{a}" for a in own),
                     *(f"broker-own-::ffff:{a}" for a in own4), *(f"broker-own-nat64-{a}" for a in own4),
                     "broker-nat64-127.0.0.1", "broker-siit-127.0.0.1", "broker-6to4-127.0.0.1",
                     "broker-teredo-127.0.0.1", "broker-0.1.2.3"):
            assert "refused by the connect rule" in results[name]["detail"], (name, results)
        assert results["broker-malformed"]["detail"] == "codes [1, 1, 1, 1]", results
        assert "read b'allowed-peer-hello'" in results["broker-named-endpoint"]["detail"], results
        assert served_allowed == [1]        # through the broker; the direct try was refused
        # The node still serves, with its broker.
        assert a.node.rpc.getblockcount() == 0
    finally:
        service.close()
        allowed.close()


def test_the_confined_node_cannot_read_cloud_metadata_through_its_broker(home_base: Path, tmp_path: Path) -> None:
    """Attacker code in the confined node on a cloud VM (stand-ins: cloud_services.py) asks
    its connect broker for AWS's IPv6 metadata service fd00:ec2::254, Alibaba's
    100.100.100.200, Azure's WireServer 168.63.129.16, Google's fd20:ce::254, Oracle's
    192.0.0.192 and 169.254.169.254, and sends each an HTTP request for the instance's
    credentials. Before 12-07 the broker connected all but the link-local one, and the node
    read the credentials (five escapes). Now each is refused by the connect rule; the
    ordinary remote peer beside them is connected and answers. The same with the IPv6
    spellings a NAT64 gateway, a SIIT translator, a 6to4 or a Teredo relay carries on to a
    service (cloud_services.SPELLINGS): until 12-07 the broker connected all five and the
    node read the credentials."""
    reason = cloud_services.skip_reason()
    if reason:
        pytest.skip(reason)
    cloud = cloud_services.CloudServices(tmp_path)
    try:
        a = AttackedNode(home_base, node=attacks.METADATA,
                         variables={"secret": cloud.secret, "services": cloud_services.ALL,
                                    "peer": cloud_services.PEER})
        a.start()
        results = a.result("node", timeout=60)
        assert "found: True" in results["broker-channel"]["detail"], results
        escaped = {name: detail[-90:] for name, detail in escapes(results).items()}
        assert escaped == {}, f"read the credentials at: {escaped}"
        for name in cloud_services.ALL:
            assert "refused by the connect rule" in results[f"metadata-{name}"]["detail"], (name, results)
        assert cloud.secret in results["metadata-peer"]["detail"], results      # the control
        assert {a: n for a, n in cloud.connections().items() if n} == {cloud_services.PEER: 1}
    finally:
        cloud.close()


def test_the_confined_node_gets_no_other_broker_from_its_zygote(home_base: Path) -> None:
    """Since 12-07 the zygote also forks the node's connect broker, once, when the node
    configures it before it confines itself. Attacker code in the confined node, on the
    zygote's request socket it holds, asks for a second broker with a wider rule (a second
    configure), for the broker by name, for a wallet with the broker's code or policy, and
    for the broker to be killed, and signals it itself: each refused, no process takes the
    socket it passed, and the one broker lives on, confined, not the node's child (as a fork
    would be) but the zygote's, its subreaper, which reaps it (since 12-07: nobody's before,
    a zombie once ended where PID 1 does not reap). On main the zygote started no broker at all (the same requests were refused as
    unknown there too)."""
    a = AttackedNode(home_base, node=attacks.ZYGOTE_BROKER)
    a.config["node_delay"] = 0.5
    a.start()
    info = a.node.rpc.getprocessinfo()["processes"]
    node_pid, broker = info[0]["pid"], info[0]["connect_broker"]
    zygote = [p["pid"] for p in info if "zygote" in p["name"]]
    wait_until(lambda: a.node.rpc.getprocessinfo()["processes"][0]["connect_broker"]["status"] == "ready",
               what="the broker's start-up word")
    (a.node.netdatadir / "targets.json").write_text(json.dumps({"broker": broker["pid"]}))
    results = a.result("node", timeout=90)
    assert escapes(results) == {}, results
    assert "the zygote's socket: True" in results["control-zygote-answers"]["detail"], results
    for name in ("second-configure-with-a-wider-broker", "spawn-the-broker", "spawn-the-broker-on-a-stream",
                 "spawn-a-wallet-with-the-brokers-code", "spawn-a-wallet-with-the-brokers-policy",
                 "spawn-a-wallet-as-detached"):
        assert results[name]["detail"].endswith("end of file"), results[name]
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{broker['pid']}/status").read_text().splitlines()
                  if ":\t" in line)
    # The zygote's child (its subreaper reaps it, since 12-07), never the node's; and the node's
    # direct signal to it is refused (Landlock's scope), next to one to itself.
    assert int(status["PPid"]) in zygote and int(status["PPid"]) != node_pid, (status["PPid"], node_pid, zygote)
    assert results["control-signal-self"]["detail"] == "SIGCONT to itself delivered", results
    assert results["signal-the-broker"]["detail"] == "Operation not permitted", results
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1", status
    # What it inherits of the zygote (a fork of it): no capability in any set, not even the
    # bounding one; no descriptor but its channel, its view of the host's addresses and stdio
    # on /dev/null (not the zygote's request socket, its schema files or the node's output);
    # none of the zygote's environment, and limits of its own policy.
    assert {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0), status
    fds = {fd: os.readlink(f"/proc/{broker['pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{broker['pid']}/fd")}
    assert sorted(t for t in fds.values() if not t.startswith("socket:")) == sorted(
        ["/dev/null"] * 3 + [f"/proc/{broker['pid']}/net/{name}" for name in ("fib_trie", "if_inet6", "ipv6_route")]), fds
    assert len([t for t in fds.values() if t.startswith("socket:")]) == 1, fds
    environ = Path(f"/proc/{broker['pid']}/environ").read_bytes()
    assert b"=" not in environ, environ[:300]      # no NAME=value left (the title may lie there)
    limits = Path(f"/proc/{broker['pid']}/limits").read_text()
    assert re.search(r"Max file size\s+0\s+0", limits) and re.search(r"Max open files\s+64\s+64", limits), limits
    session = Path(f"/proc/{node_pid}/stat").read_text().rsplit(")", 1)[1].split()[3]
    # Live ones only: an earlier test's broker whose zygote ended before it went to PID 1, and
    # stays a zombie where PID 1 does not reap (containers).
    brokers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _comm(int(pid)) == "connect-broker"
               and _session(int(pid)) == session and _state(int(pid)) != "Z"]
    assert brokers == [str(broker["pid"])], brokers
    assert a.node.rpc.getprocessinfo()["processes"][0]["connect_broker"] == {**broker, "status": "ready"}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stat_field(pid: int, index: int) -> str:
    """Field `index` after the command name of /proc/PID/stat (0: state, 3: session)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index]
    except OSError:
        return ""


def _session(pid: int) -> str:
    return _stat_field(pid, 3)


def _state(pid: int) -> str:
    return _stat_field(pid, 0)
