"""The IPC runtime end to end: real sockets, real processes, real pycapnp, no mocks.

Every coroutine runs the way CleanCoin runs them, under `asyncio.run(capnp.run(coro))`.
Listening processes are `python -m cleancoin.components.ipc.echo_process` subprocesses;
spawned children go through the sandbox launcher (strict policy) or without a sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import capnp
import pytest

from cleancoin.components.ipc import auth, schema, transport
from cleancoin.components.ipc.address import UNIX_PATH_MAX, AddressError, parse
from cleancoin.components.ipc.debug_log import CallLog
from cleancoin.components.ipc.errors import IpcAuthError, IpcDisconnected, IpcError
from cleancoin.components.ipc.init_impl import ProcessInit
from cleancoin.components.interfaces.init import Init, IpcPeer
from ipc_spawn import ECHO_TARGET, Child, spawn
from cleancoin.sandbox import launcher
from cleancoin.sandbox.policy_loader import load_policy, shipped_policy
from ports import free_port
from tls_certs import NoCertificateTool, make_self_signed

ECHO_MODULE = "cleancoin.components.ipc.echo_process"   # the listening program
ECHO_NAME = "CleanCoin-echo"
READY_TIMEOUT = 15.0     # seconds an echo_process may take to print "ready"
CALL_TIMEOUT = 10.0      # seconds any one test coroutine may take
ME = IpcPeer("test-client", os.getpid())
NOBODY = 65534


# --- helpers -------------------------------------------------------------------------------

def run(coro: Awaitable[Any], timeout: float = CALL_TIMEOUT) -> Any:
    """Run a coroutine the CleanCoin way, bounded in time."""
    return asyncio.run(capnp.run(asyncio.wait_for(coro, timeout)))



class EchoProcess:
    """A running `echo_process` subprocess; `stop()` ends it and returns its stderr."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", ECHO_MODULE, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr = ""
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""   # type: ignore[union-attr]
        if line.strip() != "ready":
            err = self.stop()
            pytest.fail(f"echo_process did not get ready (stdout {line!r}, rc {self.proc.returncode}):\n{err}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        """SIGTERM (the process's own way to stop), SIGKILL if it does not; returns stderr."""
        if not self._stopped:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                _, self.stderr = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, self.stderr = self.proc.communicate()
            self._stopped = True
        return self.stderr


@pytest.fixture
def echo_process() -> Iterator[Callable[..., EchoProcess]]:
    """echo_process(*args) -> a started, ready EchoProcess; all are stopped at the end."""
    started: list[EchoProcess] = []

    def start(*args: str, ready: bool = True) -> EchoProcess:
        process = EchoProcess(list(args))
        started.append(process)
        if ready:
            process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def vardir(outside_dir: str) -> str:
    """A short directory under /var/tmp (policies give the strict child a private /tmp)."""
    return outside_dir


@pytest.fixture
def strict_plan(base_sandbox, require, vardir):
    """The shipped strict policy fitted to this kernel, or a skip where it cannot run."""
    policy = load_policy(shipped_policy("strict"))
    require(base_sandbox.landlock_abi >= policy.compatibility.landlock_min_abi,
            f"Landlock ABI {policy.compatibility.landlock_min_abi} (the strict policy's minimum)")
    return launcher.prepare(policy, {"datadir": vardir, "tmpdir": vardir})


@pytest.fixture
def ipc_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="cleancoin.ipc")
    return caplog


def ipc_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cleancoin.ipc"]


def _gone_soon(pid: int, timeout: float = 3.0) -> bool:
    """True once `pid` no longer exists (or is a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def kill_child(child: Child | None) -> None:
    """Cleanup of a spawned child outside its event loop: its zygote ends, and it with it."""
    if child is not None:
        child.close()


async def use(init: Init) -> tuple[str, list[str], str]:
    """What a component does with an Init: hello, an Echo, a few calls. Local or remote alike."""
    server = await init.hello(ME, [])
    echo = await init.make_echo()
    results = [await echo.echo(text) for text in ("hi", "", "ünïcödé", "x" * 10000)]
    await echo.destroy()
    return server.name, results, type(server).__name__


async def echo_once(connection: Any, text: str = "hi") -> str:
    echo = await connection.init.make_echo()
    return await echo.echo(text)


def unix_address(path: str):
    return parse(f"unix:{path}", "")


def tcp_address(port: int):
    return parse(f"tcp:127.0.0.1:{port}", "")


# --- 1, 2: spawned children -----------------------------------------------------------------

def test_spawned_sandboxed_child_echoes_reports_and_dies_visibly(strict_plan, proc, ipc_log):
    """Echo across a strict-policy child; its sandbox holds; kill() is seen everywhere."""
    facts: dict[str, Any] = {}
    holder: list[Child] = []

    async def scenario() -> None:
        child = await spawn(ECHO_TARGET, ECHO_NAME, strict_plan, ME)
        holder.append(child)
        facts["report"] = child.report
        component = child.pid
        facts["component"] = component
        facts["status"] = proc.status(component)
        facts["remote"] = child.connection.remote
        echo = await child.connection.init.make_echo()
        facts["echo"] = await echo.echo("hello sandbox")
        child.kill()
        facts["exited"] = await asyncio.wait_for(child.exited, 5)
        with pytest.raises(IpcDisconnected) as info:
            await echo.echo("again")
        facts["after"] = info.value

    try:
        run(scenario())
    finally:
        kill_child(holder[0] if holder else None)

    report = facts["report"]
    assert report is not None and report.fully_enforced(), report and report.to_text()
    assert report.policy == "strict"
    assert report.pid == 3, "the strict policy's pid namespace: PID 1 is its init, 2 the fork that made it"
    assert facts["status"]["Seccomp"] == "2"
    assert facts["status"]["NoNewPrivs"] == "1"
    assert facts["remote"] == IpcPeer(ECHO_NAME, facts["component"])
    assert facts["echo"] == "hello sandbox"
    assert facts["exited"] == -signal.SIGKILL
    assert not isinstance(facts["after"], capnp.KjException)
    assert "Echo.echo" in str(facts["after"])
    assert _gone_soon(facts["component"]), "the component itself must die, not only its waiters"
    assert any(f"{ECHO_NAME} (pid {facts['component']}) killed by SIGKILL" in m for m in ipc_messages(ipc_log))


def test_unsandboxed_child_cannot_be_told_from_a_local_init(proc):
    """plan None: same results from one helper against ProcessInit and against the proxy."""
    local_result = run(use(ProcessInit(CallLog(IpcPeer(ECHO_NAME, os.getpid())))))
    facts: dict[str, Any] = {}
    holder: list[Child] = []

    async def scenario() -> None:
        child = await spawn(ECHO_TARGET, ECHO_NAME, None, ME)
        holder.append(child)
        facts["report"] = child.report
        facts["status"] = proc.status(child.pid)
        facts["remote"] = child.connection.remote
        facts["result"] = await use(child.connection.init)
        child.kill()
        facts["exited"] = await asyncio.wait_for(child.exited, 5)

    try:
        run(scenario())
    finally:
        kill_child(holder[0] if holder else None)

    assert facts["result"] == local_result
    assert local_result == (ECHO_NAME, ["hi", "", "ünïcödé", "x" * 10000], "IpcPeer")
    assert facts["report"] is None                        # no sandbox, no report
    assert facts["status"]["Seccomp"] == "0"
    assert facts["remote"] == IpcPeer(ECHO_NAME, holder[0].pid)
    assert facts["exited"] == -signal.SIGKILL


# --- 3, 4: unix listeners ------------------------------------------------------------------

def test_unix_bind_connect_mode_and_cleanup(echo_process, vardir):
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}", f"-datadir={vardir}")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert mode == 0o600, oct(mode)

    async def client() -> tuple[IpcPeer, str]:
        connection = await transport.connect(unix_address(path), ME, False)
        try:
            return connection.remote, await echo_once(connection, "over unix")
        finally:
            connection.close()

    remote, answer = run(client())
    assert remote == IpcPeer(ECHO_NAME, server.pid)
    assert answer == "over unix"
    assert server.alive()
    server.stop()
    assert server.proc.returncode == 0
    assert not os.path.exists(path), "SIGTERM must remove the socket file"


def test_unix_path_length_limit(echo_process, vardir):
    exact = os.path.join(vardir, "s" * (UNIX_PATH_MAX - len(vardir) - 1))
    assert len(os.fsencode(exact)) == UNIX_PATH_MAX
    assert parse(f"unix:{exact}", "").path == exact          # 107 bytes fit
    too_long = exact + "x"
    with pytest.raises(AddressError, match=r"108 bytes long; the limit is 107"):
        parse(f"unix:{too_long}", "")

    # The longest path really works end to end ...
    server = echo_process(f"-ipcbind=unix:{exact}")
    assert run(_connect_and_echo(unix_address(exact))) == "hi"
    server.stop()
    # ... and one byte more is refused by the process with the same message.
    refused = echo_process(f"-ipcbind=unix:{too_long}", ready=False)
    refused.proc.wait(timeout=10)
    err = refused.stop()
    assert refused.proc.returncode == 1
    assert "the limit is 107" in err
    assert not os.path.exists(too_long)


async def _connect_and_echo(address, credentials=None, tls=None, text: str = "hi") -> str:
    connection = await transport.connect(address, ME, False, credentials, tls)
    try:
        return await echo_once(connection, text)
    finally:
        connection.close()


def _connect_as(uid: int, path: str, raw: bool = False) -> str:
    """In a forked child that dropped to `uid`: connect and hello; returns what happened.
    `raw`: connect the socket by hand, past the client's own check of the listener's uid, so
    that the listener's refusal is what is tested."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - child
        outcome = "child failed"
        try:
            os.close(read_end)
            signal.alarm(15)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            assert os.getuid() == uid and os.geteuid() == uid

            async def attempt() -> str:
                try:
                    sock = None
                    if raw:
                        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        sock.connect(path)
                        sock.setblocking(False)
                    connection = await transport.connect(unix_address(path), IpcPeer("intruder", os.getpid()), False,
                                                         sock=sock)
                except BaseException as exc:   # noqa: BLE001 - reported to the parent
                    return f"{type(exc).__name__}: {exc}"
                return f"connected to {connection.remote}"

            outcome = asyncio.run(capnp.run(attempt()))
        except BaseException as exc:   # noqa: BLE001
            outcome = f"child error {exc!r}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.getuid() == NOBODY, reason="the test runs as the uid it wants refused")
def test_unix_peer_of_another_uid_is_refused(echo_process, vardir):
    if os.getuid() != 0:
        pytest.skip("dropping to another uid needs root")
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}", "-ipcmaxconnections=1")
    # Open the way so that only SO_PEERCRED can stop the other uid: directory and socket mode.
    os.chmod(vardir, 0o755)
    os.chmod(path, 0o666)

    outcome = _connect_as(NOBODY, path, raw=True)
    assert outcome.startswith("IpcDisconnected: Init.hello"), outcome
    # The client's side of the rule: it sends nothing to a listener of another uid.
    refused = _connect_as(NOBODY, path)
    assert refused.startswith("AddressError: refused") and "served by uid 0" in refused, refused
    # Refused before it counted: the only slot (-ipcmaxconnections=1) is still free.
    assert run(_connect_and_echo(unix_address(path))) == "hi"
    assert server.alive()
    err = server.stop()
    assert f"refused a client of uid {NOBODY}" in err
    assert "-ipcmaxconnections=1 reached" not in err


