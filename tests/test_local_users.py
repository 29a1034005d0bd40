"""Another local user against CleanCoin's own file-system steps (a real second uid, setpriv to
nobody, real sockets and directories; needs root to act as the second user).

- The IPC listener's socket in a directory the other user may write: binding it must never
  change the mode of a file the other user points at (a link planted in place of the socket).
- The group rule of `conf.refuse_others` and `conf.make_dirs` (the functional attacks with a
  real group member are in tests/functional/test_other_users.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleancoin.components.common.conf import ConfError, make_dirs, refuse_others
from cleancoin.components.ipc.address import Address, AddressError
from cleancoin.components.ipc.transport import bind

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as a second user")


def as_nobody_popen(*command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command])


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may write, not sticky (others may rename what is in it)."""
    path = Path(tempfile.mkdtemp(prefix="cleancoin-open-", dir="/var/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


SWAPPER = r'''
import os, stat, sys
path, target, stop = sys.argv[1:4]
tmp = path + ".swap"
while not os.path.exists(stop):
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.symlink(target, tmp)
            os.rename(tmp, path)          # the operator's socket is replaced by a link
    except OSError:
        pass
'''


def test_binding_a_unix_socket_never_changes_a_file_through_a_planted_link(open_dir: Path,
                                                                             tmp_path: Path) -> None:
    """Attack: the operator's -ipcbind=unix:PATH lies in a directory the attacker may write;
    the attacker replaces the new socket with a link to a file of the operator's the moment
    it appears. Before 12-06 `_bind_unix` chmod-ed the path after bind, through the link: the
    operator's file (here 0644) became 0600, whatever file the attacker named (a denial of
    service on any file of the operator's; with root, on any file at all). Now the mode comes
    from the umask at bind, and nothing follows the path afterwards."""
    target = tmp_path / "operator-file"
    target.write_text("the operator's")
    target.chmod(0o644)
    sock_path = open_dir / "node.sock"
    stop = open_dir / "stop"
    swapper = as_nobody_popen(sys.executable, "-c", SWAPPER, str(sock_path), str(target), str(stop))
    refused = 0
    try:
        time.sleep(0.2)      # the swapper's interpreter is up
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and stat.S_IMODE(target.stat().st_mode) == 0o644:
            try:
                bind(Address("unix", path=str(sock_path))).close()
            except AddressError:
                refused += 1          # the link was there first, or replaced the socket
            with_link_or_socket = os.path.lexists(sock_path)
            if with_link_or_socket:
                os.unlink(sock_path)
    finally:
        stop.touch()
        swapper.wait(10)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, \
        f"binding chmod-ed the file the attacker's link named ({refused} binds refused on the way)"


def test_a_group_writable_directory_passes_only_for_a_group_of_the_user_alone(tmp_path: Path) -> None:
    """Root's group (root alone) may write: passes. A gid no entry names (no member the system
    knows), or on the way without the sticky bit: refused with the path and chmod g-w. Sticky
    on the way (others cannot rename what is ours in it): passes."""
    team = tmp_path / "team"
    team.mkdir()
    os.chown(team, 0, 0)
    team.chmod(0o775)
    refuse_others(str(team / "data"), "the data directory")
    os.chown(team, 0, 54321)
    team.chmod(0o775)
    with pytest.raises(ConfError, match=f"{team} is writable by group gid 54321.*chmod g-w {team}"):
        refuse_others(str(team), "the data directory")
    own = team / "own"
    own.mkdir(mode=0o700)
    with pytest.raises(ConfError, match="chmod g-w"):
        refuse_others(str(own), "the data directory")      # on the way, not sticky
    team.chmod(0o1775)
    refuse_others(str(own), "the data directory")          # on the way, sticky


def test_make_dirs_makes_what_is_missing_and_refuses_what_another_user_owns(tmp_path: Path) -> None:
    """Missing levels are made (mode less the umask) and checked; an existing level of another
    uid is refused before anything is made in it."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    old = os.umask(0o077)
    try:
        make_dirs(str(data / "regtest" / "wallets"), "the wallet directory", 0o700)
    finally:
        os.umask(old)
    made = data / "regtest" / "wallets"
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
    make_dirs(str(made), "the wallet directory", 0o700)     # existing and ours: fine
    old = os.umask(0o002)                                   # -sysperms on a usergroups system
    try:
        make_dirs(str(data / "signet"), "the data directory")
    finally:
        os.umask(old)
    assert stat.S_IMODE((data / "signet").stat().st_mode) == 0o755   # never group-writable
    planted = data / "testnet"
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(ConfError, match=f"{planted} is owned by uid {NOBODY}"):
        make_dirs(str(planted / "wallets"), "the wallet directory", 0o700)
    assert os.listdir(planted) == []


def _grant_acl(path: Path, *, user: int | None = None, group: int | None = None) -> None:
    """A POSIX access ACL (what `setfacl -m u:USER:rwx` writes; setfacl is not installed
    everywhere): owner rwx, the named user or group rwx, mask rwx, others nothing."""
    import struct
    none = 0xFFFFFFFF
    entries = [(0x01, 7, none)]
    if user is not None:
        entries.append((0x02, 7, user))
    entries.append((0x04, 0, none))
    if group is not None:
        entries.append((0x08, 7, group))
    entries += [(0x10, 7, none), (0x20, 0, none)]
    os.setxattr(path, "system.posix_acl_access",
                struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries))


def test_a_directory_another_user_may_write_through_an_acl_is_refused() -> None:
    """An ACL entry for another user (setfacl -m u:mallory:rwx ~/.cleancoin) shows in the mode
    only as the group bits (the ACL mask), and the owner's group was a group of the user
    alone: the check passed (old code) while nobody planted a conf file in it."""
    base = Path(tempfile.mkdtemp(prefix="cleancoin-acl-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir(mode=0o700)
        os.chown(data, 0, 0)
        _grant_acl(data, user=NOBODY)
        assert subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               "touch", str(data / "CleanCoin.conf")]).returncode == 0
        with pytest.raises(ConfError, match=f"{data} is writable by uid {NOBODY} through its ACL"):
            refuse_others(str(data), "the data directory")
        with pytest.raises(ConfError, match="ACL"):
            make_dirs(str(data / "regtest"), "the data directory")
        # On the way, as for the mode: refused unless sticky.
        own = data / "own"
        own.mkdir(mode=0o700)
        with pytest.raises(ConfError, match="ACL"):
            refuse_others(str(own), "the data directory")
        _grant_acl(data, group=54321)      # a group the system does not know
        with pytest.raises(ConfError, match="through its ACL"):
            refuse_others(str(data), "the data directory")
        _grant_acl(data)                   # no named entry: the mode says it all
        data.chmod(0o700)
        refuse_others(str(own), "the data directory")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_datadir_reached_through_another_users_link_is_refused() -> None:
    """Another user planted `<datadir>/regtest` as a link into the operator's own mainnet
    datadir while they could write the datadir; the operator then made it private. Every
    directory of the resolved path is the operator's, so the check passed and a regtest node
    ran in the mainnet datadir (h28's finding). A link on the way is now checked too: another
    user's is refused, the operator's own is followed."""
    # Where nobody can reach the datadir (pytest's own tmp_path is root's alone).
    tmp_path = Path(tempfile.mkdtemp(prefix="cleancoin-link-", dir="/var/tmp"))
    os.chmod(tmp_path, 0o755)
    datadir = tmp_path / "cc"
    mainnet = tmp_path / "mainnet"
    datadir.mkdir(mode=0o700)
    mainnet.mkdir(mode=0o700)
    os.chmod(datadir, 0o777)                     # for a while, anyone could write it
    link = datadir / "regtest"
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-c", f"import os; os.symlink({str(mainnet)!r}, {str(link)!r})"])
    assert done.returncode == 0 and os.lstat(link).st_uid == NOBODY
    os.chmod(datadir, 0o700)                     # the operator makes it private again
    with pytest.raises(ConfError, match="is a symbolic link owned by uid 65534"):
        make_dirs(str(link), "the network data directory")
    with pytest.raises(ConfError, match="is a symbolic link owned by uid 65534"):
        refuse_others(str(link / "CleanCoin.conf"), "the configuration file")
    # The operator's own link is followed, and its target checked as before.
    os.unlink(link)
    os.symlink(mainnet, link)
    make_dirs(str(link), "the network data directory")
    refuse_others(str(link), "the network data directory")
    shutil.rmtree(tmp_path)
