"""A small functional-test framework: real node processes on regtest.

    node = TestNode(0, tmp_path)            # its own datadir, free P2P and RPC ports
    node.start()                            # waits until RPC answers
    node.rpc.getblockcount()                # any RPC method, via the cookie
    node.stop()                             # `stop` RPC, then waits for exit status 0
    node.kill()                             # SIGKILL (crash tests)

Which node executable runs comes from the environment, like Bitcoin Core's BITCOIND:

    CleanCoinD=CleanCoin-node pytest tests/functional      # (CLEANCOIND works too)

The value is an executable name, looked up first next to the running interpreter (the venv's
bin/, so the installed package under test is what runs, whatever PATH holds), then on PATH;
or a path (anything with a "/"). Unset or empty: `CleanCoind`. The resolved executable is
launched directly. Tests ask which kind they run with `is_multiprocess()` (CleanCoin-node:
the wallet in its own sandboxed process) and `NODE_EXECUTABLE` (the absolute path); the
shared tests stay shared, and a test that only makes sense for one kind skips with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cleancoin.components.common.chainparams import REGTEST
from cleancoin.components.common.keys import PrivateKey, sign_transaction
from cleancoin.components.common.primitives import OutPoint, Transaction, TxIn, TxOut
from cleancoin.components.rpc.client import RpcClient, RpcTransportError

# tests/ holds the helpers the unit tests share (ports.py); crash_campaign.py runs this
# module outside pytest, so the directory is put on the path here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ports import free_port, port_range  # noqa: E402,F401 - re-exported: the functional tests import it from here
from process_tree import child_pids  # noqa: E402,F401 - re-exported: the functional tests import it from here

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

#: Environment variables naming the node executable, first match wins (the exact spelling first).
NODE_ENV_VARS = ("CleanCoinD", "CLEANCOIND")
DEFAULT_NODE = "CleanCoind"
MULTIPROCESS_NODE = "CleanCoin-node"


def node_executable_setting() -> str:
    """The executable the environment asks for (a name or a path), or the default."""
    for var in NODE_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return DEFAULT_NODE


def resolve_executable(value: str) -> str:
    """An absolute path for `value`: a path as given (anything with a "/"), or a name looked
    up next to sys.executable first (the venv's bin/; not symlink-resolved), then on PATH.
    RuntimeError when there is no such executable."""
    if os.sep in value or (os.altsep and os.altsep in value):
        path = os.path.abspath(os.path.expanduser(value))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise RuntimeError(f"node executable {value!r} (from {'/'.join(NODE_ENV_VARS)}) "
                           f"is not an executable file")
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), value)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(value)
    if found:
        return os.path.abspath(found)
    raise RuntimeError(f"node executable {value!r} (from {'/'.join(NODE_ENV_VARS)}, default "
                       f"{DEFAULT_NODE}) not found in {os.path.dirname(sys.executable)} or on PATH")


#: The node executable every TestNode runs (absolute path), fixed when the module loads.
NODE_EXECUTABLE = resolve_executable(node_executable_setting())


def is_multiprocess() -> bool:
    """True when the tests run CleanCoin-node (node and wallet in separate processes)."""
    return os.path.basename(NODE_EXECUTABLE) == MULTIPROCESS_NODE


#: Set (to anything) to run the node-logic tests (node_logic_only) on CleanCoin-node too.
ALL_EXECUTABLES_ENV = "CLEANCOIN_TEST_NODE_LOGIC_ON_BOTH"


def node_logic_only() -> Any:
    """A pytest mark for a test of the node's own logic (P2P download, stall and race rules):
    the same code runs in CleanCoind and in CleanCoin-node's node process, so the test runs
    against CleanCoind only and skips on CleanCoin-node (since 12-07: these files took about
    330 s of each pass). A test of such a file that also exercises something of
    CleanCoin-node's own (an outbound dial through its connect broker, its confined node
    process's syscalls on a long download) stays unmarked and runs on both.
    CLEANCOIN_TEST_NODE_LOGIC_ON_BOTH=1 runs the marked ones on CleanCoin-node as well."""
    import pytest
    return pytest.mark.skipif(is_multiprocess() and not os.environ.get(ALL_EXECUTABLES_ENV),
                              reason="the node's P2P logic, the same code in both executables: "
                                     f"run on {DEFAULT_NODE} (set {ALL_EXECUTABLES_ENV}=1 to run it here too)")


#: A learning run of the whole suite (docs/audit.md): each CleanCoin-node the tests start
#: gets -sandboxlearn=DIR. The nodes themselves never read this variable.
LEARN_DIR = os.environ.get("CLEANCOIN_SANDBOX_LEARN")


def node_command(*args: str) -> list[str]:
    """The command line running the node executable under test with `args`."""
    learn = [f"-sandboxlearn={LEARN_DIR}"] if LEARN_DIR and is_multiprocess() else []
    return [NODE_EXECUTABLE, *learn, *args]

#: A key the tests mine to, so they can spend what they mined.
TEST_KEY = PrivateKey(hashlib.sha256(b"functional test key").digest())
TEST_ADDRESS = TEST_KEY.public_key.address(REGTEST)
OTHER_KEY = PrivateKey(hashlib.sha256(b"functional test key 2").digest())
OTHER_ADDRESS = OTHER_KEY.public_key.address(REGTEST)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class _Rpc:
    """Attribute-style RPC: node.rpc.getblock(h, 2)."""

    def __init__(self, client: RpcClient) -> None:
        self._client = client

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **named: Any) -> Any:
            return self._client.call(method, *args, **named)
        return call


def local_peers_arg() -> str:
    """-allowlocalpeer for the ports this test process's nodes listen on (free_port's range):
    the nodes connect to each other on 127.0.0.1 with addnode at run time, which the connect
    rule refuses for endpoints not named at start (components/node/connect_rule.py).
    Kernel-chosen ports (the attack tests' stand-in services) lie outside that range."""
    low, high = port_range()
    return f"-allowlocalpeer=127.0.0.1:{low}-{high}"


class TestNode:
    """One node process (NODE_EXECUTABLE) with its own datadir under `base`."""

    __test__ = False       # not a pytest test class

    def __init__(self, index: int, base: Path, extra_args: Sequence[str] = (),
                 new_session: bool = False) -> None:
        self.index = index
        # Its own session and process group, so that a crash test can SIGKILL the whole
        # group (node, zygote) without hitting the test itself.
        self.new_session = new_session
        self.datadir = base / f"node{index}"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.p2p_port = free_port()
        self.rpc_port = free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.client = RpcClient("127.0.0.1", self.rpc_port, cookie_path=str(self.cookie_path),
                                timeout=60)
        self.rpc = _Rpc(self.client)

    @property
    def netdatadir(self) -> Path:
        return self.datadir / "regtest"

    @property
    def cookie_path(self) -> Path:
        return self.netdatadir / ".cookie"

    @property
    def p2p_addr(self) -> str:
        return f"127.0.0.1:{self.p2p_port}"

    def args(self, extra: Sequence[str] = ()) -> list[str]:
        return node_command("-regtest", f"-datadir={self.datadir}", f"-port={self.p2p_port}",
                            f"-rpcport={self.rpc_port}", "-bind=127.0.0.1", "-printtoconsole=0",
                            local_peers_arg(), *self.extra_args, *extra)

    def start(self, extra: Sequence[str] = (), wait: bool = True,
              env: dict[str, str] | None = None) -> None:
        assert self.process is None, "already running"
        log = open(self.datadir / "stderr.txt", "ab")
        self.process = subprocess.Popen(self.args(extra), stdout=subprocess.DEVNULL, stderr=log,
                                        env=env, start_new_session=self.new_session)
        log.close()
        if wait:
            self.wait_for_rpc()

    def wait_for_rpc(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"node{self.index} exited with {self.process.returncode}: "
                                     f"{(self.datadir / 'stderr.txt').read_text()[-2000:]}")
            if self.cookie_path.exists():
                try:
                    self.client.call("getblockcount")
                    return
                except (RpcTransportError, OSError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node{self.index}: RPC not up after {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """`stop` RPC, then wait; returns the exit status."""
        assert self.process is not None
        try:
            self.rpc.stop()
        except (RpcTransportError, OSError):
            pass
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def kill_group(self) -> None:
        """SIGKILL the node's whole process group (a node made with new_session=True)."""
        assert self.process is not None and self.new_session
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def cleanup(self) -> None:
        """Stop if still running (teardown); kill when it does not stop."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.stop(10)
                return
            except Exception:
                self.kill()
        self.process = None

    def debug_log(self) -> str:
        path = self.netdatadir / "debug.log"
        return path.read_text() if path.exists() else ""


def connect_nodes(a: TestNode, b: TestNode) -> None:
    """a dials b (addnode onetry) and both see the connection."""
    before_a, before_b = a.rpc.getconnectioncount(), b.rpc.getconnectioncount()
    a.rpc.addnode(b.p2p_addr, "onetry")
    wait_until(lambda: a.rpc.getconnectioncount() > before_a and b.rpc.getconnectioncount() > before_b,
               what="connection")


def sync_blocks(nodes: Sequence[TestNode], timeout: float = 30.0) -> str:
    """Wait until every node has the same tip; returns it."""
    def same() -> Any:
        tips = {n.rpc.getbestblockhash() for n in nodes}
        return tips.pop() if len(tips) == 1 else None
    return wait_until(same, timeout, what="block sync")


def spend_coinbase(node: TestNode, height: int, to_address_pkh: bytes, fee: int = 10_000,
                   key: PrivateKey = TEST_KEY) -> Transaction:
    """A signed transaction spending the coinbase of the block at `height` (which paid to
    `key`) to `to_address_pkh`, all but `fee`."""
    block = node.rpc.getblock(node.rpc.getblockhash(height), 2)
    cb = block["tx"][0]
    value = int(cb["vout"][0]["value"] * 100_000_000)
    prev = OutPoint(bytes.fromhex(cb["txid"])[::-1], 0)
    tx = Transaction(2, (TxIn(prev),), (TxOut(value - fee, to_address_pkh),), 0)
    return sign_transaction(tx, [key])


def end_process(proc: "subprocess.Popen[bytes]", timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if `proc` (a wallet process a test started on its own) is still
    there after `timeout`; its pipes are drained either way."""
    proc.terminate()
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Until process `pid` no longer exists (a zombie counts as gone)."""
    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"
    wait_until(gone, timeout, what=f"process {pid} to end")


#: A second RPC user for the -rpcwhitelist tests: its rpcauth line and password.
WATCHER, WATCHER_PASSWORD = "watcher", "watcher's password"
_WATCHER_SALT = "00112233445566778899aabbccddeeff"
WATCHER_RPCAUTH = (f"{WATCHER}:{_WATCHER_SALT}$"
                   + hmac.new(_WATCHER_SALT.encode(), WATCHER_PASSWORD.encode(), hashlib.sha256).hexdigest())


def post_json_rpc(port: int, body: object, user: str, password: str, wallet: str = "",
                  path: str | None = None) -> tuple[int, bytes]:
    """One raw JSON-RPC POST to 127.0.0.1:`port` as `user`: (HTTP status, body), whatever the
    status (RpcClient raises on the ones the whitelist tests look at). `body` is sent as JSON,
    or as it is when it is bytes; `path` replaces the "/" or "/wallet/NAME" the call goes to."""
    import json
    import urllib.error
    import urllib.request
    from base64 import b64encode
    url = f"http://127.0.0.1:{port}" + (path or "/" + (f"wallet/{wallet}" if wallet else ""))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def rss(pid: int) -> int:
    """The process's resident set size in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime, stime


class CountingListener:
    """A listening socket that accepts, counts and closes every client in a thread of its
    own: the stand-in for a local service an attack must not reach (`accepted` stays 0)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def mine_big_block(n: "TestNode", outputs: int) -> str:
    """Mines 101 blocks, then a block holding one transaction of `outputs` outputs (24,000:
    a 672 KB block) spending the first coinbase; its hash. The cost tests' large reply."""
    n.rpc.generatetoaddress(101, TEST_ADDRESS)
    coinbase = n.rpc.getblock(n.rpc.getblockhash(1), 2)["tx"][0]
    value = int(coinbase["vout"][0]["value"] * 100_000_000)
    pkh = TEST_KEY.public_key.pkh
    tx = Transaction(2, (TxIn(OutPoint(bytes.fromhex(coinbase["txid"])[::-1], 0)),),
                     tuple(TxOut((value - 100_000) // outputs, pkh) for _ in range(outputs)), 0)
    return str(n.rpc.generateblock(TEST_ADDRESS, [sign_transaction(tx, [TEST_KEY]).serialized.hex()])["hash"])


@contextmanager
def peak_rss_growth(pid: int) -> Iterator[list[int]]:
    """Samples the process's RSS every 2 ms; yields [the largest growth seen so far] (a peak
    between two calls of a test would go unseen by reading RSS after them)."""
    base = rss(pid)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss(pid) - base)
            except (OSError, AssertionError):      # the process is gone: the caller's checks fail
                return
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(5)


def memory_holds(pid: int, needles: Sequence[bytes], skip: Iterable[str] = ()) -> list[bytes]:
    """Which of `needles` lie in `pid`'s readable memory (/proc/PID/mem; root for a process
    that is not dumpable), leaving out the mappings whose address range ("start-end", as
    /proc/PID/maps prints it) is in `skip`."""
    skipped = set(skip)
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if fields[0] in skipped or "r" not in fields[1] or end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except OSError:
                continue
            found.update(n for n in needles if n in chunk)
    return sorted(found)
