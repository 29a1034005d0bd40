"""CleanCoin-wallet as a process that runs wallets for a node (the offline tool is wallet_main).

Three ways in:

    serve_node(fd), started by CleanCoin-node's zygote in the wallet's sandbox, on a socket
        pair with the node: the node passes its network and datadir in Init.makeWalletLoader,
        and its -debug=ipc in hello. Ends when the node closes the connection or dies. It
        lives in wallet_process.py (imported here), which the zygote imports without this
        module's option table and RPC server.

    CleanCoin-wallet -regtest -datadir=DIR -ipcbind=unix [-wallet=NAME ...]
        Started on its own and waiting for nodes: listens on `<netdatadir>/wallet.sock`
        (or -ipcbind=unix:PATH / tcp:HOST:PORT with authentication, as a node's -ipcbind);
        a `CleanCoin-node -ipcconnect=unix` (or auto) connects and uses it as its wallet
        process. When that node goes, its wallets close and the process waits for the next.

    CleanCoin-wallet -regtest -datadir=DIR -ipcconnect=unix [-wallet=NAME ...]
                     [-server -rpcbind=ADDR -rpcport=PORT ...]
        Started on its own: connects to a running `CleanCoin-node -ipcbind=unix -disablewallet
        -ipcallowwallet=1` (a node without that setting refuses), loads the -wallet wallets,
        then registers the wallet RPC methods with it (the node forwards them from then on)
        and, with -server, also serves wallet RPC itself on its own port.
        Stops on SIGTERM/SIGINT, on the `stop` RPC of its own server, or when the node goes.

Logs go to `<netdatadir>/wallets/debug.log` (the wallets directory is the only place a
sandboxed wallet may write), and to the console with -printtoconsole. A wallet started on its
own logs its sandbox's refusals to stderr, out of its own reach: when stderr is a file, the
confined wallet's own stderr is a pipe to a relay (`_stderr_relay`), and only the relay and the
denial monitor hold the file (CleanCoin-node's wallet process: to the node's sandbox.log).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cleancoin.components.common.fee_cap import DEFAULT_MAX_TX_FEE
from cleancoin.components.common.options import (
    MAX_TX_FEE_OPTION, MINIMUM_CHAIN_WORK_OPTION, RPC_WHITELIST_OPTIONS, SYSPERMS_OPTION, Option, OptionError,
    Settings, apply_umask, load_settings, log_settings_warnings, max_tx_fee, minimum_chain_work, positive_seconds,
)

# The zygote's preload and target, and the logging both ways in share (wallet_process.py).
from cleancoin.components.init.wallet_process import PROG, import_everything, serve_node, setup_logging  # noqa: F401
MULTIPROCESS_HINT = ("CleanCoin's multiprocess executables need pycapnp, the package's "
                     "'multiprocess' extra: pip install 'cleancoin[multiprocess]'")

OPTIONS: list[Option] = [
    Option("conf", "Specify path to read-only configuration file.", "Options", "<file>", "CleanCoin.conf"),
    Option("datadir", "Specify data directory", "Options", "<dir>", "~/.cleancoin"),
    Option("wallet", "Load this wallet at startup (repeatable)", "Options", "<name>"),
    MAX_TX_FEE_OPTION,
    MINIMUM_CHAIN_WORK_OPTION,
    SYSPERMS_OPTION,
    Option("sandbox", "Confine this process by policies/wallet-standalone.toml once its sockets are "
           "open (0: run unconfined, with a warning)", "Sandbox options", "", "1"),
    Option("forwardrpc", "Wallet RPC methods served through the node: all, or read (none that spends, "
           "signs, unlocks or changes the wallet: those only on this process's own -server port, "
           "so that a compromised node cannot spend)", "IPC options", "<all|read>", "all"),
    Option("ipcconnect", "Connect to a running CleanCoin-node: unix, unix:PATH or tcp:HOST:PORT",
           "IPC options", "<address>", "unix"),
    Option("ipcbind", "Wait for nodes instead (repeatable): unix (<netdatadir>/wallet.sock), "
           "unix:PATH or tcp:HOST:PORT", "IPC options", "<address>"),
    Option("ipcauth", "TCP credentials USER:PASSWORD (client: else the node's .ipccookie; "
           "listener: accepted besides this process's .ipccookie)", "IPC options", "<userpw>"),
    Option("ipccert", "TLS certificate: pinned (client) or served (listener, with -ipckey)", "IPC options", "<file>"),
    Option("ipckey", "TLS key of a TCP listener", "IPC options", "<file>"),
    Option("ipcmaxconnections", "Nodes served at once by each listener", "IPC options", "<n>", "16"),
    Option("ipchandshaketimeout", "Close a client that has not logged in (TCP) or made a first call (unix) "
           "within <n> seconds", "IPC options", "<n>", "10"),
    Option("debug", "Output debug logging (ipc, rpc, sandbox: every refusal of the sandbox, 1/all)",
           "Debugging options", "<category>"),
    Option("printtoconsole", "Log to the console too", "Debugging options", "", "0"),
    Option("chain", "Use the chain <chain>", "Chain selection options", "<chain>", "main"),
    Option("regtest", "Use the regression test chain", "Chain selection options"),
    Option("testnet", "Use the test chain", "Chain selection options"),
    Option("server", "Serve wallet JSON-RPC itself (besides through the node)", "RPC server options"),
    Option("rpcbind", "Address to serve wallet RPC on", "RPC server options", "<addr>[:port]"),
    Option("rpcport", "Port to serve wallet RPC on", "RPC server options", "<port>"),
    Option("rpcallowip", "Allow JSON-RPC connections from this source", "RPC server options", "<ip>"),
    Option("rpcservertimeout", "Timeout during HTTP requests (headers, idle connection, body)",
           "RPC server options", "<n>", "30"),
    Option("rpcuser", "Username for JSON-RPC connections", "RPC server options", "<user>"),
    Option("rpcpassword", "Password for JSON-RPC connections", "RPC server options", "<pw>"),
    Option("rpcauth", "USER:SALT$HASH credentials for JSON-RPC", "RPC server options", "<userpw>"),
    Option("rpccookiefile", "Auth cookie of this process's RPC server (relative to the network datadir)",
           "RPC server options", "<loc>", "wallets/.cookie"),
    # As CleanCoind's (cli/node_main.py): a conf file shared with the node restricts this
    # server too; ignored, a user whitelisted to read-only methods could spend here.
    *RPC_WHITELIST_OPTIONS,
]


# ---------------------------------------------------------------------- on its own

WALLET_SOCKET = "wallet.sock"


def _forwarded_methods(settings: Settings, log: logging.Logger) -> frozenset[str] | None:
    """-forwardrpc: None for all methods, or the read-only ones (components/wallet/rpc.py)."""
    value = settings.get("forwardrpc") or "all"
    if value == "all":
        return None
    if value != "read":
        raise _StartError(f"Invalid -forwardrpc value '{value}' (all or read)")
    from cleancoin.components.wallet.rpc import READ_METHODS
    if settings.get_bool("server", False):
        log.info("-forwardrpc=read: the node may call only the wallet's read-only methods; spending, "
                 "signing and unlocking go through this process's own RPC port")
    else:
        log.warning("-forwardrpc=read without -server: nothing can spend, sign or unlock these "
                    "wallets while this process runs (read-only through the node)")
    return READ_METHODS


@dataclass
class _Opened:
    """What a wallet process started on its own opens before it confines itself: every
    socket it will use (listening or connected), credentials and TLS, the RPC server's ports.
    After that it needs no path but its wallet directory, and no new socket at all."""

    listeners: list[tuple[Any, socket.socket]] = field(default_factory=list)    # (Address, sock)
    listen_options: Any = None
    node: tuple[Any, socket.socket] | None = None                                # -ipcconnect
    node_methods: frozenset[str] | None = None                                   # -forwardrpc=read
    max_tx_fee: int = DEFAULT_MAX_TX_FEE                                         # -maxtxfee
    minimum_chain_work: int | None = None                                        # -minimumchainwork
    credentials: Any = None
    tls: Any = None
    rpc: Any = None                                                              # an RpcServer, bound

    def descriptors(self) -> list[int]:
        fds = [sock.fileno() for _, sock in self.listeners]
        if self.node is not None:
            fds.append(self.node[1].fileno())
        if self.rpc is not None:
            fds.extend(self.rpc.descriptors())
        return fds


def run_listening(args: Sequence[str]) -> int:
    """Wait for nodes on -ipcbind addresses; see the module docstring."""
    return _run_standalone(args, _open_listening, _listening)


def run_connected(args: Sequence[str]) -> int:
    """A wallet process started on its own, joining a node; see the module docstring."""
    return _run_standalone(args, _open_connected, _connected)


def _run_standalone(args: Sequence[str], open_all: Callable[[Settings], _Opened],
                    serve: Callable[[Settings, _Opened], Awaitable[int]]) -> int:
    """Options, logging, every socket, then the sandbox (policies/wallet-standalone.toml
    unless -sandbox=0), then `serve` on a capnp-enabled loop. "Error: ..." and status 1 for
    what stops it from starting."""
    try:
        settings = load_settings(args, OPTIONS)
        fee_cap = max_tx_fee(settings)
        min_work = minimum_chain_work(settings)
    except OptionError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    apply_umask(settings)
    from cleancoin.components.common.conf import ConfError, make_dirs
    try:
        # Made and checked on descriptors before anything is opened in them (docs/wallet.md).
        make_dirs(settings.netdatadir, "the data directory")
        make_dirs(os.path.join(settings.netdatadir, "wallets"), "the wallet directory", 0o700)
    except ConfError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    from cleancoin.components.common.private_files import UnsafeFileError
    try:
        setup_logging(settings.netdatadir, settings.get_bool("printtoconsole", False), settings.get_all("debug"))
    except UnsafeFileError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    log = logging.getLogger("cleancoin.wallet")
    log_settings_warnings(settings, log)
    import capnp
    try:
        import_everything()
        node_methods = _forwarded_methods(settings, log)
        opened = open_all(settings)
        opened.node_methods = node_methods
        opened.max_tx_fee = fee_cap
        opened.minimum_chain_work = min_work
        _confine(settings, opened, log)
        return asyncio.run(capnp.run(serve(settings, opened)))
    except _StartError as exc:
        log.error("Error: %s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def _confine(settings: Settings, opened: _Opened, log: logging.Logger) -> None:
    """Confine this process with policies/wallet-standalone.toml: its wallet directory, the
    sockets it opened, nothing else (the node's datadir around it counts as writable by
    another confined process: a symlink planted there is not followed)."""
    if not settings.get_bool("sandbox", True):
        log.warning("-sandbox=0: %s runs WITHOUT a sandbox", PROG)
        return
    from cleancoin.sandbox import EnforcementError, restrict_self
    walletdir = os.path.join(settings.netdatadir, "wallets")
    keep = set(opened.descriptors())
    for handler in logging.getLogger("cleancoin").handlers:
        stream = getattr(handler, "stream", None)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            keep.add(stream.fileno())      # type: ignore[union-attr]
    from cleancoin.sandbox.denial_log import DenialLog
    # Refusals go to stderr (a terminal, a pipe, the journal under systemd), not to
    # wallets/debug.log: the wallet may rewrite everything in wallets/, and so could erase the
    # record of what it tried. -debug=sandbox logs every refusal, not the first of each kind.
    verbose = any(c in ("1", "all", "sandbox") for c in settings.get_all("debug"))
    relay = _stderr_relay()
    if relay is not None:
        keep.add(relay)
    try:
        report = restrict_self("wallet-standalone", {"walletdir": walletdir}, keep_fds=keep,
                               writable_roots=(settings.netdatadir,),
                               denials=DenialLog("", verbose, label=PROG))
    except EnforcementError as exc:
        raise _StartError(f"{exc} (this kernel or system cannot confine {PROG}; -sandbox=0 runs "
                          "it unconfined)") from None
    finally:
        if relay is not None:
            # The denial monitor has its own copy of the file's descriptor by now (taken at
            # its step); the wallet's stderr becomes the relay's pipe before the wallet reads
            # a byte from anyone, so a compromised wallet holds no descriptor of that file.
            sys.stderr.flush()
            os.dup2(relay, 2)
            os.close(relay)
    log.info("%s (pid %d) confined:\n%s", PROG, os.getpid(), report.to_text())


def _stderr_relay() -> int | None:
    """When stderr is a file (`2>wallet.err`, a service manager's log file): the write end of a
    pipe to a relay (cat) that appends what comes through it to that file; None when stderr is
    a terminal, a pipe, a socket (the journal) or closed. The denial monitor logs the wallet's
    refusals to stderr through a descriptor of its own; if the wallet's stderr stayed the file,
    the confined wallet could ftruncate or pwrite that file, the record of its own refusals
    (O_APPEND would not stop ftruncate). The relay is started here, unconfined and outside the
    wallet's process group (setsid: a Ctrl-C for the wallet's terminal does not end it before
    the wallet), with only the pipe and the file; it ends when the wallet's end closes."""
    try:
        mode = os.fstat(2).st_mode
    except OSError:
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        return None
    import shutil
    cat = shutil.which("cat") or next((p for p in ("/usr/bin/cat", "/bin/cat") if os.access(p, os.X_OK)), None)
    if cat is None:
        raise _StartError("stderr is a file, which the confined wallet must not be able to rewrite, and no "
                          "'cat' was found to relay to it; give a pipe or the journal as stderr, or -sandbox=0")
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    middle = os.fork()
    if middle == 0:         # a double fork: the relay is nobody's child here (no zombie to reap)
        try:
            if os.fork() == 0:
                os.setsid()
                os.dup2(read_end, 0)
                os.dup2(2, 1)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))     # close_range(2): one call
                os.execv(cat, [cat])
        finally:
            os._exit(0)
    os.waitpid(middle, 0)
    os.close(read_end)
    return write_end


