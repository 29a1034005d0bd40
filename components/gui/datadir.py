"""-choosedatadir: ask for the data directory before anything starts, and remember it.

The question is asked by a short-lived child process with its own QApplication: the GUI
process itself must stay free of Qt's threads until it has confined itself."""

from __future__ import annotations

import os
import sys

from .settings import settings_dir

KEY = "datadir"


def _settings(directory: str | None) -> "object":
    from PySide6.QtCore import QSettings
    base = directory or settings_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    return QSettings(os.path.join(base, "CleanCoin-Qt.ini"), QSettings.Format.IniFormat)


def remembered_datadir(directory: str | None) -> str:
    value = _settings(directory).value(KEY, "")   # type: ignore[attr-defined]
    return str(value) if value else ""


def forget_datadir(directory: str | None) -> None:
    q = _settings(directory)
    q.remove(KEY)   # type: ignore[attr-defined]
    q.sync()        # type: ignore[attr-defined]


def choose_datadir(directory: str | None) -> str | None:
    """Ask (in a child process), create and remember the directory; None when cancelled.
    ConfError (nothing remembered) when another user made the directory or may write it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            from PySide6.QtWidgets import QApplication, QInputDialog
            app = QApplication([sys.argv[0]])
            default = remembered_datadir(directory) or os.path.expanduser("~/.cleancoin")
            text, ok = QInputDialog.getText(None, "Welcome to CleanCoin",
                                            "Choose the data directory (blocks, wallets, logs):",
                                            text=default)
            del app
            if ok and text.strip():
                os.write(write, text.strip().encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write)
    chosen = b""
    while chunk := os.read(read, 4096):
        chosen += chunk
    os.close(read)
    os.waitpid(pid, 0)
    if not chosen:
        return None
    path = os.path.abspath(os.path.expanduser(chosen.decode()))
    # As the node makes its datadir: ConfError for a directory another user made or may write,
    # before it is remembered.
    from ..common.conf import make_dirs
    make_dirs(path, "the data directory")
    q = _settings(directory)
    q.setValue(KEY, path)   # type: ignore[attr-defined]
    q.sync()                # type: ignore[attr-defined]
    return path
