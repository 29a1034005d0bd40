"""Text from the node, a wallet or the network, as the window shows it: as text, always.

Qt's labels (and dialogs, tooltips, message boxes) take a string that looks like HTML as HTML
(Qt::AutoText): a wallet name, an RPC error or a user agent holding `<a href=...>` would show
as a link, `<img src=...>` would load an image, a `<table>` would take over the layout. The
node may be compromised and the network is anybody, so every label of the window is a
`PlainLabel` (bitcoin-qt escapes with GUIUtil::HtmlEscape, or sets Qt::PlainText).

A string may also be megabytes long (one Cap'n Proto message may hold 64 MiB): laying out
such a label, table cell or status message holds the event loop for as long as it takes
(minutes). What the window shows of one string is cut at MAX_SHOWN characters, and says so.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget


#: Characters of one string a label, a table cell, a list item or a status message shows.
MAX_SHOWN = 2000


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """`text`, or its first `limit` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


#: The longest line a text pane is handed: Qt lays out one line in time that grows with the
#: square of its length (a 256 kB line holds the window for seconds, a 1 MB one for minutes).
LONGEST_LINE = 1000


def break_long_lines(text: str, width: int = LONGEST_LINE) -> str:
    """`text` with every line longer than `width` broken into lines of `width` (nothing lost)."""
    if all(len(line) <= width for line in text.split("\n")):
        return text
    return "\n".join(line[i:i + width] if line else "" for line in text.split("\n")
                     for i in range(0, max(len(line), 1), width))


class PlainLabel(QLabel):
    """A QLabel whose text is never interpreted (Qt.TextFormat.PlainText), cut at MAX_SHOWN."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(clip(text))
