"""The zygote: starts only the components it was given, each under its own policy."""

from __future__ import annotations

import os
import select
import socket
import sys

import pytest

from cleancoin.sandbox.policy_loader import shipped_policy
from cleancoin.sandbox.zygote import ComponentSpec, Zygote, ZygoteError

ECHO = (sys.executable, "-m", "cleancoin.sandbox.echo_child")


@pytest.fixture
def zygote(base_sandbox, sandbox_vars):
    z = Zygote.start({
        "strict": ComponentSpec("strict", ECHO, shipped_policy("strict"), sandbox_vars),
        "plain": ComponentSpec("plain", ECHO, None),
    })
    yield z
    z.stop()


def _echo(z: Zygote, name: str) -> tuple[int, object]:
    ours, theirs = socket.socketpair()
    spawned = z.spawn(name, theirs.fileno())
    theirs.close()
    ours.settimeout(10)
    ours.sendall(b"ping")
    assert ours.recv(16) == b"ping"
    ours.close()
    return spawned.pid, spawned.report


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def test_a_named_component_starts_under_its_own_policy(zygote: Zygote) -> None:
    ours, theirs = socket.socketpair()
    spawned = zygote.spawn("strict", theirs.fileno())
    theirs.close()
    try:
        assert spawned.report is not None and spawned.report.fully_enforced()
        status = _status(spawned.pid)
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
        # The zygote itself runs unrestricted: it is what can still launch.
        assert _status(zygote.pid)["Seccomp"].strip() == "0"
        ours.sendall(b"ping")
        assert ours.recv(16) == b"ping"
    finally:
        ours.close()


def test_unsandboxed_component_and_exit_events(zygote: Zygote) -> None:
    pid, report = _echo(zygote, "plain")
    assert report is None
    ours, theirs = socket.socketpair()
    spawned = zygote.spawn("strict", theirs.fileno())
    theirs.close()
    zygote.kill(spawned.pid)
    ready, _, _ = select.select([zygote.events], [], [], 10)
    assert ready, "no exit event within 10 s"
    events = [zygote.read_event()]
    while select.select([zygote.events], [], [], 0.5)[0]:
        events.append(zygote.read_event())
    killed = [e for e in events if e is not None and e.pid == spawned.pid]
    assert killed and killed[0].returncode == -9 and "SIGKILL" in killed[0].description
    ours.close()


def test_only_named_components_and_their_pids(zygote: Zygote) -> None:
    ours, theirs = socket.socketpair()
    with pytest.raises(ZygoteError, match="unknown component 'wallet'"):
        zygote.spawn("wallet", theirs.fileno())
    with pytest.raises(ZygoteError, match="not a component of this zygote"):
        zygote.kill(os.getpid())
    # After refusals it still serves.
    _echo(zygote, "strict")
    ours.close()
    theirs.close()


def test_a_bad_policy_stops_the_parent_before_any_zygote(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[seccomp]\nallow = [\"opne\"]\n")
    with pytest.raises(ZygoteError, match="unknown syscall 'opne'"):
        Zygote.start({"x": ComponentSpec("x", ECHO, str(bad))})


def test_the_zygote_dies_with_its_parent(base_sandbox, sandbox_vars) -> None:
    read_end, write_end = os.pipe()
    holder = os.fork()
    if holder == 0:
        os.close(read_end)
        z = Zygote.start({"strict": ComponentSpec("strict", ECHO, shipped_policy("strict"), sandbox_vars)})
        ours, theirs = socket.socketpair()
        spawned = z.spawn("strict", theirs.fileno())
        os.write(write_end, f"{z.pid} {spawned.pid}\n".encode())
        os._exit(0)      # the parent goes away without stopping anything
    os.close(write_end)
    with os.fdopen(read_end) as handle:
        zygote_pid, component_pid = map(int, handle.read().split())
    os.waitpid(holder, 0)
    for pid in (zygote_pid, component_pid):
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            select.select([], [], [], 0.05)
        else:
            pytest.fail(f"pid {pid} outlived the zygote's parent")



def _echo_target(fd: int) -> int:
    """A forked component: answer one message on its IPC socket, then wait for its end."""
    with socket.socket(fileno=fd) as sock:
        sock.sendall(sock.recv(16))
        sock.recv(16)
    return 0


def test_forked_zygote_runs_a_target_under_its_policy(base_sandbox, sandbox_vars) -> None:
    """Zygote.fork: the component is a function run in the sandboxed child, no exec."""
    z = Zygote.fork({"strict": ComponentSpec("strict", (), shipped_policy("strict"), sandbox_vars,
                                             target=_echo_target)})
    ours, theirs = socket.socketpair()
    try:
        spawned = z.spawn("strict", theirs.fileno())
        theirs.close()
        ours.settimeout(10)
        ours.sendall(b"ping")
        assert ours.recv(16) == b"ping"
        assert spawned.report is not None and spawned.report.fully_enforced()
        status = _status(spawned.pid)      # still running: it waits for our end
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
    finally:
        ours.close()
        z.stop()


def test_forked_zygote_refuses_a_bad_policy_before_forking(base_sandbox, sandbox_vars, tmp_path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('extends = ["base/python.toml"]\n[filesystem]\nwrite = ["${nosuch}"]\n')
    with pytest.raises(ZygoteError, match=r"undefined variable \$\{nosuch\}"):
        Zygote.fork({"c": ComponentSpec("c", (), str(broken), sandbox_vars, target=_echo_target)})