def _open_rpc(settings: Settings, opened: _Opened) -> None:
    """-server: the RPC server's ports are bound now; its methods come with the wallets."""
    if not settings.get_bool("server", False):
        return
    from cleancoin.components.rpc.registry import Registry
    from cleancoin.components.rpc.server import RpcAuth, RpcServer, bind_endpoints, parse_allow
    from cleancoin.components.rpc.whitelist import from_settings
    port_text = settings.get("rpcport")
    if port_text is None or not port_text.isdigit():
        raise _StartError("-server needs -rpcport=PORT (the node's RPC port is the node's)")
    try:
        auth = RpcAuth.from_options(settings.netdatadir, settings.get("rpcuser", "") or "",
                                    settings.get("rpcpassword", "") or "", settings.get_all("rpcauth"),
                                    settings.get("rpccookiefile", "wallets/.cookie"))
        allow = parse_allow(settings.get_all("rpcallowip"))
        timeout = positive_seconds(settings, "rpcservertimeout", 30.0)
    except (ValueError, OptionError) as exc:
        raise _StartError(str(exc)) from None
    endpoints, warnings = bind_endpoints(settings.get_all("rpcbind"), settings.get_all("rpcallowip"), int(port_text))
    for w in warnings:
        logging.getLogger("cleancoin.rpc").warning("%s", w)
    server = RpcServer(Registry(), auth, allow, endpoints, server_timeout=timeout,
                       whitelist=from_settings(settings))
    try:
        server.bind()
    except OSError as exc:
        raise _StartError(f"Unable to start HTTP server: {exc}") from None
    opened.rpc = server


