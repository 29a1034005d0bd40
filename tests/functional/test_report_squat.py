"""Functional: another local user against where a non-root user's enforcement reports go
(sandbox/report_registry.py), with XDG_RUNTIME_DIR unset (a login over su, cron, a service
without a session) or set to a directory that is not the user's alone (/tmp, as some
containers and scripts set it). Real uids (tests/functional/as_user.py), real `CleanCoin-sandbox run` and
`status`; no node, so it runs once, in the CleanCoin-node pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from as_user import Account, skip_reason
from framework import is_multiprocess

pytestmark = [pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
              pytest.mark.skipif(not is_multiprocess(), reason="starts no node: run once, in the CleanCoin-node pass")]

TOOL = str(Path(sys.executable).parent / "CleanCoin-sandbox")
FIRST_UID = 3_500_000 + (os.getpid() % 100_000) * 2


@pytest.fixture
def people() -> Iterator[tuple[Account, Account]]:
    """The operator (home 0700) and another local user, below a directory outside /tmp."""
    base = tempfile.mkdtemp(prefix="cleancoin-users-", dir="/var/tmp")
    os.chmod(base, 0o755)
    squats = [f"/tmp/cleancoin-sandbox-{FIRST_UID}", "/tmp/cleancoin-sandbox"]
    try:
        yield Account(FIRST_UID, base, "operator", 0o700), Account(FIRST_UID + 1, base, "attacker", 0o700)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for squat in squats:
            if os.path.isdir(squat) and os.stat(squat).st_uid == FIRST_UID + 1:
                shutil.rmtree(squat, ignore_errors=True)


def _sleeper_below(pid: int) -> int | None:
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "sleep":
                    return child
            except OSError:
                pass
        pending += children
    return None


@pytest.mark.parametrize("runtime", ["unset", "/tmp"])
def test_another_user_cannot_keep_the_operators_reports_from_being_written(people: tuple[Account, Account],
                                                                           runtime: str) -> None:
    """Attack: another local user creates the directory the operator's reports would go to
    before the operator's first sandbox (its own directory, 0700: the operator can neither
    use nor remove it): /tmp/cleancoin-sandbox-UID for the operator's uid, or, where the
    operator's XDG_RUNTIME_DIR is /tmp, /tmp/cleancoin-sandbox. Before 12-07 the first was
    where the reports went without XDG_RUNTIME_DIR; until 12-07 the second was taken as the
    runtime directory's (any existing directory was): none was written, and
    `CleanCoin-sandbox status` of the operator's confined program found no report ("not
    sandboxed" for every process of a confined tree). Now a runtime directory counts only
    when it is the user's own, 0700 (as the XDG spec requires of it), and the fallback lies
    in the operator's own home ($XDG_STATE_HOME, else ~/.local/state), where no other user
    can create anything: status finds the report there."""
    operator, attacker = people
    squat = f"/tmp/cleancoin-sandbox-{operator.uid}" if runtime == "unset" else "/tmp/cleancoin-sandbox"
    if runtime != "unset" and os.path.lexists(squat):
        pytest.skip(f"{squat} exists already (another run's or user's)")
    extra = {} if runtime == "unset" else {"XDG_RUNTIME_DIR": runtime}
    made = subprocess.run(attacker.python("import os, sys; os.mkdir(sys.argv[1], 0o700)", squat),
                          capture_output=True, text=True, timeout=60, env=attacker.env())
    assert made.returncode == 0 and os.stat(squat).st_uid == attacker.uid, made.stderr[-2000:]
    datadir = Path(operator.home) / "data"
    datadir.mkdir(mode=0o700)
    os.chown(datadir, operator.uid, operator.gid)
    tool = subprocess.Popen(operator.command(TOOL, "run", "--policy", "examples/program", "--datadir", str(datadir),
                                             "--", "/bin/sleep", "30"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=operator.env(**extra),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        sleeper = None
        while sleeper is None and time.monotonic() < deadline and tool.poll() is None:
            sleeper = _sleeper_below(tool.pid)
            time.sleep(0.05)
        assert sleeper is not None, tool.communicate(timeout=10)[1][-2000:]
        done = subprocess.run(operator.command(TOOL, "status", "--json", str(sleeper)), capture_output=True,
                              text=True, timeout=60, env=operator.env(**extra))
    finally:
        tool.kill()
        tool.wait(10)
    [shown] = json.loads(done.stdout)["processes"]
    assert (shown["report"] or {}).get("policy") == "examples/program", shown
    # (Its findings are not this test's: `run` execs the program, and exec makes it dumpable
    # again, which status rightly says against the report.)
    assert shown["role"] == "component" and shown["seccomp_mode"] == "filter", shown
    # Where it was written: the operator's own directory, private to it; nothing in the squat.
    registry = Path(operator.home) / ".local" / "state" / "cleancoin-sandbox"
    [host] = list(registry.iterdir())
    info = host.lstat()
    assert info.st_uid == operator.uid and info.st_mode & 0o7777 == 0o700, oct(info.st_mode)
    assert os.listdir(squat) == []
