"""The RPC console keeps no passphrase: not in its history (Up), not in the input line's
undo buffer (Ctrl+Z after Enter), not in its output, also when the line does not parse.

Driven through the widgets of a real window over a real node in this process (CleanCoin-qt's
model, the quickest to start): someone who sits down at an unlocked desktop, or a
screenshot, sees the console as it is after the operator typed the passphrase.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from .conftest import free_port, run, wait_for
from .helpers import console, type_into
from .test_gui_scenarios import _gui_app


def test_a_passphrase_typed_into_the_console_cannot_be_brought_back(qtbot: Any, qapp: Any, aloop: Any,
                                                                     datadir: Path, settings_dir: Path) -> None:
    from cleancoin.components.gui.app import Link
    from cleancoin.components.init.cleancoin_qt import start_node
    from cleancoin.components.node.node import NodeConfig
    from cleancoin.components.node.node_binding import NodeService

    config = NodeConfig(chain="regtest", netdatadir=str(datadir / "regtest"), port=free_port(),
                        rpcport=free_port(), listen=False)
    node, task = run(qapp, start_node(config))
    try:
        app = _gui_app("CleanCoin-qt", Link(NodeService(node), "in process"), datadir, settings_dir)
        runner = asyncio.ensure_future(app.run())
        w = app.window
        page = w.console
        passphrase = f"PlantedConsolePass{os.urandom(6).hex()}"
        console(qtbot, w, "createwallet w")
        wait_for(qtbot, lambda: w.ctx.wallet == "w", 30, "wallet w selected")
        assert "wallet encrypted" in console(qtbot, w, f"encryptwallet {passphrase}")
        assert console(qtbot, w, "getblockcount") == "0"          # an ordinary command, kept
        assert console(qtbot, w, f"walletpassphrase {passphrase} 60") == "null"
        wait_for(qtbot, lambda: w.ctx.current is not None and not w.ctx.current.locked, 30, "w unlocked")

        # Ctrl+Z in the input line after Enter: the cleared line must not come back.
        edit = page.input
        edit.setFocus()
        QTest.keyClick(edit, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert passphrase not in edit.text(), edit.text()
        assert not edit.isUndoAvailable()
        # Up: the last command kept is getblockcount, not the passphrase's.
        QTest.keyClick(edit, Qt.Key.Key_Up)
        assert edit.text() == "getblockcount"

        # A line that does not parse (an unbalanced quote in the passphrase) is not repeated
        # in the output either; the error and the method still show.
        other = f"PlantedBadQuote{os.urandom(6).hex()}"
        type_into(edit, f"walletpassphrase \"{other} 60")
        QTest.keyClick(edit, Qt.Key.Key_Return)
        shown = page.output.toPlainText()
        assert "> walletpassphrase (…)\nParse error: No closing quotation" in shown, shown[-300:]
        QTest.keyClick(edit, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert other not in edit.text()
        # An ordinary line that does not parse is shown as typed.
        type_into(edit, "getblockhash \"1")
        QTest.keyClick(edit, Qt.Key.Key_Return)
        assert "> getblockhash \"1\nParse error" in page.output.toPlainText()

        shown = page.output.toPlainText()
        assert "> walletpassphrase (…)" in shown and "> encryptwallet (…)" in shown and "> getblockcount" in shown
        for secret in (passphrase, other):
            assert secret[-12:-4] not in shown and all(secret[-12:-4] not in line for line in page.history)
        w.close()
        run(qapp, runner)
        run(qapp, app.close(stop_node=False))
    finally:
        node.request_shutdown()
        assert run(qapp, task) == 0
