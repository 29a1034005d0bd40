"""Where the GUI keeps its files, and the window's own settings (geometry, last wallet).

The settings directory ($XDG_CONFIG_HOME/CleanCoin) holds what the next, unconfined start
reads before it confines anything: CleanCoin-Qt.ini (the datadir chosen with -choosedatadir,
which decides the conf file the started node obeys) and the window's log (opened before
confinement). The confined window may write only its subdirectory `window/` (gui.toml's
${datadir}): a compromised window must not choose what its next start, or CleanCoin-qt (which
keeps its own settings file beside CleanCoin-Qt.ini), trusts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from PySide6.QtCore import QSettings


def settings_dir() -> str:
    """$XDG_CONFIG_HOME/CleanCoin (default ~/.config/CleanCoin), as Qt programs keep theirs."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "CleanCoin")


def check_settings_dir(directory: str | None = None) -> str:
    """Make (if missing) and check the settings directory as the node's datadir is checked
    (`conf.make_dirs`: ours, not writable by another user or by a group with another member,
    no link of another user's on the way), and every entry in it ours or root's; its path.
    What lies here is read by the next, unconfined start: CleanCoin-Qt.ini chooses the data
    directory, CleanCoin-qt's own settings are parsed by Qt, the window's log is appended to.
    ConfError names what is wrong and how to fix it."""
    from ..common.conf import ConfError, make_dirs
    path = directory or settings_dir()
    make_dirs(path, "the settings directory", 0o700)
    with os.scandir(path) as entries:
        for entry in entries:
            owner = entry.stat(follow_symlinks=False).st_uid
            if owner not in (os.geteuid(), 0):
                raise ConfError(f"The settings directory {path} is not safe: {entry.path} is owned by "
                                f"uid {owner}, another user, who chose what it holds; remove it")
    return path


def window_dir(directory: str | None = None) -> str:
    """The one directory the confined window may write: `<settings directory>/window`."""
    return os.path.join(directory or settings_dir(), "window")


@dataclass
class GuiSettings:
    """One network's GUI settings file."""

    path: str

    @classmethod
    def open(cls, network: str, directory: str | None = None, *, confined_window: bool) -> "GuiSettings":
        """`confined_window`: CleanCoin-gui's window, which may write its file. CleanCoin-qt
        runs unconfined, so its file lies outside the window's directory: what a compromised
        window writes must not reach an unconfined process (a geometry blob Qt parses)."""
        directory = window_dir(directory) if confined_window else (directory or settings_dir())
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return cls(os.path.join(directory, f"CleanCoin-Qt-{network}.ini"))

    def _q(self) -> QSettings:
        return QSettings(self.path, QSettings.Format.IniFormat)

    def get(self, key: str, default: str = "") -> str:
        value = self._q().value(key, default)
        return str(value) if value is not None else default

    def set(self, key: str, value: str) -> None:
        q = self._q()
        q.setValue(key, value)
        q.sync()

    def reset(self) -> None:
        """-resetguisettings: forget everything (the file is emptied, not removed)."""
        q = self._q()
        q.clear()
        q.sync()
