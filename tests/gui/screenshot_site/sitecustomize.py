"""Test harness (never installed): photographs every screen of a real, confined CleanCoin-gui.

tests/gui/test_screenshots.py copies this file into a directory of its own, writes
`screenshots.json` beside it (where to write, which address to type into the send screen) and
starts CleanCoin-gui with PYTHONPATH pointing there. In the CleanCoin-gui process only, this
wraps `GuiApp.show`: once the window is up (confined by gui.toml, attached to a node the test
filled with wallets and transactions) a task waits for the data to arrive by notification,
fills in the send screen, asks for a receiving address, runs a console command, selects the
wallet process in the Sandbox panel, and saves a PNG of the window per screen into the
directory the config names (the GUI's settings directory: the only one it may write). Then it
writes `done.json` and closes the window. Nothing here weakens the sandbox.
"""

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_PATH = os.path.join(_HERE, "screenshots.json")

#: (tab object name, file name), in the order of the tabs.
SCREENS = (("overview", "gui-overview"), ("send", "gui-send"), ("receive", "gui-receive"),
           ("transactions", "gui-transactions"), ("peers", "gui-peers"), ("console", "gui-console"),
           ("sandbox", "gui-sandbox"))


async def _until(predicate, what, timeout=30.0):
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def _shoot(app, config):
    import asyncio

    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    w = app.window
    out = config["out"]
    saved = {}
    try:
        await _until(lambda: config["wallet"] in w.ctx.wallets, "the wallet loaded")
        w.wallet_box.setCurrentText(config["wallet"])
        await _until(lambda: w.ctx.wallet == config["wallet"] and w.transactions.model.rowCount() > 0
                     and w.overview.recent.count() > 0, "the wallet's transactions")
        await _until(lambda: len(w.sandbox.processes()) >= 4, "the process tree")

        def type_into(edit, text):
            edit.setFocus()
            edit.clear()
            QTest.keyClicks(edit, text)
        type_into(w.send.address, config["pay_to"])
        type_into(w.send.label, "Bob")
        type_into(w.send.amount, "2.5")
        await _until(lambda: w.send.address_ok and w.send.fee.text(), "the send screen checked")
        type_into(w.receive.label, "Groceries")
        QTest.mouseClick(w.receive.new_button, Qt.MouseButton.LeftButton)
        await _until(lambda: w.receive.address.text() and not w.receive.qr.pixmap().isNull(), "a new address")
        w.show_page("console")
        for command in ("getblockcount", "getbalances"):
            before = w.console.output.toPlainText()
            type_into(w.console.input, command)
            QTest.keyClick(w.console.input, Qt.Key.Key_Return)
            await _until(lambda: w.console.output.toPlainText() != before and w.ctx.tasks.busy == 0,
                         f"the console's {command}")
        tree = w.sandbox.tree
        items = tree.findItems("CleanCoin-wallet", Qt.MatchFlag.MatchRecursive)
        if items:
            tree.setCurrentItem(items[0])
        for page, name in SCREENS:
            w.show_page(page)
            await asyncio.sleep(0.3)          # layout, and the refreshes a shown page starts
            await _until(lambda: w.ctx.tasks.busy == 0, f"the {page} screen's calls")
            path = os.path.join(out, name + ".png")
            if not w.grab().save(path, "PNG"):
                raise OSError(f"cannot save {path}")
            saved[page] = path
        result = {"saved": saved}
    except BaseException as exc:  # noqa: BLE001 - the test must see what went wrong
        import traceback
        result = {"saved": saved, "error": traceback.format_exc()[-3000:]}
    with open(os.path.join(out, "done.json"), "w") as handle:
        json.dump(result, handle)
    w.close()


def _install(config):
    import asyncio

    from PySide6 import QtTest  # noqa: F401 - imported before the window confines itself

    from cleancoin.components.gui import app as gui_app
    original_show = gui_app.GuiApp.show

    def show(self):
        original_show(self)
        self._screenshots = asyncio.ensure_future(_shoot(self, config))
    gui_app.GuiApp.show = show


if os.path.exists(_CONFIG_PATH) and os.path.basename(sys.argv[0]) == "CleanCoin-gui":
    with open(_CONFIG_PATH) as _handle:
        _install(json.load(_handle))
