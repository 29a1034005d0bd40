"""CleanCoin-gui: the window in its own sandboxed process, the node in CleanCoin-node.

Start-up order (docs/gui.md):
1. The node: with -ipcconnect=auto (the default) `<netdatadir>/node.sock` is tried and used
   when a node answers; otherwise, or with -noipcconnect, CleanCoin-node is started through
   the sandbox launcher (`spawn`, no policy of its own: the node confines itself with
   node.toml and starts its wallet process as always) on a socket pair (-ipcfd). An explicit
   -ipcconnect=ADDRESS must connect, or the GUI stops with an error.
2. An attached GUI forks its connector (gui/connector.py), the one way back to the node
   after step 4.
3. The GUI's code is imported (PySide6, the screens, the Cap'n Proto schemas), while a
   started node opens its chain and starts its wallet process.
4. The GUI confines itself (`restrict_self`) with the policy of its display
   (gui/display.py: gui-wayland.toml, Wayland preferred; gui-x11.toml; gui.toml offscreen),
   single-threaded still,
   so before Qt connects to the display (Qt's xcb and wayland platforms start threads
   there, and Landlock before ABI 8 restricts only the calling thread). After this: no exec,
   no new processes, no network but unix sockets, files: the Python installation and fonts
   read-only, its settings directory read-write.
5. Qt, the window, the subscription to the node's notifications.

Closing the window stops the node this GUI started, and nothing it attached to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from ..common.private_files import log_descriptors
from ..interfaces.init import IpcPeer
from ..ipc.address import AddressError, parse
from ..ipc.settings import IpcSettings
from .cleancoin_qt import GuiOptions

log = logging.getLogger("cleancoin.gui")

PROG = "CleanCoin-gui"
NODE_SOCKET = "node.sock"
#: Seconds a started node may take until it answers (chain open, wallet process up).
NODE_START_TIMEOUT = 120.0


def _fail(message: str) -> int:
    log.error("Error: %s", message)
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _import_gui() -> None:
    """Everything the GUI runs, imported before it confines itself."""
    import PySide6.QtCore  # noqa: F401
    import PySide6.QtGui  # noqa: F401
    import PySide6.QtWidgets  # noqa: F401
    import qasync  # noqa: F401
    import segno  # noqa: F401

    import cleancoin.components.gui.app  # noqa: F401
    import cleancoin.sandbox.report  # noqa: F401
    from ..ipc import specs
    specs.all_specs()   # loads every schema file and builds the method tables


def setup_logging(network: str, console: bool, debug: list[str]) -> str:
    """The window's own log, in its settings directory (the confined window cannot see the
    datadir); returns its path."""
    from ..gui.logs import setup_gui_logging
    from ..gui.settings import settings_dir
    return setup_gui_logging(settings_dir(), network, console, debug)


def _uses_cookie(ipc: IpcSettings, address: Any) -> bool:
    """Whether the login to `address` is the node's cookie: TCP without -ipcauth."""
    return address is not None and address.kind == "tcp" and not ipc.auth


def _read_cookie(netdatadir: str) -> str | OSError:
    """The node's `.ipccookie` as CleanCoin-cli reads `.cookie` (ipc/auth.read_cookie), or why
    not (said when the first call needs it: the window then waits for its node)."""
    from ..common.private_files import read_cookie
    from ..ipc.auth import COOKIE_NAME
    try:
        return read_cookie(os.path.join(netdatadir, COOKIE_NAME))[0]
    except OSError as exc:
        return exc


def _credentials(ipc: IpcSettings, address: Any, cookie: str | OSError | None) -> tuple[Any, Any]:
    """The login and TLS settings for `address`; `cookie` is the node's, read before this
    process confined itself or by the connector (the window's view has no data directory)."""
    from ..ipc.auth import parse_ipcauth
    if address.kind != "tcp":
        return None, None
    if isinstance(cookie, OSError):
        raise cookie
    if ipc.auth:
        creds = ipc.auth[0]
    elif cookie is None:
        raise OSError(0, "no cookie of the node's came with the connection")
    else:
        creds = parse_ipcauth(cookie)
    # Loaded with the options (ipc/settings.py): the window's view has no -ipccert file.
    return creds, ipc.client_context


