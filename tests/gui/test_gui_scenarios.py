"""The window against a real node, driven through its widgets: CleanCoin-qt's window over
the node in this process (wallet made in the wallet menu, blocks mined through the console,
the balance label changed by notification, a payment typed into the send screen, encryption
and the send's passphrase prompt). tests/gui/test_gui_executables.py starts the executables
themselves, confined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port, run, wait_for
from .helpers import console, create_wallet, new_address, select_wallet, send


def _gui_app(executable: str, link: Any, datadir: Path, settings_dir: Path, report: Any = None) -> Any:
    from cleancoin.components.gui.app import GuiApp, own_process
    from cleancoin.components.gui.settings import GuiSettings
    own = own_process(executable, report, "test")
    app = GuiApp(executable, "regtest", link, own=own, settings=GuiSettings.open("regtest", str(settings_dir)),
                 backup_dir=str(datadir / "regtest" / "wallets"))
    app.show()
    return app


def _available(window: Any) -> str:
    return window.overview.available.text()


def run_in_background(app: Any) -> Any:
    import asyncio
    return asyncio.ensure_future(app.run())


def test_cleancoin_qt_window_over_the_node_in_process(qtbot: Any, qapp: Any, aloop: Any, datadir: Path,
                                                      settings_dir: Path) -> None:
    from cleancoin.components.gui.app import Link
    from cleancoin.components.init.cleancoin_qt import start_node
    from cleancoin.components.node.node import NodeConfig
    from cleancoin.components.node.node_binding import NodeService

    config = NodeConfig(chain="regtest", netdatadir=str(datadir / "regtest"), port=free_port(),
                        rpcport=free_port(), listen=False)
    node, task = run(qapp, start_node(config))
    try:
        app = _gui_app("CleanCoin-qt", Link(NodeService(node), "in process"), datadir, settings_dir)
        runner = run_in_background(app)
        w = app.window
        create_wallet(qtbot, w, "solo")
        address = new_address(qtbot, w)
        console(qtbot, w, f"generatetoaddress 101 {address}")
        wait_for(qtbot, lambda: _available(w) == "50.00000000 CC", 30, "the balance after 101 blocks")
        create_wallet(qtbot, w, "bob", passphrase="correct horse")
        bob = new_address(qtbot, w)
        select_wallet(qtbot, w, "solo")
        status = send(qtbot, w, bob, "1.5")
        assert status.startswith("Sent 1.50000000 CC"), status
        console(qtbot, w, f"generatetoaddress 1 {address}")
        select_wallet(qtbot, w, "bob")
        wait_for(qtbot, lambda: _available(w) == "1.50000000 CC", 30, "bob's balance by notification")
        assert w.ctx.current.encrypted and w.ctx.current.locked
        status = send(qtbot, w, address, "0.5", passphrase="correct horse")
        assert status.startswith("Sent 0.50000000 CC"), status
        wait_for(qtbot, lambda: w.ctx.current.locked, 30, "bob locked again after the send")
        wait_for(qtbot, lambda: w.transactions.model.rowCount() == 2, 10, "both transactions listed")
        w.show_page("sandbox")
        w.sandbox.refresh()
        wait_for(qtbot, lambda: w.ctx.tasks.busy == 0, 10)
        assert [p.name for p in w.sandbox.processes()] == ["CleanCoin-qt"]
        assert "not confined" in w.sandbox.processes()[0].details()
        w.close()
        run(qapp, runner)
        run(qapp, app.close(stop_node=False))
    finally:
        node.request_shutdown()
        assert run(qapp, task) == 0


@pytest.mark.parametrize("line, expected", [
    ('getblockhash 0', ("getblockhash", [0])),
    ('sendtoaddress abc 1.5 "" "for bob"', ("sendtoaddress", ["abc", 1.5, "", "for bob"])),
    ('createrawtransaction [] \'{"a":1}\'', ("createrawtransaction", [[], {"a": 1}])),
])
def test_console_parses_arguments_as_json_or_text(line: str, expected: tuple[str, list[Any]]) -> None:
    from cleancoin.components.gui.console import parse_command
    assert parse_command(line) == expected
