"""Transactions: the selected wallet's list (refreshed when its notifications say a
transaction changed), a text and type filter, and details on double-click."""

from __future__ import annotations

import json

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget,
)

from cleancoin.components.interfaces.wallet import WalletEvent

from .context import GuiContext
from .dialogs import TextDialog
from .models import TransactionFilter, TransactionsModel
from .plain import break_long_lines, clip

#: Transactions listed (listtransactions count).
LIST_COUNT = 1000
#: Characters of a transaction's details shown.
DETAILS_SHOWN = 256 * 1024
CATEGORIES = (("All", ""), ("Received", "receive"), ("Sent", "send"), ("Mined", "generate"))


class TransactionsPage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("transactions")
        self.model = TransactionsModel()
        self.proxy = TransactionFilter()
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit()
        self.search.setObjectName("tx_search")
        self.search.setPlaceholderText("Search address, label or transaction id")
        self.kind = QComboBox()
        self.kind.setObjectName("tx_kind")
        for title, value in CATEGORIES:
            self.kind.addItem(title, value)
        self.table = QTableView()
        self.table.setObjectName("tx_table")
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        filters = QHBoxLayout()
        filters.addWidget(self.kind)
        filters.addWidget(self.search, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table)
        self.dialog: TextDialog | None = None
        self.search.textChanged.connect(self._filter)
        self.kind.currentIndexChanged.connect(self._filter)
        self.table.doubleClicked.connect(self.details)
        ctx.wallet_selected.connect(lambda _: self.refresh())
        ctx.wallet_updated.connect(self._updated)

    def _filter(self) -> None:
        self.proxy.set_filter(self.search.text(), self.kind.currentData())

    def _updated(self, event: WalletEvent) -> None:
        if event.kind in ("transaction", "loaded", "balance"):
            self.refresh()

    def refresh(self) -> None:
        name = self.ctx.wallet
        if not name:
            self.model.set_rows([])
            return

        def show(rows: list[dict]) -> None:
            if name == self.ctx.wallet:
                self.model.set_rows(rows)
        self.ctx.run("Transactions", self.ctx.call("listtransactions", "*", LIST_COUNT, wallet=True), show)

    def details(self, index: QModelIndex) -> None:
        row = self.proxy.data(index, Qt.ItemDataRole.UserRole)
        if not row:
            return

        def show(tx: dict) -> None:
            tx.pop("hex", None)
            self.dialog = TextDialog(self, f"Transaction {str(row.get('txid'))[:16]}…",
                                     break_long_lines(clip(json.dumps(tx, indent=2, default=str), DETAILS_SHOWN)))
            self.dialog.open()
        self.ctx.run("Transaction details", self.ctx.call("gettransaction", row["txid"], wallet=True), show)
