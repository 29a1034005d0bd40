"""The pytest plugin, as a user's own suite uses it: `pytest --cleancoin-policy=...` and the
`cleancoin_sandbox` fixture, run in a separate pytest process against the real kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TESTS = '''
import os, socket

DATA = os.environ["DATA"]

def test_no_network(cleancoin_sandbox):
    cleancoin_sandbox.assert_denied(lambda: socket.socket(socket.AF_INET), errno="EAFNOSUPPORT")

def test_datadir_is_writable_and_etc_is_not_visible(cleancoin_sandbox):
    cleancoin_sandbox.assert_allowed(lambda: open(os.path.join(DATA, "x"), "w").write("ok"))
    cleancoin_sandbox.assert_denied(lambda: open("/etc/passwd").read(), errno="ENOENT")

def test_raw_syscalls(cleancoin_sandbox):
    assert cleancoin_sandbox.syscall("getpid") == "ok"
    assert cleancoin_sandbox.syscall("ptrace", 0, 0, 0, 0) == "SIGSYS"
    assert cleancoin_sandbox.syscall("clone3", 0, 0) == "ENOSYS"

def test_a_wrong_claim_fails(cleancoin_sandbox):
    cleancoin_sandbox.assert_denied(lambda: os.getpid())
'''


def test_a_users_suite_asserts_what_its_policy_refuses(tmp_path: Path) -> None:
    (tmp_path / "test_policy.py").write_text(USER_TESTS)
    data = tmp_path / "data"
    data.mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--cleancoin-policy=strict", f"--cleancoin-datadir={data}", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"DATA": str(data), "PATH": "/usr/bin:/bin"})
    assert "1 failed, 3 passed" in result.stdout, result.stdout[-3000:]
    assert "expected the sandbox to refuse it, but it returned" in result.stdout
    assert (data / "x").read_text() == "ok"
    skipped = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={"DATA": str(data), "PATH": "/usr/bin:/bin"})
    assert "4 skipped" in skipped.stdout, skipped.stdout[-2000:]