def _open_listening(settings: Settings) -> _Opened:
    from cleancoin.components.ipc.address import AddressError, parse
    from cleancoin.components.ipc.auth import write_cookie
    from cleancoin.components.ipc.settings import parse_settings
    from cleancoin.components.ipc.transport import bind
    netdatadir = settings.netdatadir
    opened = _Opened()
    try:
        ipc = parse_settings({name: list(settings.get_all(name)) for name in
                              ("ipcbind", "ipcauth", "ipccert", "ipckey", "ipcmaxconnections",
                               "ipchandshaketimeout", "debug")})
        os.makedirs(netdatadir, exist_ok=True)
        cookie = write_cookie(netdatadir) if any(b.startswith("tcp") for b in ipc.binds) else None
        opened.listen_options = ipc.listen_options(cookie)
        for text in ipc.binds:
            address = parse(text, os.path.join(netdatadir, WALLET_SOCKET))
            opened.listeners.append((address, bind(address)))
    except (AddressError, OSError) as exc:
        raise _StartError(str(exc)) from None
    return opened


async def _listening(settings: Settings, opened: _Opened) -> int:
    from cleancoin.components.ipc.errors import IpcError
    from cleancoin.components.ipc.init_impl import ProcessInit
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import listen
    from cleancoin.components.wallet.service import make_wallet_service
    from cleancoin.components.interfaces.wallet import WalletOptions

    log = logging.getLogger("cleancoin.wallet")
    netdatadir = settings.netdatadir
    own_wallets = [w for w in settings.get_all("wallet") if w]

    async def make_loader(chain, options):  # type: ignore[no-untyped-def]
        # The wallets are this process's, in its own datadir; the node must be on its chain.
        if options.network != settings.chain:
            raise IpcError(f"this wallet process serves {settings.chain}, the node runs {options.network}")
        service = await make_wallet_service(chain, WalletOptions(settings.chain, netdatadir),
                                            node_methods=opened.node_methods, max_tx_fee=opened.max_tx_fee,
                                            minimum_chain_work=opened.minimum_chain_work)
        await service.load_wallets(own_wallets)
        log.info("a node connected: serving the wallets of %s", netdatadir)
        return service

    local = IpcPeer(PROG, os.getpid())
    make_init = functools.partial(ProcessInit, wallet_loader_factory=make_loader)
    listeners = [await listen(address, make_init, local, opened.listen_options, sock)
                 for address, sock in opened.listeners]
    log.info("%s (pid %d) waiting for nodes on %s", PROG, os.getpid(),
             ", ".join(str(listener.address) for listener in listeners))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for listener in listeners:
        listener.close()
    # Connections still open end with the loop; each closes its wallets (ProcessInit.close).
    log.info("%s (pid %d) stopped", PROG, os.getpid())
    return 0


