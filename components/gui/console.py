"""The RPC console (bitcoin-qt's debug window): `method arg ...` lines, arguments as JSON
where they parse (numbers, true, objects) and as text otherwise, run for the selected wallet;
history with Up/Down, completion of method names from the node's `help`."""

from __future__ import annotations

import json
import shlex
from typing import Any

from PySide6.QtCore import QEvent, QObject, QStringListModel, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QCompleter, QLineEdit, QPlainTextEdit, QVBoxLayout, QWidget

from cleancoin.components.rpc import jsonfmt
from cleancoin.components.rpc.sensitive import command_method, is_sensitive

from .client import RpcCallError
from .context import GuiContext
from .plain import PlainLabel, break_long_lines, clip

#: Lines of history kept (this session only: commands can hold passphrases).
HISTORY = 100
#: Lines the output keeps, and characters of one answer it shows (a node's answer may be
#: megabytes: laying it out would hold the window).
OUTPUT_LINES = 10_000
MAX_ANSWER = 1024 * 1024


def parse_command(line: str) -> tuple[str, list[Any]]:
    """'sendtoaddress addr 1.5' -> ('sendtoaddress', ['addr', 1.5]); ValueError for bad quoting."""
    words = shlex.split(line)
    if not words:
        raise ValueError("empty command")
    params: list[Any] = []
    for word in words[1:]:
        try:
            params.append(json.loads(word))
        except ValueError:
            params.append(word)
    return words[0], params


class ConsolePage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("console")
        self.output = QPlainTextEdit()
        self.output.setObjectName("console_output")
        self.output.setReadOnly(True)
        self.output.setMaximumBlockCount(OUTPUT_LINES)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.input = QLineEdit()
        self.input.setObjectName("console_input")
        self.input.setPlaceholderText("help · getblockchaininfo · generatetoaddress 1 ADDRESS …")
        self.input.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.methods = QStringListModel()
        completer = QCompleter(self.methods, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.input.setCompleter(completer)
        self.wallet_label = PlainLabel()
        layout = QVBoxLayout(self)
        layout.addWidget(self.output, 1)
        layout.addWidget(self.wallet_label)
        layout.addWidget(self.input)
        self.history: list[str] = []
        self._position = 0
        self.input.returnPressed.connect(self.execute)
        self.input.installEventFilter(self)
        ctx.wallet_selected.connect(self._wallet)
        self._wallet(ctx.wallet)
        self.output.appendPlainText("Welcome to the CleanCoin RPC console. Type help for an overview of "
                                    "the commands. Calls go to the selected wallet.")
        self.load_methods()

    def _wallet(self, name: str) -> None:
        self.wallet_label.setText(f"Wallet: {name}" if name else "Wallet: (none)")

    def load_methods(self) -> None:
        def show(text: str) -> None:
            names = sorted({line.split()[0] for line in text.splitlines()
                            if line and not line.startswith("==") and line.split()[0].isidentifier()})
            self.methods.setStringList(names)
        self.ctx.run("Console completion", self.ctx.call("help"), show)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self.input and event.type() == QEvent.Type.KeyPress:
            key = event.key()  # type: ignore[attr-defined]
            if key in (Qt.Key.Key_Up, Qt.Key.Key_Down) and self.history:
                step = -1 if key == Qt.Key.Key_Up else 1
                self._position = max(0, min(len(self.history), self._position + step))
                self.input.setText(self.history[self._position] if self._position < len(self.history) else "")
                return True
        return super().eventFilter(watched, event)

    def execute(self) -> None:
        line = self.input.text().strip()
        # setText, not clear(): QLineEdit's clear() is an edit Ctrl+Z (or the context menu's
        # Undo) takes back, and the line would return with its passphrase; setText also
        # drops the undo and redo history.
        self.input.setText("")
        if not line:
            return
        try:
            method, params = parse_command(line)
        except ValueError as exc:
            # Not even a line that does not parse: an unbalanced quote in a passphrase.
            named = command_method(line)
            self.output.appendPlainText(f"> {f'{named} (…)' if is_sensitive(named) else line}\nParse error: {exc}")
            return
        secret = is_sensitive(method)
        shown = f"{method} (…)" if secret else line
        if not secret:
            self.history.append(line)
            del self.history[:-HISTORY]
        self._position = len(self.history)
        self.output.appendPlainText(f"> {shown}")

        async def run() -> str:
            try:
                ok, text, code = await self.ctx.client.call_text(method, json.dumps(params), self.ctx.wallet or None)
            except RpcCallError as exc:             # no answer, or one too large
                return exc.message
            if not ok:
                return break_long_lines(f"{text} (code {code})")
            # Amounts exactly as the node wrote them (84.49999580, not the float 84.4999958).
            value = jsonfmt.loads_decimal(text)
            return break_long_lines(clip(value if isinstance(value, str) else jsonfmt.dumps(value, indent=2),
                                         MAX_ANSWER))
        self.ctx.run(f"Console: {method}", run(), self.output.appendPlainText)
