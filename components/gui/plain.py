"""Text from the node, a wallet or the network, as the window shows it: as text, always.

Qt's labels (and dialogs, tooltips, message boxes) take a string that looks like HTML as HTML
(Qt::AutoText): a wallet name, an RPC error or a user agent holding `<a href=...>` would show
as a link, `<img src=...>` would load an image, a `<table>` would take over the layout. The
node may be compromised and the network is anybody, so every label of the window is a
`PlainLabel` (bitcoin-qt escapes with GUIUtil::HtmlEscape, or sets Qt::PlainText).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget


class PlainLabel(QLabel):
    """A QLabel whose text is never interpreted (Qt.TextFormat.PlainText)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setText(text)