# --- 5: TCP, authentication, TLS ------------------------------------------------------------

def test_tcp_cookie_login_and_refusals(echo_process, vardir):
    port = free_port()
    server = echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}")
    cookie_path = os.path.join(vardir, auth.COOKIE_NAME)
    assert stat.S_IMODE(os.stat(cookie_path).st_mode) == 0o600
    cookie = auth.read_cookie(vardir)
    assert cookie.user == auth.COOKIE_USER and len(cookie.password) == 64
    address = tcp_address(port)

    async def scenario() -> dict[str, Any]:
        facts: dict[str, Any] = {"echo": await _connect_and_echo(address, cookie, text="over tcp")}
        # Wrong password: an IpcError from the proxy, not a lost connection.
        with pytest.raises(IpcError) as wrong:
            await transport.connect(address, ME, False, auth.Credentials(cookie.user, "0" * 64))
        facts["wrong"] = wrong.value
        # No credentials at all: the bootstrap is Auth; cast to Init, no method is reachable.
        stream = await capnp.AsyncIoStream.create_connection("127.0.0.1", port)
        raw = capnp.TwoPartyClient(stream)
        try:
            init = raw.bootstrap().cast_as(schema.load("init").Init)
            with pytest.raises(capnp.KjException) as unauth:
                await init.hello(client={"name": "intruder", "pid": 1})
            facts["unauth"] = unauth.value
            with pytest.raises(capnp.KjException):
                await init.makeEcho()
        finally:
            raw.close()
            stream.close()
        # Our own proxy without credentials on a TCP address: same refusal, as an IpcError.
        stream = await capnp.AsyncIoStream.create_connection("127.0.0.1", port)
        with pytest.raises(IpcError) as proxied:
            await transport.connect_init(stream, ME, False)
        stream.close()
        facts["proxied"] = proxied.value
        facts["after"] = await _connect_and_echo(address, cookie, text="still serving")
        return facts

    facts = run(scenario())
    assert facts["echo"] == "over tcp"
    assert type(facts["wrong"]) in (IpcError, IpcAuthError)
    assert str(facts["wrong"]).startswith("Auth.login failed")
    assert facts["unauth"].type == "UNIMPLEMENTED"
    assert "not implemented" in str(facts["unauth"])
    assert not isinstance(facts["proxied"], IpcDisconnected)
    assert facts["after"] == "still serving"
    assert server.alive()


