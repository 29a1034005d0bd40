"""The main window: a tab per screen, the wallet selector, the wallet menu, the sync bar."""

from __future__ import annotations

from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QComboBox, QMainWindow, QMessageBox, QTabWidget, QToolBar, QWidget,
)

from .console import ConsolePage
from .context import GuiContext
from .overview import OverviewPage
from .peers import PeersPage
from .plain import PlainLabel, clip
from .receive import ReceivePage
from .sandbox_panel import ProcessInfo, SandboxPanel
from .send import SendPage
from .sync import SyncBar
from .transactions import TransactionsPage
from .wallet_menu import WalletMenu


#: Characters of a wallet name the wallet selector shows.
WALLET_SHOWN = 60


class MainWindow(QMainWindow):
    def __init__(self, ctx: GuiContext, own: ProcessInfo, network: str, backup_dir: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.setObjectName("main_window")
        suffix = "" if network == "main" else f" [{network}]"
        self.setWindowTitle(f"{ctx.executable} - Wallet{suffix}")
        self.resize(960, 640)
        self.tabs = QTabWidget()
        self.overview = OverviewPage(ctx)
        self.send = SendPage(ctx)
        self.receive = ReceivePage(ctx)
        self.transactions = TransactionsPage(ctx)
        self.peers = PeersPage(ctx)
        self.console = ConsolePage(ctx)
        self.sandbox = SandboxPanel(ctx, own)
        for page, title in ((self.overview, "&Overview"), (self.send, "&Send"), (self.receive, "&Receive"),
                            (self.transactions, "&Transactions"), (self.peers, "&Peers"),
                            (self.console, "&Console"), (self.sandbox, "Sand&box")):
            self.tabs.addTab(page, title)
        self.setCentralWidget(self.tabs)
        toolbar = QToolBar("Wallet")
        toolbar.setMovable(False)
        toolbar.addWidget(PlainLabel(" Wallet: "))
        self.wallet_box = QComboBox()
        self.wallet_box.setObjectName("wallet_selector")
        self.wallet_box.setMinimumWidth(160)
        toolbar.addWidget(self.wallet_box)
        self.addToolBar(toolbar)
        self.wallet_menu = WalletMenu(ctx, self, backup_dir)
        file_menu = self.menuBar().addMenu("&File")
        quit_action = QAction("E&xit", self)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        self.menuBar().addMenu(self.wallet_menu)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("&About", self.about)
        self.sync = SyncBar()
        self.connection = PlainLabel()
        self.connection.setObjectName("connection")
        self.statusBar().addPermanentWidget(self.connection)
        self.statusBar().addPermanentWidget(self.sync)
        self.last_error = ""
        self.wallet_box.currentIndexChanged.connect(self._chosen)
        ctx.wallets_changed.connect(self._wallets_changed)
        ctx.wallet_selected.connect(self._selected)
        ctx.events.tip.connect(self.sync.update_tip)
        ctx.events.connection.connect(self._connection)
        ctx.events.refused.connect(lambda text: self._message("error", text))
        ctx.message.connect(self._message)
        self.on_close = None                    # set by the app: stops what it started

    def page(self, name: str) -> QWidget:
        """A screen by object name ("send", "sandbox", ...)."""
        widget = self.findChild(QWidget, name)
        assert widget is not None, name
        return widget

    def show_page(self, name: str) -> None:
        self.tabs.setCurrentWidget(self.page(name))

    def _wallets_changed(self) -> None:
        # Each entry shows its name cut (a name is the node's string), and holds it whole.
        self.wallet_box.blockSignals(True)
        self.wallet_box.clear()
        for name in self.ctx.wallets:
            self.wallet_box.addItem(clip(name, WALLET_SHOWN), name)
        self.wallet_box.setCurrentIndex(self.wallet_box.findData(self.ctx.wallet))
        self.wallet_box.blockSignals(False)

    def _chosen(self, index: int) -> None:
        name = self.wallet_box.itemData(index)
        if name:
            self.ctx.select(name)

    def _selected(self, name: str) -> None:
        if name and self.wallet_box.currentData() != name:
            self.wallet_box.setCurrentIndex(self.wallet_box.findData(name))

    def _connection(self, connected: bool, text: str) -> None:
        self.connection.setText(text)
        self.connection.setStyleSheet("" if connected else "color: #b00")

    def _message(self, level: str, text: str) -> None:
        if level == "error":
            self.last_error = text
        self.statusBar().showMessage(clip(text), 15000)

    def about(self) -> None:
        QMessageBox.about(self, f"About {self.ctx.executable}",
                          f"{self.ctx.executable}: CleanCoin's graphical wallet.\n"
                          "Processes and their sandboxes: the Sandbox tab.")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self.on_close is not None:
            self.on_close()
        event.accept()
