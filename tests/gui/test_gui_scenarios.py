"""The window against a real node, driven through its widgets as a person does (typing into
widgets, clicking, menus; tests/gui/helpers.py): the same scenario (helpers.wallet_scenario)
for both process models.

- CleanCoin-qt: the window over the node in this process (the local `Node` binding).
- CleanCoin-gui: the window over a real CleanCoin-node started as CleanCoin-gui starts it
  (components/init/cleancoin_gui.spawn_node: the sandbox launcher, a socket pair, -ipcfd), with
  its sandboxed CleanCoin-wallet process; every call and notification crosses Cap'n Proto. The
  wallet process is killed with SIGKILL and the Sandbox panel shows the restart from the
  node's process events. Only the window's own confinement is left out (this test process
  cannot confine itself); tests/gui/test_gui_executables.py runs the confined executable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port, run, wait_for
from .helpers import available, new_address, wallet_scenario


def _gui_app(executable: str, link: Any, datadir: Path, settings_dir: Path, report: Any = None) -> Any:
    from cleancoin.components.gui.app import GuiApp, own_process
    from cleancoin.components.gui.settings import GuiSettings
    own = own_process(executable, report, "test")
    app = GuiApp(executable, "regtest", link, own=own, settings=GuiSettings.open("regtest", str(settings_dir),
                                                                   confined_window=executable == "CleanCoin-gui"),
                 backup_dir=str(datadir / "regtest" / "wallets"))
    app.show()
    return app


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
        runner = asyncio.ensure_future(app.run())
        w = app.window
        wallet_scenario(qtbot, w)
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


def _process(window: Any, name: str) -> Any:
    found = [p for p in window.sandbox.processes() if p.name == name]
    assert len(found) == 1, [p.name for p in window.sandbox.processes()]
    return found[0]


def test_cleancoin_gui_window_over_ipc_and_a_wallet_restart_in_the_sandbox_panel(
        qtbot: Any, qapp: Any, aloop: Any, datadir: Path, settings_dir: Path) -> None:
    from cleancoin.components.init.cleancoin_gui import _wait_node, link_spawned, spawn_node
    from cleancoin.components.interfaces.init import IpcPeer

    process, sock = spawn_node(["-regtest", f"-datadir={datadir}", f"-port={free_port()}",
                                f"-rpcport={free_port()}", "-printtoconsole=0"])
    try:
        link = run(qapp, link_spawned(sock, IpcPeer("CleanCoin-gui", os.getpid()), False,
                                      f"socket pair with CleanCoin-node (pid {process.pid})"))
        app = _gui_app("CleanCoin-gui", link, datadir, settings_dir)
        runner = asyncio.ensure_future(app.run())
        w = app.window
        wallet_scenario(qtbot, w)

        # The Sandbox panel: the tree below this window, each process confined by its policy.
        w.show_page("sandbox")
        panel = w.sandbox
        wait_for(qtbot, lambda: len(panel.processes()) == 4, 20, "the process tree")
        assert [p.name for p in panel.processes()] == [
            "CleanCoin-gui", "CleanCoin-node", "CleanCoin-node zygote", "CleanCoin-wallet"]
        assert _process(w, "CleanCoin-node").policy == "node"
        wallet = _process(w, "CleanCoin-wallet")
        assert wallet.policy == "wallet" and "seccomp" in wallet.summary()
        assert wallet.restarts == 0 and wallet.pid
        rows = {panel.stats.rows[i]["name"]: panel.stats.rows[i] for i in range(len(panel.stats.rows))}
        assert rows["executeRpc(generatetoaddress)"]["count"] == 2 and "socket pair" in panel.transport.text()

        w.wallet_box.setCurrentText("alice")
        wait_for(qtbot, lambda: w.ctx.wallet == "alice", 10, "alice selected")
        before = available(w)
        assert before.endswith(" CC") and not before.startswith("0.")

        # kill -9 of the wallet process: the node restarts it, the panel shows it as it happens.
        os.kill(wallet.pid, signal.SIGKILL)
        wait_for(qtbot, lambda: panel.restarts_seen == 1, 60, "the restart in the Sandbox panel")
        events = panel.events.toPlainText()
        assert "CleanCoin-wallet" in events and " exited" in events and "SIGKILL" in events, events
        assert events.index(" exited") < events.index(" restarted")
        wait_for(qtbot, lambda: _process(w, "CleanCoin-wallet").restarts == 1, 20, "the tree after the restart")
        assert _process(w, "CleanCoin-wallet").pid != wallet.pid
        # The wallets come back with the process, and it serves the window again.
        wait_for(qtbot, lambda: {"alice", "bob"} <= set(w.ctx.wallets), 30, "the wallets loaded again")
        w.wallet_box.setCurrentText("alice")
        wait_for(qtbot, lambda: w.ctx.wallet == "alice" and available(w) == before, 30,
                 "alice's balance shown again after the restart")
        assert new_address(qtbot, w).startswith("ccrt1"), "the restarted wallet process answers"
        w.close()
        run(qapp, runner)
        run(qapp, app.close(stop_node=True))
        assert _wait_node(process) == 0, "the node this window started stops when it closes"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_node_gone_before_the_window_subscribes_is_a_lost_connection(
        qtbot: Any, qapp: Any, aloop: Any, datadir: Path, settings_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The node dies between the connection and the window's subscription: the window counts
    it as the connection's end (with no reconnect, it ends). Its run() used to die in the
    failed subscribe instead, and the window then never saw the node again."""
    from cleancoin.components.init.cleancoin_gui import link_spawned, spawn_node
    from cleancoin.components.interfaces.init import IpcPeer

    process, sock = spawn_node(["-regtest", f"-datadir={datadir}", f"-port={free_port()}",
                                f"-rpcport={free_port()}", "-printtoconsole=0", "-disablewallet"])
    try:
        link = run(qapp, link_spawned(sock, IpcPeer("CleanCoin-gui", os.getpid()), False, "socket pair"))
        process.kill()
        process.wait()
        app = _gui_app("CleanCoin-gui", link, datadir, settings_dir)
        with caplog.at_level(logging.INFO, logger="cleancoin.gui"):
            run(qapp, asyncio.wait_for(app.run(), 30))          # returns; does not raise
        assert app.node_gone.is_set()
        assert "the connection to the node ended" in caplog.text
        app.window.close()
        run(qapp, app.close(stop_node=False))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_window_with_no_node_yet_says_it_waits_and_keeps_trying(
        qtbot: Any, qapp: Any, aloop: Any, datadir: Path, settings_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An attached GUI whose node went before the first call (Link.waiting) opens its window
    saying it waits, and keeps asking its connector until the window closes."""
    from cleancoin.components.gui import app as app_module
    from cleancoin.components.gui.app import Link
    app = _gui_app("CleanCoin-gui", Link.waiting("unix:/nowhere/node.sock", "connection to peer lost"),
                   datadir, settings_dir)
    tries: list[float] = []

    async def reconnect() -> Link:
        tries.append(asyncio.get_running_loop().time())
        raise ConnectionError("not there")      # as Connector.connect when nothing listens
    app.reconnect = reconnect
    monkeypatch.setattr(app_module, "RECONNECT_SECONDS", 0.1)
    runner = asyncio.ensure_future(app.run())
    wait_for(qtbot, lambda: len(tries) >= 2, 10, "two tries to reconnect")
    assert "waiting for the node at unix:/nowhere/node.sock" in app.window.connection.text()
    assert not runner.done()
    app.window.close()
    run(qapp, asyncio.wait_for(runner, 10))
    run(qapp, app.close(stop_node=False))


@pytest.mark.parametrize("line, expected", [
    ('getblockhash 0', ("getblockhash", [0])),
    ('sendtoaddress abc 1.5 "" "for bob"', ("sendtoaddress", ["abc", 1.5, "", "for bob"])),
    ('createrawtransaction [] \'{"a":1}\'', ("createrawtransaction", [[], {"a": 1}])),
])
def test_console_parses_arguments_as_json_or_text(line: str, expected: tuple[str, list[Any]]) -> None:
    from cleancoin.components.gui.console import parse_command
    assert parse_command(line) == expected


def test_transactions_are_listed_newest_first_within_one_second(qapp: Any) -> None:
    """listtransactions is oldest first; a burst of blocks shares one timestamp."""
    from cleancoin.components.gui.models import TransactionsModel
    rows = [{"txid": t, "time": 100, "confirmations": c, "category": "generate", "amount": 50}
            for t, c in (("a", 3), ("b", 2), ("c", 1))] + [
           {"txid": "d", "time": 100, "confirmations": 0, "category": "send", "amount": -1},
           {"txid": "e", "time": 99, "confirmations": 4, "category": "generate", "amount": 50}]
    model = TransactionsModel()
    model.set_rows(rows)
    assert [r["txid"] for r in model.rows] == ["d", "c", "b", "a", "e"]