def test_tcp_wrong_password_says_login_refused(echo_process, vardir):
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}")

    async def scenario() -> IpcError:
        with pytest.raises(IpcError) as wrong:
            await transport.connect(tcp_address(port), ME, False, auth.Credentials(auth.COOKIE_USER, "nope"))
        return wrong.value

    error = run(scenario())
    assert "login refused" in str(error)
    assert "Traceback" not in str(error) and ".py" not in str(error)
    assert isinstance(error, IpcAuthError)


def test_tcp_refused_login_is_not_a_disconnect_whatever_the_user_name(echo_process, vardir):
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", "-ipcauth=disconnected:right")

    async def scenario() -> IpcError:
        with pytest.raises(IpcError) as wrong:
            await transport.connect(tcp_address(port), ME, False, auth.Credentials("disconnected", "wrong"))
        return wrong.value

    assert not isinstance(run(scenario()), IpcDisconnected)


def test_tcp_ipcauth_credentials(echo_process, vardir):
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", "-ipcauth=alice:s3cret")
    address = tcp_address(port)

    async def scenario() -> list[Any]:
        outcomes: list[Any] = [await _connect_and_echo(address, auth.Credentials("alice", "s3cret"), text="alice"),
                               await _connect_and_echo(address, auth.read_cookie(vardir), text="cookie")]
        for user, password in (("alice", "wrong"), ("bob", "s3cret"), ("alice", "s3cret" + "x")):
            try:
                await transport.connect(address, ME, False, auth.Credentials(user, password))
                outcomes.append("logged in")
            except IpcError as exc:
                outcomes.append(type(exc))
        return outcomes

    outcomes = run(scenario())
    assert outcomes[:2] == ["alice", "cookie"]
    assert all(o in (IpcError, IpcAuthError) for o in outcomes[2:]), outcomes


