"""restrict_self and filesystem.hide on the real kernel: a forked child restricts itself, then
shows what is denied next to what is allowed. Nothing is mocked.

Every test forks: restrict_self cannot be undone, and the pytest process must stay free.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cleancoin.sandbox.errors import EnforcementError, PolicyErrors
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from cleancoin.sandbox.self_restrict import restrict_self
from ports import free_port as _free_port

BASE = shipped_policy("base/python")


def self_restricted(policy: str, variables: Mapping[str, str], fn: Callable[[], Any],
                    before: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Fork; the child runs `before`, restrict_self(policy, variables), then `fn`. The pipe
    to the parent is the one descriptor it keeps (the others point at /dev/null after).

    Returns {"result": ...} or {"error": {"step", "reason"}} (an EnforcementError) or
    {"exception": traceback}.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            if before is not None:
                before()
            try:
                report = restrict_self(policy, variables, keep_fds=[write_end])
            except EnforcementError as exc:
                message: dict[str, Any] = {"error": exc.as_dict()}
            else:
                message = {"result": fn(), "report": report.to_dict()}
        except BaseException:  # noqa: BLE001 - shown by the parent
            message = {"exception": traceback.format_exc()}
        os.write(write_end, json.dumps(message).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert chunks, f"the child sent nothing (wait status {status:#x})"
    message = json.loads(b"".join(chunks))
    if "exception" in message:
        pytest.fail(f"the child raised:\n{message['exception']}")
    return message


def _errno_of(call: Callable[[], object]) -> str:
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _create(path: str) -> None:
    with open(path, "x") as handle:
        handle.write("x")


def _fork_then_exec() -> str:
    """fork, then execve /bin/true in the child (a seccomp kill ends only the child): the
    component policies allow neither, so this is "EPERM" (no fork) in them."""
    try:
        pid = os.fork()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if pid == 0:
        try:
            os.execv("/bin/true", ["/bin/true"])
        except OSError as exc:
            os._exit(100 + (exc.errno or 0) % 100)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


@pytest.fixture
def hide_tree(tmp_path: Path) -> dict[str, str]:
    """datadir/{hidden/secret, sibling/file} and a tmpdir, all under tmp_path."""
    datadir = tmp_path / "data"
    (datadir / "hidden").mkdir(parents=True)
    (datadir / "hidden" / "secret").write_text("key material")
    (datadir / "sibling").mkdir()
    (datadir / "sibling" / "file").write_text("public")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return {"datadir": str(datadir), "tmpdir": str(tmpdir)}


def _self_policy(write_policy, extra: str = "") -> str:  # noqa: ANN001 - fixture
    return write_policy(f'''
        [namespaces]
        pid = false
        [filesystem]
        write = ["${{datadir}}"]
        hide = ["${{datadir}}/hidden"]
        {extra}
        ''')


def test_restrict_self_hides_a_directory_and_confines_writes(
        base_sandbox, write_policy, hide_tree, outside_dir) -> None:  # noqa: ANN001
    policy = _self_policy(write_policy)
    data = hide_tree["datadir"]

    def inside() -> dict[str, object]:
        return {
            "list hidden": sorted(os.listdir(f"{data}/hidden")),
            "read hidden": _errno_of(lambda: _read(f"{data}/hidden/secret")),
            "create in hidden": _errno_of(lambda: _create(f"{data}/hidden/new")),
            "read sibling": _read(f"{data}/sibling/file").decode(),
            "write inside": _errno_of(lambda: _create(f"{data}/created")),
            "write outside": _errno_of(lambda: _create(f"{outside_dir}/created")),
            "threads": threading.active_count(),
        }

    message = self_restricted(policy, hide_tree, inside)
    assert "result" in message, message
    result = message["result"]
    # Denied: the tmpfs is empty and read-only, though Landlock grants ${datadir} in full.
    assert result["list hidden"] == []
    assert result["read hidden"] == "ENOENT"
    assert result["create in hidden"] == "EROFS"
    # Allowed: the sibling of the hidden directory.
    assert result["read sibling"] == "public"
    # Inside the datadir yes; outside is not even in the view.
    assert result["write inside"] == "ok"
    assert result["write outside"] == "ENOENT"
    assert not os.path.exists(f"{outside_dir}/created")
    # The host still sees the hidden files: the cover lives in the child's mount namespace.
    assert Path(data, "hidden", "secret").read_text() == "key material"
    report = message["report"]
    assert all(m["status"] == "fully enforced" for m in report["mechanisms"].values()), report
    assert any(f"hidden: {data}/hidden" in d for d in report["mechanisms"]["namespaces"]["details"])
    assert set(report["namespaces"]) == {"user", "mount", "ipc", "uts"}
    skipped = {s["step"] for s in report["steps"] if s["status"] == "skipped"}
    assert {"signals", "die-with-parent", "new-session", "environment", "pid namespace"} <= skipped


def test_restrict_self_refuses_a_pid_namespace(base_sandbox, write_policy, hide_tree) -> None:  # noqa: ANN001
    # base/python asks for a pid namespace; a policy that keeps it cannot restrict a process.
    policy = write_policy('[filesystem]\nwrite = ["${datadir}"]\n')
    message = self_restricted(policy, hide_tree, lambda: "restricted anyway")
    assert message["error"]["step"] == "namespaces", message
    assert "pid namespace" in message["error"]["reason"]
    assert "namespaces.pid" in message["error"]["reason"]


def test_restrict_self_refuses_a_second_thread(base_sandbox, write_policy, hide_tree) -> None:  # noqa: ANN001
    policy = _self_policy(write_policy)
    stop = threading.Event()

    def start_thread() -> None:
        threading.Thread(target=stop.wait, daemon=True).start()

    message = self_restricted(policy, hide_tree, lambda: "restricted anyway", before=start_thread)
    assert message["error"]["step"] == "single-thread check", message
    assert "2 threads" in message["error"]["reason"]


def test_restrict_self_reports_policy_errors_as_a_step(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[filesystem]\nwirte = ["/x"]\n')
    with pytest.raises(EnforcementError) as caught:
        restrict_self(str(broken), {})   # fails while loading: nothing is applied
    assert caught.value.step == "policy"
    assert f"{broken}:2: filesystem.wirte" in caught.value.reason
    with pytest.raises(EnforcementError) as caught:
        restrict_self("no-such-policy", {})
    assert caught.value.step == "policy"


def test_explain_lists_hidden_paths() -> None:
    from cleancoin.sandbox.explain import explain
    files = explain(load_policy(shipped_policy("node"))).sections["Files"]
    assert any(line.startswith("cannot see or touch anything beneath: ${datadir}/wallets")
               for line in files), files


def test_hide_needs_a_mount_namespace(tmp_path: Path) -> None:
    policy = tmp_path / "hide.toml"
    policy.write_text('[namespaces]\nmount = false\n\n[filesystem]\nhide = ["/srv"]\n')
    with pytest.raises(PolicyErrors) as caught:
        load_policy(str(policy))
    assert str(caught.value) == (f"{policy}:5: filesystem.hide: hide needs namespaces.mount = true "
                                 "(the covering tmpfs lives in the component's mount namespace)")


def test_hide_in_a_launched_child(base_sandbox, write_policy, run_in_sandbox, hide_tree,
                                  outside_dir) -> None:  # noqa: ANN001
    policy = write_policy('''
        [namespaces]
        private_tmp = true
        [filesystem]
        write = ["${datadir}"]
        hide = ["${datadir}/hidden", { path = "${datadir}/absent", optional = true }]
        ''')
    data = hide_tree["datadir"]

    def inside() -> dict[str, object]:
        return {"list hidden": os.listdir(f"{data}/hidden"),
                "read hidden": _errno_of(lambda: _read(f"{data}/hidden/secret")),
                "read sibling": _read(f"{data}/sibling/file").decode(),
                "write outside": _errno_of(lambda: _create(f"{outside_dir}/created"))}

    result, code, report = run_in_sandbox(policy, hide_tree, inside)
    assert code == 0
    assert result == {"list hidden": [], "read hidden": "ENOENT", "read sibling": "public",
                      "write outside": "ENOENT"}
    # Under a private /tmp the datadir (pytest's tmp_path is in /tmp) is bound in, and the
    # cover sits inside that bind.
    assert any(f"hidden: {data}/hidden" in d for d in report.mechanisms["namespaces"].details)


def test_hide_of_a_missing_path_stops_the_launch(base_sandbox, write_policy, hide_tree) -> None:  # noqa: ANN001
    from cleancoin.sandbox import launcher
    from cleancoin.sandbox.errors import PolicyError
    policy = write_policy('[filesystem]\nhide = ["${datadir}/wallets"]\n')
    with pytest.raises(PolicyError, match="granted path .*/wallets' does not exist"):
        launcher.prepare(load_policy(policy), hide_tree)


# The shipped policies for the node and the wallet, with a real Python component's needs ------


def _bind(port: int) -> str:
    def call() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
    return _errno_of(call)


def _sqlite_wal_and_thread(path: str) -> dict[str, object]:
    """What a component does at start: a WAL database written from a worker thread."""
    out: dict[str, object] = {}

    def work() -> None:
        db = sqlite3.connect(path)
        out["journal"] = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            db.execute("INSERT INTO t VALUES (1)")
        out["rows"] = db.execute("SELECT count(*) FROM t").fetchone()[0]
        db.close()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return out


@pytest.fixture
def node_vars(tmp_path: Path) -> dict[str, str]:
    netdir = tmp_path / "regtest"
    (netdir / "wallets" / "w1").mkdir(parents=True)
    (netdir / "wallets" / "w1" / "wallet.sqlite").write_text("keys")
    tmpdir = tmp_path / "nodetmp"
    tmpdir.mkdir()
    port, rpcport = _free_port(), _free_port()
    return {"datadir": str(netdir), "tmpdir": str(tmpdir), "port": str(port),
            "rpcport": str(rpcport), "ipcport": str(rpcport)}


def test_node_policy_restricts_the_node_itself(base_sandbox, node_vars, outside_dir) -> None:  # noqa: ANN001
    policy = "node"
    data = node_vars["datadir"]
    port, rpcport = int(node_vars["port"]), int(node_vars["rpcport"])
    other = _free_port()
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(1)
    address = peer.getsockname()    # the child's copy of `peer` points at /dev/null once confined
    # The node connects to no peer by itself (its connect broker does, 12-06), and since 12-07
    # not to a -ipcconnect=tcp wallet process's port either (the broker does that too). `peer`
    # stands for that port (${ipcconnectport}, which node.toml granted until then), `other_peer`
    # for a peer.
    other_peer = socket.socket()
    other_peer.bind(("127.0.0.1", 0))
    other_peer.listen(1)
    other_address = other_peer.getsockname()
    node_vars = {**node_vars, "ipcconnectport": str(address[1])}

    def _connect(target: tuple[str, int]) -> str:
        with socket.create_connection(target, timeout=5):
            return "ok"
    try:
        def inside() -> dict[str, object]:
            connected = _errno_of(lambda: _connect(address))
            return {
                "connect other peer": _errno_of(lambda: _connect(other_address)),
                "udp socket": _errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
                **_sqlite_wal_and_thread(f"{data}/chainstate.sqlite"),
                "debug.log": _errno_of(lambda: Path(data, "debug.log").write_text("started\n")),
                "wallets": os.listdir(f"{data}/wallets"),
                "wallet file": _errno_of(lambda: _read(f"{data}/wallets/w1/wallet.sqlite")),
                "write outside": _errno_of(lambda: _create(f"{outside_dir}/x")),
                "bind port": _bind(port), "bind rpcport": _bind(rpcport), "bind other": _bind(other),
                "connect peer": connected,
                "fork": _fork_then_exec(),
            }

        message = self_restricted(policy, node_vars, inside)
    finally:
        peer.close()
        other_peer.close()
    assert "result" in message, message
    r = message["result"]
    assert r["connect other peer"] == "EACCES" and r["udp socket"] == "EAFNOSUPPORT", r
    assert r["connect peer"] == "EACCES", r
    assert (r["journal"], r["rows"]) == ("wal", 1)
    assert r["debug.log"] == "ok"
    assert r["wallets"] == [] and r["wallet file"] == "ENOENT"
    assert r["write outside"] == "ENOENT"
    # Since 12-07 (later) CleanCoin-node binds its listeners before it confines itself, in a
    # network namespace of its own that its filter keeps from binding anything (EPERM, before
    # Landlock's bind_tcp, the second wall).
    assert (r["bind port"], r["bind rpcport"], r["bind other"]) == ("EPERM", "EPERM", "EPERM"), r
    assert r["fork"] == "EPERM"       # threads only (execve is not in the filter either)
    assert message["report"]["policy"] == policy


def test_wallet_policy_in_a_launched_child(base_sandbox, run_in_sandbox, tmp_path: Path,
                                           outside_dir) -> None:  # noqa: ANN001
    walletdir = tmp_path / "regtest" / "wallets"
    walletdir.mkdir(parents=True)
    (tmp_path / "regtest" / "chainstate.sqlite").write_text("chain")
    tmpdir = tmp_path / "wallettmp"
    tmpdir.mkdir()
    variables = {"walletdir": str(walletdir), "tmpdir": str(tmpdir)}

    def inside() -> dict[str, object]:
        import hashlib
        return {
            **_sqlite_wal_and_thread(f"{walletdir}/wallet.sqlite"),
            "scrypt": len(hashlib.scrypt(b"pw", salt=b"s" * 16, n=2**15, r=8, p=1,
                                         maxmem=64 * 2**20, dklen=32)),
            "socketpair": _errno_of(lambda: [s.close() for s in socket.socketpair()]),
            "getcwd": _errno_of(os.getcwd),
            "read chain": _errno_of(lambda: _read(f"{walletdir}/../chainstate.sqlite")),
            "read outside": _errno_of(lambda: _read(f"{outside_dir}/canary")),
            "write outside": _errno_of(lambda: _create(f"{outside_dir}/x")),
            "fork": _fork_then_exec(),
        }

    Path(outside_dir, "canary").write_text("outside")
    result, code, report = run_in_sandbox(shipped_policy("wallet"), variables, inside)
    assert code == 0
    assert (result["journal"], result["rows"], result["scrypt"]) == ("wal", 1, 32)
    # asyncio's wake-up pair works; a call the suite never saw the wallet make is refused.
    assert (result["socketpair"], result["getcwd"]) == ("ok", "EPERM")
    # The view holds only ${walletdir}: the chain beside it is not even there.
    assert result["read chain"] == "ENOENT"
    assert result["read outside"] == "ENOENT"
    assert result["write outside"] == "ENOENT"
    assert result["fork"] == "EPERM"
    assert report.fully_enforced(), report.to_text()
    assert "net" in report.namespaces
    # socket(2) of any family, unix included, kills the wallet: it makes no socket of its own.
    from cleancoin.sandbox import launcher
    from cleancoin.sandbox.launcher import prepare

    def make_socket(control: int) -> int:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        return 0

    child = launcher.spawn(prepare(load_policy(shipped_policy("wallet")), variables), target=make_socket)
    assert child.wait() == -signal.SIGSYS


def _seccomp_of_a_wallet_started_in(cwd: Path, datadir: Path) -> str:
    """The Seccomp line of /proc/PID/status of `CleanCoin-wallet -ipcbind=unix` started in `cwd`,
    once it listens (it confines itself before it waits for nodes)."""
    import subprocess
    import sys
    import time
    wallet = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "CleanCoin-wallet"), "-regtest",
                               f"-datadir={datadir}", "-ipcbind=unix"], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (datadir / "regtest" / "wallet.sock").exists():
            assert wallet.poll() is None, wallet.stderr.read().decode()    # type: ignore[union-attr]
            assert time.monotonic() < deadline, "wallet.sock did not appear"
            time.sleep(0.05)
        # wallet.sock is bound before the wallet confines itself: wait until it has.
        while True:
            status = Path(f"/proc/{wallet.pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("Seccomp:"))
            if line.split()[1] != "0" or time.monotonic() > deadline - 50:
                return line.split()[1]
            time.sleep(0.05)
    finally:
        wallet.kill()
        wallet.wait()


def test_a_component_never_takes_its_policy_from_the_working_directory(tmp_path: Path) -> None:
    """Until 12-07 restrict_self looked a shipped name up as a file in the working directory
    first: CleanCoin-wallet -ipcbind started where a file named `wallet-standalone` lay (a
    checkout, /tmp) confined itself with that file, and this one left it without a filter
    (Seccomp: 0; 2 when started elsewhere)."""
    planted = tmp_path / "cwd"
    planted.mkdir()
    (planted / "wallet-standalone").write_text(
        f'extends = ["{shipped_policy("wallet-standalone")}"]\n[policy]\nname = "planted"\n'
        '[seccomp]\nenabled = false\nreason = "planted in the working directory"\n')
    (tmp_path / "data").mkdir()
    assert _seccomp_of_a_wallet_started_in(planted, tmp_path / "data") == "2"      # filter mode
    with pytest.raises(EnforcementError, match="no shipped policy 'no-such-policy'"):
        restrict_self("no-such-policy", {})
