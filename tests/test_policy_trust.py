"""Another local user against a reviewed policy's files (a real second uid, setpriv to nobody;
needs root to act as them): a base that another user can replace, own or re-point is refused
by the loader, the policy cache and the launch alike (sandbox/policy_trust.py). Until 12-07 the
launcher ran what such a base said at launch, not what was reviewed (attack below)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.sandbox.errors import PolicyErrors
from cleancoin.sandbox.policy_loader import load_policy
from cleancoin.sandbox.policy_trust import problem

TOOL = os.path.join(os.path.dirname(sys.executable), "CleanCoin-sandbox")
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
BASE = '[filesystem]\nread = [{ path = "/etc/hostname", optional = true }]\n'
second_uid = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as a second user")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory below /tmp that nobody can reach (tmp_path is 0700 below pytest-of-root)."""
    path = Path(tempfile.mkdtemp(prefix="policy-trust-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _reviewed(where: Path, base: str) -> Path:
    policy = where / "review.toml"
    policy.write_text(f'extends = ["examples/program", "{base}"]\n')
    return policy


@second_uid
def test_a_base_another_user_replaces_is_refused(open_dir: Path) -> None:
    shared = open_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)          # not sticky: anyone may rename over what is in it
    (shared / "base.toml").write_text(BASE)
    (open_dir / "secret").write_text("s3cret\n")
    (open_dir / "secret").chmod(0o644)
    data = open_dir / "data"
    data.mkdir()
    policy = _reviewed(open_dir, "shared/base.toml")
    # The other user swaps the reviewed base for one that grants the secret. On the code
    # before 12-07 the launch below printed s3cret (exit 0), and `check` said ok.
    swap = f"printf '[filesystem]\\nread = [\"{open_dir}/secret\"]\\n' > {shared}/new && mv {shared}/new {shared}/base.toml"
    assert subprocess.run([*AS_NOBODY, "sh", "-c", swap], timeout=30).returncode == 0
    assert os.stat(shared / "base.toml").st_uid == NOBODY
    launched = subprocess.run([TOOL, "run", "--policy", str(policy), "--datadir", str(data), "--",
                               "/bin/sh", "-c", f"cat {open_dir}/secret"], capture_output=True, text=True, timeout=60)
    assert launched.returncode == 125 and "s3cret" not in launched.stdout
    assert f"{policy}:1: extends[1]: policy {shared}/base.toml may not be what was reviewed" in launched.stderr
    checked = subprocess.run([TOOL, "check", str(policy)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and "is writable by other users (mode 0777)" in checked.stderr

    # The same directory made private again: the base (still nobody's) is refused for its owner.
    shared.chmod(0o755)
    assert problem(str(shared / "base.toml")) == f"{shared}/base.toml is owned by uid {NOBODY}, another user, who can change it"
    # Ours again, in our directory: loaded, and the run reads what the reviewed base grants.
    (shared / "base.toml").unlink()
    (shared / "base.toml").write_text(f'[filesystem]\nread = ["{open_dir}/secret"]\n')
    honest = subprocess.run([TOOL, "run", "--policy", str(policy), "--datadir", str(data), "--",
                             "/bin/sh", "-c", f"cat {open_dir}/secret"], capture_output=True, text=True, timeout=60)
    assert honest.returncode == 0 and honest.stdout == "s3cret\n", honest.stderr


@second_uid
def test_a_link_another_user_owns_is_refused(open_dir: Path) -> None:
    ours = open_dir / "ours.toml"
    ours.write_text(BASE)
    link = open_dir / "base.toml"
    link.symlink_to(ours)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(PolicyErrors, match=f"{link} is a symbolic link owned by uid {NOBODY}"):
        load_policy(str(_reviewed(open_dir, "base.toml")))
    os.lchown(link, 0, 0)
    assert load_policy(str(_reviewed(open_dir, "base.toml"))).files[-2] == str(link)


def test_group_writable_files_and_directories_are_refused_and_sticky_ones_pass(tmp_path: Path) -> None:
    base = tmp_path / "base.toml"
    base.write_text(BASE)
    policy = _reviewed(tmp_path, "base.toml")
    load_policy(str(policy))                                     # 0644 in a 0700 directory
    if os.geteuid() == 0:
        base.chmod(0o664)
        load_policy(str(policy))                                 # root's group: root alone (umask 002)
        os.chown(base, -1, NOBODY)                               # nogroup: nobody's, not ours
        with pytest.raises(PolicyErrors, match=r"review.toml:1: extends\[1\]: .*base.toml is writable by "
                                               f"group {NOBODY}, which has members other than you"):
            load_policy(str(policy))
        base.chmod(0o644)
    policy.chmod(0o666)                                          # the named file too
    with pytest.raises(PolicyErrors, match=r"review.toml is writable by other users \(mode 0666\)"):
        load_policy(str(policy))
    policy.chmod(0o644)
    tmp_path.chmod(0o1777)                                       # a sticky directory on the way
    try:
        load_policy(str(policy))
    finally:
        tmp_path.chmod(0o700)
    # `link/..` is the parent of the link's target, as the kernel resolves it.
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "base.toml").write_text(BASE)
    shared.chmod(0o777)
    (tmp_path / "link").symlink_to(shared / "sub")
    assert problem(f"{tmp_path}/link/../base.toml") == (f"{shared} is writable by other users (mode 0777); "
                                                         f"chmod o-w {shared}")
    assert problem(str(tmp_path / "missing" / "base.toml")).startswith("cannot check")


#: Another user's loop: its own policy file in and out of the name the reviewer gave.
_RENAME_LOOP = """
import os, sys
mine, name = sys.argv[1], sys.argv[2]
open(mine, "w").write('[policy]\\nname = "planted"\\n')
while True:
    os.rename(mine, name)
    os.rename(name, mine)
"""


@second_uid
def test_a_file_another_user_renames_in_between_check_and_read_is_never_read(open_dir: Path) -> None:
    """The check and the read are one walk (policy_trust.open_checked). Until 12-08 the loader
    checked the path when it existed and opened it again to read it: nobody renaming a file of
    its own in and out of the name, in a sticky directory, got it loaded between the two (the
    code before: 9 'planted' policies in 10,658 loads of 3 s at a load of 7). The loop has to
    be seen both ways (refused as nobody's, absent) for the test to count."""
    import time
    from collections import Counter
    shared = open_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    name = shared / "app.toml"
    loop = subprocess.Popen([*AS_NOBODY, sys.executable, "-I", "-S", "-c", _RENAME_LOOP,
                             str(shared / ".mine"), str(name)])
    seen: Counter[str] = Counter()
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not seen["planted"]:
            try:
                seen[load_policy(str(name)).name or "?"] += 1
            except PolicyErrors as errors:
                message = str(errors.errors[0])
                seen["refused" if f"owned by uid {NOBODY}" in message
                     else "absent" if "No such file" in message else message] += 1
    finally:
        loop.kill()
        loop.wait()
    assert seen["planted"] == 0 and set(seen) == {"refused", "absent"}, seen


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a link to another uid")
def test_a_directory_found_safe_that_became_another_users_link_is_looked_at_again(tmp_path: Path) -> None:
    """The policy cache passes the directories an earlier file's walk found safe (`safe_dirs`):
    such a directory is opened as a directory or not skipped at all."""
    shared = tmp_path / "d"
    shared.mkdir()
    (shared / "a.toml").write_text(BASE)
    safe: set[str] = set()
    assert problem(str(shared / "a.toml"), safe) is None and str(shared) in safe
    shared.rename(tmp_path / "real")
    shared.symlink_to(tmp_path / "real")
    os.lchown(shared, NOBODY, NOBODY)
    assert problem(str(shared / "a.toml"), safe) == f"{shared} is a symbolic link owned by uid {NOBODY}, another user"
