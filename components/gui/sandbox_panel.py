"""The Sandbox panel: the live process tree (this GUI, the node, its zygote, the wallet
process), each process's policy and enforcement report per mechanism (namespaces and
capabilities included), the process events and the node's warning lines as they arrive (a
wallet process killed by SIGSYS is a seccomp denial; a restart shows as it happens), and this
process's calls to the node with their counts and latencies."""

from __future__ import annotations

import asyncio
import datetime
import os
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox, QHBoxLayout, QHeaderView, QPlainTextEdit, QPushButton, QSplitter, QTableView,
    QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget,
)

from cleancoin.components.interfaces.node import ProcessEvent
from cleancoin.sandbox import Report

from .client import RpcCallError
from .context import GuiContext
from .models import StatsModel
from .plain import PlainLabel, break_long_lines, clip

#: Lines the event log keeps.
EVENT_LINES = 2000
#: Characters of one process's details shown (its enforcement report is a few kB).
DETAILS_SHOWN = 64 * 1024


@dataclass
class ProcessInfo:
    """One row of the tree."""

    name: str
    pid: int | None
    role: str
    report: dict[str, Any] | None = None      # Report.to_dict()
    report_text: str = ""                     # when only text is known
    restarts: int | None = None
    children: list["ProcessInfo"] = field(default_factory=list)

    @property
    def policy(self) -> str:
        if self.report is not None:
            return str(self.report.get("policy", ""))
        return "none"

    def summary(self) -> str:
        if self.report is None:
            return "not confined"
        mechs = self.report.get("mechanisms", {})
        full = [name for name, m in mechs.items() if m.get("status") == "fully enforced"]
        other = [f"{name}: {m.get('status')}" for name, m in mechs.items()
                 if m.get("status") not in ("fully enforced", "turned off by the policy")]
        return ", ".join(full) + (f" ({'; '.join(other)})" if other else "")

    def details(self) -> str:
        head = f"{self.name} (pid {self.pid or '?'}): {self.role}"
        if self.restarts is not None:
            head += f"\nrestarts: {self.restarts}"
        if self.report is not None:
            return head + "\n\n" + Report.from_dict(self.report).to_text()
        return head + "\n\n" + (self.report_text or "not confined")


def tree_from_processinfo(gui: ProcessInfo, info: dict[str, Any]) -> ProcessInfo:
    """getprocessinfo's answer under this GUI: the node, its zygote below it and the wallet
    process below the zygote (which forked it); a wallet the node did not start (-ipcconnect)
    hangs below the node. getprocessinfo lists node, wallet, then zygote."""
    processes = info.get("processes", [])
    node_entry = processes[0] if processes else {}
    node = ProcessInfo(str(node_entry.get("name", "CleanCoin-node")), node_entry.get("pid"),
                       "P2P, RPC, chain and mempool; confines itself with restrict_self",
                       node_entry.get("sandbox"))
    zygote = None
    wallets: list[ProcessInfo] = []
    for entry in processes[1:]:
        name = str(entry.get("name", ""))
        if "zygote" in name:
            zygote = ProcessInfo(name, entry.get("pid"), "starts the wallet process in its sandbox, "
                                 "nothing else", None, str(entry.get("sandbox_report", "")))
        else:
            wallets.append(ProcessInfo(name, entry.get("pid"), "keys, coins and signing; wallets: "
                                       + ", ".join(entry.get("wallets", []) or ["none"]),
                                       entry.get("sandbox"), str(entry.get("sandbox_report", "")),
                                       entry.get("restarts", entry.get("reconnects"))))
    if zygote is not None:
        zygote.children = wallets
        node.children = [zygote]
    else:
        node.children = wallets
    gui.children = [node]
    return gui


