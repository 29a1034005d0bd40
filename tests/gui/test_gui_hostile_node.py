"""Malformed and hostile answers over the window's Cap'n Proto connection to its node.

The window (the real GuiApp and screens) runs over tests/gui/rogue_node.py, a real Cap'n
Proto peer serving the Node interface:

- `hostile`: multi-megabyte strings (wallet name, RPC error, user agent, process names, log
  lines, help), a quarter of a million peers, NaN and negative progress, heights and
  balances, a thousand wallets. Every screen is shown; the window must not crash, must keep
  its event loop running, must not hold what it cannot show, and says what it refused.
- `flood`: notifications pushed without waiting for the window, for three seconds. The
  window keeps drawing, and what it keeps of them is bounded.
- `mute`: a node that never answers a call. The window does not wait forever: the call
  fails with an error the window shows, and the window goes on.
- `deaf`: a node that never answers the subscription: the window gives up on it as on a
  node gone (an attached window would try again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import run, wait_for
from .helpers import console, type_into
from .rogue import LoopWatch, rss_kib, window_over_rogue

#: The longest a label, a table cell or a status message may be (a string cut there says so).
LONGEST_SHOWN = 2100


def _labels(window: Any) -> dict[str, str]:
    from PySide6.QtWidgets import QLabel
    return {f"{w.objectName() or type(w.parent()).__name__}#{i}": w.text()
            for i, w in enumerate(window.findChildren(QLabel))}


def test_hostile_answers_are_refused_or_cut_and_the_window_goes_on(qtbot: Any, qapp: Any, aloop: Any,
                                                                   datadir: Path, settings_dir: Path) -> None:
    before = rss_kib()
    watch = LoopWatch()
    with window_over_rogue(qapp, datadir, settings_dir, "hostile", subscribe=False) as (app, _node):
        w, ctx = app.window, app.ctx
        refused: list[str] = []
        app.events.refused.connect(refused.append)
        run(qapp, app.subscribe(), 60)
        for page in ("overview", "transactions", "peers", "send", "sandbox"):
            w.show_page(page)
            qtbot.wait(200)
        wait_for(qtbot, lambda: ctx.tasks.busy == 0, 60, "the screens' calls")
        type_into(w.send.address, "anything")
        wait_for(qtbot, lambda: w.send.address_state.text().startswith("invalid"), 30, "the address check")
        answer = console(qtbot, w, "help")
        # The wallets to open, as the node lists them: only names a wallet could have.
        w.wallet_menu.actions_["open"].trigger()
        wait_for(qtbot, lambda: w.wallet_menu.dialog is not None, 10, "the open wallet dialog")
        assert w.wallet_menu.dialog.comboBoxItems() == ["<b>other</b>"]
        w.wallet_menu.dialog.reject()
        wait_for(qtbot, lambda: ctx.tasks.busy == 0, 60, "the calls")
        worst = watch.stop()
        grown = rss_kib() - before
        labels = _labels(w)
        too_long = {k: len(v) for k, v in labels.items() if len(v) > LONGEST_SHOWN}
        events = w.sandbox.events.toPlainText()
        peers = w.peers.model.rowCount()
        print(f"worst gap {worst:.2f} s, grown {grown} KiB, too long {too_long}, peers {peers}, "
              f"wallets {len(ctx.wallets)}, console {len(answer)}, events {len(events)}, "
              f"sync {w.sync.label.text()!r}, status {w.last_error[:200]!r}")
        assert not too_long, too_long
        # What was refused is said (the Sandbox panel's events, the status bar): the malformed
        # tip and wallet events; where strings were cut, they say so.
        assert any("malformed tip (progress nan)" in text for text in refused), refused
        assert sum("malformed wallet event" in text for text in refused) == 2, refused
        assert w.sync.label.text() == "connecting…"
        assert "more characters" in w.send.address_state.text()
        assert len(answer) < 1_100_000 and "more characters" in answer
        # The window kept its loop running and did not hold the answers.
        assert peers <= 10_000
        assert max(len(line) for line in events.splitlines()) <= LONGEST_SHOWN
        assert worst < 2.0, f"the event loop stood still for {worst:.2f} s"
        assert grown < 150 * 1024, f"the window grew by {grown} KiB"


def test_a_notification_flood_leaves_the_window_drawing(qtbot: Any, qapp: Any, aloop: Any, datadir: Path,
                                                        settings_dir: Path) -> None:
    from cleancoin.components.gui.sandbox_panel import EVENT_LINES
    before = rss_kib()
    with window_over_rogue(qapp, datadir, settings_dir, "flood") as (app, node):
        w = app.window
        w.show_page("sandbox")
        watch = LoopWatch()
        painted = []
        qtbot.wait(100)
        import time
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            w.sync.label.repaint()              # a paint as the window makes one
            painted.append(time.monotonic())
            qtbot.wait(20)
        worst = watch.stop()
        arrivals = app.events.arrivals
        assert node.stdout is not None
        print(f"worst gap {worst:.2f} s, arrivals {arrivals}, blocks {w.sandbox.events.blockCount()}, "
              f"grown {rss_kib() - before} KiB, node: {node.stdout.readline().strip()}")
        node.kill()             # what it still has queued would only slow the test's end
        assert w.sandbox.events.blockCount() <= EVENT_LINES
        assert worst < 1.0, f"the event loop stood still for {worst:.2f} s during the flood"
        assert rss_kib() - before < 100 * 1024


def test_a_node_that_never_answers_gives_an_error_not_a_hang(qtbot: Any, qapp: Any, aloop: Any, datadir: Path,
                                                             settings_dir: Path, monkeypatch: Any) -> None:
    from cleancoin.components.gui import client
    monkeypatch.setattr(client, "CALL_TIMEOUT", 2.0)      # 600 s in the product
    with window_over_rogue(qapp, datadir, settings_dir, "mute") as (app, _node):
        w = app.window
        watch = LoopWatch()
        answer = console(qtbot, w, "getblockcount", timeout=30)
        assert "did not answer" in answer, answer
        type_into(w.send.address, "anything")
        wait_for(qtbot, lambda: "did not answer" in w.last_error, 30, "the address check's error")
        assert watch.stop() < 1.0


def test_a_node_that_never_answers_the_subscription_is_a_lost_node(qtbot: Any, qapp: Any, aloop: Any,
                                                                   datadir: Path, settings_dir: Path,
                                                                   monkeypatch: Any) -> None:
    import asyncio

    from cleancoin.components.gui import client
    monkeypatch.setattr(client, "SUBSCRIBE_TIMEOUT", 1.0)   # 60 s in the product
    with window_over_rogue(qapp, datadir, settings_dir, "deaf", subscribe=False) as (app, _node):
        runner = asyncio.ensure_future(app.run())
        wait_for(qtbot, runner.done, 20, "the window to give up on the subscription")
        assert app.node_gone.is_set()
        assert app.window.connection.text() == "node gone"
        assert app.client.stats["handleNotifications"].errors == 1