@pytest.fixture(scope="module")
def tls_cert() -> Iterator[tuple[str, str]]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    directory = tempfile.mkdtemp(prefix="ipc-tls-", dir="/var/tmp")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    try:
        try:
            make_self_signed(cert, key)
        except NoCertificateTool as exc:
            pytest.skip(str(exc))
        yield cert, key
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_tcp_tls(echo_process, vardir, tls_cert):
    cert, key = tls_cert
    port = free_port()
    server = echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}",
                          f"-ipccert={cert}", f"-ipckey={key}", "-ipcauth=alice:s3cret")
    address = tcp_address(port)
    alice = auth.Credentials("alice", "s3cret")

    async def scenario() -> dict[str, Any]:
        facts: dict[str, Any] = {"tls": await _connect_and_echo(address, alice, transport.client_tls(cert), "over tls")}
        with pytest.raises(IpcDisconnected) as plain:
            await transport.connect(address, ME, False, alice)        # no TLS: the handshake fails
        facts["plain"] = plain.value
        # A client that pins another certificate does not trust this server.
        other = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        other.load_verify_locations(cadata=_unrelated_ca_pem())
        with pytest.raises((AddressError, ssl.SSLError)):
            await transport.connect(address, ME, False, alice, other)
        facts["again"] = await _connect_and_echo(address, alice, transport.client_tls(cert), "again")
        return facts

    facts = run(scenario())
    assert facts["tls"] == "over tls"
    assert "Auth.login" in str(facts["plain"])
    assert facts["again"] == "again"
    assert server.alive()
    err = server.stop()
    assert "dropped during set-up" in err          # the plain client, seen by the server


def test_a_client_pins_the_listeners_certificate_not_the_ca_in_its_chain_file(echo_process, vardir):
    """-ipccert as a CA issues it (the certificate, then the CA's: fullchain.pem): the client
    trusts that one certificate. Attack on the code before 12-07: the client took every
    certificate of the file as a trust anchor, the CA's among them, so a listener showing
    another certificate the same CA signed for the same address (anyone the CA serves, on the
    port while the node restarts) completed the handshake and got the login (the echo
    answered); now the handshake fails. The node's own chain still connects."""
    from tls_certs import make_ca_signed
    pytest.importorskip("cryptography")
    (ours, _), (theirs, their_key) = make_ca_signed(str(vardir))
    port = free_port()
    where = [f"tcp:127.0.0.1:{port}"]
    impostor = echo_process(f"-ipcbind={where[0]}", f"-datadir={vardir}", f"-ipccert={theirs}",
                            f"-ipckey={their_key}")
    with pytest.raises(AddressError, match="CERTIFICATE_VERIFY_FAILED"):
        _open_peer({"ipcconnect": where, "ipccert": [ours]}, "", vardir)
    impostor.stop()
    # The control: the listener of the pinned certificate, with its chain.
    echo_process(f"-ipcbind={where[0]}", f"-datadir={vardir}", f"-ipccert={theirs}", f"-ipckey={their_key}")
    assert _open_peer({"ipcconnect": where, "ipccert": [theirs]}, "", vardir) == ("via open_peer", False)