class SandboxPanel(QWidget):
    def __init__(self, ctx: GuiContext, own: ProcessInfo) -> None:
        super().__init__()
        self.ctx = ctx
        self.own = own
        self.setObjectName("sandbox")
        self.root = own
        self.tree = QTreeWidget()
        self.tree.setObjectName("process_tree")
        self.tree.setColumnCount(4)
        self.tree.setHeaderLabels(["Process", "PID", "Policy", "Enforced"])
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.details = QPlainTextEdit()
        self.details.setObjectName("process_details")
        self.details.setReadOnly(True)
        self.events = QPlainTextEdit()
        self.events.setObjectName("sandbox_events")
        self.events.setReadOnly(True)
        self.events.setMaximumBlockCount(EVENT_LINES)
        self.stats = StatsModel()
        stats_view = QTableView()
        stats_view.setModel(self.stats)
        stats_view.verticalHeader().hide()
        stats_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        stats_view.horizontalHeader().setStretchLastSection(True)
        self.transport = PlainLabel()
        self.transport.setObjectName("ipc_transport")
        self.transport.setWordWrap(True)        # a long socket path must not widen the window
        refresh = QPushButton("Refresh")
        tree_box = QGroupBox("Processes")
        tree_layout = QVBoxLayout(tree_box)
        tree_layout.addWidget(self.tree)
        split = QSplitter(Qt.Orientation.Vertical)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(tree_box)
        top.addWidget(self.details)
        split.addWidget(top)
        events_box = QGroupBox("Events and denials")
        QVBoxLayout(events_box).addWidget(self.events)
        stats_box = QGroupBox("Calls to the node")
        stats_layout = QVBoxLayout(stats_box)
        header = QHBoxLayout()
        header.addWidget(self.transport, 1)
        header.addWidget(refresh)
        stats_layout.addLayout(header)
        stats_layout.addWidget(stats_view)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(events_box)
        bottom.addWidget(stats_box)
        bottom.setSizes([1, 1])                 # events and calls side by side, half each
        split.addWidget(bottom)
        QVBoxLayout(self).addWidget(split)
        self.restarts_seen = 0
        self._fetching = False          # a getprocessinfo is on its way
        self._again = False             # and another was asked for meanwhile
        self.tree.currentItemChanged.connect(self._selected)
        refresh.clicked.connect(self.refresh)
        ctx.events.process.connect(self._process_event)
        ctx.events.log.connect(self._log_lines)
        ctx.events.connection.connect(self._connection)
        ctx.events.refused.connect(self._note)
        for signal in (ctx.events.tip, ctx.events.wallets, ctx.events.process, ctx.events.log):
            signal.connect(lambda *_: self.isVisible() and self.show_stats())
        self.show_tree()

    # ------------------------------------------------------------------ the tree

    def refresh(self) -> None:
        """Ask the node for its processes (getprocessinfo); a node without them (CleanCoin-qt's
        own) leaves the tree at this one process. One call at a time: process events that
        arrive meanwhile ask for one more afterwards, not one each."""
        self.show_stats()
        if self._fetching:
            self._again = True
            return
        self._fetching = True

        async def fetch() -> dict[str, Any] | None:
            try:
                return await self.ctx.call("getprocessinfo")
            except RpcCallError:
                return None
            finally:
                self._fetching = False
                if self._again:
                    self._again = False
                    asyncio.get_running_loop().call_soon(self.refresh)

        def show(info: dict[str, Any] | None) -> None:
            if info is not None:
                self.root = tree_from_processinfo(self.own, info)
            self.show_tree()
        self.ctx.run("Process tree", fetch(), show)

    def show_tree(self) -> None:
        selected = self.tree.currentItem().text(0) if self.tree.currentItem() else self.root.name
        self.tree.clear()

        def add(parent: Any, proc: ProcessInfo) -> None:
            item = QTreeWidgetItem(parent, [clip(text, 200) for text in
                                            (proc.name, str(proc.pid or "?"), proc.policy, proc.summary())])
            item.setData(0, Qt.ItemDataRole.UserRole, proc)
            if proc.name == selected:
                self.tree.setCurrentItem(item)
            for child in proc.children:
                add(item, child)
        add(self.tree, self.root)
        self.tree.expandAll()
        if self.tree.currentItem() is None:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))

    def _selected(self, item: QTreeWidgetItem | None, _previous: Any = None) -> None:
        proc = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        self.details.setPlainText(break_long_lines(clip(proc.details(), DETAILS_SHOWN)) if proc is not None else "")

    def processes(self) -> list[ProcessInfo]:
        """Every process of the tree, depth first."""
        out: list[ProcessInfo] = []

        def walk(p: ProcessInfo) -> None:
            out.append(p)
            for c in p.children:
                walk(c)
        walk(self.root)
        return out

    # ------------------------------------------------------------------ events

    def _note(self, text: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self.events.appendPlainText(clip(f"{stamp} {text}"))

    def _process_event(self, event: ProcessEvent) -> None:
        if event.kind == "restarted":
            self.restarts_seen += 1
        pid = f" (pid {event.pid})" if event.pid else ""
        self._note(f"{event.name}{pid} {event.kind}" + (f": {event.detail}" if event.detail else ""))
        self.refresh()

    def _log_lines(self, lines: list[str]) -> None:
        # One append for the lot: a line each costs a layout each.
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self.events.appendPlainText("\n".join(clip(f"{stamp} node: {line}") for line in lines[-EVENT_LINES:]))

    def _connection(self, connected: bool, text: str) -> None:
        self._note(text)
        if connected:
            self.refresh()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """The call counts are current whenever the panel is looked at."""
        self.show_stats()
        super().showEvent(event)

    def show_stats(self) -> None:
        client = self.ctx.client
        rows = [{"name": name, "count": s.count, "mean": s.mean, "worst": s.worst, "errors": s.errors}
                for name, s in sorted(client.stats.items())]
        self.stats.set_rows(rows)
        self.transport.setText(f"{client.transport} · {sum(r['count'] for r in rows)} calls · "
                               f"{self.ctx.events.arrivals} notifications received · pid {os.getpid()}")
