"""The wallet menu: create, open, close, encrypt, change passphrase, backup, restore. Each
is a dialog (dialogs.FormDialog) and one or two node calls; the window learns the outcome
from the wallet notifications (loaded, unloaded, status), not from the answers."""

from __future__ import annotations

import datetime
import os
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog, QMenu, QWidget

from .context import MAX_WALLETS, GuiContext
from .dialogs import FormDialog
from .events import MAX_WALLET_NAME


def _same(values: dict[str, str]) -> str:
    if not values.get("new"):
        return "Enter a passphrase"
    return "" if values["new"] == values["repeat"] else "The passphrases do not match"


class WalletMenu(QMenu):
    def __init__(self, ctx: GuiContext, parent: QWidget, backup_dir: str) -> None:
        super().__init__("&Wallet", parent)
        self.ctx = ctx
        self.window_ = parent
        self.backup_dir = backup_dir            # where backups go by default
        self.dialog: Any = None                 # the open dialog (tests click it)
        self.actions_: dict[str, QAction] = {}
        for key, title, slot in (("create", "&Create wallet…", self.create),
                                 ("open", "&Open wallet…", self.open_wallet),
                                 ("close", "C&lose wallet", self.close_wallet),
                                 (None, None, None),
                                 ("encrypt", "&Encrypt wallet…", self.encrypt),
                                 ("passphrase", "Change &passphrase…", self.change_passphrase),
                                 ("lock", "&Lock wallet", self.lock),
                                 (None, None, None),
                                 ("backup", "&Backup wallet…", self.backup),
                                 ("restore", "&Restore wallet…", self.restore)):
            if key is None:
                self.addSeparator()
                continue
            action = self.addAction(title)
            action.setObjectName(f"action_{key}")
            action.triggered.connect(slot)
            self.actions_[key] = action
        ctx.wallet_selected.connect(lambda _: self.update_state())
        ctx.wallet_updated.connect(lambda _: self.update_state())
        self.update_state()

    def update_state(self) -> None:
        view = self.ctx.current
        has = view is not None
        for key in ("close", "backup"):
            self.actions_[key].setEnabled(has)
        self.actions_["encrypt"].setEnabled(has and not view.encrypted)
        self.actions_["passphrase"].setEnabled(has and view.encrypted)
        self.actions_["lock"].setEnabled(has and view.encrypted and not view.locked)

    def _open(self, dialog: Any) -> None:
        self.dialog = dialog
        dialog.open()

    def _done(self, text: str) -> None:
        self.ctx.message.emit("info", text)

    # ------------------------------------------------------------------ actions

    def create(self) -> None:
        def check(v: dict[str, str]) -> str:
            if not v["name"].strip():
                return "Enter a name"
            return "" if v["passphrase"] == v["repeat"] else "The passphrases do not match"

        def go(v: dict[str, str]) -> None:
            name = v["name"].strip()
            args = [name, False, False, v["passphrase"]] if v["passphrase"] else [name]

            def created(_: Any) -> None:
                self.ctx.select(name)
                self._done(f"Wallet '{name}' created")
            self.ctx.run("Create wallet", self.ctx.client.call("createwallet", *args), created)
        self._open(FormDialog(self.window_, "Create wallet", "A new wallet; with a passphrase it is "
                              "encrypted from the start (leave it empty for none).",
                              [("name", "Name:", False), ("passphrase", "Passphrase:", True),
                               ("repeat", "Repeat:", True)], go, check))

    def open_wallet(self) -> None:
        async def choices() -> list[str]:
            listed = await self.ctx.client.call("listwalletdir")
            loaded = set(self.ctx.wallets)
            # Names as the node lists them; none a wallet directory could not have.
            names = [w.get("name") for w in listed.get("wallets", [])[:MAX_WALLETS] if isinstance(w, dict)]
            return [n for n in names if isinstance(n, str) and 0 < len(n) <= MAX_WALLET_NAME and n not in loaded]

        def ask(names: list[str]) -> None:
            if not names:
                self._done("No other wallet to open")
                return
            dialog = QInputDialog(self.window_)
            dialog.setObjectName("dialog_open_wallet")
            dialog.setWindowTitle("Open wallet")
            dialog.setLabelText("Wallet:")
            dialog.setComboBoxItems(names)
            dialog.textValueSelected.connect(lambda name: self.ctx.run(
                "Open wallet", self.ctx.client.call("loadwallet", name), lambda _: self.ctx.select(name)))
            self._open(dialog)
        self.ctx.run("Open wallet", choices(), ask)

    def close_wallet(self) -> None:
        name = self.ctx.wallet
        if name:
            self.ctx.run("Close wallet", self.ctx.client.call("unloadwallet", name),
                         lambda _: self._done(f"Wallet '{name}' closed"))

    def encrypt(self) -> None:
        name = self.ctx.wallet

        def go(v: dict[str, str]) -> None:
            self.ctx.run("Encrypt wallet", self.ctx.client.call("encryptwallet", v["new"], wallet=name),
                         lambda _: self._done(f"Wallet '{name}' encrypted; make a new backup"))
        self._open(FormDialog(self.window_, "Encrypt wallet", f"Encrypt wallet '{name}'. If you lose the "
                              "passphrase you lose your coins.",
                              [("new", "Passphrase:", True), ("repeat", "Repeat:", True)], go, _same))

    def change_passphrase(self) -> None:
        name = self.ctx.wallet

        def go(v: dict[str, str]) -> None:
            self.ctx.run("Change passphrase",
                         self.ctx.client.call("walletpassphrasechange", v["old"], v["new"], wallet=name),
                         lambda _: self._done("Passphrase changed"))
        self._open(FormDialog(self.window_, "Change passphrase", f"Wallet '{name}'.",
                              [("old", "Current passphrase:", True), ("new", "New passphrase:", True),
                               ("repeat", "Repeat:", True)], go,
                              lambda v: _same(v) or ("" if v["old"] else "Enter the current passphrase")))

    def lock(self) -> None:
        if self.ctx.wallet:
            self.ctx.run("Lock wallet", self.ctx.call("walletlock", wallet=True))

    def backup(self) -> None:
        name = self.ctx.wallet
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        default = os.path.join(self.backup_dir, f"{name}-{stamp}.bak")

        def go(v: dict[str, str]) -> None:
            path = v["path"].strip()
            self.ctx.run("Backup wallet", self.ctx.client.call("backupwallet", path, wallet=name),
                         lambda _: self._done(f"Backup written to {path}"))
        dialog = FormDialog(self.window_, "Backup wallet", "The wallet process writes the backup; in "
                            "CleanCoin-gui it may write only inside the wallets directory, so copy the "
                            "file out from there yourself.", [("path", "File:", False)], go,
                            lambda v: "" if v["path"].strip() else "Enter a file name")
        dialog.edits["path"].setText(default)
        self._open(dialog)

    def restore(self) -> None:
        def go(v: dict[str, str]) -> None:
            name = v["name"].strip()
            self.ctx.run("Restore wallet", self.ctx.client.call("restorewallet", name, v["path"].strip()),
                         lambda _: (self.ctx.select(name), self._done(f"Wallet '{name}' restored")))
        dialog = FormDialog(self.window_, "Restore wallet", "Restore a backup as a new wallet.",
                            [("name", "New wallet name:", False), ("path", "Backup file:", False)], go,
                            lambda v: "" if v["name"].strip() and v["path"].strip() else "Enter both")
        dialog.edits["path"].setText(self.backup_dir + os.sep)
        self._open(dialog)
