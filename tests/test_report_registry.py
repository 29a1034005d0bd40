"""Where enforcement reports are registered (sandbox/report_registry.py) and which directory
is refused: the fallback without XDG_RUNTIME_DIR lies in the user's own state directory, and
a directory that is a link, not 0700 or not the user's gets nothing (the squat by another
user is tests/functional/test_report_squat.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cleancoin.sandbox import report_registry


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (report_registry.ENV, "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "cleancoin-sandbox" / os.uname().nodename


def test_without_a_runtime_directory_reports_go_to_the_users_state_directory(state: Path) -> None:
    assert report_registry.register(os.getpid(), {"kind": "zygote"})
    assert report_registry.lookup(os.getpid())["kind"] == "zygote"     # type: ignore[index]
    assert state.stat().st_mode & 0o7777 == 0o700 and state.parent.stat().st_mode & 0o7777 == 0o700


def test_home_is_the_default_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (report_registry.ENV, "XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert report_registry.directory() == str(tmp_path / ".local/state/cleancoin-sandbox" / os.uname().nodename)
    monkeypatch.setenv("HOME", "relative")
    assert report_registry.directory() is None
    assert not report_registry.register(os.getpid(), {"kind": "zygote"})


@pytest.mark.parametrize("spoil", ["mode 0750", "mode 0701", "a symlink", "another user's"])
def test_a_directory_that_is_not_the_users_private_one_gets_nothing(state: Path, tmp_path: Path, spoil: str) -> None:
    state.parent.mkdir(parents=True, mode=0o700)
    if spoil == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        state.symlink_to(tmp_path / "elsewhere")
    else:
        state.mkdir(mode=0o700)
        if spoil.startswith("mode"):
            state.chmod(int(spoil.split()[1], 8))
        elif os.geteuid() == 0:
            os.chown(state, 65534, 65534)
        else:
            pytest.skip("needs root to give the directory to another user")
    assert not report_registry.register(os.getpid(), {"kind": "zygote"})
    assert report_registry.lookup(os.getpid()) is None
    if spoil == "a symlink":
        assert os.listdir(tmp_path / "elsewhere") == []
    # The control: the same directory made right takes the entry.
    if state.is_symlink():
        state.unlink()
        state.mkdir(mode=0o700)
    state.chmod(0o700)
    os.chown(state, os.getuid(), os.getgid())
    assert report_registry.register(os.getpid(), {"kind": "zygote"})


def test_a_runtime_directory_counts_only_when_it_is_the_users_alone(state: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """XDG_RUNTIME_DIR set to a shared directory (/tmp, 1777) gave every user the one name
    <it>/cleancoin-sandbox, which another user could create first (tests/functional/
    test_report_squat.py); now only the user's own 0700 runtime directory is used."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert report_registry.directory() == str(runtime / "cleancoin-sandbox")
    runtime.chmod(0o1777)
    assert report_registry.directory() == str(state)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp")
    assert report_registry.directory() == str(state)


def test_a_runtime_directory_inside_another_users_directory_is_not_used(state: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own 0700 runtime directory, inside a directory another user owns (or one
    others may write without the sticky bit): that user can rename it between the check and
    the write and put a link to a directory of theirs in its place. Until 12-07 (later) only
    the runtime directory itself was looked at, and it was used."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    runtime = theirs / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert report_registry.directory() == str(runtime / "cleancoin-sandbox")      # the control
    os.chown(theirs, 65534, 65534)
    assert report_registry.directory() == str(state)
    os.chown(theirs, 0, 0)
    theirs.chmod(0o777)                                   # anyone may rename what is in it
    assert report_registry.directory() == str(state)
    theirs.chmod(0o1777)                                  # sticky, as /tmp: only the owner may
    assert report_registry.directory() == str(runtime / "cleancoin-sandbox")
    theirs.chmod(0o755)
    # Reached through another user's link: refused too.
    link = tmp_path / "link"
    link.symlink_to(theirs)
    os.lchown(link, 65534, 65534)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(link / "run"))
    assert report_registry.directory() == str(state)
