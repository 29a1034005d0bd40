"""Rich text injection: every string the window shows from the node, a wallet or the network
is shown as text, never interpreted as HTML (Qt's labels, dialogs and tooltips take text
that looks like HTML as HTML: Qt::AutoText).

The window runs over tests/gui/rogue_node.py in `markup` mode (a real Cap'n Proto peer
serving the Node interface): wallet names, RPC errors, the node's user agent, labels and
addresses, process names and log lines are HTML (a link, an image of a local file). After each
screen has shown them, no label of the window or of its open dialogs holds markup in a
format that renders it; the texts are shown literally. A real CleanCoin-node with a real P2P
peer whose user agent is an <img> tag shows that peer on the Peers screen as text.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as QtGuiNs
from PySide6.QtWidgets import QLabel, QWidget

from .conftest import free_port, run, wait_for
from .helpers import click, press_ok, type_into
from .rogue import gui_app, link_to, window_over_rogue

def _markup() -> dict[str, Any]:
    import importlib.util
    spec = importlib.util.spec_from_file_location("rogue_node", Path(__file__).parent / "rogue_node.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return {"LINK": module.LINK, "IMAGE": module.IMAGE, **module.MARKUP}


def rendered_as_html(root: QWidget) -> list[tuple[str, str]]:
    """Labels of `root` (its dialogs included) whose text looks like HTML and whose format
    lets Qt render it as HTML; and widgets whose tooltip looks like HTML."""
    found = []
    for widget in [root, *root.findChildren(QWidget)]:
        if isinstance(widget, QLabel) and QtGuiNs.mightBeRichText(widget.text()) \
                and widget.textFormat() != Qt.TextFormat.PlainText:
            found.append((widget.objectName() or type(widget.parent()).__name__, widget.text()[:200]))
        if widget.toolTip() and QtGuiNs.mightBeRichText(widget.toolTip()):
            found.append((f"tooltip of {widget.objectName()}", widget.toolTip()[:200]))
    return found


def test_markup_from_a_compromised_node_is_shown_as_text(qtbot: Any, qapp: Any, aloop: Any, datadir: Path,
                                                         settings_dir: Path) -> None:
    m = _markup()
    with window_over_rogue(qapp, datadir, settings_dir, "markup") as (app, _node):
        w = app.window
        ctx = app.ctx
        found: list[tuple[str, str]] = []
        assert set(ctx.wallets) == set(m["wallets"])
        assert w.sync.label.text() == "Block 5 · 0 in mempool"       # an honest tip is taken
        ctx.select(m["LINK"])
        wait_for(qtbot, lambda: w.overview.state.text().startswith(m["LINK"]), 10, "the wallet shown")
        assert w.console.wallet_label.text() == f"Wallet: {m['LINK']}"
        # The node's user agent and a peer's, on the Peers screen.
        w.show_page("peers")
        wait_for(qtbot, lambda: m["IMAGE"] in w.peers.summary.text(), 10, "the peers summary")
        assert w.peers.model.data(w.peers.model.index(0, 3)) == m["IMAGE"]
        # An RPC error with markup, as the address check shows it.
        w.show_page("send")
        type_into(w.send.address, "bad-address")
        wait_for(qtbot, lambda: "invalid address" in w.send.address_state.text(), 10, "the address check")
        assert w.send.address_state.text() == f"invalid address: {m['error']}"
        # A send refused with markup: the confirmation names the wallet, the error follows.
        type_into(w.send.address, "good-address")
        wait_for(qtbot, lambda: w.send.address_ok, 10, "the address checked valid")
        type_into(w.send.amount, "0.5")
        click(w.send.send_button)
        wait_for(qtbot, lambda: w.send.dialog is not None and w.send.dialog.isVisible(), 10, "the confirmation")
        confirm = w.send.dialog
        found += rendered_as_html(confirm)
        press_ok(confirm)
        wait_for(qtbot, lambda: w.send.status.text().startswith("Not sent"), 10, "the refusal")
        assert w.send.status.text() == f"Not sent: {m['error']}"
        found += rendered_as_html(w)
        # The wallet menu's dialogs name the wallet.
        w.wallet_menu.actions_["encrypt"].trigger()
        dialog = w.wallet_menu.dialog
        assert dialog.isVisible()
        found += rendered_as_html(dialog)
        dialog.reject()
        # The Sandbox panel: process names, events and log lines.
        w.show_page("sandbox")
        wait_for(qtbot, lambda: m["log"] in w.sandbox.events.toPlainText(), 10, "the log line")
        assert m["process"].detail in w.sandbox.events.toPlainText()
        # Errors in the status bar (QStatusBar draws its message as text).
        w.statusBar().showMessage(m["error"])
        found = sorted(set(found + rendered_as_html(w)))
        assert not found, "\n".join(f"{name}: {text}" for name, text in found)


def test_a_peers_user_agent_over_real_p2p_is_shown_as_text(qtbot: Any, qapp: Any, aloop: Any, datadir: Path,
                                                          settings_dir: Path) -> None:
    """A real CleanCoin-node; a peer connects over P2P with an <img> user agent."""
    from cleancoin.components.common.chainparams import REGTEST
    from cleancoin.components.node.p2p.messages import Verack, Version, serialize_message

    from .nodes import cleancoin_node
    agent = '<img src="file:///etc/passwd"><a href="https://evil.example/">peer</a>'
    port = free_port()
    with cleancoin_node(datadir / "node", f"-port={port}", "-disablewallet") as node:
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            peer.sendall(serialize_message(REGTEST.magic, Version(70016, 1, int(time.time()), 7, agent, 0, True)))
            peer.sendall(serialize_message(REGTEST.magic, Verack()))
            deadline = time.monotonic() + 20
            while not any(p.get("subver") == agent for p in node.rpc.call("getpeerinfo")):
                assert time.monotonic() < deadline, node.rpc.call("getpeerinfo")
                time.sleep(0.05)
            app = gui_app(link_to(qapp, node.socket), datadir, settings_dir)
            try:
                run(qapp, app.subscribe(), 60)
                app.window.show_page("peers")
                model = app.window.peers.model
                wait_for(qtbot, lambda: model.rowCount() == 1, 10, "the peer listed")
                assert model.data(model.index(0, 3)) == agent
                found = rendered_as_html(app.window)
                assert not found, found
            finally:
                app.window.close()
                run(qapp, app.close(stop_node=False), 30)
        finally:
            peer.close()


def test_the_window_makes_its_labels_through_one_helper() -> None:
    """Every label of the window is a PlainLabel (components/gui/plain.py): a QLabel made
    anywhere else would take a node's string as HTML again. (QFormLayout's row titles are
    the window's own constant texts.)"""
    import cleancoin.components.gui as gui
    sources = Path(gui.__file__).parent
    direct = [f"{path.name}:{n}" for path in sorted(sources.glob("*.py")) if path.name != "plain.py"
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if "QLabel(" in line or "QMessageBox." in line and "about(" not in line or "setToolTip(" in line]
    assert not direct, direct