def run(node_args: list[str], ipc: IpcSettings, netdatadir: str, network: str, options: GuiOptions,
        argv: list[str], *, sandbox: bool = True, learn_dir: str | None = None) -> int:
    """Start CleanCoin-gui (options parsed, logging set up); `node_args` are the options a
    started CleanCoin-node gets. `learn_dir` (-sandboxlearn, passed on to a started node as
    well): a learning run, the window records what it uses instead of being confined
    (docs/audit.md). Returns the exit status."""
    import capnp

    from ..gui import display as displays
    from ..gui.connector import Connector
    from ..ipc.transport import open_socket

    # The display first: an explicit choice that cannot be had stops the start before a node
    # is started for nothing (fail closed: never X11 when Wayland was asked for).
    try:
        display = displays.choose(options.platform, os.environ)
    except displays.DisplayError as exc:
        return _fail(str(exc))
    displays.apply(display, os.environ)
    log.info("display: %s (Qt platform %s, policy %s)", display.kind, display.qt_platform, display.policy)

    default_socket = os.path.join(netdatadir, NODE_SOCKET)
    sock: socket.socket | None = None
    address = None
    if ipc.connect is not None:
        address = parse("unix" if ipc.connect == "auto" else ipc.connect, default_socket)
        try:
            sock = open_socket(address)
        except AddressError as exc:
            if ipc.connect != "auto":
                return _fail(f"-ipcconnect: {exc}")
            address = None
    node_process = None
    connector = None
    output = None
    if sock is None:
        from ..gui.node_output import NodeOutput
        try:
            output = NodeOutput.start()
            node_process, sock = spawn_node(node_args, output)
        except Exception as exc:  # noqa: BLE001 - SpawnError, OSError
            return _fail(f"cannot start CleanCoin-node: {exc}")
        transport = f"socket pair with CleanCoin-node (pid {node_process.pid})"
    else:
        assert address is not None
        transport = f"{address} (attached)"
        connector = Connector.start(address, netdatadir if _uses_cookie(ipc, address) else None)
        log.info("attached to the node at %s", address)
    # Read while the data directory is in view: the window's is not (the connector reads
    # the cookie of a restarted node).
    first_cookie = _read_cookie(netdatadir) if _uses_cookie(ipc, address) else None
    # After the node is on its way (its start overlaps these imports) and the connector is
    # forked (it need not carry Qt), before confinement (which hides the Python installation
    # from nothing, but a late import failure would come far from its cause).
    _import_gui()
    report = None
    if sandbox:
        from cleancoin.sandbox import EnforcementError, PolicyError, PolicyErrors, restrict_self, shipped_policy
        from ..gui.settings import window_dir
        writable = window_dir(options.settings_dir)
        os.makedirs(writable, mode=0o700, exist_ok=True)
        from cleancoin.sandbox.denial_log import DenialLog
        from ..common.conf import ConfError, make_dirs
        from ..common.private_files import UnsafeFileError, sandbox_log
        keep = {sock.fileno(), *log_descriptors()}
        if connector is not None:
            keep.add(connector.fileno())
        try:
            # The window's refusals go where its node's go, <netdatadir>/sandbox.log, out of
            # the window's view (its own log it may rewrite); to stderr where no node runs here.
            if node_process is not None:
                make_dirs(netdatadir, "the data directory")     # the node it started may not have yet
            refusals = sandbox_log(netdatadir) if os.path.isdir(netdatadir) else ""
        except (UnsafeFileError, ConfError) as exc:
            if node_process is not None:
                node_process.kill()
            return _fail(str(exc))
        verbose = logging.getLogger("cleancoin.sandbox").isEnabledFor(logging.DEBUG)
        try:
            report = restrict_self(shipped_policy(display.policy), gui_variables(writable, display), keep_fds=keep,
                                   denials=DenialLog(refusals, verbose, label=PROG), learn_dir=learn_dir)
        except (EnforcementError, PolicyError, PolicyErrors) as exc:
            if node_process is not None:
                node_process.kill()
            return _fail(f"{exc} (this kernel or system cannot confine {PROG}; -sandbox=0 runs it unconfined)")
        if learn_dir:
            log.warning("-sandboxlearn=%s: a LEARNING run, %s records what it uses and is NOT confined",
                        learn_dir, PROG)
        log.info("%s (pid %d) confined:\n%s", PROG, os.getpid(), report.to_text())
    else:
        log.warning("-sandbox=0: %s runs WITHOUT a sandbox", PROG)

    from ..gui import loop as gui_loop
    from ..gui.app import GuiApp, Link, application, own_process
    from ..gui.settings import GuiSettings
    from ..ipc.transport import connect

    qt_app = application(argv)
    loop = gui_loop.install(qt_app)
    settings = GuiSettings.open(network, options.settings_dir, confined_window=True)
    if options.reset_settings:
        settings.reset()
    local = IpcPeer(PROG, os.getpid())

    def link_of(connection: Any, node: Any, how: str) -> Link:
        return Link(node, how, connection.closed, connection.close)

    async def first_link() -> Link:
        assert sock is not None
        if node_process is not None:
            return await link_spawned(sock, local, ipc.debug, transport)
        else:
            creds, tls = _credentials(ipc, address, first_cookie)
            connection = await connect(address, local, ipc.debug, creds, tls, sock)
        return link_of(connection, await connection.init.make_node(), transport)

    async def reconnect() -> Link:
        assert connector is not None and address is not None
        new, cookie = await connector.connect()
        creds, tls = _credentials(ipc, address, cookie)
        connection = await connect(address, local, ipc.debug, creds, tls, new)
        return link_of(connection, await connection.init.make_node(), transport)

    async def main() -> int:
        async with capnp.kj_loop():
            try:
                link = await first_link()
            except Exception as exc:  # noqa: BLE001 - the node did not come up
                if connector is None:
                    return _fail(f"the node did not answer: {exc}")
                # Attached: the node went away between our connect and the first call. Wait
                # for it as for a node that goes away later (the window says so).
                log.warning("the node did not answer (%s); the window waits for it", exc)
                link = Link.waiting(transport, str(exc) or type(exc).__name__)
            own = own_process(PROG, report, "the window: no keys, no chain, no network; reaches the "
                                            "node over IPC only")
            gui = GuiApp(PROG, network, link, own=own, settings=settings,
                         backup_dir=os.path.join(netdatadir, "wallets"),
                         reconnect=reconnect if connector is not None else None,
                         minimized=options.minimized)
            # Before show(): a SIGTERM that comes while the window is being shown closes it as
            # one that comes later does (the handler runs from the loop, once show() returned),
            # instead of ending the process by the default action (status -15, no orderly
            # stop of its node: the node only sees its connection close).
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, gui.window.close)
            gui.show()
            await gui.run()
            await gui.close(stop_node=node_process is not None)
            if not gui.closed.is_set():
                # Our node ended on its own: say so, and stay until the window is closed.
                gui.events.connection.emit(False, "the node stopped")
                await gui.closed.wait()
            return 0

    try:
        with loop:
            code = loop.run_until_complete(main())
    except KeyboardInterrupt:
        code = 0
    finally:
        if connector is not None:
            connector.stop()
        if node_process is not None:
            node_code = _wait_node(node_process)
            if node_code not in (0, None):
                log.warning("CleanCoin-node exited with status %s", node_code)
        if output is not None and not output.finish():
            log.warning("the node's output relay did not finish; what is left of it is dropped")
    return code


