"""Files an unconfined process opens in a directory a confined one writes (the network
datadir of CleanCoin-node): links are not followed, a conf file there is protected, and a
cookie that is not a cookie is not sent. Real files and links, from the attacker's side (a
planted link or file) and the operator's (what still works)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cleancoin.components.common.private_files import UnsafeFileError, conf_to_protect, open_log, sandbox_log
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
