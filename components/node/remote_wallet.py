"""CleanCoin-node's handles on a wallet that runs in another process.

`RemoteWallet` is what the node keeps of such a wallet, however its process was reached.
Attaching to a connection gives the wallet a `Chain` of its own, the only one through which
wallet RPC methods can be registered with this node (the router's reserving, gated slot of
"the node's wallet process", see wallet_router.py), asks `Init.make_wallet_loader` for its
loader and loads the wanted wallets; only then do the methods answer (until then, -28).
Detaching ends that chain's registrations and closes the connection; the names stay
reserved for the next process attached here. Two ways to reach the process:

- `WalletProcess`: a CleanCoin-wallet started through the zygote and kept running. The
  zygote (sandbox/zygote.py, started before the node restricted itself) launches the wallet
  under its own policy on a socket pair. Death: the zygote reports the exit; the node logs
  the status or signal, the wallet's RPC methods answer RPC_IN_WARMUP ("Wallet process
  restarting ...") and a new wallet process is started after a short, growing delay,
  loading the wallets that were loaded before. Every wallet update is one SQLite
  transaction, so a wallet killed at any moment loses nothing committed. A dead zygote stops
  the node (see `WalletProcess._on_zygote_gone`).
- `ConnectedWallet`: a running `CleanCoin-wallet -ipcbind=...` that waits for nodes
  (`<netdatadir>/wallet.sock` by default), reached with -ipcconnect. The two processes come
  and go independently: when the connection ends, wallet RPC methods answer RPC_IN_WARMUP
  and the node tries again every RECONNECT_SECONDS, loading the same wallets when the
  wallet process is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from cleancoin.sandbox import Exited, Zygote, ZygoteError

from ..interfaces.init import IpcPeer
from ..interfaces.node import ProcessEvent
from ..interfaces.wallet import WalletLoader, WalletOptions
from ..ipc.connection import Connection, connect_init
from ..ipc.settings import IpcSettings, open_peer
from ..ipc.transport import stream_from_fd
from .chain_binding import NodeChain, make_chain
from .wallet_component import WALLET_COMPONENT, prestart
from .wallet_router import WalletRpcRouter

log = logging.getLogger("cleancoin.node")


#: How long a wallet process may take to close its wallets at shutdown.
SHUTDOWN_TIMEOUT = 10.0
#: Who holds the wallet methods, in messages and logs.
WALLET_SLOT_LABEL = "the node's wallet process"


class RemoteWallet:
    """The connection, the Chain served over it, the loader, and the wallets loaded (`wanted`:
    loaded again after a restart or a reconnect)."""

    def __init__(self, node: Any, router: WalletRpcRouter, wallets: list[str], local: IpcPeer) -> None:
        self._node = node
        self._router = router
        self.wanted: list[str] = list(wallets)
        self._local = local
        self._connection: Connection | None = None
        self._chain: NodeChain | None = None
        self.loader: WalletLoader | None = None
        self._slot = router.slot(WALLET_SLOT_LABEL, reserve=True, gated=True)

    async def _attach(self, connection: Connection) -> None:
        """Use the wallet process at the other end of `connection`; on failure, detach and raise."""
        self._connection = connection
        self._chain = make_chain(self._node, self._router.registrar(self._slot))
        try:
            self.loader = await connection.init.make_wallet_loader(
                self._chain, WalletOptions(self._node.params.name, self._node.netdatadir,
                                           self._node.config.ignore_startup_wallets))
            await self.loader.load_wallets(self.wanted)
            self.wanted = await self.loader.loaded_wallets()
        except BaseException:
            await self._detach()
            raise
        self._router.set_ready(self._slot)
        await self._follow_wallet_events()

    async def _follow_wallet_events(self) -> None:
        """Pass the wallet process's wallet events on to the node's front ends (a wallet
        process that cannot send them still serves its wallets)."""
        hub = getattr(self._node, "frontend", None)
        if hub is None or self.loader is None:
            return
        from .frontend import WalletEventsReceiver
        try:
            await self.loader.handle_notifications(WalletEventsReceiver(hub))
        except Exception as exc:  # noqa: BLE001 - a front end then sees no live balances
            log.warning("the wallet process sends no wallet events: %s", exc)

    def _process_event(self, kind: str, name: str, pid: int | None, detail: str = "",
                       restarts: int = 0) -> None:
        """Tell the node's front ends (the GUI's Sandbox panel) what happened to the process."""
        hub = getattr(self._node, "frontend", None)
        if hub is not None:
            hub.process_event(ProcessEvent(kind, name, pid or 0, detail, restarts))

    async def refresh_loaded(self, _method: str = "") -> None:
        """After createwallet/loadwallet/unloadwallet/restorewallet: remember what is loaded."""
        if self.loader is not None:
            with contextlib.suppress(Exception):
                self.wanted = await self.loader.loaded_wallets()

    async def _close_wallets(self) -> str | None:
        """Ask the wallet process to close our wallets (at shutdown); None if it did, else why
        not (the caller judges, once it knows how the process ended)."""
        if self.loader is None:
            return None
        try:
            await asyncio.wait_for(self.loader.shutdown(), SHUTDOWN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - hanging up (or a kill) follows
            return str(exc) or type(exc).__name__
        return None

    async def _detach(self) -> None:
        """End the chain's registrations and hang up; safe to call twice."""
        chain, self._chain = self._chain, None
        connection, self._connection, self.loader = self._connection, None, None
        hub = getattr(self._node, "frontend", None)
        if hub is not None and connection is not None:
            hub.wallets_gone()
        if chain is not None:
            await chain.close()
        if connection is not None:
            connection.close()