# ---------------------------------------------------------------------- -ipcconnect

class _StartError(Exception):
    pass


def _open_connected(settings: Settings) -> _Opened:
    from cleancoin.components.ipc.address import AddressError, parse
    from cleancoin.components.ipc.auth import read_cookie
    from cleancoin.components.ipc.settings import parse_settings
    from cleancoin.components.ipc.transport import open_socket
    netdatadir = settings.netdatadir
    options = {name: list(settings.get_all(name)) for name in
               ("ipcconnect", "ipcauth", "ipccert", "ipckey", "ipcmaxconnections", "debug")}
    options["ipcconnect"] = options["ipcconnect"] or ["unix"]
    opened = _Opened()
    try:
        ipc = parse_settings(options)
        if ipc.connect == "auto":
            ipc_connect = "unix"
        else:
            ipc_connect = ipc.connect or "unix"
        address = parse(ipc_connect, os.path.join(netdatadir, "node.sock"))
        if address.kind == "tcp":
            opened.credentials = ipc.auth[0] if ipc.auth else read_cookie(netdatadir)
            opened.tls = ipc.client_context
        opened.node = (address, open_socket(address))
    except AddressError as exc:
        if "cannot connect" in str(exc) and "unix" in str(exc):
            raise _StartError("cannot connect to the node: no CleanCoin-node answers (start it "
                              "with -ipcbind=unix)") from None
        raise _StartError(f"cannot connect to the node: {exc}") from None
    except OSError as exc:
        raise _StartError(f"cannot connect to the node: {exc}") from None
    _open_rpc(settings, opened)
    return opened


