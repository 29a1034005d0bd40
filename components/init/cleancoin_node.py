"""CleanCoin-node: the node with its zygote, its own sandbox and its wallet in another process.

`run` is the start-up order (docs/multiprocess.md): the node's code imported; the zygote
started (a fresh interpreter that can start the wallet under policies/wallet.toml, and
nothing else) and asked for the wallet at once; this process confined by policies/node.toml
(`restrict_self`); then the node, with `NodeProcesses` as its extension.


`NodeProcesses` is the node's `NodeExtension` (node.py). At start it makes the router that
serves wallet RPC methods registered over IPC (wallet_router.py), opens the -ipcbind
listeners (whose clients get the node's Init: makeChain, makeNode), and starts the wallet
process through the zygote (node/remote_wallet.py) unless -disablewallet, or uses the running
one -ipcconnect names. At shutdown it stops them in reverse order.

Only that wallet process may register wallet RPC methods. The `Chain` a listener's client
gets refuses registrations, unless the operator allowed wallets there (-ipcallowwallet=1,
which takes effect only when the node has no wallet process of its own: -disablewallet);
then a separately started `CleanCoin-wallet -ipcconnect` can serve the wallet methods.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cleancoin.sandbox import Report, Zygote

from ..common import startup_gc
from ..common.private_files import log_descriptors
from ..ipc.address import parse
from ..ipc.auth import write_cookie
from ..ipc.init_impl import ProcessInit
from ..interfaces.init import IpcPeer
from ..ipc.settings import IpcSettings
from ..ipc.transport import Listener, listen
from ..node.chain_binding import RpcRegistrar, make_chain
from ..node.connect_broker import NAME as BROKER_NAME
from ..node.node_binding import NodeService
from ..node.remote_wallet import ConnectedWallet, WalletProcess
from ..node.wallet_component import WALLET_COMPONENT, WALLET_SOCKET
from ..node.wallet_router import WalletRpcRouter, WalletSlot
from .node_listeners import NODE_SOCKET, ListenError, NodeListeners, bind_all

log = logging.getLogger("cleancoin.node")


@dataclass
class NodeProcesses:
    """See the module docstring. `zygote` is None with -disablewallet; `report` is the node's
    own enforcement report (None with -sandbox=0)."""

    zygote: Zygote | None
    ipc: IpcSettings
    local: IpcPeer
    wallets: list[str]
    report: Report | None = None
    prestarted_wallet: Any = None     # remote_wallet.prestart()'s socket, if called
    connect_wallet: bool = False      # -ipcconnect: use a running wallet process instead
    allow_wallet_clients: bool = False  # -ipcallowwallet: listener clients may be the wallet
    router: WalletRpcRouter | None = None
    frontend_fd: int | None = None    # -ipcfd: a socket to the front end that started us
    wallet: WalletProcess | ConnectedWallet | None = None
    listeners: list[Listener] = field(default_factory=list)
    _node: Any = None
    #: What opens outgoing P2P connections (node.p2p.connector): the connect broker's client
    #: when this process is confined; None: the node's own, with the same rule.
    connector: Any = None
    _client_slot: WalletSlot | None = None     # -ipcallowwallet: the listener clients' slot
    #: -ipcbind listeners bound before this process confined itself (node_listeners.py), by
    #: their -ipcbind value.
    prebound: dict[str, socket.socket] = field(default_factory=dict)
    #: The P2P and RPC listeners bound then (NodeExtension: node.py serves on them).
    p2p_sockets: list[socket.socket] | None = None
    rpc_sockets: list[tuple[str, int, socket.socket]] | None = None
    _frontend_task: asyncio.Task[None] | None = None
    #: The wallet process is started at the first RPC call that may want it, not now
    #: (`wallet_component.wallet_at_start` said so; `_on_demand`).
    wallet_on_first_use: bool = False

    async def start(self, node: Any) -> None:
        self._node = node
        self.router = WalletRpcRouter(node.registry, after_call=self._after_wallet_call,
                                      tip=lambda: node.chain.tip.hash if node.chain is not None else b"")
        self._add_process_info(node)
        if self.connector is not None:
            self.connector.attach()
        own_wallet = self.connect_wallet or self.zygote is not None
        if self.allow_wallet_clients and own_wallet:
            log.warning("-ipcallowwallet has no effect: this node serves its own wallet process "
                        "(use it with -disablewallet)")
        elif self.allow_wallet_clients:
            self._client_slot = self.router.slot("a wallet process connected to an IPC listener "
                                                 "(-ipcallowwallet)", reserve=False, gated=False)
        if self.ipc.binds:
            await self._listen(node)
        if self.connect_wallet:
            self.wallet = ConnectedWallet(self.ipc, os.path.join(node.netdatadir, WALLET_SOCKET), node,
                                          self.router, self.wallets, self.local,
                                          opener=_brokered_wallet_socket(self.connector, self.ipc.connect,
                                                                         node.config.connect_timeout))
            await self.wallet.start()
        elif self.zygote is not None:
            self.wallet = WalletProcess(self.zygote, node, self.router, self.wallets, self.local,
                                        self.ipc.debug, self.prestarted_wallet,
                                        on_first_use=self.wallet_on_first_use)
            self.prestarted_wallet = None
            await self.wallet.start()
            if self.wallet_on_first_use:
                node.registry.on_demand = self._on_demand
        # The front end that started this node hears from it once its wallet methods are
        # registered: a window's first "create wallet" must not meet "Method not found".
        if self.frontend_fd is not None:
            await self._serve_frontend(node)

    #: Node methods whose answer includes the wallet process's part: `help` lists its
    #: methods, `getprocessinfo` its pid and sandbox. They start it, as a wallet method does.
    WALLET_SHOWN_BY = frozenset({"help", "getprocessinfo"})

    async def _on_demand(self, name: str, known: bool) -> bool:
        """The registry's hook before a call (`Registry.on_demand`), while the wallet process
        waits for its first use: a name the node does not serve may be a wallet method, and
        `help` and `getprocessinfo` show the wallet's part, so the process is started and its
        methods registered before the call is looked up again (True). Every later call skips
        the hook. A start that fails stops the node, as it did at start-up
        (`WalletProcess.ensure_started`)."""
        if known and name not in self.WALLET_SHOWN_BY:
            return False
        assert isinstance(self.wallet, WalletProcess) and self._node is not None
        if not await self.wallet.ensure_started():
            from ..rpc.errors import RPC_IN_WARMUP, RpcError
            assert self.router is not None
            raise RpcError(RPC_IN_WARMUP, self.router.status)
        # Calls that came meanwhile waited for the same start (ensure_started is shared).
        self._node.registry.on_demand = None
        return True

    async def _after_wallet_call(self, method: str) -> None:
        if self.wallet is not None:
            await self.wallet.refresh_loaded(method)

    async def _listen(self, node: Any) -> None:
        assert self.router is not None
        registrar = self._listener_registrar
        make_init = functools.partial(ProcessInit, chain_factory=lambda: make_chain(node, registrar()),
                                      node_factory=lambda: NodeService(node))
        tcp = any(b.startswith("tcp") for b in self.ipc.binds)
        cookie = write_cookie(node.netdatadir) if tcp else None
        options = self.ipc.listen_options(cookie)
        for bind in self.ipc.binds:
            address = parse(bind, os.path.join(node.netdatadir, NODE_SOCKET))
            self.listeners.append(await listen(address, make_init, self.local, options,
                                               sock=self.prebound.pop(bind, None)))
            log.info("IPC: listening on %s", bind if address.kind == "tcp" else address.path)

    async def _serve_frontend(self, node: Any) -> None:
        """-ipcfd: serve the Init (makeNode, makeChain without registrations) to the front
        end that started this node (CleanCoin-gui) on the socket it passed; when that
        connection ends the front end is gone, and so goes the node it started."""
        from ..ipc.connection import serve_init
        from ..ipc.transport import stream_from_fd
        assert self.frontend_fd is not None and self.router is not None
        refusing = self.router.refusing("the front end", "a front end serves no wallet methods")
        make_init = functools.partial(ProcessInit, chain_factory=lambda: make_chain(node, refusing),
                                      node_factory=lambda: NodeService(node))
        stream = await stream_from_fd(self.frontend_fd)
        self.frontend_fd = None

        async def serve() -> None:
            await serve_init(stream, make_init, self.local, self.ipc.debug, from_parent=True)
            log.info("the front end that started this node went away; shutting down")
            node.request_shutdown()

        self._frontend_task = asyncio.get_running_loop().create_task(serve())

    def _listener_registrar(self) -> RpcRegistrar:
        """What the Chain of a listener's client does with register_rpc (module docstring);
        one per connection (made with its Chain)."""
        assert self.router is not None
        who = "an IPC client"
        if self.connect_wallet or self.zygote is not None:
            return self.router.refusing(who, "this node takes no wallet RPC registrations from its IPC "
                                             "clients: it serves its own wallet process")
        if self._client_slot is None:
            return self.router.refusing(who, "this node takes no wallet RPC registrations from its IPC "
                                             "clients (start it with -ipcallowwallet=1 to allow that)")
        return self.router.registrar(self._client_slot)

    def _add_process_info(self, node: Any) -> None:
        """`getprocessinfo`: the processes of this node and what confines each (for operators
        and `make demo`; CleanCoind has no such method, having one process)."""
        from cleancoin.components.rpc.registry import CallContext

        def info(ctx: CallContext) -> dict[str, Any]:
            node_entry: dict[str, Any] = {"name": self.local.name, "pid": os.getpid(),
                                          "sandbox": self.report.to_dict() if self.report else None}
            if self.connector is not None:
                # Its helper, not an entry of its own: clients take processes[1] as the wallet.
                pid = self.connector.pid or (self.zygote.detached_pids.get(BROKER_NAME, 0) if self.zygote else 0)
                node_entry["connect_broker"] = {"pid": pid, "status": self.connector.status}
            processes = [node_entry]
            if isinstance(self.wallet, WalletProcess):
                report = self.wallet.report
                processes.append({"name": "CleanCoin-wallet", "pid": self.wallet.pid,
                                  "sandbox": report.to_dict() if report is not None else None,
                                  "sandbox_report": self.wallet.report_text,
                                  "restarts": self.wallet.restarts, "wallets": self.wallet.wanted})
            elif isinstance(self.wallet, ConnectedWallet):
                remote = self.wallet.remote
                processes.append({"name": remote.name if remote else "CleanCoin-wallet",
                                  "pid": remote.pid if remote else None,
                                  "sandbox_report": "not started by this node (-ipcconnect): its "
                                                    "confinement is whatever it was started with",
                                  "reconnects": self.wallet.reconnects, "wallets": self.wallet.wanted})
            # The zygote comes last: clients take processes[1] as the wallet process.
            if self.zygote is not None:
                processes.append({"name": f"{PROG} zygote", "pid": self.zygote.pid, "sandbox": None,
                                  "sandbox_report": "not confined: it must keep the rights to build "
                                                    "the wallet's sandbox (docs/sandbox.md)"})
            return {"processes": processes,
                    "wallet_rpc": "connected" if self.router and self.router.connected
                    else (self.router.status if self.router else "none")}

        node.registry.add("getprocessinfo", info, category="control",
                          help="Returns the processes of this multiprocess node (pid, sandbox report).",
                          result='{ "processes" : [ { "name" : "str", "pid" : n, "sandbox" : {...} }, ... ],\n'
                                 '  "wallet_rpc" : "str" }    (json object)')

    async def stop(self) -> None:
        """Before P2P and the chain close: the wallet process closes its wallets and is hung
        up on, the connect broker and the listeners are closed. The wallet process then exits
        by itself while the node closes P2P and its chain; `finish` waits for it."""
        if isinstance(self.wallet, WalletProcess):
            await self.wallet.hang_up()
        elif self.wallet is not None:
            await self.wallet.stop()
        if self.connector is not None:
            self.connector.close()       # the broker ends when its channel closes
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()

    async def finish(self) -> None:
        """After the chain closed: the wallet process's end (its exit, reported by the
        zygote; killed if it takes longer than remote_wallet.SHUTDOWN_TIMEOUT), then the
        zygote is hung up on; it exits while the node finishes, and run() reaps it."""
        if isinstance(self.wallet, WalletProcess):
            await self.wallet.wait_gone()
        if self.zygote is not None:
            self.zygote.hang_up()


# ---------------------------------------------------------------------- start-up

PROG = "CleanCoin-node"


def _fail(log: logging.Logger, message: str) -> int:
    log.error("Error: %s", message)
    print(f"Error: {message}", file=sys.stderr)
    return 1


def run(config: Any, ipc: IpcSettings, netdatadir: str, *, sandbox: bool = True,
        allow_wallet: bool = False, frontend_fd: int | None = None,
        learn_dir: str | None = None, zygote: Zygote | None = None, connect_wallet: bool = False,
        sandbox_log: str | None = None, prestarted: socket.socket | None = None,
        broker_channel: socket.socket | None = None, wallet_at_start: bool = True,
        configured: bool = False) -> int:
    """Start CleanCoin-node in this process (options parsed, logging set up); returns the
    exit status. `config` is the node's NodeConfig (cli/node_main.build_config); `learn_dir`
    (-sandboxlearn) makes both processes record instead of being confined. `connect_wallet`
    (-ipcconnect reaches a running wallet process: `wallet_component.uses_running_wallet`)
    and -disablewallet mean no wallet process of its own; otherwise `zygote`, launched early
    by the caller (`wallet_component.launch_zygote`), is configured here (or launched, if the
    early launch failed), and stopped in the end; `prestarted` is given when the caller has
    configured it already and asked for the wallet process (`wallet_component.start_wallet`).
    `broker_channel`: the node's end of its connect broker's channel when the caller had
    `zygote` fork the broker (connect_broker.forked, with `prestarted`); else the broker is
    forked here, with the wallet's start, or (no zygote) launched as its own interpreter.
    `sandbox_log` (private_files.sandbox_log, read-only in the node's view) is where the
    refusals of the node and of its wallet process are logged, opened before either's view
    goes up: neither can erase the record of what it tried (stderr if None).
    `wallet_at_start` False (`wallet_component.wallet_at_start`): the zygote is configured
    with the wallet's preload left for its first spawn, and the wallet process is started at
    the first RPC call that may want it (`NodeProcesses`); `configured`: the caller has
    configured the zygote already (with `prestarted` None when the wallet waits)."""
    import capnp
    from cleancoin.sandbox import ZygoteError

    from ..node.node import InitError, NodeContext
    from ..node.connect_broker import forked_broker
    from ..node.wallet_component import launch_zygote, start_wallet

    log = logging.getLogger("cleancoin.node")
    monitor = None
    if sandbox and not learn_dir:
        # The denial monitor's interpreter starts now, alongside this process's imports and
        # plan, instead of at the "denial monitor" step, where the seccomp step waited about
        # 20 ms for it. It holds nothing but its channel until restrict_self configures it
        # (denial_log.prelaunch: what it holds and how it confines itself are unchanged).
        from cleancoin.sandbox import denial_log
        monitor = denial_log.prelaunch()
    broker = None
    listeners = NodeListeners()

    def abandon(reason: str) -> int:
        """A start that fails before the node runs: undo what it made so far (the zygote, the
        connect broker or its channel, the monitor's channel, the listeners bound)."""
        if zygote is not None:
            zygote.stop()
        if broker is not None:
            broker.close()
        elif broker_channel is not None:
            broker_channel.close()
        if monitor is not None:
            monitor.channel.close()
        listeners.close()
        return _fail(log, reason)

    # Everything the node will run is imported now: once it is confined it could still read
    # the Python installation, but a failure there would come late and far from its cause.
    _import_node_modules()
    # Refusals with an errno go to sandbox.log; -debug=sandbox logs all of them.
    verbose = logging.getLogger("cleancoin.sandbox").isEnabledFor(logging.DEBUG)
    if config.disable_wallet or connect_wallet:
        if prestarted is not None:
            prestarted.close()
            prestarted = None
        if broker_channel is not None:
            broker_channel.close()      # its broker ends with it; launched below instead
            broker_channel = None
        if zygote is not None:
            zygote.stop()
            zygote = None
    elif prestarted is None and not configured:
        try:
            # A fresh interpreter, not a fork: this process has read the conf file and its
            # command line (RPC and IPC passwords); the wallet must not hold a copy of them.
            # It starts while this process restricts itself and opens its chain.
            zygote = zygote or launch_zygote(preload=wallet_at_start)
            broker_channel, detached = forked_broker(config, sandbox and not learn_dir)
            prestarted = start_wallet(zygote, netdatadir, sandbox=sandbox, verbose_denials=verbose,
                                      learn_dir=learn_dir, denial_log=sandbox_log or "",
                                      title=f"{PROG} zygote", max_tx_fee=config.max_tx_fee,
                                      minimum_chain_work=config.minimum_chain_work, detached=detached,
                                      on_first_use=not wallet_at_start)
        except (ZygoteError, OSError) as exc:
            return abandon(f"cannot prepare the wallet's sandbox: {exc}")
    # A learning run has one too (launched, not forked by the zygote): it runs in node.toml's
    # network namespace of its own, where it reaches no peer and no -ipcconnect=tcp wallet
    # itself (since 12-07; a learning run's -connect made no connection before this was said).
    if sandbox:
        # Before this process confines itself: from then on it cannot connect TCP at all, and
        # the broker's rule (named at start, on its command line) is fixed before the node
        # runs anything untrusted (connect_broker.py).
        try:
            broker = _connect_broker(config, broker_channel, ipc.connect)
        except OSError as exc:       # no descriptor or process to be had: fail closed, clearly
            return abandon(f"cannot start the connect broker: {exc}")
    outside = _unix_connect_outside(ipc.connect, netdatadir) if sandbox and connect_wallet else None
    if outside is not None:
        # Connected (and reconnected) only once confined, when only the datadir is in view:
        # said now, not as "No such file or directory" for a socket that is there.
        return abandon(f"-ipcconnect=unix:{outside}: the confined {PROG} sees only its datadir "
                       f"({netdatadir}), so the wallet process's socket must be there "
                       "(-ipcconnect=unix: its wallet.sock), or use -ipcconnect=tcp:HOST:PORT, "
                       "or -sandbox=0")
    # Every listener is bound now, before this process confines itself (node_listeners.py):
    # confined, it is in a network namespace of its own and binds nothing (since 12-07), and
    # a -ipcbind=unix path outside the datadir would not be in its view.
    try:
        listeners = bind_all(config, ipc.binds, netdatadir)
    except ListenError as exc:
        return abandon(str(exc))
    report = None
    if sandbox and learn_dir:
        log.warning("-sandboxlearn=%s: a LEARNING run, %s and its wallet process record what they "
                    "use and are NOT confined", learn_dir, PROG)
    if sandbox:
        from cleancoin.sandbox import EnforcementError, PolicyError, PolicyErrors, restrict_self, shipped_policy
        from cleancoin.sandbox.denial_log import DenialLog
        keep = _open_descriptors_to_keep(zygote, prestarted)
        if frontend_fd is not None:
            keep.add(frontend_fd)
        if broker is not None:
            keep.add(broker.channel.fileno())
        keep |= listeners.descriptors()
        try:
            policy = node_policy(connect_wallet, ipc.connect)
            report = restrict_self(shipped_policy(policy), _node_variables(config, netdatadir, ipc.binds),
                                   keep_fds=keep,
                                   denials=DenialLog(sandbox_log or "", verbose),
                                   learn_dir=learn_dir, monitor=monitor)
        except (EnforcementError, PolicyError, PolicyErrors) as exc:
            if zygote is not None:
                zygote.stop()
            if broker is not None:
                broker.close()
            listeners.close()
            return _fail(log, f"{exc} (this kernel or system cannot confine {PROG}; -sandbox=0 "
                              "runs it unconfined)")
        log.info("%s (pid %d) confined:\n%s", PROG, os.getpid(), report.to_text())
    else:
        log.warning("-sandbox=0: %s and its wallet process run WITHOUT a sandbox", PROG)
    extension = NodeProcesses(zygote, ipc, IpcPeer(PROG, os.getpid()), list(config.wallets),
                              report, prestarted, connect_wallet, allow_wallet)
    extension.frontend_fd = frontend_fd
    extension.wallet_on_first_use = zygote is not None and prestarted is None
    extension.connector = broker
    extension.prebound = listeners.ipc
    extension.p2p_sockets = listeners.p2p
    extension.rpc_sockets = listeners.rpc
    node = NodeContext(config, extension)
    startup_gc.resume()     # the node's code is imported (_import_node_modules) and confined
    try:
        return asyncio.run(capnp.run(node.run()))
    except InitError as exc:
        return _fail(log, str(exc))
    except KeyboardInterrupt:
        return 0
    finally:
        listeners.close()     # those a failed start never listened on (served ones: closed already)
        if zygote is not None:
            zygote.stop()


def node_policy(connect_wallet: bool, ipc_connect: str | None) -> str:
    """The shipped policy this node confines itself with. node.toml: a network namespace of
    its own, socket pairs only, no bind(2). A node that connects to a running wallet's unix
    socket once confined makes unix sockets (node-ipcconnect-unix.toml); a wallet's TCP port
    is its connect broker's to reach (since 12-07), so such a node keeps node.toml."""
    if not connect_wallet or (ipc_connect or "").startswith("tcp:"):
        return "node"
    return "node-ipcconnect-unix"


def _brokered_wallet_socket(connector: Any, ipc_connect: str | None, timeout: float) -> Any:
    """For a -ipcconnect=tcp node with a connect broker: what gives ConnectedWallet each
    (re)connection, the broker's socket to the wallet's port, its listener checked (the
    confined node cannot connect there, nor read the host's socket tables); else None (the
    node connects itself: -sandbox=0, or a unix socket)."""
    if connector is None or not (ipc_connect or "").startswith("tcp:"):
        return None
    from ..node.connect_broker import IPC_HOST
    port = parse(ipc_connect or "", "").port

    async def opener() -> socket.socket:
        return await connector.open_socket(IPC_HOST, port, timeout)
    return opener


def _unix_connect_outside(connect: str | None, netdatadir: str) -> str | None:
    """The path of a -ipcconnect=unix:PATH outside `netdatadir` (None: inside, or not such an
    address)."""
    if not connect or not connect.startswith("unix:"):
        return None
    path = os.path.realpath(parse(connect, os.path.join(netdatadir, WALLET_SOCKET)).path)
    inside = os.path.realpath(netdatadir) + os.sep
    return None if path.startswith(inside) else path


def _connect_broker(config: Any, channel: socket.socket | None, ipc_connect: str | None = None) -> Any:
    """The connect broker's client: on `channel` when the zygote forked it (its plan sent
    now, before this process confines itself), else a broker launched now as an interpreter
    of its own (no zygote: -disablewallet, -ipcconnect) with the endpoints the operator named
    (-connect, -addnode, -allowlocalpeer) and a -ipcconnect=tcp wallet's address, to which
    it alone connects for this node (connect_broker.IPC_HOST; since 12-07)."""
    from ..node.connect_broker import IPC_ARG, launch, send_plan
    from ..node.p2p.connector import BrokerConnector, broker_endpoints
    if channel is not None:
        send_plan(channel)
        log.info("connect broker started (a fork of the zygote): outgoing P2P connections go through it")
        return BrokerConnector(channel, 0)      # its pid: the zygote's ready answer
    endpoints = broker_endpoints(config)
    if ipc_connect and ipc_connect.startswith("tcp:"):
        wallet = parse(ipc_connect, "")
        endpoints.append(f"{IPC_ARG}[{wallet.host}]:{wallet.port}" if ":" in wallet.host
                         else f"{IPC_ARG}{wallet.host}:{wallet.port}")
    channel, pid = launch(endpoints, config.connect_timeout)
    log.info("connect broker started (pid %d): outgoing P2P connections go through it", pid)
    return BrokerConnector(channel, pid)


def _node_variables(config: Any, netdatadir: str, ipc_binds: Sequence[str]) -> dict[str, str]:
    """Values of node.toml's variables: the datadir and the ports it may bind (P2P, RPC, and
    the first -ipcbind=tcp listener's, or the RPC port again). It may connect to no TCP port
    (since 12-07 a -ipcconnect=tcp wallet's is its connect broker's to reach)."""
    from ..common.chainparams import params_for
    params = params_for(config.chain)
    port = config.port if config.port is not None else params.default_port
    rpcport = config.rpcport if config.rpcport is not None else params.rpc_port
    tcp = [parse(b, "") for b in ipc_binds if b.startswith("tcp:")]
    ipcport = tcp[0].port if tcp else rpcport
    return {"datadir": netdatadir, "port": str(port), "rpcport": str(rpcport), "ipcport": str(ipcport)}


def _open_descriptors_to_keep(zygote: Zygote | None, prestarted: socket.socket | None) -> set[int]:
    """What this process still needs across restrict_self: its log files and its zygote's
    sockets. Every other descriptor (libraries' leftovers, such as pycapnp's directory
    descriptors) is pointed at /dev/null by the sandbox's descriptor step."""
    keep = log_descriptors()
    if zygote is not None:
        keep |= set(zygote.descriptors())
    if prestarted is not None:
        keep.add(prestarted.fileno())
    return keep


def _import_node_modules() -> None:
    """What the node imports lazily, imported before the sandbox (it could read the Python
    installation afterwards, but a failure there would come late and far from its cause)."""
    import cleancoin.components.rpc.aiohttp_web  # noqa: F401 - aiohttp.web, without the CA bundle

    import cleancoin.components.ipc.transport  # noqa: F401
    import cleancoin.components.node.rpc_methods  # noqa: F401
    import cleancoin.components.rpc.server  # noqa: F401
    from ..ipc import specs
    specs.all_specs()   # loads every schema file and builds the method tables
