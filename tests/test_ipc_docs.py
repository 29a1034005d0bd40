"""docs/ipc.md: its client examples run as written against a real echo_process, and its
schema text is the installed schema text.

The examples are taken from the fenced blocks marked ```python title="client.py" and
```python title="client_tcp.py", written to a temporary folder and run as separate Python
processes the way the doc says: the schema folder in CLEANCOIN_SCHEMA_DIR, everything else
as arguments. A wrong example makes these tests fail.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.ipc.schema import SCHEMA_DIR
from ports import free_port

DOC = Path(__file__).resolve().parents[1] / "docs" / "ipc.md"
ECHO_PROCESS = "cleancoin.components.ipc.echo_process"
TIMEOUT = 30.0


def fenced_block(language: str, title: str) -> str:
    """The one fenced block of `language` marked title="`title`" in docs/ipc.md."""
    pattern = re.compile(rf'^```{language} title="{re.escape(title)}"\n(.*?)^```[ \t]*$',
                         re.MULTILINE | re.DOTALL)
    blocks = pattern.findall(DOC.read_text())
    assert len(blocks) == 1, f'docs/ipc.md should hold exactly one ```{language} title="{title}" block'
    return blocks[0]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short folder under /var/tmp: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ccipc-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class EchoServer:
    """`python -m cleancoin.components.ipc.echo_process ARGS`, running until stop()."""

    def __init__(self, datadir: Path, *args: str) -> None:
        self.log = datadir / "echo_process.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", ECHO_PROCESS, f"-datadir={datadir}", *args],
                                            stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline().strip() if ready else ""
        if line != "ready":
            self.stop()
            pytest.fail(f"echo_process did not print 'ready' (got {line!r}):\n{self.log_text()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + 10
        while True:
            found = re.search(pattern, self.log_text(), re.MULTILINE)
            if found or time.monotonic() > deadline:
                assert found, f"no line matching {pattern!r} in the server log:\n{self.log_text()}"
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_example(workdir: Path, title: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Write the doc's example `title` to `workdir` and run it as the doc says."""
    script = workdir / title
    script.write_text(fenced_block("python", title))
    env = {**os.environ, "CLEANCOIN_SCHEMA_DIR": SCHEMA_DIR}
    result = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"the {title} example of docs/ipc.md failed "
                                    f"(status {result.returncode}):\n{result.stderr}")
    return result



@pytest.mark.parametrize("name", ["init.capnp", "echo.capnp", "auth.capnp", "wallet.capnp", "node.capnp"])
def test_schema_text_in_doc_is_the_installed_schema(name: str) -> None:
    installed = Path(SCHEMA_DIR, name).read_text()
    assert fenced_block("capnp", name).rstrip() == installed.rstrip()


def test_unix_client_example_echoes_and_is_logged(workdir: Path) -> None:
    sock = workdir / "e.sock"
    text = "hello from the docs test"
    server = EchoServer(workdir, f"-ipcbind=unix:{sock}", "-debug=ipc")
    try:
        assert sock.stat().st_mode & 0o777 == 0o600
        result = run_example(workdir, "client.py", str(sock), text)
        assert result.stdout.splitlines() == [f"connected to CleanCoin-echo({server.pid})", text]

        # The -debug=ipc lines as section 5 describes them, on the server's side.
        me = rf"CleanCoin-echo\({server.pid}\)"
        hello = server.wait_for_log(
            rf"ipc: {me} <- peer\(\?\) #1 Init\.hello\(client=IpcPeer\(name='example-client', pid=(\d+)\), debug=\[\]\)$")
        client = rf"example-client\({hello.group(1)}\)"
        server.wait_for_log(rf"ipc: {me} connected to {client}$")
        server.wait_for_log(rf"ipc: {me} -> {client} #1 Init\.hello = "
                            rf"IpcPeer\(name='CleanCoin-echo', pid={server.pid}\) \(\d+\.\d{{3}} ms\)$")
        server.wait_for_log(rf"ipc: {me} <- {client} #2 Init\.makeEcho\(\)$")
        server.wait_for_log(rf"ipc: {me} <- {client} #3 Echo\.echo\(echo='{text}'\)$")
        server.wait_for_log(rf"ipc: {me} -> {client} #3 Echo\.echo = '{text}' \(\d+\.\d{{3}} ms\)$")
        server.wait_for_log(rf"ipc: {me} -> {client} #4 Echo\.destroy = None \(\d+\.\d{{3}} ms\)$")
        server.wait_for_log(rf"ipc: {me} disconnected from {client}$")
    finally:
        server.stop()
    assert not sock.exists(), "echo_process should remove its socket when it stops"


def test_tcp_client_example_logs_in_with_the_cookie(workdir: Path) -> None:
    port = free_port()
    server = EchoServer(workdir, f"-ipcbind=tcp:127.0.0.1:{port}")
    try:
        cookie = workdir / ".ipccookie"
        assert cookie.stat().st_mode & 0o777 == 0o600
        assert cookie.read_text().startswith("__cookie__:")
        result = run_example(workdir, "client_tcp.py", "127.0.0.1", str(port), str(cookie))
        assert result.stdout.splitlines() == ["CleanCoin-echo: over tcp"]
        # Without -debug=ipc nothing is logged per call.
        assert " #1 " not in server.log_text()
    finally:
        server.stop()


def test_tcp_client_example_over_tls_with_a_pinned_certificate(workdir: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    server = EchoServer(workdir, f"-ipcbind=tcp:127.0.0.1:{port}", f"-ipccert={cert}", f"-ipckey={key}")
    try:
        result = run_example(workdir, "client_tcp.py", "127.0.0.1", str(port),
                             str(workdir / ".ipccookie"), str(cert))
        assert result.stdout.splitlines() == ["CleanCoin-echo: over tcp"]
    finally:
        server.stop()