async def _connected(settings: Settings, opened: _Opened) -> int:
    from cleancoin.components.ipc.address import AddressError
    from cleancoin.components.ipc.errors import IpcError
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.settings import parse_settings
    from cleancoin.components.ipc.transport import connect
    from cleancoin.components.wallet.service import make_wallet_service
    from cleancoin.components.interfaces.wallet import WalletOptions

    log = logging.getLogger("cleancoin.wallet")
    netdatadir = settings.netdatadir
    local = IpcPeer(PROG, os.getpid())
    debug = parse_settings({"debug": list(settings.get_all("debug"))}).debug
    assert opened.node is not None
    address, sock = opened.node
    try:
        connection = await connect(address, local, debug, opened.credentials, opened.tls, sock)
    except (AddressError, IpcError, OSError) as exc:
        raise _StartError(f"cannot connect to the node: {exc}") from None
    log.info("%s (pid %d) connected to %s", PROG, os.getpid(), connection.remote)
    service = None
    try:
        chain = await connection.init.make_chain()
        service = await make_wallet_service(chain, WalletOptions(settings.chain, netdatadir), register=False,
                                            node_methods=opened.node_methods, max_tx_fee=opened.max_tx_fee,
                                            minimum_chain_work=opened.minimum_chain_work)
        # Loaded first, registered then: the node forwards nothing before the wallets are
        # here, so its clients see -28 until then, never "wallet does not exist".
        await service.load_wallets([w for w in settings.get_all("wallet") if w])
        await service.register(chain)
    except Exception as exc:
        if service is not None:
            await service.close()
        connection.close()
        raise _StartError(str(exc)) from None
    rpc = await _start_rpc(opened, service)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(connection.closed())]
    if rpc is not None:
        waiters.append(asyncio.ensure_future(rpc.stop_requested.wait()))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in pending:
        w.cancel()
    if waiters[1] in done:
        log.warning("the node closed the connection; stopping")
    if rpc is not None:
        # No pause for a `stop` reply: the server's graceful stop waits for every request in
        # progress, that reply included (as the node's, components/node/node.py).
        await rpc.stop()
    await service.close()
    connection.close()
    log.info("%s (pid %d) stopped", PROG, os.getpid())
    return 0


