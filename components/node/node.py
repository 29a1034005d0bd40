"""The node: one object that owns the chain, the mempool, the P2P layer and the RPC server.

    node = NodeContext(NodeConfig(chain="regtest", netdatadir="/tmp/x/regtest", ...))
    exit_code = asyncio.run(node.run())       # until SIGTERM/SIGINT or the `stop` RPC

Everything runs on one asyncio event loop. The chain manager and the mempool are synchronous
(SQLite and CPU work); P2P message handlers and RPC handlers call them directly on the loop,
so the two never race, and the chain's listeners (mempool updates) run in chain order.

Wiring:
- chain listeners -> `Mempool.remove_for_block` on connect, `readd_for_disconnect` on
  disconnect, so the pool always sits on the active tip, through reorganisations too;
- blocks mined by RPC and transactions sent by RPC are announced to peers (`announce_block`,
  `announce_tx`); what arrives over P2P is relayed by the P2P layer itself;
- shutdown (signal or `stop`) stops the RPC server first (no new work, the cookie is
  deleted), then P2P, then closes the database, then removes the pid file. Every block
  connect is its own committed SQLite transaction, so nothing needs flushing at the end, and
  a kill -9 at any point loses nothing committed (storage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .chain import ChainManager, ChainWriteFailure
from .verify_chain import DEFAULT_CHECK_BLOCKS, DEFAULT_CHECK_LEVEL
from ..common.diskfail import MIN_DISK_SPACE, check_disk_space
from ..common.chainparams import ChainParams, params_for
from ..common.consensus import Coin
from .mempool import Mempool
from .notifications import NotificationHub
from .p2p import USER_AGENT, P2PNode
from ..common.primitives import Block, OutPoint
from ..common.fee_cap import DEFAULT_MAX_TX_FEE
from ..common.private_files import UnsafeFileError, write_pid_file
from ..common.sigcheck import DEFAULT_CACHE_MIB, SignatureCache

log = logging.getLogger("cleancoin.node")

#: File name of the chain database inside the network datadir.
CHAINSTATE_FILE: str = "chainstate.sqlite"
#: Default pid file name (bitcoind's -pid default is bitcoind.pid).
PID_FILE: str = "CleanCoind.pid"


class InitError(Exception):
    """A startup failure to report as "Error: ..." with exit status 1, as bitcoind does."""


@dataclass
class NodeConfig:
    """Everything the node needs from the options (cli/node_main.py builds it)."""

    chain: str
    netdatadir: str
    reindex: bool = False
    # P2P
    listen: bool | None = None
    bind: str = "0.0.0.0"
    port: int | None = None
    connect: list[str] = field(default_factory=list)
    addnode: list[str] = field(default_factory=list)
    allow_local_peers: list[str] = field(default_factory=list)   # -allowlocalpeer (connect_rule.py)
    max_connections: int = 125
    max_upload_target: int = 0         # -maxuploadtarget, bytes per 24 h (0: none; p2p/upload_target.py)
    connect_timeout: float = 5.0       # -timeout, in seconds: an outgoing connect, DNS included
    peer_timeout: float = 60.0         # -peertimeout: a connected peer's version handshake
    uacomment: list[str] = field(default_factory=list)   # -uacomment: in the P2P user agent
    # RPC
    server: bool = True
    rpcport: int | None = None
    rpcbind: list[str] = field(default_factory=list)
    rpcallowip: list[str] = field(default_factory=list)
    rpcuser: str = ""
    # Not in the repr (a repr ends up in logs and tracebacks): -rpcauth may hold a plain
    # password by mistake.
    rpcpassword: str = field(default="", repr=False)
    rpcauth: list[str] = field(default_factory=list, repr=False)
    rpcwhitelist: list[str] = field(default_factory=list)   # USER:method,method (rpc/whitelist.py)
    rpcwhitelistdefault: bool | None = None                 # None: on when any -rpcwhitelist is set
    rpccookiefile: str | None = None
    rpcservertimeout: float = 30.0
    rest: bool = False                 # -rest: the REST interface on the RPC port
    # Files
    pid_file: str | None = None
    db_synchronous: str = "FULL"
    # Validation
    sig_threads: int | None = None     # -par: signature threads (None: sigcheck.default_threads)
    sig_cache_mib: int = DEFAULT_CACHE_MIB   # -maxsigcachesize: verified signatures kept, in MiB
    check_blocks: int = DEFAULT_CHECK_BLOCKS   # -checkblocks: blocks verified at start (0: all)
    check_level: int = DEFAULT_CHECK_LEVEL     # -checklevel: how thoroughly (0-4, verify_chain.py)
    # Wallet
    disable_wallet: bool = False
    wallets: list[str] = field(default_factory=list)   # -wallet=<name>: loaded at startup
    ignore_startup_wallets: bool = False   # -nowallet: not even wallets/settings.json's list
    max_tx_fee: int = DEFAULT_MAX_TX_FEE   # -maxtxfee: no wallet transaction pays more (units)
    # -minimumchainwork (None: the network's, chainparams.py): the node's IBD and presync,
    # and the wallet's anchor (wallet/headers.py)
    minimum_chain_work: int | None = None


class ChainViewAdapter:
    """mempool.ChainView over the ChainManager: the confirmed state at the active tip."""

    def __init__(self, chain: ChainManager) -> None:
        self._chain = chain

    @property
    def tip_height(self) -> int:
        return self._chain.height

    def utxo(self, outpoint: OutPoint) -> Coin | None:
        return self._chain.utxo(outpoint)

    def has_coins_of(self, txid: bytes) -> bool:
        return self._chain.has_coins_of(txid)

    def median_time_past_tip(self) -> int:
        return self._chain.median_time_past(self._chain.tip)


class MempoolUpdater:
    """Chain listener keeping the mempool on the active tip. Exceptions are logged by the
    chain manager (a mempool bug must not stop the chain)."""

    def __init__(self, mempool: Mempool) -> None:
        self._mempool = mempool
        self._log = logging.getLogger("cleancoin.mempool")

    def block_connected(self, block: Block, index: Any) -> None:
        conflicts = self._mempool.remove_for_block(block)
        if conflicts:
            self._log.debug("block %s at %d removed %d conflicting txs", block.hash_hex,
                            index.height, len(conflicts))

    def block_disconnected(self, block: Block, index: Any) -> None:
        dropped = self._mempool.readd_for_disconnect(block)
        self._log.debug("block %s disconnected; %d txs dropped from the pool", block.hash_hex,
                        len(dropped))


class NodeExtension(Protocol):
    """What an executable adds to the node (components/init/): CleanCoind its wallets in this
    process (cleancoind.InProcessWallets), CleanCoin-node its wallet process and IPC
    listeners (cleancoin_node.NodeProcesses)."""

    # It may also carry `p2p_sockets` and `rpc_sockets`: listening sockets bound before the
    # process confined itself (CleanCoin-node), served instead of binding -bind and -rpcbind.

    async def start(self, node: "NodeContext") -> None:
        """Called once chain, mempool, P2P and the RPC method table exist, before RPC serves."""
        ...

    async def stop(self) -> None:
        """Called at shutdown after the RPC server stopped, before P2P and the chain close."""
        ...

    async def finish(self) -> None:
        """Called at shutdown after the chain closed, before the pid file goes: wait for
        what `stop` set going to end (CleanCoin-node: its wallet process's exit, which
        overlaps with the closing of P2P and the chain)."""
        ...


class NodeContext:
    """A running CleanCoin node; see the module docstring. (Named as Bitcoin Core's
    node::NodeContext; `Node` is the interface a front end drives, components/interfaces/node.py.)"""

    def __init__(self, config: NodeConfig, extension: NodeExtension | None = None) -> None:
        self.config = config
        self.extension = extension
        self.params: ChainParams = params_for(config.chain)
        self.netdatadir = config.netdatadir
        self.started_at = time.time()
        self.mocktime = 0               # setmocktime (regtest): 0 is the real clock
        self.chain: ChainManager | None = None
        self.mempool: Mempool | None = None
        self.notifications: NotificationHub | None = None   # chain/mempool events for wallets
        self.frontend: Any = None       # frontend.FrontendHub: what front ends (a GUI) hear
        self.p2p: P2PNode | None = None
        self.rpc: Any = None            # components.rpc.server.RpcServer
        self.registry: Any = None
        self._stop: asyncio.Event | None = None     # created on the loop in run()
        self._exit_code = 0
        self._pid_written = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Free bytes the datadir's filesystem must keep (bitcoind's MIN_DISK_SPACE).
        self.min_free_space = MIN_DISK_SPACE

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start, serve until asked to stop, shut down. Returns the process exit status."""
        self._stop = asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_shutdown)
        try:
            try:
                await self.start()
            except InitError:
                raise
            except OSError as exc:
                raise InitError(str(exc)) from exc
            waiters = [asyncio.ensure_future(self._stop.wait())]
            if self.rpc is not None:
                waiters.append(asyncio.ensure_future(self.rpc.stop_requested.wait()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            log.info("Shutdown requested")
            # No pause for the `stop` reply: shutdown() stops the RPC server first, and its
            # graceful stop (aiohttp's, up to RpcServer.shutdown_timeout, 5 s) waits for
            # every request in progress, the `stop` call's reply included, to be written.
            return self._exit_code
        finally:
            await self.shutdown()

    def request_shutdown(self, exit_code: int = 0, reason: str = "") -> None:
        """Ask run() to return (signal handlers, the `stop` RPC; a part of the node that
        cannot go on gives a non-zero `exit_code` and the `reason`, also on stderr)."""
        if exit_code and not self._exit_code:
            self._exit_code = exit_code
            if reason:
                print(f"Error: {reason}", file=sys.stderr)
        if self._stop is not None:
            self._stop.set()

    def abort_node(self, failure: ChainWriteFailure) -> None:
        """bitcoind's AbortNode: a chain state write failed because of the disk, so the node
        cannot go on. One error line naming the cause and the file (the reserve leaves
        debug.log room for it, unless another process filled the disk), the same on stderr, then a clean shutdown with exit
        status 1. Safe from any thread (the chain may run on a worker thread)."""
        reason = f"A fatal internal error occurred: chain state write failed ({failure}); shutting down"
        if failure.cause == "Disk space is too low!":
            reason = f"Disk space is too low! ({failure.path}); shutting down"
        log.error("%s", reason)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.request_shutdown(1, reason)
        else:
            loop.call_soon_threadsafe(self.request_shutdown, 1, reason)

    async def start(self) -> None:
        """Open the chain (reindexing if asked), then the mempool, P2P and RPC."""
        os.makedirs(self.netdatadir, exist_ok=True)
        # bitcoind's start-up CheckDiskSpace: refuse to start on a disk without the reserve
        # rather than stop at the first block.
        if not check_disk_space(self.netdatadir, reserve=self.min_free_space):
            raise InitError(f"Disk space is low for {self.netdatadir!r}: under "
                            f"{self.min_free_space >> 20} MiB free")
        db_path = os.path.join(self.netdatadir, CHAINSTATE_FILE)
        log.info("Opening chain database %s (%s)", db_path, self.params.name)
        t0 = time.monotonic()
        try:
            self.chain = ChainManager(self.params, db_path, synchronous=self.config.db_synchronous,
                                      now=lambda: int(self.now()), sig_threads=self.config.sig_threads,
                                      sig_cache=SignatureCache(self.config.sig_cache_mib << 20),
                                      min_free_space=self.min_free_space, on_fatal=self.abort_node,
                                      for_reindex=self.config.reindex,
                                      minimum_chain_work=self.config.minimum_chain_work)
        except Exception as exc:       # StorageError, sqlite3.Error: report, exit 1
            raise InitError(f"Error opening block database: {exc}") from exc
        # Only now: the database lock proves no other node uses this datadir, whose pid
        # file we would otherwise overwrite (and delete on our way out).
        self._write_pid()
        if self.config.reindex:
            log.info("Reindexing the chain from stored blocks")
            try:
                self.chain.reindex()
            except ChainWriteFailure as exc:      # already logged and reported (abort_node)
                raise InitError(f"Reindex stopped: {exc}") from exc
        self._verify_last_blocks()
        log.info("Chain ready in %.2f s: height %d, tip %s", time.monotonic() - t0,
                 self.chain.height, self.chain.tip.hash_hex)
        # bitcoind: "Script verification uses N additional threads".
        log.info("Signature verification uses %d threads, this one included (-par)",
                 self.chain.signature_threads)
        self.mempool = Mempool(self.params, ChainViewAdapter(self.chain), signatures=self.chain.signatures)
        self.chain.add_listener(MempoolUpdater(self.mempool))
        # After MempoolUpdater: see notifications.py on the order of events.
        self.notifications = NotificationHub(self.chain, self.mempool)
        from .frontend import FrontendHub
        self.frontend = FrontendHub(self)
        cfg = self.config
        # Regtest redials sooner: test networks come up node by node, seconds apart.
        reconnect = 2.0 if self.params.name == "regtest" else 60.0
        self.p2p = P2PNode(self.chain, self.mempool, listen=cfg.listen, bind=cfg.bind,
                           port=cfg.port, connect=cfg.connect, addnode=cfg.addnode,
                           max_connections=cfg.max_connections, reconnect_interval=reconnect,
                           max_upload_target=cfg.max_upload_target,
                           connect_timeout=cfg.connect_timeout, handshake_timeout=cfg.peer_timeout,
                           user_agent=user_agent(cfg.uacomment), now=self.now,
                           connector=self._connector(),
                           sockets=getattr(self.extension, "p2p_sockets", None))
        try:
            await self.p2p.start()
        except OSError as exc:
            raise InitError(f"Unable to bind to {cfg.bind}:{self.p2p.requested_port} on this "
                            f"computer. CleanCoind is probably already running. ({exc})") from exc
        self._make_registry()
        if self.extension is not None:
            try:
                await self.extension.start(self)
            except InitError:
                raise
            except Exception as exc:     # the wallet process did not come up, a bad -ipcbind
                raise InitError(str(exc)) from exc
        if cfg.server:
            await self._start_rpc()
        log.info("Node started")

    def _connector(self) -> Any:
        """What opens outgoing P2P connections: the extension's (CleanCoin-node's connect
        broker), else this process, with the same connect rule (connect_rule.py)."""
        own = getattr(self.extension, "connector", None)
        if own is not None:
            return own
        from .connect_rule import ConnectRule
        from .p2p.connector import DirectConnector, broker_endpoints
        try:
            return DirectConnector(ConnectRule.build(broker_endpoints(self.config)))
        except ValueError as exc:
            raise InitError(f"-allowlocalpeer: {exc}") from exc

    def _make_registry(self) -> None:
        """The RPC method table: the node's methods now, the wallet's when it starts."""
        from cleancoin.components.rpc.registry import Registry

        from .rpc_methods import register_node_methods

        self.registry = Registry()
        register_node_methods(self.registry, self)
        self.registry.add_stop(on_stop=self.request_shutdown)

    async def _start_rpc(self) -> None:
        from cleancoin.components.rpc.server import RpcAuth, RpcServer, bind_endpoints, parse_allow
        from cleancoin.components.rpc.whitelist import RpcWhitelist

        cfg = self.config
        try:
            auth = RpcAuth.from_options(self.netdatadir, cfg.rpcuser, cfg.rpcpassword, cfg.rpcauth,
                                        cfg.rpccookiefile)
            allow = parse_allow(cfg.rpcallowip)
        except ValueError as exc:
            raise InitError(str(exc)) from exc
        port = self.params.rpc_port if cfg.rpcport is None else cfg.rpcport
        endpoints, warnings = bind_endpoints(cfg.rpcbind, cfg.rpcallowip, port)
        for w in warnings:
            log.warning("%s", w)
        rest = None
        if cfg.rest:
            from .rest import RestInterface
            rest = RestInterface(self)
        self.rpc = RpcServer(self.registry, auth, allow, endpoints, server_timeout=cfg.rpcservertimeout,
                             rest=rest, whitelist=RpcWhitelist.from_options(cfg.rpcwhitelist,
                                                                           cfg.rpcwhitelistdefault),
                             # CleanCoin-node's, bound before it confined itself.
                             sockets=getattr(self.extension, "rpc_sockets", None))
        try:
            await self.rpc.start()
        except UnsafeFileError as exc:      # a -rpccookiefile another user could replace
            self.rpc = None
            raise InitError(str(exc)) from None
        except OSError as exc:
            self.rpc = None
            raise InitError(f"Unable to start HTTP server. See debug log for details. ({exc})") from exc

    async def shutdown(self) -> None:
        """Stop RPC, P2P, close the database, remove the pid file; safe to call twice and
        after a partial start."""
        if self.rpc is not None:
            with contextlib.suppress(Exception):
                await self.rpc.stop()
            self.rpc = None
        if self.extension is not None:
            # Before the chain closes: a wallet may be mid-sync through it.
            with contextlib.suppress(Exception):
                await self.extension.stop()
        if self.p2p is not None:
            with contextlib.suppress(Exception):
                await self.p2p.stop()
            self.p2p = None
        if self.notifications is not None:
            self.notifications.close()
            self.notifications = None
        if self.frontend is not None:
            self.frontend.close()
            self.frontend = None
        if self.chain is not None:
            self.chain.close()
            self.chain = None
        if self.extension is not None:
            with contextlib.suppress(Exception):
                await self.extension.finish()
        self._remove_pid()
        log.info("Shutdown: done")

    # ------------------------------------------------------------------ pid file

    @property
    def pid_path(self) -> str:
        name = self.config.pid_file or PID_FILE
        return name if os.path.isabs(name) else os.path.join(self.netdatadir, name)

    def _verify_last_blocks(self) -> None:
        """bitcoind's start-up VerifyDB: the last -checkblocks blocks at -checklevel against
        their undo data and the UTXO set; a problem stops the start (InitError)."""
        cfg = self.config
        chain = self.chain
        assert chain is not None
        count = min(cfg.check_blocks, chain.height) if cfg.check_blocks > 0 else chain.height
        log.info("Verifying last %d blocks at level %d", count, cfg.check_level)
        shown = [0]

        def progress(done: int, total: int) -> None:
            percent = done * 100 // max(total, 1)
            if total >= 100 and percent >= shown[0] + 10:
                shown[0] = percent - percent % 10
                log.info("Verification progress: %d%%", shown[0])

        result = chain.verify_chain(cfg.check_level, cfg.check_blocks, progress)
        if not result.ok:
            raise InitError(f"Corrupted block database detected: {result.problem}. "
                            "Please restart with -reindex to recover.")
        log.info("Verification: no coin database inconsistencies in last %d blocks (%d transactions)",
                 result.checked, result.transactions)

    def _write_pid(self) -> None:
        # Not open(path, "w"): before 12-07 that followed a link another user planted where
        # -pid pointed (a shared directory) and truncated the file it led to, as the node's
        # user; a FIFO there hung the start (private_files.write_pid_file).
        try:
            write_pid_file(self.pid_path, os.getpid())
            self._pid_written = True
        except UnsafeFileError as exc:
            raise InitError(str(exc)) from None
        except OSError as exc:
            raise InitError(f"Unable to create the PID file '{self.pid_path}': {exc.strerror}") from exc

    def _remove_pid(self) -> None:
        if self._pid_written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pid_path)
            self._pid_written = False

    # ------------------------------------------------------------------ helpers for RPC

    @property
    def uptime(self) -> int:
        """Seconds since the node object was created."""
        return int(time.time() - self.started_at)

    def now(self) -> float:
        """The node's clock: the real time, or the setmocktime time on regtest. It dates mined
        blocks, judges headers from the future and the initial block download, and stamps P2P
        messages and bans, as bitcoind's mockable clock does (the wallet keeps the real one)."""
        return float(self.mocktime) if self.mocktime else time.time()


#: bitcoind's SAFE_CHARS_UA_COMMENT and MAX_SUBVERSION_LENGTH.
UA_COMMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;-_/:?@()")
MAX_SUBVERSION_LENGTH = 256


def user_agent(comments: list[str]) -> str:
    """The P2P user agent with -uacomment values, bitcoind's FormatSubVersion: /CleanCoin:0.1.0(a; b)/.
    InitError for a comment with other characters or a string longer than 256."""
    for comment in comments:
        if not set(comment) <= UA_COMMENT_CHARS:
            raise InitError(f"User Agent comment ({comment}) contains unsafe characters.")
    base = USER_AGENT.rstrip("/")
    agent = f"{base}({'; '.join(comments)})/" if comments else USER_AGENT
    if len(agent) > MAX_SUBVERSION_LENGTH:
        raise InitError(f"Total length of network version string ({len(agent)}) exceeds maximum length "
                        f"({MAX_SUBVERSION_LENGTH}). Reduce the number or size of uacomments.")
    return agent
