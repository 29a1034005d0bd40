"""Peers: getpeerinfo as a table, refreshed when the page is shown, when the tip moves
(a new block usually comes from a peer) and by the Refresh button."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QHeaderView, QPushButton, QTableView, QVBoxLayout, QWidget

from .context import GuiContext
from .models import PeersModel
from .plain import PlainLabel


class PeersPage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("peers")
        self.model = PeersModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = PlainLabel()
        refresh = QPushButton("Refresh")
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(refresh)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table)
        refresh.clicked.connect(self.refresh)
        ctx.events.tip.connect(lambda _: self.isVisible() and self.refresh())

    def showEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        self.refresh()

    def refresh(self) -> None:
        async def fetch() -> tuple[list[dict], dict]:
            return await self.ctx.call("getpeerinfo"), await self.ctx.call("getnetworkinfo")

        def show(result: tuple[list[dict], dict]) -> None:
            peers, network = result
            self.model.set_rows(peers)
            shown = f" (the first {len(self.model.rows)} shown)" if self.model.dropped else ""
            self.summary.setText(f"{len(peers)} peers{shown} · {network.get('subversion', '')} · "
                                 f"protocol {network.get('protocolversion', '')}")
        self.ctx.run("Peers", fetch(), show)