def _unrelated_ca_pem() -> str:
    """Any CA certificate that did not sign the test certificate: the system bundle's first."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.exists(candidate):
            with open(candidate) as handle:
                text = handle.read()
            end = text.find("-----END CERTIFICATE-----")
            if end > 0:
                return text[text.find("-----BEGIN CERTIFICATE-----"):end + len("-----END CERTIFICATE-----")] + "\n"
    pytest.skip("no CA bundle to pin a foreign certificate from")


def test_tcp_tls_silent_client_does_not_block_others(echo_process, vardir, tls_cert):
    cert, key = tls_cert
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", f"-ipccert={cert}", f"-ipckey={key}",
                 "-ipcauth=alice:s3cret")
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        time.sleep(0.2)   # accepted, waiting in the handshake
        answer = run(_connect_and_echo(tcp_address(port), auth.Credentials("alice", "s3cret"),
                                       transport.client_tls(cert)), timeout=3)
    finally:
        silent.close()
    assert answer == "hi"


# --- 6, 7: hostile and surplus clients -------------------------------------------------------

def _read_until_closed(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes `sock` within `timeout` seconds."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def test_garbage_bytes_do_not_hurt_the_server(echo_process, vardir):
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}")
    closed_by_server = []
    payloads = [
        os.urandom(4096),
        # one segment of 0x0fffffff words (2 GiB): beyond the traversal limit
        struct.pack("<II", 0, 0x0FFFFFFF),
        # 0xffffffff + 1 segments (overflows to zero)
        struct.pack("<II", 0xFFFFFFFF, 1),
        # one word whose root pointer points far outside the segment
        struct.pack("<II", 0, 1) + struct.pack("<Q", 0xFFFFFFFFFFFFFFFC),
        # one word whose root is a list of 0x7ffffff composite elements
        struct.pack("<II", 0, 1) + struct.pack("<Q", (0x7FFFFFF << 35) | (7 << 32) | 1),
    ]
    for payload in payloads:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(path)
            raw.sendall(payload)
            closed_by_server.append(_read_until_closed(raw, 3))
    # A header that announces 1 MiB words and then just hangs up.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(path)
        raw.sendall(struct.pack("<II", 0, 1 << 20) + b"\0" * 100)
    assert closed_by_server[1:] == [True] * 4, closed_by_server
    assert server.alive()
    assert run(_connect_and_echo(unix_address(path), text="after garbage")) == "after garbage"
    assert server.alive()


def test_max_connections(echo_process, vardir):
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}", "-ipcmaxconnections=1")

    async def scenario() -> dict[str, Any]:
        facts: dict[str, Any] = {}
        first = await transport.connect(unix_address(path), ME, False)
        echo = await first.init.make_echo()
        facts["first"] = await echo.echo("one")
        with pytest.raises(IpcDisconnected) as second:
            await transport.connect(unix_address(path), ME, False)
        facts["second"] = second.value
        facts["first again"] = await echo.echo("still")
        return facts

    facts = run(scenario())
    assert facts["first"] == "one" and facts["first again"] == "still"
    assert "Init.hello" in str(facts["second"])
    # The first client's connection ended with its event loop: the slot is free again.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert run(_connect_and_echo(unix_address(path), text="third")) == "third"
            break
        except IpcDisconnected:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert server.alive()
    assert "refused a client on unix:" in server.stop()


def test_closed_connection_frees_its_slot(echo_process, vardir):
    path = os.path.join(vardir, "e.sock")
    echo_process(f"-ipcbind=unix:{path}", "-ipcmaxconnections=1")

    async def scenario() -> str:
        first = await transport.connect(unix_address(path), ME, False)
        assert await echo_once(first, "one") == "one"
        first.close()
        with pytest.raises(IpcDisconnected):
            await first.init.make_echo()
        await asyncio.sleep(0.5)
        return await _connect_and_echo(unix_address(path), text="next")   # `first` is still referenced

    assert run(scenario()) == "next"


def test_bind_does_not_delete_a_regular_file(echo_process, vardir):
    path = os.path.join(vardir, "precious.dat")
    with open(path, "w") as handle:
        handle.write("do not delete")
    server = echo_process(f"-ipcbind=unix:{path}", ready=False)
    select.select([server.proc.stdout], [], [], READY_TIMEOUT)   # "ready", or the exit with an error
    server.stop()
    assert os.path.isfile(path) and not stat.S_ISSOCK(os.stat(path).st_mode)


# --- 8: -debug=ipc --------------------------------------------------------------------------

def test_debug_ipc_logs_both_sides(echo_process, vardir, ipc_log):
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}", "-debug=ipc")

    async def client() -> str:
        connection = await transport.connect(unix_address(path), ME, True)
        try:
            return await echo_once(connection, "hi")
        finally:
            connection.close()

    assert run(client()) == "hi"
    err = server.stop()
    me, them = f"test-client({os.getpid()})", f"{ECHO_NAME}({server.pid})"
    lines = ipc_messages(ipc_log)
    requests = [m for m in lines if re.fullmatch(rf"ipc: {re.escape(me)} -> {re.escape(them)} #\d+ "
                                                 rf"Echo\.echo\(echo='hi'\)", m)]
    assert len(requests) == 1, lines
    number = re.search(r"#(\d+)", requests[0]).group(1)
    responses = [m for m in lines if re.fullmatch(rf"ipc: {re.escape(me)} <- {re.escape(them)} #{number} "
                                                  rf"Echo\.echo = 'hi' \(\d+\.\d{{3}} ms\)", m)]
    assert len(responses) == 1, lines
    assert f"ipc: {me} connected to {them}" in lines
    # The server's side of the same call, with the same number, naming the client.
    assert re.search(rf"ipc: {re.escape(them)} <- {re.escape(me)} #{number} Echo\.echo\(echo='hi'\)$", err, re.M), err
    assert re.search(rf"ipc: {re.escape(them)} -> {re.escape(me)} #{number} Echo\.echo = 'hi' "
                     rf"\(\d+\.\d{{3}} ms\)$", err, re.M), err


def test_no_per_call_lines_without_debug_ipc(echo_process, vardir, ipc_log):
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}")
    assert run(_connect_and_echo(unix_address(path))) == "hi"
    err = server.stop()
    assert "listening on unix:" in err            # the server does log, just not per call
    assert "Echo.echo" not in err and "Init.hello" not in err and " #" not in err, err
    assert not [m for m in ipc_messages(ipc_log) if "Echo.echo" in m]   # nor the client (debug=False)


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "quiet"])
def test_spawned_child_takes_debug_ipc_from_hello(debug, capfd):
    """A spawned child has no options of its own: the parent's -debug=ipc reaches it in hello."""
    holder: list[Child] = []

    async def scenario() -> str:
        child = await spawn(ECHO_TARGET, ECHO_NAME, None, ME, debug=debug)
        holder.append(child)
        answer = await (await child.connection.init.make_echo()).echo("hi")
        child.kill()
        await asyncio.wait_for(child.exited, 5)
        return answer

    try:
        assert run(scenario()) == "hi"
    finally:
        kill_child(holder[0] if holder else None)
    err = capfd.readouterr().err
    line = re.search(rf"ipc: {ECHO_NAME}\({holder[0].pid}\) <- test-client\({os.getpid()}\) #\d+ "
                     rf"Echo\.echo\(echo='hi'\)$", err, re.M)
    assert (line is not None) == debug, err