def spawn_node(node_args: list[str], output: Any = None) -> tuple[Any, socket.socket]:
    """Start CleanCoin-node through the sandbox launcher (no policy: the node confines itself)
    with one end of a socket pair as its -ipcfd; returns the process and our end. With
    `output` (gui/node_output.NodeOutput) the node writes into its relay's pipes, otherwise
    onto this process's descriptors. The secret options (-rpcpassword, -rpcauth, -ipcauth) go
    through a pipe (-optionsfd), never onto the node's command line, which every local user
    may read (until 12-07 they were there from the node's exec until its options were parsed)."""
    from cleancoin.sandbox import spawn

    from ..common.command_line_secrets import OPTIONS_FD, options_pipe, split_secret
    public, secret = split_secret(node_args)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    options_fd = -1
    try:
        options_fd = options_pipe(secret) if secret else -1
        # -P: not the working directory first on sys.path (a planted `cleancoin` package ran
        # as the node before 12-08; sandbox/zygote.py says more).
        argv = [sys.executable, "-P", "-m", "cleancoin.cli.mp_node_main", *public, f"-ipcfd={theirs.fileno()}"]
        fds = [theirs.fileno()]
        if options_fd >= 0:
            argv.append(f"-{OPTIONS_FD}={options_fd}")
            fds.append(options_fd)
        if output is None:
            process = spawn(None, argv, pass_fds=fds, title="CleanCoin-node")
        else:
            process = spawn(None, target=output.exec_with_output(argv),
                            pass_fds=[*fds, *output.child_fds], title="CleanCoin-node")
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if options_fd >= 0:
            os.close(options_fd)
        if output is not None:
            output.started()
    log.info("started CleanCoin-node (pid %d)", process.pid)
    return process, ours


async def link_spawned(sock: socket.socket, local: IpcPeer, debug: bool, transport: str) -> Any:
    """The Link to a node started by spawn_node, once it answers (it opens its chain and
    starts its wallet process first)."""
    from ..gui.app import Link
    from ..ipc.connection import connect_init
    from ..ipc.transport import stream_from_fd
    stream = await stream_from_fd(sock.detach())
    connection = await asyncio.wait_for(connect_init(stream, local, debug), NODE_START_TIMEOUT)
    return Link(await connection.init.make_node(), transport, connection.closed, connection.close)


def _wait_node(process: Any, timeout: float = 30.0) -> int | None:
    """Wait for the node we started (it stops when its front end's connection ends)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    process.kill()
    return process.wait()


def gui_variables(window_path: str, display: Any) -> dict[str, str]:
    """Values of the variables of the display's policy (gui.toml, gui-x11.toml or
    gui-wayland.toml): each gets only its own display's."""
    values = {"datadir": window_path}
    if display.kind == "x11":
        values["xauthority"] = os.environ.get("XAUTHORITY") or os.path.join(os.path.expanduser("~"), ".Xauthority")
    elif display.kind == "wayland":
        values["wayland_socket"] = display.wayland_socket
    return values


