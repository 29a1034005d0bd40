"""Driving the window as a person does: typing into widgets and clicking buttons (QTest)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox, QLineEdit, QPlainTextEdit, QPushButton

from .conftest import wait_for


def type_into(edit: QLineEdit, text: str) -> None:
    edit.setFocus()
    edit.clear()
    QTest.keyClicks(edit, text)


def click(button: QPushButton) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def press_ok(dialog: Any) -> None:
    buttons: QDialogButtonBox = dialog.buttons
    for role in (QDialogButtonBox.StandardButton.Ok, QDialogButtonBox.StandardButton.Yes):
        button = buttons.button(role)
        if button is not None:
            click(button)
            return
    raise AssertionError("no OK or Yes button")


def fill_dialog(dialog: Any, **values: str) -> None:
    for name, value in values.items():
        type_into(dialog.edits[name], value)
    press_ok(dialog)


def console(qtbot: Any, window: Any, command: str, timeout: float = 60.0) -> str:
    """Type a command into the RPC console and return what it printed for it."""
    page = window.console
    window.show_page("console")
    output: QPlainTextEdit = page.output
    before = output.toPlainText()
    type_into(page.input, command)
    QTest.keyClick(page.input, Qt.Key.Key_Return)
    wait_for(qtbot, lambda: page.ctx.tasks.busy == 0 and output.toPlainText() != before
             and not output.toPlainText().endswith(f"> {command}"), timeout, f"console: {command}")
    new = output.toPlainText()[len(before):]
    return new.split("\n", 2)[-1].strip() if "\n" in new.strip() else new.strip()


def create_wallet(qtbot: Any, window: Any, name: str, passphrase: str = "") -> None:
    menu = window.wallet_menu
    menu.actions_["create"].trigger()
    fill_dialog(menu.dialog, name=name, passphrase=passphrase, repeat=passphrase)
    wait_for(qtbot, lambda: name in window.ctx.wallets and window.ctx.wallet == name, 60, f"wallet {name}")


def select_wallet(qtbot: Any, window: Any, name: str) -> None:
    window.wallet_box.setCurrentText(name)
    wait_for(qtbot, lambda: window.ctx.wallet == name, 10, f"select {name}")


def new_address(qtbot: Any, window: Any) -> str:
    page = window.receive
    window.show_page("receive")
    before = page.address.text()
    click(page.new_button)
    wait_for(qtbot, lambda: page.address.text() not in ("", before), 30, "a new address")
    assert not page.qr.pixmap().isNull()
    return page.address.text()


def send(qtbot: Any, window: Any, address: str, amount: str, passphrase: str | None = None) -> str:
    """Fill the send screen, click Send, confirm (and unlock); returns the status text."""
    page = window.send
    window.show_page("send")
    type_into(page.address, address)
    wait_for(qtbot, lambda: page.address_ok, 20, "the address checked valid")
    type_into(page.amount, amount)
    click(page.send_button)
    wait_for(qtbot, lambda: page.dialog is not None and page.dialog.isVisible(), 10, "the confirmation")
    press_ok(page.dialog)
    if passphrase is not None:
        wait_for(qtbot, lambda: page.dialog is not None and hasattr(page.dialog, "edits"), 10, "the passphrase prompt")
        fill_dialog(page.dialog, passphrase=passphrase)
    wait_for(qtbot, lambda: page.status.text().startswith(("Sent", "Not sent")), 60, "the send")
    return page.status.text()


def encrypt_wallet(qtbot: Any, window: Any, passphrase: str) -> None:
    """Wallet menu → Encrypt, for the selected wallet; until it shows as encrypted and locked."""
    menu = window.wallet_menu
    menu.actions_["encrypt"].trigger()
    fill_dialog(menu.dialog, new=passphrase, repeat=passphrase)
    wait_for(qtbot, lambda: window.ctx.current is not None and window.ctx.current.encrypted
             and window.ctx.current.locked, 60, "the wallet encrypted and locked")


def available(window: Any) -> str:
    """The overview's 'Available' label, as the user reads it."""
    return window.overview.available.text()


def wallet_scenario(qtbot: Any, window: Any) -> str:
    """What the issue asks of both executables, through the widgets: a wallet made in the
    wallet menu, 101 blocks mined to it through the console, its balance label changed by
    notification; a second wallet, encrypted in the wallet menu, paid through the send screen;
    its balance arriving by notification; a payment back from it, unlocked through the send
    screen's passphrase prompt and locked again afterwards. Returns the first wallet's address."""
    w = window
    create_wallet(qtbot, w, "alice")
    address = new_address(qtbot, w)
    console(qtbot, w, f"generatetoaddress 101 {address}")
    wait_for(qtbot, lambda: available(w) == "50.00000000 CC", 30, "the balance after 101 blocks")
    create_wallet(qtbot, w, "bob")
    encrypt_wallet(qtbot, w, "correct horse")
    bob = new_address(qtbot, w)
    select_wallet(qtbot, w, "alice")
    status = send(qtbot, w, bob, "1.5")
    assert status.startswith("Sent 1.50000000 CC"), status
    console(qtbot, w, f"generatetoaddress 1 {address}")
    select_wallet(qtbot, w, "bob")
    wait_for(qtbot, lambda: available(w) == "1.50000000 CC", 30, "bob's balance by notification")
    status = send(qtbot, w, address, "0.5", passphrase="correct horse")
    assert status.startswith("Sent 0.50000000 CC"), status
    wait_for(qtbot, lambda: w.ctx.current.locked, 30, "bob locked again after the send")
    wait_for(qtbot, lambda: w.transactions.model.rowCount() == 2, 10, "both of bob's transactions listed")
    return address