# --- 9: a peer killed in the middle of a call ------------------------------------------------

@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "strict"])
def test_peer_killed_mid_call(sandboxed, request, ipc_log):
    plan = request.getfixturevalue("strict_plan") if sandboxed else None
    facts: dict[str, Any] = {}
    children: list[Child] = []

    async def scenario() -> None:
        child = await spawn(ECHO_TARGET, ECHO_NAME, plan, ME)
        children.append(child)
        echo = await child.connection.init.make_echo()
        assert await echo.echo("before") == "before"
        os.kill(child.pid, signal.SIGSTOP)
        call = asyncio.ensure_future(echo.echo("never answered"))
        await asyncio.sleep(0.3)
        facts["pending while stopped"] = not call.done()
        started = time.monotonic()
        child.kill()
        with pytest.raises(IpcDisconnected) as lost:
            await asyncio.wait_for(call, 5)
        facts["lost"] = lost.value
        facts["seconds"] = time.monotonic() - started
        facts["exited"] = await asyncio.wait_for(child.exited, 5)
        # The parent is fine: another child answers.
        other = await spawn(ECHO_TARGET, ECHO_NAME, plan, ME)
        children.append(other)
        facts["other"] = await (await other.connection.init.make_echo()).echo("after")
        other.kill()
        facts["other exited"] = await asyncio.wait_for(other.exited, 5)

    try:
        run(scenario(), timeout=20)
    finally:
        for child in children:
            kill_child(child)
    assert facts["pending while stopped"]
    assert "Echo.echo" in str(facts["lost"])
    assert facts["seconds"] < 5
    assert facts["exited"] == -signal.SIGKILL
    assert facts["other"] == "after"
    assert facts["other exited"] == -signal.SIGKILL
    assert sum("killed by SIGKILL" in m for m in ipc_messages(ipc_log)) == 2


# --- -ipcconnect: connect to a running process, or spawn (auto) ---------------------------

def _open_peer(settings_args: dict[str, list[str]], default_path: str, cookie_dir: str) -> tuple[str, bool]:
    """Reach a peer as an executable would; returns (echo answer, whether it spawned)."""
    from cleancoin.components.ipc.settings import open_peer, parse_settings
    spawned: list[Child] = []

    async def spawn_one() -> Any:
        child = await spawn(ECHO_TARGET, ECHO_NAME, None, ME)
        spawned.append(child)
        return child.connection

    async def go() -> str:
        connection = await open_peer(parse_settings(settings_args), default_path, ME, cookie_dir, spawn_one)
        try:
            return await echo_once(connection, "via open_peer")
        finally:
            connection.close()
            for child in spawned:
                child.kill()
                await child.exited
                child.close()

    return run(go()), bool(spawned)


def test_ipcconnect_auto_connects_when_a_socket_answers_else_spawns(echo_process, vardir):
    path = os.path.join(vardir, "node.sock")
    assert _open_peer({"ipcconnect": ["auto"]}, path, vardir) == ("via open_peer", True)    # nobody there
    echo_process(f"-ipcbind=unix:{path}", f"-datadir={vardir}")
    assert _open_peer({"ipcconnect": ["auto"]}, path, vardir) == ("via open_peer", False)   # it answers
    assert _open_peer({}, path, vardir) == ("via open_peer", True)                          # no option: spawn


def test_a_client_pins_ipccert_alone_and_the_files_are_read_with_the_options(echo_process, vardir, tls_cert):
    """A client is given the listener's certificate alone (docs/ipc.md: never its key); a TCP
    listener needs both. The files are loaded when the options are parsed, before a process
    confines itself (whose view has neither): until 12-07 a client with -ipccert alone was
    refused ("-ipccert and -ipckey go together") and CleanCoin-node read them confined, at its
    first listen, and did not start."""
    from cleancoin.components.ipc.settings import parse_settings
    cert, key = tls_cert
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", f"-ipccert={cert}", f"-ipckey={key}")
    where = [f"tcp:127.0.0.1:{port}"]
    assert _open_peer({"ipcconnect": where, "ipccert": [cert]}, "", vardir) == ("via open_peer", False)
    with pytest.raises(IpcDisconnected):            # in clear to a TLS listener: dropped
        _open_peer({"ipcconnect": where}, "", vardir)
    settings = parse_settings({"ipcbind": where, "ipccert": [cert], "ipckey": [key]})
    assert isinstance(settings.server_context, ssl.SSLContext) and settings.client_context is not None
    # No TCP listener here (CleanCoin-gui, which passes both on to the node it starts): the
    # private key is not loaded into this process.
    assert parse_settings({"ipcconnect": where, "ipccert": [cert], "ipckey": [key]}).server_context is None
    with pytest.raises(AddressError, match="go together for a TCP listener"):
        parse_settings({"ipcbind": where, "ipccert": [cert]})        # it would listen in clear
    with pytest.raises(AddressError, match="-ipckey needs -ipccert"):
        parse_settings({"ipcconnect": where, "ipckey": [key]})
    missing = os.path.join(vardir, "nothing.pem")
    with pytest.raises(AddressError, match=f"-ipccert={re.escape(missing)}: cannot be loaded"):
        parse_settings({"ipcconnect": where, "ipccert": [missing]})


