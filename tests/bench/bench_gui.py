"""GUI benchmarks (issue #13's closing figures): CleanCoin-qt (node, wallet and window in one
process) against CleanCoin-gui (the window confined, CleanCoin-node, its zygote and its
sandboxed wallet process), in the same run, interleaved, offscreen.

1. Start time to a usable window: from exec to the window's "window ready" log line (shown,
   subscribed to the node's notifications, the tip and the wallet's balances received; the
   line is written by GuiApp.subscribe), on copies of one datadir (a wallet with 101 blocks,
   loaded with -wallet). GUI_BENCH_ROUNDS rounds (default 5), the order alternating. Then the
   PSS of each process tree once ready (smaps_rollup of every process below the one started,
   summed), and the time to stop.
2. Balance update latency: a block mined through the node's JSON-RPC (generatetoaddress from
   another thread, as a miner would) until the window's "Available" label shows the new
   balance, the change arriving by notification (Node.handleNotifications). Both windows run
   in this process, over a node in this process (CleanCoin-qt's model) and over a
   CleanCoin-node started as CleanCoin-gui starts it (socket pair, sandboxed wallet process);
   GUI_BENCH_BLOCKS blocks each (default 20), interleaved. The window itself is not confined
   here (this process cannot confine itself); its IPC path is CleanCoin-gui's.

Nothing here has a target from the issue; the figures are printed for the closing note. A
measurement that measured nothing fails the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from figures import broken, median, out, p90
from proc_tree import group_members, group_of

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("capnp")

from cleancoin.components.rpc.client import RpcClient, RpcTransportError  # noqa: E402
from cleancoin.components.rpc.errors import RpcError  # noqa: E402
from ports import free_port as _free_port

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("GUI_BENCH_ROUNDS", "5"))
BLOCKS = int(os.environ.get("GUI_BENCH_BLOCKS", "20"))
READY = "window ready:"
TIMEOUT = 120.0



def _wait(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            broken(f"timed out: {what}")
        time.sleep(step)


def _rpc(datadir: Path, port: int) -> RpcClient:
    return RpcClient("127.0.0.1", port, cookie_path=str(datadir / "regtest" / ".cookie"), timeout=60)


def _answers(rpc: RpcClient) -> bool:
    try:
        rpc.call("getblockcount")
        return True
    except (RpcTransportError, RpcError, OSError):
        return False


def _template(base: Path) -> Path:
    """A datadir with wallet 'alice' and 101 blocks mined to it (made with CleanCoind)."""
    datadir = base / "template"
    datadir.mkdir()
    port = _free_port()
    node = subprocess.Popen([str(BIN / "CleanCoind"), "-regtest", f"-datadir={datadir}", f"-port={_free_port()}",
                             f"-rpcport={port}", "-printtoconsole=0", "-listen=0"])
    try:
        rpc = _rpc(datadir, port)
        _wait(lambda: _answers(rpc), 60, "CleanCoind for the template")
        rpc.call("createwallet", "alice")
        rpc.call("generatetoaddress", 101, rpc.call("getnewaddress", wallet="alice"))
        rpc.call("stop")
        node.wait(60)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    for leftover in ("debug.log", ".cookie", "node.sock"):
        (datadir / "regtest" / leftover).unlink(missing_ok=True)
    return datadir


def _tree(pid: int) -> list[int]:
    """`pid`, every process below it, and the denial monitors of processes that restrict
    themselves (the window, the node): those are started by a double fork, so they are
    nobody's child, and are found by the process group they keep."""
    found = [pid]
    for p in found:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    for group in {g for g in map(group_of, found) if g is not None}:
        found.extend(p for p in group_members(group) if p not in found and _name(p) == "denial-monitor")
    return found