# ---------------------------------------------------------------------- started by the zygote


#: Restart delays after a wallet process died: 0.1 s (systemd's RestartSec default), doubling
#: up to 30 s; reset once a wallet process has run for STABLE_SECONDS. Wallet RPCs answer -28
#: meanwhile, so a short first delay is time clients no longer wait; a process that dies
#: again and again is started ever more slowly (and the zygote limits starts per minute).
FIRST_DELAY, MAX_DELAY, STABLE_SECONDS = 0.1, 30.0, 60.0


class WalletProcessError(Exception):
    """The wallet process could not be started or did not come up."""


class WalletProcess(RemoteWallet):
    """See the module docstring. `node` is the started NodeContext (its chain and mempool)."""

    def __init__(self, zygote: Zygote, node: Any, router: WalletRpcRouter, wallets: list[str],
                 local: IpcPeer, debug: bool, prestarted: socket.socket | None = None,
                 on_first_use: bool = False) -> None:
        super().__init__(node, router, wallets, local)
        self._zygote = zygote
        self._debug = debug
        self.pid: int | None = None
        self.report_text: str = ""
        self.report: Any = None             # the sandbox Report of the running process
        self._stopping = False
        self._delay = FIRST_DELAY
        self._started_at = 0.0
        self._restart: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()              # set each time the current process exits
        self.last_returncode: int | None = None    # how the last one ended (Exited.returncode)
        self.restarts = 0
        self._prestarted = prestarted               # see prestart()
        #: Started at the first call that may want it (`ensure_started`), not by `start`.
        self._on_first_use = on_first_use
        self._first: asyncio.Task[bool] | None = None
        # Set by hang_up for wait_gone: the process hung up on, why its wallets did not
        # close (None: they did), and when it is killed if it has not ended by itself.
        self._stopped_pid: int | None = None
        self._stop_failure: str | None = None
        self._stop_deadline = 0.0

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Start the wallet process and load the -wallet wallets; raises WalletProcessError."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self._zygote.events.fileno(), self._on_zygote_event)
        if self._on_first_use and self._prestarted is None:
            log.info("%s starts at the first call that may want a wallet (no wallet to load at start)",
                     WALLET_COMPONENT)
            return
        await self._start_once()

    async def ensure_started(self) -> bool:
        """For a process started on first use: start it now, once (calls that come meanwhile
        wait for the same start), and load the wallets; True once it serves. A start that
        fails (its sandbox cannot be applied, it does not come up) stops the node with exit
        status 1 and says why, as that failure did at start-up: no wallet code runs outside
        its sandbox, and the node does not go on without the wallet it was asked for (False,
        the router's status says why)."""
        if self._first is None:
            if self._stopping:
                return False
            self._first = asyncio.get_running_loop().create_task(self._start_on_first_use())
        return await asyncio.shield(self._first)

    async def _start_on_first_use(self) -> bool:
        try:
            await self._start_once()
        except Exception as exc:  # noqa: BLE001 - any failure stops the node, as at start-up
            # WalletProcessError, ZygoteError, OSError (the zygote is gone) are expected; any
            # other exception is a failed start too: left in the task, every later call would
            # have seen it while the node went on without the wallet it was asked for.
            expected = isinstance(exc, (WalletProcessError, ZygoteError, OSError))
            why = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            message = f"{why}; CleanCoin-node stops (exit status 1)"
            log.error("Error: %s", message)
            self._router.status = f"Wallet process unavailable: {why}"
            self._node.request_shutdown(1, message)
            return False
        log.info("%s started at the first call that wanted it", WALLET_COMPONENT)
        return True

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
        self.report = spawned.report
        if spawned.report is not None:
            self.report_text = spawned.report.to_text()
            log.info("%s (pid %d) started:\n%s", WALLET_COMPONENT, spawned.pid, self.report_text)
        else:
            self.report_text = "not sandboxed (-sandbox=0)"
            log.warning("%s (pid %d) started WITHOUT a sandbox (-sandbox=0)", WALLET_COMPONENT, spawned.pid)
        try:
            stream = await stream_from_fd(ours.detach())
            connection = await connect_init(stream, self._local, self._debug)
            connection.log.remote = IpcPeer(connection.remote.name, spawned.pid)
            await self._attach(connection)
        except Exception as exc:
            raise WalletProcessError(f"{WALLET_COMPONENT} (pid {spawned.pid}) did not come up: {exc}") from exc
        self._router.status = "No wallet process is connected"
        policy = "not sandboxed (-sandbox=0)" if spawned.report is None else "policy wallet"
        self._process_event("started", WALLET_COMPONENT, spawned.pid, policy, self.restarts)

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
        self.last_returncode = event.returncode
        self.exited.set()
        self._process_event("exited", WALLET_COMPONENT, event.pid, event.description, self.restarts)
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
            self._process_event("restarted", WALLET_COMPONENT, self.pid, "wallets loaded: "
                                + (", ".join(self.wanted) or "none"), self.restarts)
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
        await self.hang_up()
        await self.wait_gone()

    async def hang_up(self) -> None:
        """The first half of `stop`: the wallet closes its wallets (it uses the node's chain
        no more) and the connection is closed, upon which the process exits by itself.
        CleanCoin-node's shutdown closes P2P and the chain meanwhile, then calls `wait_gone`."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        if self._first is not None and not self._first.done():
            # A first start under way: let it end (its process then closes its wallets below).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._first), SHUTDOWN_TIMEOUT)
        self._stopped_pid = self.pid
        # Else killed in wait_gone.
        self._stop_failure = await self._close_wallets() if self.pid is not None else None
        await self._detach()
        self._stop_deadline = loop_time() + SHUTDOWN_TIMEOUT

    async def wait_gone(self) -> None:
        """The second half of `stop`: wait for the process to end (SHUTDOWN_TIMEOUT after
        `hang_up`, then kill it) and say how it went."""
        pid, failed = self._stopped_pid, self._stop_failure
        if pid is not None:
            try:
                await asyncio.wait_for(self.exited.wait(), max(0.0, self._stop_deadline - loop_time()))
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) still running; killing it", WALLET_COMPONENT, pid)
                with contextlib.suppress(ZygoteError):
                    self._zygote.kill(pid)
        if failed is not None:
            # A SIGTERM that reached every process at once (systemd's KillMode=control-group)
            # makes the wallet process close its wallets and exit by itself: the call then
            # finds the connection gone, and status 0 says that all went well.
            if self.last_returncode == 0:
                log.info("the wallet process closed its wallets and exited by itself (status 0)")
            else:
                log.warning("the wallet process did not close its wallets cleanly: %s", failed)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._zygote.events.fileno())


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# ---------------------------------------------------------------------- reached with -ipcconnect

RECONNECT_SECONDS = 2.0


class ConnectedWallet(RemoteWallet):
    """See the module docstring. `socket_path` is where `unix` points (the wallet.sock of
    the network datadir)."""

    def __init__(self, ipc: IpcSettings, socket_path: str, node: Any, router: WalletRpcRouter,
                 wallets: list[str], local: IpcPeer,
                 opener: Callable[[], Awaitable[socket.socket]] | None = None) -> None:
        super().__init__(node, router, wallets, local)
        self._ipc = ipc
        #: What makes each (re)connection's socket when the node cannot (its connect broker,
        #: for -ipcconnect=tcp under the sandbox); None: open_peer connects.
        self._opener = opener
        self._socket_path = socket_path
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self.remote: IpcPeer | None = None
        self.reconnects = 0

    async def start(self) -> None:
        """Connect and load the -wallet wallets; raises WalletProcessError (the node then
        refuses to start, as it does when it cannot start its own wallet process)."""
        try:
            await self._connect()
        except Exception as exc:
            raise WalletProcessError(f"cannot use the wallet process at {self._ipc.connect}: {exc}") from exc

    async def _connect(self) -> None:
        async def refuse_spawn() -> Connection:
            raise WalletProcessError("no wallet process answers")

        sock = await self._opener() if self._opener is not None else None
        connection = await open_peer(self._ipc, self._socket_path, self._local, self._node.netdatadir,
                                     refuse_spawn, sock)
        await self._attach(connection)
        self.remote = connection.remote
        self._process_event("connected", connection.remote.name, connection.remote.pid,
                            "a running wallet process (-ipcconnect)", self.reconnects)
        log.info("using the wallet process %s (wallets loaded: %s)", connection.remote,
                 ", ".join(self.wanted) or "none")
        self._watch = asyncio.get_running_loop().create_task(self._watch_connection(connection))

    async def _watch_connection(self, connection: Connection) -> None:
        await connection.closed()
        if self._stopping:
            return
        log.warning("the wallet process %s went away; trying to reconnect every %.0f s",
                    connection.remote, RECONNECT_SECONDS)
        self._process_event("disconnected", connection.remote.name, connection.remote.pid, "", self.reconnects)
        self._router.status = f"Wallet process {connection.remote} disconnected; reconnecting"
        await self._detach()
        while not self._stopping:
            await asyncio.sleep(RECONNECT_SECONDS)
            try:
                await self._connect()
                self.reconnects += 1
                return
            except Exception as exc:  # noqa: BLE001 - keep trying; the next attempt may work
                log.debug("reconnecting to the wallet process failed: %s", exc)

    async def stop(self) -> None:
        """Let the wallet process close our wallets (it keeps running), then hang up."""
        self._stopping = True
        failed = await self._close_wallets()
        if failed is not None:
            log.warning("the wallet process did not close our wallets: %s (hanging up closes them)", failed)
        if self._watch is not None:
            self._watch.cancel()
        await self._detach()