async def _start_rpc(opened: _Opened, service):  # type: ignore[no-untyped-def]
    """The wallet's own JSON-RPC server (bound before the sandbox): the wallet methods, `help`
    and `stop`."""
    from cleancoin.components.common.private_files import UnsafeFileError
    if opened.rpc is None:
        return None
    service.registry.add_stop("CleanCoin-wallet stopping")
    opened.rpc.registry = service.registry
    try:
        await opened.rpc.start()
    except UnsafeFileError as exc:      # a -rpccookiefile another user could replace
        raise _StartError(str(exc)) from None
    except OSError as exc:
        raise _StartError(f"Unable to start HTTP server: {exc}") from None
    return opened.rpc


def main(args: Sequence[str]) -> int:
    """Dispatch from wallet_main: -ipcbind (wait for nodes) or -ipcconnect (join a node)."""
    try:
        import capnp  # noqa: F401
    except ImportError:
        print(f"Error: {MULTIPROCESS_HINT}", file=sys.stderr)
        return 1
    if any(a.startswith("-ipcbind") for a in args):
        if any(a.startswith("-ipcconnect") for a in args):
            print("Error: -ipcbind (wait for nodes) and -ipcconnect (join a node) exclude each other",
                  file=sys.stderr)
            return 1
        return run_listening(args)
    return run_connected(args)
