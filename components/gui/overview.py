"""Overview: the selected wallet's balances (available, pending, immature, total) and its
recent transactions; both follow the wallet's notifications."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QFormLayout, QGroupBox, QHBoxLayout, QListWidget, QVBoxLayout, QWidget,
)

from cleancoin.components.interfaces.wallet import WalletEvent

from .context import GuiContext
from .models import TransactionsModel, when
from .plain import PlainLabel, clip
from .units import format_coins, format_units

RECENT = 8


class OverviewPage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("overview")
        balances = QGroupBox("Balances")
        form = QFormLayout(balances)
        self.available = PlainLabel()
        self.pending = PlainLabel()
        self.immature = PlainLabel()
        self.total = PlainLabel()
        self.state = PlainLabel()
        for label, name in ((self.available, "available"), (self.pending, "pending"),
                            (self.immature, "immature"), (self.total, "total")):
            label.setObjectName(f"balance_{name}")
        self.total.setStyleSheet("font-weight: bold")
        form.addRow("Available:", self.available)
        form.addRow("Pending:", self.pending)
        form.addRow("Immature:", self.immature)
        form.addRow("Total:", self.total)
        form.addRow("Wallet:", self.state)
        recent_box = QGroupBox("Recent transactions")
        self.recent = QListWidget()
        self.recent.setObjectName("recent")
        QVBoxLayout(recent_box).addWidget(self.recent)
        self.out_of_sync = PlainLabel("(out of sync)")
        self.out_of_sync.setStyleSheet("color: #b00")
        self.out_of_sync.hide()
        top = QHBoxLayout()
        top.addWidget(balances, 1)
        top.addWidget(recent_box, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.out_of_sync)
        layout.addLayout(top)
        layout.addStretch(1)
        ctx.wallet_updated.connect(self._updated)
        ctx.wallet_selected.connect(lambda _: self.show_wallet())
        ctx.events.tip.connect(lambda tip: self.out_of_sync.setVisible(tip.initial_download))
        self.show_wallet()

    def show_wallet(self) -> None:
        view = self.ctx.current
        if view is None:
            for label in (self.available, self.pending, self.immature, self.total):
                label.setText("—")
            self.state.setText("no wallet loaded (File → Create wallet)")
            self.recent.clear()
            return
        self.available.setText(format_units(view.trusted))
        self.pending.setText(format_units(view.pending))
        self.immature.setText(format_units(view.immature))
        self.total.setText(format_units(view.total))
        self.state.setText(f"{view.name}: " + ("encrypted, " + ("locked" if view.locked else "unlocked")
                                               if view.encrypted else "not encrypted"))
        self.refresh_recent()

    def _updated(self, event: WalletEvent) -> None:
        self.show_wallet() if event.kind != "balance" else self._balances_only()

    def _balances_only(self) -> None:
        view = self.ctx.current
        if view is not None:
            self.available.setText(format_units(view.trusted))
            self.pending.setText(format_units(view.pending))
            self.immature.setText(format_units(view.immature))
            self.total.setText(format_units(view.total))
            self.refresh_recent()

    def refresh_recent(self) -> None:
        name = self.ctx.wallet
        if not name:
            return

        def show(rows: list[dict]) -> None:
            if name != self.ctx.wallet:
                return
            self.recent.clear()
            model = TransactionsModel()
            model.set_rows(rows)
            for row in model.rows[:RECENT]:
                label = row.get("label") or row.get("address", "")
                try:
                    amount = format_coins(row["amount"], plus=True)
                except (KeyError, TypeError, ValueError, ArithmeticError):
                    amount = "?"
                self.recent.addItem(clip(f"{when(row.get('time'))}  {amount}  {label}"))
        self.ctx.run("Recent transactions", self.ctx.call("listtransactions", "*", RECENT, wallet=True), show)
