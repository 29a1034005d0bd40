"""CleanCoin-node's wallet: a CleanCoin-wallet process, started through the zygote and kept
running.

Start: a socket pair; the zygote (sandbox/zygote.py, started before the node restricted
itself) launches the wallet under its own policy with the other end; the node connects,
hands the wallet a `Chain` of its own (`Init.make_wallet_loader(chain, options)`), the wallet
registers its RPC methods through that chain (wallet_router.py), and the node asks it to load
the -wallet wallets.

Death: the zygote reports the exit; the node logs the status or signal, the wallet's RPC
methods answer RPC_IN_WARMUP ("Wallet process restarting ...") and a new wallet process is
started after a short, growing delay, loading the wallets that were loaded before. Every
wallet update is one SQLite transaction, so a wallet killed at any moment loses nothing
committed; the new process catches up with the chain like any wallet that loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from typing import Any

from cleancoin.sandbox import Exited, Zygote, ZygoteError

from ..ipc.connection import connect_init
from ..interfaces.init import Peer
from ..ipc.transport import stream_from_fd
from .wallet_router import WalletRpcRouter
from .wallet_session import SHUTDOWN_TIMEOUT, RemoteWallet

log = logging.getLogger("cleancoin.node")

WALLET_COMPONENT = "CleanCoin-wallet"
#: What the zygote runs in the wallet's sandbox (cli/wallet_process.py).
WALLET_TARGET = "cleancoin.cli.wallet_process:serve_node"
#: Restart delays after a wallet process died: 0.5 s, doubling up to 30 s; reset once a
#: wallet process has run for STABLE_SECONDS.
FIRST_DELAY, MAX_DELAY, STABLE_SECONDS = 0.5, 30.0, 60.0


class WalletProcessError(Exception):
    """The wallet process could not be started or did not come up."""


class WalletProcess(RemoteWallet):
    """See the module docstring. `node` is the started Node (its chain and mempool)."""

    def __init__(self, zygote: Zygote, node: Any, router: WalletRpcRouter, wallets: list[str],
                 local: Peer, debug: bool, prestarted: socket.socket | None = None) -> None:
        super().__init__(node, router, wallets, local)
        self._zygote = zygote
        self._debug = debug
        self.pid: int | None = None
        self.report_text: str = ""
        self._stopping = False
        self._delay = FIRST_DELAY
        self._started_at = 0.0
        self._restart: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()              # set each time the current process exits
        self.restarts = 0
        self._prestarted = prestarted               # see prestart()

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Start the wallet process and load the -wallet wallets; raises WalletProcessError."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self._zygote.events.fileno(), self._on_zygote_event)
        await self._start_once()

    async def _start_once(self) -> None:
        ours, self._prestarted = self._prestarted, None
        if ours is None:
            ours = prestart(self._zygote)
        try:
            # The zygote answers once the wallet's sandbox is in force (or why it failed).
            spawned = await asyncio.to_thread(self._zygote.collect_spawn)
        except ZygoteError as exc:
            ours.close()
            step = f" (sandbox step '{exc.step}')" if exc.step else ""
            raise WalletProcessError(f"cannot start {WALLET_COMPONENT}{step}: {exc}") from None
        self.pid = spawned.pid
        self.exited.clear()
        self._started_at = loop_time()
        if spawned.report is not None:
            self.report_text = spawned.report.to_text()
            log.info("%s (pid %d) started:\n%s", WALLET_COMPONENT, spawned.pid, self.report_text)
        else:
            self.report_text = "not sandboxed (-sandbox=0)"
            log.warning("%s (pid %d) started WITHOUT a sandbox (-sandbox=0)", WALLET_COMPONENT, spawned.pid)
        try:
            stream = await stream_from_fd(ours.detach())
            connection = await connect_init(stream, self._local, self._debug)
            connection.log.remote = Peer(connection.remote.name, spawned.pid)
            await self._attach(connection)
        except Exception as exc:
            raise WalletProcessError(f"{WALLET_COMPONENT} (pid {spawned.pid}) did not come up: {exc}") from exc
        self._router.status = "No wallet process is connected"

    # ------------------------------------------------------------------ death and restart

    def _on_zygote_event(self) -> None:
        event = self._zygote.read_event()
        if event is None:
            asyncio.get_running_loop().remove_reader(self._zygote.events.fileno())
            if not self._stopping:
                self._on_zygote_gone()
            return
        if event.pid == self.pid:
            self._on_exit(event)

    def _on_zygote_gone(self) -> None:
        """The zygote died (it never does on its own). A confined node cannot start another
        (building a sandbox needs rights it gave up), and without one no wallet process can
        come back: the node stops with exit status 1 and says why, so that a supervisor
        starts it again with everything in place. Its wallet process died with the zygote."""
        code = self._zygote.reap()
        how = "" if code is None else f" ({'killed by signal ' + str(-code) if code < 0 else 'exit status ' + str(code)})"
        message = (f"the wallet launcher (zygote, pid {self._zygote.pid}) is gone{how}: no wallet "
                   "process can be started again; CleanCoin-node stops (exit status 1), start it again")
        log.error("%s", message)
        self._router.status = ("Wallet process unavailable: its launcher is gone and the node is "
                               "stopping; start CleanCoin-node again")
        self.pid = None
        self.exited.set()
        if self._restart is not None:
            self._restart.cancel()
        asyncio.get_running_loop().create_task(self._detach())
        self._node.request_shutdown(1, message)

    def _on_exit(self, event: Exited) -> None:
        self.pid = None
        self.exited.set()
        if self._stopping:
            log.info("%s (pid %d) %s", WALLET_COMPONENT, event.pid, event.description)
            return
        log.warning("%s (pid %d) %s; restarting it", WALLET_COMPONENT, event.pid, event.description)
        self._router.status = (f"Wallet process restarting: {WALLET_COMPONENT} (pid {event.pid}) "
                               f"{event.description}")
        asyncio.get_running_loop().create_task(self._detach())
        if loop_time() - self._started_at > STABLE_SECONDS:
            self._delay = FIRST_DELAY
        self._restart = asyncio.get_running_loop().create_task(self._restart_later(self._delay))
        self._delay = min(self._delay * 2, MAX_DELAY)

    async def _restart_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await self._start_once()
            self.restarts += 1
            log.info("%s restarted (pid %d), wallets loaded: %s", WALLET_COMPONENT, self.pid,
                     ", ".join(self.wanted) or "none")
        except Exception as exc:  # noqa: BLE001 - keep trying; the log says why
            log.error("restarting %s failed: %s", WALLET_COMPONENT, exc)
            if self.pid is not None:
                with contextlib.suppress(ZygoteError):
                    self._zygote.kill(self.pid)    # its exit event schedules the next try
            else:
                self._restart = asyncio.get_running_loop().create_task(self._restart_later(self._delay))
                self._delay = min(self._delay * 2, MAX_DELAY)

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Let the wallet close its wallets, then make sure the process is gone."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        pid = self.pid
        if pid is not None:
            await self._close_wallets()    # a process that does not is killed below
        await self._detach()
        if pid is not None:
            try:
                await asyncio.wait_for(self.exited.wait(), SHUTDOWN_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) still running; killing it", WALLET_COMPONENT, pid)
                with contextlib.suppress(ZygoteError):
                    self._zygote.kill(pid)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._zygote.events.fileno())


def prestart(zygote: Zygote) -> socket.socket:
    """Ask the zygote to start a wallet process now and return our end of its socket;
    `WalletProcess` collects the answer later. CleanCoin-node calls this before it restricts
    itself and opens its chain, so the wallet's interpreter starts meanwhile."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        zygote.request_spawn(WALLET_COMPONENT, theirs.fileno())
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours


def loop_time() -> float:
    return asyncio.get_running_loop().time()


