"""Table models over what the node answers (listtransactions, getpeerinfo), and the state
one wallet shows (`WalletView`)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt

from cleancoin.components.interfaces.wallet import WalletEvent

from .plain import clip
from .units import format_coins, format_units

#: Rows a table keeps of one answer (more are counted in `dropped`, not held).
MAX_ROWS = 10_000


@dataclass
class WalletView:
    """One loaded wallet as the window shows it: from its last WalletEvent."""

    name: str
    trusted: int = 0
    pending: int = 0
    immature: int = 0
    encrypted: bool = False
    locked: bool = False

    @property
    def total(self) -> int:
        return self.trusted + self.pending + self.immature

    def update(self, event: WalletEvent) -> None:
        self.trusted, self.pending, self.immature = event.trusted, event.untrusted_pending, event.immature
        self.encrypted, self.locked = event.encrypted, event.locked


def when(timestamp: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(int(timestamp)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


class RowsModel(QAbstractTableModel):
    """A read-only table of dict rows; `columns` are (title, function of a row)."""

    columns: tuple[tuple[str, Any], ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """The rows to show: a list of objects (anything else is an error), the first
        MAX_ROWS of them."""
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows[:MAX_ROWS]):
            raise ValueError("the node's answer is not a list of objects")
        self.beginResetModel()
        self.rows = rows[:MAX_ROWS]
        self.dropped = len(rows) - len(self.rows)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            try:
                return clip(str(self.columns[index.column()][1](row)))
            except (KeyError, TypeError, ValueError, ArithmeticError):
                return ""
        if role == Qt.ItemDataRole.UserRole:
            return row
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section][0]
        return None


def tx_status(row: dict[str, Any]) -> str:
    confirmations = int(row.get("confirmations", 0))
    if row.get("abandoned"):
        return "abandoned"
    if confirmations < 0:
        return "conflicted"
    if row.get("category") == "immature":
        return f"immature ({confirmations} conf.)"
    return "unconfirmed" if confirmations == 0 else f"{confirmations} conf."


class TransactionsModel(RowsModel):
    """listtransactions, newest first."""

    columns = (
        ("Date", lambda r: when(r.get("time"))),
        ("Type", lambda r: {"generate": "Mined", "immature": "Mined (immature)", "receive": "Received",
                            "send": "Sent", "orphan": "Orphan"}.get(r["category"], r["category"])),
        ("Address", lambda r: r.get("address", "")),
        ("Label", lambda r: r.get("label", "")),
        ("Amount", lambda r: format_coins(r["amount"], plus=True)),
        ("Status", tx_status),
    )

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        # Newest first; within one second (a burst of blocks), fewer confirmations is newer.
        def newest(r: dict[str, Any]) -> tuple[int, int]:
            try:
                return int(r.get("time", 0)), -int(r.get("confirmations", 0))
            except (TypeError, ValueError, OverflowError):
                return 0, 0
        if not isinstance(rows, list):
            raise ValueError("the node's answer is not a list of objects")
        kept = sorted((r for r in rows[:MAX_ROWS] if isinstance(r, dict)), key=newest, reverse=True)
        super().set_rows(kept)
        self.dropped = len(rows) - len(kept)


class TransactionFilter(QSortFilterProxyModel):
    """The transaction list's filter: a text (address, label, txid) and a category."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.category = ""

    def set_filter(self, text: str, category: str) -> None:
        self.text, self.category = text.strip().lower(), category
        self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:  # noqa: N802
        model = self.sourceModel()
        row = model.rows[source_row]  # type: ignore[attr-defined]
        if self.category and row.get("category") != self.category:
            if not (self.category == "generate" and row.get("category") == "immature"):
                return False
        if self.text:
            haystack = " ".join(str(row.get(k, "")) for k in ("address", "label", "txid")).lower()
            return self.text in haystack
        return True


class PeersModel(RowsModel):
    """getpeerinfo."""

    columns = (
        ("Id", lambda r: r["id"]),
        ("Address", lambda r: r["addr"]),
        ("Direction", lambda r: "inbound" if r.get("inbound") else "outbound"),
        ("User agent", lambda r: r.get("subver", "")),
        ("Height", lambda r: r.get("synced_blocks", r.get("startingheight", ""))),
        ("Ping", lambda r: f"{float(r['pingtime']) * 1000:.0f} ms" if r.get("pingtime") is not None else ""),
        ("Sent", lambda r: r.get("bytessent", "")),
        ("Received", lambda r: r.get("bytesrecv", "")),
    )


class StatsModel(RowsModel):
    """The GUI's calls to the node: method, count, mean and worst round trip."""

    columns = (
        ("Call", lambda r: r["name"]),
        ("Count", lambda r: r["count"]),
        ("Mean", lambda r: f"{r['mean'] * 1000:.2f} ms"),
        ("Worst", lambda r: f"{r['worst'] * 1000:.2f} ms"),
        ("Errors", lambda r: r["errors"]),
    )


def balance_text(units: int) -> str:
    return format_units(units)
