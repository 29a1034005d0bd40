"""Files an unconfined process opens in a directory a confined one writes (the network
datadir of CleanCoin-node): links are not followed, a conf file there is protected, and a
cookie that is not a cookie is not sent. Real files and links, from the attacker's side (a
planted link or file) and the operator's (what still works)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cleancoin.components.common.private_files import (RefusedFile, UnsafeFileError, conf_to_protect, open_log,
                                                        read_small_file, remove_own_file, sandbox_log,
                                                        write_cookie, write_new_file, write_pid_file)
from cleancoin.components.ipc import auth
from cleancoin.components.rpc.client import read_cookie


def test_a_log_is_appended_and_private_but_never_written_through_a_link(tmp_path: Path) -> None:
    log = tmp_path / "debug.log"
    old = os.umask(0o077)            # as the node sets it (unless -sysperms)
    try:
        with open_log(str(log)) as stream:
            stream.write("one\n")
    finally:
        os.umask(old)
    with open_log(str(log)) as stream:
        stream.write("two\n")
    assert log.read_text() == "one\ntwo\n" and (log.stat().st_mode & 0o077) == 0
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    log.unlink()
    log.symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        open_log(str(log))
    assert victim.read_text() == "untouched\n"
    log.unlink()
    os.mkfifo(log)
    with pytest.raises(UnsafeFileError):
        open_log(str(log))


def test_a_conf_file_in_the_writable_datadir_is_made_and_protected_or_refused(tmp_path: Path) -> None:
    netdir = tmp_path / "data"
    netdir.mkdir()
    # Outside the datadir the node writes: nothing to protect, nothing created.
    outside = tmp_path / "elsewhere.conf"
    assert conf_to_protect(str(outside), str(netdir)) is None and not outside.exists()
    # Mainnet's place: created empty (0600) so that the confined node cannot create it.
    default = netdir / "CleanCoin.conf"
    assert conf_to_protect(str(default), str(netdir)) == str(default)
    assert default.read_text() == "" and (default.stat().st_mode & 0o777) == 0o600
    default.write_text("server=1\n")
    assert conf_to_protect(str(default), str(netdir)) == str(default)
    assert default.read_text() == "server=1\n"
    # Any other conf file in there could be rewritten for the next start: refused.
    with pytest.raises(UnsafeFileError, match="which the confined node can write"):
        conf_to_protect(str(netdir / "node.conf"), str(netdir))


def test_only_a_cookie_is_ever_sent_and_never_through_a_link(tmp_path: Path) -> None:
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:" + "ab" * 32)
    assert read_cookie(str(cookie)) == "__cookie__:" + "ab" * 32
    secret = tmp_path / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    cookie.unlink()
    cookie.symlink_to(secret)
    with pytest.raises(OSError, match="symbolic link"):
        read_cookie(str(cookie))
    cookie.unlink()
    cookie.write_text(secret.read_text())          # a copy the node wrote there: still not a cookie
    with pytest.raises(OSError, match="does not hold a cookie"):
        read_cookie(str(cookie))


def test_a_small_file_is_read_only_as_a_regular_file_of_its_size(tmp_path: Path) -> None:
    """What a confined process can put where a small file is expected: a FIFO (the reader
    must not wait for a writer), a directory, a link, a sparse file of any size (read: at
    most the limit and one byte more). The regular file next to them is read."""
    small = tmp_path / "small"
    small.write_bytes(b"x" * 16)
    data, info = read_small_file(str(small), 16)
    assert data == b"x" * 16 and info.st_uid == os.geteuid()
    with pytest.raises(RefusedFile, match="larger than 15 bytes"):
        read_small_file(str(small), 15)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RefusedFile, match="not a regular file"):
        read_small_file(str(fifo), 16)           # returns at once: opened non-blocking
    with pytest.raises(RefusedFile, match="not a regular file"):
        read_small_file(str(tmp_path), 16)
    link = tmp_path / "link"
    link.symlink_to(small)
    with pytest.raises(RefusedFile, match="symbolic link") as refused:
        read_small_file(str(link), 16)
    assert str(refused.value) == f"{link}: it is a symbolic link, which is not followed"
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as handle:
        handle.truncate(64 << 30)                # 64 GiB, the node's fsize limit; no disk used
    with pytest.raises(RefusedFile, match="larger than 1024 bytes"):
        read_small_file(str(sparse), 1024)
    with pytest.raises(FileNotFoundError):
        read_small_file(str(tmp_path / "missing"), 16)


def test_the_ipc_cookie_is_read_as_the_rpc_cookie_and_written_past_a_planted_name(tmp_path: Path) -> None:
    """.ipccookie: only a cookie is used (read_cookie), never a file of 64 GiB or a link to a
    secret; writing it never opens what lies at its temporary name (a link there had the
    writer truncate and overwrite the link's target)."""
    written = auth.write_cookie(str(tmp_path))
    assert auth.read_cookie(str(tmp_path)) == written
    cookie = tmp_path / auth.COOKIE_NAME
    assert (cookie.stat().st_mode & 0o777) == 0o600
    with open(cookie, "r+b") as handle:
        handle.truncate(64 << 30)
    with pytest.raises(RefusedFile, match="larger than 1024 bytes"):
        auth.read_cookie(str(tmp_path))
    secret = tmp_path / "pgpass"
    secret.write_text("db:5432:*:operator:hunter2\n")
    cookie.unlink()
    cookie.symlink_to(secret)
    with pytest.raises(RefusedFile, match="symbolic link"):
        auth.read_cookie(str(tmp_path))
    cookie.unlink()
    cookie.write_text(secret.read_text())
    with pytest.raises(RefusedFile, match="does not hold a cookie"):
        auth.read_cookie(str(tmp_path))
    (tmp_path / (auth.COOKIE_NAME + ".tmp")).symlink_to(secret)
    fresh = auth.write_cookie(str(tmp_path))
    assert secret.read_text() == "db:5432:*:operator:hunter2\n"
    assert not cookie.is_symlink() and auth.read_cookie(str(tmp_path)) == fresh


def test_the_sandbox_log_is_created_private_and_never_taken_through_a_link(tmp_path: Path) -> None:
    """sandbox.log is created empty and 0600 before the node confines itself; one that is a
    symlink, not a regular file, or has a second name (whose writes and truncation the
    read-only grant would not cover) stops the start."""
    netdir = tmp_path / "regtest"
    netdir.mkdir()
    path = Path(sandbox_log(str(netdir)))
    assert path == netdir.resolve() / "sandbox.log"
    assert path.read_bytes() == b"" and path.stat().st_mode & 0o777 == 0o600
    path.write_text("kept\n")
    assert sandbox_log(str(netdir)) == str(path) and path.read_text() == "kept\n"
    os.link(path, netdir / "other-name")
    with pytest.raises(UnsafeFileError, match="2 names"):
        sandbox_log(str(netdir))
    (netdir / "other-name").unlink()
    path.unlink()
    (tmp_path / "elsewhere").write_text("")
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        sandbox_log(str(netdir))
    path.unlink()
    path.mkdir()
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        sandbox_log(str(netdir))


def test_the_sandbox_log_keeps_space_of_its_own_beyond_its_end(tmp_path: Path) -> None:
    """The confined node may fill the filesystem it shares with sandbox.log; the monitors'
    appends then go into blocks the log already owns (fallocate, FALLOC_FL_KEEP_SIZE): its
    size is unchanged (no zeros in the record), its allocation covers the reserve, and every
    start tops the reserve up beyond what was written since."""
    from cleancoin.components.common.private_files import SANDBOX_LOG_RESERVE
    netdir = tmp_path / "regtest"
    netdir.mkdir()
    path = Path(sandbox_log(str(netdir)))
    info = path.stat()
    assert info.st_size == 0 and info.st_blocks * 512 >= SANDBOX_LOG_RESERVE, info
    with open(path, "ab") as handle:
        handle.write(b"x" * SANDBOX_LOG_RESERVE)
    sandbox_log(str(netdir))
    info = path.stat()
    assert info.st_size == SANDBOX_LOG_RESERVE and info.st_blocks * 512 >= 2 * SANDBOX_LOG_RESERVE, info


def test_a_new_file_is_written_private_and_nothing_already_there_is_opened(tmp_path: Path) -> None:
    """write_new_file (backupwallet, the offline tool's dump): a new 0600 file holding the data,
    even under umask 0; a file, a link (also one to a missing file) or a FIFO at the name is
    refused without being opened or blocking, and what it points to is untouched."""
    old = os.umask(0)
    try:
        write_new_file(tmp_path / "new", b"secret")
    finally:
        os.umask(old)
    assert (tmp_path / "new").read_bytes() == b"secret" and (tmp_path / "new").stat().st_mode & 0o777 == 0o600
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    (tmp_path / "link").symlink_to(victim)
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(tmp_path / "fifo")
    for name in ("new", "link", "dangling", "fifo"):
        with pytest.raises(FileExistsError):
            write_new_file(tmp_path / name, b"other")
    assert victim.read_bytes() == b"" and not (tmp_path / "missing").exists()
    assert (tmp_path / "new").read_bytes() == b"secret"


def test_a_pid_file_overwrites_a_stale_one_of_ours_but_nothing_else(tmp_path: Path) -> None:
    """write_pid_file: a stale pid file of ours is overwritten; a link (what it leads to stays
    as it was), a FIFO (refused at once), a file with a second name and, as root, a file of
    another user are refused by name; nothing is truncated."""
    pid = tmp_path / "node.pid"
    pid.write_text("99999999\n")
    write_pid_file(str(pid), 42)
    assert pid.read_text() == "42\n"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link, fifo, second = tmp_path / "link.pid", tmp_path / "fifo.pid", tmp_path / "second.pid"
    link.symlink_to(victim)
    os.mkfifo(fifo)
    os.link(victim, second)
    for path, why in ((link, "symbolic link"), (fifo, "FIFO"), (second, "2 names")):
        with pytest.raises(UnsafeFileError, match=why):
            write_pid_file(str(path), 42)
    assert victim.read_text() == "precious\n"
    if os.geteuid() == 0:
        os.chown(pid, 65534, 65534)
        with pytest.raises(UnsafeFileError, match="owned by uid 65534"):
            write_pid_file(str(pid), 43)
        assert pid.read_text() == "42\n"


def test_a_cookie_replaces_a_stale_one_of_ours_and_stop_removes_only_the_file_written(tmp_path: Path) -> None:
    """write_cookie: a stale cookie and `.tmp` of a killed run are replaced, the cookie is 0600;
    a `.tmp` that is a link is refused and left; remove_own_file leaves a file someone renamed
    over the cookie (before 12-07 the stop removed whatever had the name)."""
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:00")
    Path(f"{cookie}.tmp").write_text("half")
    made = write_cookie(str(cookie), "__cookie__:" + "1" * 64)
    assert cookie.read_text() == "__cookie__:" + "1" * 64 and (cookie.stat().st_mode & 0o777) == 0o600
    assert not Path(f"{cookie}.tmp").exists()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    Path(f"{cookie}.tmp").symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="not a stale cookie"):
        write_cookie(str(cookie), "__cookie__:" + "2" * 64)
    assert Path(f"{cookie}.tmp").is_symlink() and victim.read_text() == "untouched"
    replacement = tmp_path / "other"
    replacement.write_text("someone else's")
    replacement.rename(cookie)
    assert not remove_own_file(str(cookie), made) and cookie.read_text() == "someone else's"
    Path(f"{cookie}.tmp").unlink()
    cookie.unlink()
    mine = write_cookie(str(cookie), "__cookie__:" + "3" * 64)
    assert remove_own_file(str(cookie), mine) and not cookie.exists()


def test_a_cookie_is_not_written_where_others_may_write(tmp_path: Path) -> None:
    """A directory others may write (not sticky): another user could rename a file over the
    cookie, so it is refused, naming the directory; nothing is created there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeFileError, match="shared"):
        write_cookie(str(shared / ".cookie"), "__cookie__:" + "1" * 64)
    assert list(shared.iterdir()) == []
