"""Send: address (checked by the node as it is typed), amount, fee estimate, a confirmation
dialog, and the passphrase prompt for an encrypted wallet (unlocked for this send only)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox, QFormLayout, QGroupBox, QLineEdit, QPushButton, QVBoxLayout, QWidget,
)

from cleancoin.components.common.amount import COIN

from .client import RpcCallError
from .context import GuiContext
from .dialogs import ConfirmDialog, FormDialog, passphrase_dialog
from .plain import PlainLabel
from .units import format_units, parse_coins, to_units

#: Bytes of a typical one-input, two-output transaction: what the fee estimate assumes.
TYPICAL_SIZE = 226
#: Seconds a wallet stays unlocked for one send (then walletlock).
UNLOCK_SECONDS = 60


class SendPage(QWidget):
    def __init__(self, ctx: GuiContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("send")
        box = QGroupBox("Pay to")
        form = QFormLayout(box)
        self.address = QLineEdit()
        self.address.setObjectName("pay_to")
        self.address.setPlaceholderText("Enter a CleanCoin address")
        self.address_state = PlainLabel()
        self.label = QLineEdit()
        self.label.setObjectName("pay_label")
        self.amount = QLineEdit()
        self.amount.setObjectName("pay_amount")
        self.amount.setPlaceholderText("0.00000000")
        self.subtract_fee = QCheckBox("Subtract fee from amount")
        self.fee = PlainLabel()
        self.fee.setObjectName("fee_estimate")
        form.addRow("Address:", self.address)
        form.addRow("", self.address_state)
        form.addRow("Label:", self.label)
        form.addRow("Amount (CC):", self.amount)
        form.addRow("", self.subtract_fee)
        form.addRow("Fee:", self.fee)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("send_button")
        self.status = PlainLabel()
        self.status.setObjectName("send_status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(self.status.textInteractionFlags() |
                                            self.status.textInteractionFlags().TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addWidget(self.send_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.address_ok = False
        self.fee_rate = 0                 # units per 1000 bytes
        self.dialog: Any = None           # the open confirmation or passphrase dialog
        self.address.textChanged.connect(self._address_changed)
        self.send_button.clicked.connect(self.confirm)
        ctx.wallet_selected.connect(lambda _: self.refresh_fee())
        self.refresh_fee()

    # ------------------------------------------------------------------ checks

    def _address_changed(self, text: str) -> None:
        text = text.strip()
        self.address_ok = False
        if not text:
            self.address_state.setText("")
            return

        def show(result: dict) -> None:
            if self.address.text().strip() != text:
                return             # typed on meanwhile
            self.address_ok = bool(result.get("isvalid"))
            self.address_state.setText("valid address" if self.address_ok else
                                       f"invalid address: {result.get('error', 'not a CleanCoin address')}")
            self.address_state.setStyleSheet("color: #070" if self.address_ok else "color: #b00")
        self.ctx.run("Checking the address", self.ctx.call("validateaddress", text), show)

    def refresh_fee(self) -> None:
        async def rate() -> int:
            network = await self.ctx.call("getnetworkinfo")
            relay = to_units(network.get("relayfee", 0))
            if self.ctx.wallet:
                info = await self.ctx.call("getwalletinfo", wallet=True)
                return to_units(info.get("paytxfee", 0)) or relay
            return relay

        def show(value: int) -> None:
            self.fee_rate = value
            self.fee.setText(f"about {format_units(self.estimated_fee())} "
                             f"({format_units(value)}/kB, {TYPICAL_SIZE}-byte transaction)")
        self.ctx.run("Fee estimate", rate(), show)

    def estimated_fee(self) -> int:
        return (self.fee_rate * TYPICAL_SIZE + 999) // 1000

    # ------------------------------------------------------------------ sending

    def confirm(self) -> None:
        """Check the form, then ask (ConfirmDialog); the send follows a Yes."""
        wallet = self.ctx.current
        address = self.address.text().strip()
        try:
            units = parse_coins(self.amount.text())
        except ValueError as exc:
            self._status(str(exc), error=True)
            return
        if wallet is None:
            self._status("No wallet is loaded", error=True)
            return
        if not self.address_ok:
            self._status("Enter a valid address", error=True)
            return
        if units > wallet.trusted:
            self._status(f"The amount exceeds your available balance ({format_units(wallet.trusted)})", error=True)
            return
        text = (f"Send {format_units(units)} to\n{address}"
                + (f" ({self.label.text()})" if self.label.text() else "")
                + f"\nfrom wallet '{wallet.name}'?\n\nFee: about {format_units(self.estimated_fee())}"
                + (", subtracted from the amount" if self.subtract_fee.isChecked() else ", added to the amount"))
        self.dialog = ConfirmDialog(self, "Confirm send", text, lambda: self._unlock_then_send(address, units))
        self.dialog.open()

    def _unlock_then_send(self, address: str, units: int) -> None:
        wallet = self.ctx.current
        if wallet is not None and wallet.encrypted and wallet.locked:
            self.dialog = passphrase_dialog(self, wallet.name, lambda pw: self._send(address, units, pw))
            self.dialog.open()
        else:
            self._send(address, units, None)

    def _send(self, address: str, units: int, passphrase: str | None) -> None:
        amount = str(Decimal(units) / COIN)
        label = self.label.text()
        subtract = self.subtract_fee.isChecked()

        async def send() -> tuple[str, Any] | str:
            try:
                if passphrase is not None:
                    await self.ctx.call("walletpassphrase", passphrase, UNLOCK_SECONDS, wallet=True)
                try:
                    txid = await self.ctx.call("sendtoaddress", address, amount, "", label, subtract, wallet=True)
                finally:
                    if passphrase is not None:
                        await self.ctx.call("walletlock", wallet=True)
            except RpcCallError as exc:
                return exc.message
            tx = await self.ctx.call("gettransaction", txid, wallet=True)
            return txid, tx.get("fee", 0)

        def sent(result: tuple[str, Any] | str) -> None:
            if isinstance(result, str):
                self._status(f"Not sent: {result}", error=True)
                return
            txid, fee = result
            self._status(f"Sent {format_units(units)}; fee {format_units(abs(to_units(fee)))}; transaction {txid}")
            self.address.clear()
            self.amount.clear()
            self.label.clear()
        self._status("Sending…")
        self.ctx.run("Send", send(), sent)

    def _status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b00" if error else "")


__all__ = ["SendPage", "FormDialog"]