def test_a_key_file_others_may_read_or_replace_is_refused(vardir, tls_cert):
    """-ipckey's file must belong to this user (or root) and be closed to others (a group may
    read it). Attack on the code before 12-07: a key of mode 0644 (as this module's own
    certificate helper wrote it) or one another user owns was loaded without a word; another
    local user who read it could serve the node's certificate on its port while the node
    restarted, and a remote client's pinning passed (the certificate and its key are all the
    client checks; the listener's uid is judged on this host only)."""
    from cleancoin.components.ipc.settings import parse_settings
    cert, key = tls_cert
    where = ["tcp:127.0.0.1:1"]
    options = {"ipcbind": where, "ipccert": [cert], "ipckey": [key]}
    assert parse_settings(options).server_context is not None          # 0600, this user's
    os.chmod(key, 0o640)
    assert parse_settings(options).server_context is not None          # a group may read it
    for mode, why in ((0o644, "others may read or write it"), (0o660, "its group may write it")):
        os.chmod(key, mode)
        with pytest.raises(AddressError, match=f"cannot be loaded: {re.escape(key)} has mode 0{mode:o}: {why}"):
            parse_settings(options)
    os.chmod(key, 0o600)
    link = os.path.join(vardir, "key-link.pem")
    os.symlink(key, link)                   # a link to a sound key (certbot's live/) is its target
    assert parse_settings({**options, "ipckey": [link]}).server_context is not None
    if os.geteuid() == 0:
        os.chown(key, 65534, -1)
        with pytest.raises(AddressError, match="belongs to uid 65534, not to this user"):
            parse_settings(options)
        os.chown(key, 0, -1)


def test_ipcconnect_tcp_logs_in_with_the_cookie(echo_process, vardir):
    port = free_port()
    echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}")
    assert _open_peer({"ipcconnect": [f"tcp:127.0.0.1:{port}"]}, "", vardir) == ("via open_peer", False)
    with pytest.raises(AddressError, match="cannot connect"):
        _open_peer({"ipcconnect": [f"unix:{vardir}/nobody.sock"]}, "", vardir)


# --- limits before authentication (issue 11, item 5) ----------------------------------------

def _raw_auth(port: int, tls: ssl.SSLContext | None = None) -> Any:
    """Coroutine: a raw pycapnp client of a TCP listener's Auth (no CleanCoin runtime)."""
    async def open_() -> tuple[Any, Any, Any]:
        stream = await capnp.AsyncIoStream.create_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None)
        client = capnp.TwoPartyClient(stream)
        return stream, client, client.bootstrap().cast_as(schema.load("auth").Auth)
    return open_()


