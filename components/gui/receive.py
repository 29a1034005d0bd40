"""Receive: a new address with a label, shown as text and as a QR code (segno), and the
addresses asked for in this session."""

from __future__ import annotations

import io

import segno
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QPixmap
from PySide6.QtWidgets import (
    QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget,
)

from .context import GuiContext
from .plain import PlainLabel, clip


def qr_pixmap(text: str, scale: int = 5) -> QPixmap:
    """`text` as a QR code (segno makes it; error correction M, 4 modules of quiet zone)."""
    buffer = io.BytesIO()
    segno.make_qr(text, error="m").save(buffer, kind="png", scale=scale, border=4)
    pixmap = QPixmap()
    pixmap.loadFromData(buffer.getvalue(), "PNG")
    return pixmap


class ReceivePage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("receive")
        box = QGroupBox("Request a payment")
        form = QFormLayout(box)
        self.label = QLineEdit()
        self.label.setObjectName("receive_label")
        self.new_button = QPushButton("New address")
        self.new_button.setObjectName("new_address")
        form.addRow("Label:", self.label)
        form.addRow("", self.new_button)
        self.address = QLineEdit()
        self.address.setObjectName("receive_address")
        self.address.setReadOnly(True)
        self.copy_button = QPushButton("Copy")
        row = QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(self.copy_button)
        form.addRow("Address:", row)
        self.qr = PlainLabel()
        self.qr.setObjectName("qr")
        self.qr.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.qr.setMinimumSize(200, 200)
        self.history = QListWidget()
        layout = QHBoxLayout(self)
        left = QVBoxLayout()
        left.addWidget(box)
        left.addWidget(PlainLabel("Addresses requested:"))
        left.addWidget(self.history, 1)
        layout.addLayout(left, 2)
        layout.addWidget(self.qr, 1)
        self.new_button.clicked.connect(self.new_address)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.address.text()))

    def new_address(self) -> None:
        label = self.label.text()

        def show(address: str) -> None:
            self.address.setText(address)
            self.qr.setPixmap(qr_pixmap(f"cleancoin:{address}" + (f"?label={label}" if label else "")))
            self.history.insertItem(0, clip(f"{address}  {label}".rstrip()))
            self.label.clear()
        self.ctx.run("New address", self.ctx.call("getnewaddress", label, wallet=True), show)
