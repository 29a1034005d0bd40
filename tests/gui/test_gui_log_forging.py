"""Log forging: text from a compromised node in the window's own log (CleanCoin-gui's
<settingsdir>/CleanCoin-gui-<network>.log, the record the confined node cannot write).

The window logs what the node sends it: the wallets it says are loaded ("window ready"), the
error of a call that failed. tests/gui/rogue_node.py in `forge` mode (a real Cap'n Proto peer
serving the Node interface) puts a line break, a whole line in the log's own format and
escape sequences (OSC 52, which writes the clipboard of a terminal that shows the log; CSI
2J; U+202E) into both. The log must show them, escaped, inside the record that carries them:
no line of the file starts as a record the window did not write, and no control character
reaches the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .conftest import wait_for
from .rogue import window_over_rogue


def _load_rogue() -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location("rogue_node", Path(__file__).parent / "rogue_node.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _record_starts(text: str) -> list[str]:
    """The lines of a log that start as a record does (a timestamp first)."""
    return [line for line in text.split("\n") if line[:4].isdigit() and line[4:5] == "-"]


def test_a_compromised_node_cannot_forge_or_hide_lines_in_the_windows_log(
        qtbot: Any, qapp: Any, aloop: Any, datadir: Path, settings_dir: Path, tmp_path: Path) -> None:
    from cleancoin.components.gui.logs import setup_gui_logging
    rogue = _load_rogue()
    root = logging.getLogger("cleancoin")
    before = list(root.handlers)
    path = Path(setup_gui_logging(str(tmp_path / "logs"), "regtest", False, []))
    try:
        with window_over_rogue(qapp, datadir, settings_dir, "forge") as (app, _node):
            ctx = app.ctx
            wait_for(qtbot, lambda: "window ready" in path.read_text(), 10, "the window's ready line")
            ctx.run("Send", ctx.call("sendtoaddress", "addr", 1, wallet=True))
            wait_for(qtbot, lambda: "Send failed" in path.read_text(), 10, "the failed call's line")
    finally:
        for handler in root.handlers[len(before):]:
            root.removeHandler(handler)
            handler.close()
    text = path.read_text(encoding="utf-8")
    starts = _record_starts(text)
    # Allowed: the window's own records are there, each on a line of its own.
    assert any("[cleancoin.gui] INFO window ready" in line for line in starts), text
    assert any("[cleancoin.gui] WARNING Send failed" in line for line in starts), text
    # Refused: the node's line is no record of its own, and no control character is written.
    assert not [line for line in starts if line.startswith(rogue.FORGED_LINE)], text
    assert not [c for c in text if c in "\r\x1b\x07\u202e"], repr(text)
    # Nothing is lost: the node's text is in the log, escaped, inside the record that carries it.
    assert "\\x1b]52;c;cGF5IHRvIGV2aWw=\\x07" in text, text
    assert "\\u202eevil" in text and "savings" in text, text