def test_many_wrong_logins_on_one_tcp_connection_are_cut_off(echo_process, vardir):
    """The attack: 3000 password guesses on one TCP connection, one after the other, then
    3000 pipelined at once. The listener answers a few, slowly, then closes the connection;
    the right password still works on a new connection."""
    port = free_port()
    server = echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", "-ipcauth=alice:s3cret")

    async def sequential() -> tuple[int, bool, float]:
        stream, client, auth_cap = await _raw_auth(port)
        started, answered, cut = time.monotonic(), 0, False
        try:
            for guess in range(3000):
                try:
                    await auth_cap.login(user="alice", password=f"guess-{guess}")
                    raise AssertionError("a wrong password logged in")
                except capnp.KjException as exc:
                    if exc.type == "DISCONNECTED":
                        cut = True
                        break
                    answered += 1
        finally:
            client.close()
            stream.close()
        return answered, cut, time.monotonic() - started

    async def pipelined() -> tuple[int, int]:
        stream, client, auth_cap = await _raw_auth(port)
        try:
            calls = [auth_cap.login(user="alice", password=f"p-{guess}") for guess in range(3000)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            client.close()
            stream.close()
        assert not any(not isinstance(o, Exception) for o in outcomes), "a wrong password logged in"
        refused = sum(1 for o in outcomes if isinstance(o, capnp.KjException) and o.type != "DISCONNECTED")
        return refused, len(outcomes) - refused

    answered, cut, took = run(sequential(), timeout=30)
    assert cut, f"{answered} wrong logins answered in {took:.1f} s and the connection stayed open"
    assert answered <= 3 and took < 5, (answered, took)
    refused, dropped = run(pipelined(), timeout=30)
    assert refused <= 3 and dropped >= 2997, (refused, dropped)
    assert run(_connect_and_echo(tcp_address(port), auth.Credentials("alice", "s3cret"), text="me")) == "me"
    err = server.stop()
    assert "refused a login for user 'alice'" in err
    assert "failed logins: closing the connection" in err
    assert "s3cret" not in err and "guess-" not in err


def test_idle_unauthenticated_tcp_clients_lock_out_nobody(echo_process, vardir, tls_cert):
    """The attack: 20 TCP connections that never log in (more than -ipcmaxconnections). A
    node.sock-style unix client still gets in at once (each listener has its own slots), and
    once the handshake deadline has passed the idle ones are gone and a real TCP client gets in;
    with TLS, an idle client that finished the TLS handshake is dropped the same way."""
    port, tls_port = free_port(), free_port()
    path = os.path.join(vardir, "e.sock")
    cert, key = tls_cert
    server = echo_process(f"-ipcbind=unix:{path}", f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}",
                          "-ipcauth=alice:s3cret", "-ipchandshaketimeout=1")
    tls_server = echo_process(f"-ipcbind=tcp:127.0.0.1:{tls_port}", f"-datadir={vardir}", f"-ipccert={cert}",
                              f"-ipckey={key}", "-ipcauth=alice:s3cret", "-ipchandshaketimeout=1")
    alice = auth.Credentials("alice", "s3cret")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    tls_idle = transport.client_tls(cert).wrap_socket(socket.create_connection(("127.0.0.1", tls_port)),
                                                      server_hostname="127.0.0.1")
    try:
        started = time.monotonic()
        assert run(_connect_and_echo(unix_address(path), text="unix"), timeout=3) == "unix"
        assert time.monotonic() - started < 1.0          # not after the deadline: at once
        assert all(_read_until_closed(s, 5) for s in idle), "idle TCP clients outlived the deadline"
        assert _read_until_closed(tls_idle, 5), "an idle TLS client outlived the deadline"
        assert run(_connect_and_echo(tcp_address(port), alice, text="tcp"), timeout=3) == "tcp"
        assert run(_connect_and_echo(tcp_address(tls_port), alice, transport.client_tls(cert), "tls"),
                   timeout=3) == "tls"
    finally:
        for s in (*idle, tls_idle):
            s.close()
    err = server.stop()
    assert "-ipcmaxconnections=16 reached" in err
    assert "no login within the handshake deadline (1 s)" in err
    assert "no login within the handshake deadline (1 s)" in tls_server.stop()


def test_idle_unix_client_is_dropped_after_the_deadline(echo_process, vardir):
    """A unix client that connects and never calls anything is closed at the handshake
    deadline; one that made a call stays."""
    path = os.path.join(vardir, "e.sock")
    server = echo_process(f"-ipcbind=unix:{path}", "-ipchandshaketimeout=0.5")

    async def stays() -> str:
        connection = await transport.connect(unix_address(path), ME, False)
        try:
            await asyncio.sleep(0.8)
            return await echo_once(connection, "still here")
        finally:
            connection.close()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(path)
        assert run(stays()) == "still here"
        assert _read_until_closed(silent, 5)
    assert "no call within the handshake deadline (0.5 s)" in server.stop()


def test_wrong_logins_over_many_connections_are_limited_per_address(echo_process, vardir):
    """The attack spread over connections: 8 connections at once from one address, 3 guesses
    each. At most the address's burst (10) plus what refills meanwhile (1/s) is checked; the
    rest is refused unchecked, and a right login succeeds again once the allowance is back."""
    port = free_port()
    server = echo_process(f"-ipcbind=tcp:127.0.0.1:{port}", f"-datadir={vardir}", "-ipcauth=alice:s3cret")

    async def one_connection(connection: int) -> list[str]:
        stream, client, auth_cap = await _raw_auth(port)
        try:
            calls = [auth_cap.login(user="alice", password=f"c{connection}-{guess}") for guess in range(3)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            client.close()
            stream.close()
        assert all(isinstance(o, capnp.KjException) for o in outcomes), "a wrong password logged in"
        return ["dropped" if o.type == "DISCONNECTED" else "unchecked" if "too many failed logins" in str(o)
                else "checked" for o in outcomes]

    async def attack() -> tuple[list[str], float]:
        started = time.monotonic()
        results = await asyncio.gather(*(one_connection(c) for c in range(8)))
        return [r for rs in results for r in rs], time.monotonic() - started

    outcomes, took = run(attack(), timeout=30)
    assert outcomes.count("checked") <= 10 + int(took) + 1, (outcomes, took)
    assert outcomes.count("unchecked") >= 1, outcomes
    alice = auth.Credentials("alice", "s3cret")
    deadline = time.monotonic() + 5
    while True:                       # refused while the allowance is spent, then let in
        try:
            assert run(_connect_and_echo(tcp_address(port), alice, text="back")) == "back"
            break
        except IpcError:
            assert time.monotonic() < deadline, "the right password stayed locked out"
            time.sleep(0.2)
    assert "unchecked: too many failed logins" in server.stop()
