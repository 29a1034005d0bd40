"""Small dialogs, all opened without blocking (`open()`, then a callback): a nested Qt loop
inside a running coroutine would re-enter asyncio, and tests click these like any widget."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFormLayout, QLineEdit, QPlainTextEdit, QVBoxLayout, QWidget,
)

from .plain import PlainLabel


class FormDialog(QDialog):
    """A titled form of line edits; `on_accept(values)` with the texts by field name."""

    def __init__(self, parent: QWidget | None, title: str, intro: str,
                 fields: list[tuple[str, str, bool]], on_accept: Callable[[dict[str, str]], None],
                 check: Callable[[dict[str, str]], str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("dialog_" + title.lower().replace(" ", "_"))
        self._on_accept = on_accept
        self._check = check
        layout = QVBoxLayout(self)
        if intro:
            text = PlainLabel(intro)
            text.setWordWrap(True)
            layout.addWidget(text)
        form = QFormLayout()
        self.edits: dict[str, QLineEdit] = {}
        for name, label, secret in fields:
            edit = QLineEdit()
            edit.setObjectName(name)
            if secret:
                edit.setEchoMode(QLineEdit.EchoMode.Password)
            form.addRow(label, edit)
            self.edits[name] = edit
        layout.addLayout(form)
        self.error = PlainLabel()
        self.error.setStyleSheet("color: #b00")
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self._ok)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def values(self) -> dict[str, str]:
        return {name: edit.text() for name, edit in self.edits.items()}

    def _ok(self) -> None:
        values = self.values()
        problem = self._check(values) if self._check else ""
        if problem:
            self.error.setText(problem)
            return
        self.accept()
        for edit in self.edits.values():        # passphrases do not stay in the widgets
            edit.clear()
        self._on_accept(values)


class ConfirmDialog(QDialog):
    """A question with details; `on_yes()` when confirmed."""

    def __init__(self, parent: QWidget | None, title: str, text: str, on_yes: Callable[[], None]) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setObjectName("confirm")
        layout = QVBoxLayout(self)
        label = PlainLabel(text)
        label.setWordWrap(True)
        layout.addWidget(label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Yes | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(lambda: (self.accept(), on_yes()))
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)


class TextDialog(QDialog):
    """Read-only text (transaction details)."""

    def __init__(self, parent: QWidget | None, title: str, text: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(640, 420)
        layout = QVBoxLayout(self)
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        layout.addWidget(view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


def passphrase_dialog(parent: QWidget | None, wallet: str, then: Callable[[str], None]) -> FormDialog:
    """Ask for `wallet`'s passphrase, then `then(passphrase)`."""
    return FormDialog(parent, "Unlock wallet", f"This operation needs the passphrase of wallet '{wallet}'.",
                      [("passphrase", "Passphrase:", True)], lambda v: then(v["passphrase"]),
                      lambda v: "" if v["passphrase"] else "Enter the passphrase")