def _name(pid: int) -> str:
    """What the process calls itself (/proc/PID/comm, 15 characters); for a bare interpreter
    the module it runs (CleanCoin-gui starts CleanCoin-node as python -m ...)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if comm.startswith("python") and b"-m" in words[:-1]:
        return words[words.index(b"-m") + 1].decode(errors="replace").rsplit(".", 1)[-1]
    return comm


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------- 1. start, memory, stop


def _launch(exe: str, template: Path, base: Path, index: int) -> dict[str, Any]:
    datadir = base / f"{exe}-{index}"
    shutil.copytree(template, datadir)
    config_home = datadir / "config"
    log = (config_home / "CleanCoin" / "CleanCoin-gui-regtest.log" if exe == "CleanCoin-gui"
           else datadir / "regtest" / "debug.log")
    args = [str(BIN / exe), "-regtest", f"-datadir={datadir}", f"-port={_free_port()}",
            f"-rpcport={_free_port()}", "-listen=0", "-wallet=alice"]
    if exe == "CleanCoin-gui":
        args.append("-noipcconnect")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(config_home)}
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                broken(f"{exe} exited with status {process.returncode}")
            return log.exists() and READY in log.read_text(errors="replace")
        _wait(ready, TIMEOUT, f"{exe}'s window")
        ready_s = time.perf_counter() - started
        line = next(li for li in log.read_text().splitlines() if READY in li)
        if "alice" not in line:
            broken(f"{exe}'s window came up without the wallet: {line}")
        time.sleep(0.5)                          # the first refreshes a shown window starts
        pids = _tree(process.pid)
        pss = {pid: _pss_kb(pid) for pid in pids}
        names = {pid: _name(pid) for pid in pids}
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(TIMEOUT)
        stop_s = time.perf_counter() - stopping
        if code != 0:
            broken(f"{exe} stopped with status {code}")
        _wait(lambda: not any(Path(f"/proc/{p}").exists() for p in pids[1:]), 30, f"{exe}'s processes gone", 0.02)
        return {"ready": ready_s, "stop": stop_s, "pss": pss, "names": names}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(datadir, ignore_errors=True)


def test_start_time_memory_and_stop_of_both_windows() -> None:
    base = Path(tempfile.mkdtemp(prefix="ccgui-bench-", dir=Path.home()))
    try:
        template = _template(base)
        runs: dict[str, list[dict[str, Any]]] = {"CleanCoin-qt": [], "CleanCoin-gui": []}
        for r in range(ROUNDS):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for exe in order:
                runs[exe].append(_launch(exe, template, base, r))
                out(f"  round {r + 1}/{ROUNDS} {exe}: window ready in {runs[exe][-1]['ready'] * 1000:.0f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out()
    out(f"GUI start to a usable window (-wallet=alice, 101 blocks; {ROUNDS} interleaved rounds, offscreen)")
    ready = {exe: [r["ready"] for r in rs] for exe, rs in runs.items()}
    for exe, rs in runs.items():
        out(f"  {exe:14s} ready median {median(ready[exe]) * 1000:6.0f} ms  (min {min(ready[exe]) * 1000:.0f}, "
            f"max {max(ready[exe]) * 1000:.0f})   stop median {median([r['stop'] for r in rs]) * 1000:5.0f} ms")
    out(f"  CleanCoin-gui / CleanCoin-qt: {median(ready['CleanCoin-gui']) / median(ready['CleanCoin-qt']):.2f}x")
    out()
    out("PSS of each process tree once the window is ready (median over the rounds; last round's processes)")
    for exe, rs in runs.items():
        totals = [sum(r["pss"].values()) for r in rs]
        if min(totals) <= 0:
            broken(f"no PSS read for {exe}")
        last = rs[-1]
        parts = ", ".join(f"{last['names'][p]} {last['pss'][p] / 1024:.1f}" for p in last["pss"])
        out(f"  {exe:14s} {median(totals) / 1024:6.1f} MiB in {len(last['pss'])} processes ({parts})")
    gui, qt = (median([sum(r["pss"].values()) for r in runs[e]]) for e in ("CleanCoin-gui", "CleanCoin-qt"))
    out(f"  CleanCoin-gui / CleanCoin-qt: {gui / qt:.2f}x")


# ---------------------------------------------------------------------- 2. balance label latency


class _Window:
    """One window in this process and the node it shows, with a way to mine to its wallet."""

    def __init__(self, name: str, app: Any, rpc: RpcClient, stop: Callable[[], Any]) -> None:
        self.name = name
        self.app = app
        self.rpc = rpc
        self.stop = stop
        self.address = ""
        self.label_changed: asyncio.Event = asyncio.Event()
        self.changed_at = 0.0
        self.label_before = ""
        w = app.window
        # Connected after the overview's own slot, so the label is already set when this runs.
        w.ctx.wallet_updated.connect(self._updated)

    def _updated(self, _event: Any) -> None:
        if self.app.window.overview.available.text() != self.label_before and not self.label_changed.is_set():
            self.changed_at = time.perf_counter()
            self.label_changed.set()

    async def block(self) -> tuple[float, float]:
        """Mine one block; (seconds until the label changed, seconds the RPC took)."""
        self.label_before = self.app.window.overview.available.text()
        self.label_changed.clear()
        started = time.perf_counter()
        await asyncio.to_thread(self.rpc.call, "generatetoaddress", 1, self.address)
        returned = time.perf_counter() - started
        await asyncio.wait_for(self.label_changed.wait(), 30)
        return self.changed_at - started, returned


def _gui_app(executable: str, link: Any, datadir: Path) -> Any:
    from cleancoin.components.gui.app import GuiApp, own_process
    from cleancoin.components.gui.settings import GuiSettings
    app = GuiApp(executable, "regtest", link, own=own_process(executable, None, "bench"),
                 settings=GuiSettings.open("regtest", str(datadir / "config"), confined_window=executable == "CleanCoin-gui"),
                 backup_dir=str(datadir / "regtest" / "wallets"))
    app.show()
    return app


async def _ready(app: Any) -> None:
    while not (app.ctx.wallet == "alice" and app.window.overview.available.text().endswith(" CC")):
        await asyncio.sleep(0.01)


async def _qt_window(datadir: Path) -> _Window:
    from cleancoin.components.gui.app import Link
    from cleancoin.components.init.cleancoin_qt import start_node
    from cleancoin.components.node.node import NodeConfig
    from cleancoin.components.node.node_binding import NodeService
    rpcport = _free_port()
    config = NodeConfig(chain="regtest", netdatadir=str(datadir / "regtest"), port=_free_port(), rpcport=rpcport,
                        listen=False, wallets=["alice"])
    node, task = await start_node(config)
    app = _gui_app("CleanCoin-qt", Link(NodeService(node), "in process"), datadir)
    runner = asyncio.ensure_future(app.run())

    async def stop() -> None:
        app.window.close()
        await runner
        await app.close(stop_node=False)
        node.request_shutdown()
        await task
    return _Window("CleanCoin-qt", app, _rpc(datadir, rpcport), stop)


async def _gui_window(datadir: Path) -> _Window:
    from cleancoin.components.init.cleancoin_gui import _wait_node, link_spawned, spawn_node
    from cleancoin.components.interfaces.init import IpcPeer
    rpcport = _free_port()
    process, sock = spawn_node(["-regtest", f"-datadir={datadir}", f"-port={_free_port()}", f"-rpcport={rpcport}",
                                "-listen=0", "-wallet=alice", "-printtoconsole=0"])
    link = await link_spawned(sock, IpcPeer("CleanCoin-gui", os.getpid()), False, "socket pair")
    app = _gui_app("CleanCoin-gui", link, datadir)
    runner = asyncio.ensure_future(app.run())

    async def stop() -> None:
        app.window.close()
        await runner
        await app.close(stop_node=True)
        await asyncio.to_thread(_wait_node, process)
    return _Window("CleanCoin-gui", app, _rpc(datadir, rpcport), stop)


def test_balance_label_latency_after_a_block() -> None:
    import capnp
    from PySide6.QtWidgets import QApplication

    from cleancoin.components.gui import loop as gui_loop

    qt_app = QApplication.instance() or QApplication([])
    qt_app.setQuitOnLastWindowClosed(False)
    loop = gui_loop.install(qt_app)
    base = Path(tempfile.mkdtemp(prefix="ccgui-bench-", dir=Path.home()))
    latency: dict[str, list[float]] = {"CleanCoin-qt": [], "CleanCoin-gui": []}
    rpc_time: dict[str, list[float]] = {"CleanCoin-qt": [], "CleanCoin-gui": []}

    async def main() -> None:
        async with capnp.kj_loop():
            template = _template(base)
            windows = []
            for make, name in ((_qt_window, "qt"), (_gui_window, "gui")):
                datadir = base / name
                shutil.copytree(template, datadir)
                windows.append(await make(datadir))
            try:
                for w in windows:
                    await asyncio.wait_for(_ready(w.app), 60)
                    w.address = await asyncio.to_thread(w.rpc.call, "getnewaddress", wallet="alice")
                    await w.block()          # warm-up, not counted
                for _ in range(BLOCKS):
                    for w in windows:
                        seen, returned = await w.block()
                        latency[w.name].append(seen)
                        rpc_time[w.name].append(returned)
            finally:
                for w in windows:
                    await w.stop()

    try:
        with loop:
            loop.run_until_complete(main())
    finally:
        asyncio.set_event_loop(None)
        shutil.rmtree(base, ignore_errors=True)
    out()
    out(f"Balance label latency: generatetoaddress 1 sent (JSON-RPC, another thread) -> 'Available' label "
        f"changed by notification ({BLOCKS} blocks each, interleaved)")
    for name in latency:
        if len(latency[name]) != BLOCKS:
            broken(f"{name}: {len(latency[name])} of {BLOCKS} blocks measured")
        out(f"  {name:14s} median {median(latency[name]) * 1000:6.1f} ms  p90 {p90(latency[name]) * 1000:6.1f} ms"
            f"   (the RPC alone: median {median(rpc_time[name]) * 1000:5.1f} ms)")
    out(f"  CleanCoin-gui / CleanCoin-qt: "
        f"{median(latency['CleanCoin-gui']) / median(latency['CleanCoin-qt']):.2f}x")
