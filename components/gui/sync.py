"""Sync progress in the status bar: blocks and headers, a progress bar and how far behind the
tip is, shown while the node catches up (from tip notifications)."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QWidget

from cleancoin.components.interfaces.node import TipInfo

from .plain import PlainLabel


def behind(seconds: float) -> str:
    """'3 hours behind' as bitcoin-qt words it."""
    for unit, size in (("years", 365 * 86400), ("weeks", 7 * 86400), ("days", 86400), ("hours", 3600),
                       ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} behind"
    return "up to date"


class SyncBar(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("sync")
        self.label = PlainLabel("connecting…")
        self.label.setObjectName("sync_label")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(220)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)
        self.tip: TipInfo | None = None

    def update_tip(self, tip: TipInfo) -> None:
        self.tip = tip
        self.bar.setValue(int(tip.progress * 1000))
        lag = behind(max(0.0, time.time() - tip.time)) if tip.height > 0 else "no blocks yet"
        if tip.initial_download:
            self.bar.show()
            self.label.setText(f"Synchronizing: block {tip.height} of {tip.headers} headers, {lag}")
        else:
            self.bar.hide()
            self.label.setText(f"Block {tip.height} · {tip.mempool_size} in mempool")
