"""CleanCoin-node: CleanCoind's drop-in replacement that runs its wallet in another process.

Same options, conf file, RPC, files and exit codes as CleanCoind (cli/node_main.py), plus:

    -sandbox=0             run without the sandbox (a warning goes to the log)
    -ipcbind=ADDR          accept IPC clients (unix | unix:PATH | tcp:HOST:PORT), e.g. a
                           `CleanCoin-wallet -ipcconnect=unix` started on its own
    -ipcauth, -ipccert, -ipckey, -ipcmaxconnections, -ipchandshaketimeout   as in docs/ipc.md
    -ipcallowwallet=1      with -disablewallet: an IPC client may serve the wallet methods

Start-up order (docs/multiprocess.md):
1. options, datadir, debug.log, as CleanCoind;
2. the zygote: a launcher process (a fresh interpreter) started while this process still has
   all its rights, that can start exactly one component, CleanCoin-wallet, under
   policies/wallet.toml;
3. this process restricts itself with policies/node.toml (Landlock: its network datadir with
   wallets/ hidden, its P2P and RPC ports; seccomp; no capabilities; no exec); a step that
   cannot be applied stops it here with "Error: sandbox step 'X' failed: ...";
4. the node starts; the wallet process is started through the zygote and serves the wallet
   RPC methods, which the node forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from cleancoin.cli import node_main
from cleancoin.cli.options import Option, OptionError, apply_umask, help_text, load_settings

PROG = "CleanCoin-node"

OPTIONS: list[Option] = [
    *node_main.OPTIONS,
    Option("sandbox", "Confine this process and its wallet process by policies/node.toml and "
           "policies/wallet.toml (0: run unconfined, with a warning)", "Sandbox options", "", "1"),
    Option("ipcbind", "Accept IPC connections (repeatable): unix, unix:PATH or tcp:HOST:PORT",
           "IPC options", "<address>"),
    Option("ipcconnect", "Use a running wallet process (CleanCoin-wallet -ipcbind) instead of "
           "starting one: unix (<netdatadir>/wallet.sock), unix:PATH, tcp:HOST:PORT, or auto "
           "(connect when wallet.sock answers, else start one)", "IPC options", "<address>"),
    Option("ipcauth", "Credentials USER:PASSWORD for TCP IPC clients (besides the .ipccookie)",
           "IPC options", "<userpw>"),
    Option("ipccert", "TLS certificate for TCP IPC listeners", "IPC options", "<file>"),
    Option("ipckey", "TLS key for TCP IPC listeners", "IPC options", "<file>"),
    Option("ipcmaxconnections", "Serve at most <n> IPC clients at once on each -ipcbind listener",
           "IPC options", "<n>", "16"),
    Option("ipchandshaketimeout", "Close an IPC client that has not logged in (TCP) or made a first call "
           "(unix) within <n> seconds", "IPC options", "<n>", "10"),
    Option("ipcallowwallet", "Let an IPC client of the -ipcbind listeners (a CleanCoin-wallet "
           "-ipcconnect) serve the wallet RPC methods; only with -disablewallet", "IPC options", "", "0"),
]


def _fail(log: logging.Logger | None, message: str) -> int:
    if log is not None:
        log.error("Error: %s", message)
    print(f"Error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the CleanCoin-node script; returns (and exits with) the status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.lstrip("-").split("=")[0] in ("help", "?", "h") for a in args):
        print(help_text(PROG, "CleanCoin node daemon, multiprocess: the wallet runs in a "
                              "sandboxed CleanCoin-wallet process.", OPTIONS))
        return 0
    try:
        import capnp
    except ImportError:
        from cleancoin.cli.wallet_process import MULTIPROCESS_HINT
        return _fail(None, f"{MULTIPROCESS_HINT} (CleanCoind works without it)")
    from cleancoin.components.ipc.address import AddressError
    from cleancoin.components.ipc.settings import parse_settings
    try:
        settings = load_settings(args, OPTIONS)
        config = node_main.build_config(settings)
        ipc = parse_settings({name: list(settings.get_all(name)) for name in
                              ("ipcbind", "ipcconnect", "ipcauth", "ipccert", "ipckey",
                               "ipcmaxconnections", "ipchandshaketimeout", "debug", "debugexclude")})
    except (OptionError, AddressError) as exc:
        return _fail(None, str(exc))
    apply_umask(settings)          # before any file, and before the zygote and wallet are forked
    netdatadir = settings.netdatadir
    try:
        os.makedirs(netdatadir, exist_ok=True)
        # The wallet's directory: made here, so the wallet's policy has it to grant and the
        # node's has it to hide.
        os.makedirs(os.path.join(netdatadir, "wallets"), mode=0o700, exist_ok=True)
    except OSError as exc:
        return _fail(None, f"Cannot create data directory {netdatadir}: {exc.strerror}")
    node_main.setup_logging(settings, netdatadir)
    log = logging.getLogger("cleancoin.node")
    log.info("%s starting: chain=%s datadir=%s pid=%d", PROG, settings.chain, netdatadir, os.getpid())
    sandbox = settings.get_bool("sandbox", True)

    from cleancoin.components.ipc.interfaces import Peer
    from cleancoin.components.node.multiprocess import NodeProcesses
    from cleancoin.components.node.node import InitError, Node
    from cleancoin.components.node.wallet_process import WALLET_COMPONENT, WALLET_TARGET, prestart
    from cleancoin.sandbox.policy_loader import shipped_policy
    from cleancoin.sandbox.zygote import ComponentSpec, Zygote, ZygoteError

    # Everything the node will run is imported now: once it is confined it could still read
    # the Python installation, but a failure there would come late and far from its cause.
    _import_node_modules()
    zygote = None
    prestarted = None
    connect_wallet = not config.disable_wallet and _use_running_wallet(ipc.connect, netdatadir)  # type: ignore[attr-defined]
    from cleancoin.sandbox.denial_log import DenialLog
    # Refusals with an errno go to each process's own debug.log; -debug=sandbox logs all of them.
    verbose = logging.getLogger("cleancoin.sandbox").isEnabledFor(logging.DEBUG)
    if not config.disable_wallet and not connect_wallet:  # type: ignore[attr-defined]
        spec = ComponentSpec(WALLET_COMPONENT, WALLET_TARGET,
                             shipped_policy("wallet") if sandbox else None,
                             {"walletdir": os.path.join(netdatadir, "wallets")},
                             writable_roots=(netdatadir,),
                             denials=DenialLog(os.path.join(netdatadir, "wallets", "debug.log"), verbose))
        try:
            # A fresh interpreter, not a fork: this process has read the conf file and its
            # command line (RPC and IPC passwords); the wallet must not hold a copy of them.
            # It starts while this process restricts itself and opens its chain.
            zygote = Zygote.start({WALLET_COMPONENT: spec}, wait=False)
            prestarted = prestart(zygote)
        except (ZygoteError, OSError) as exc:
            return _fail(log, f"cannot prepare the wallet's sandbox: {exc}")
    report = None
    if sandbox:
        from cleancoin.sandbox.errors import EnforcementError, PolicyError, PolicyErrors
        from cleancoin.sandbox.self_restrict import restrict_self
        keep = _open_descriptors_to_keep(zygote, prestarted)
        try:
            report = restrict_self(shipped_policy("node"), _node_variables(config, netdatadir, ipc.binds),
                                   keep_fds=keep, denials=DenialLog(os.path.join(netdatadir, "debug.log"), verbose))
        except (EnforcementError, PolicyError, PolicyErrors) as exc:
            if zygote is not None:
                zygote.stop()
            return _fail(log, f"{exc} (this kernel or system cannot confine {PROG}; -sandbox=0 "
                              "runs it unconfined)")
        log.info("%s (pid %d) confined:\n%s", PROG, os.getpid(), report.to_text())
    else:
        log.warning("-sandbox=0: %s and its wallet process run WITHOUT a sandbox", PROG)
    extension = NodeProcesses(zygote, ipc, Peer(PROG, os.getpid()), list(config.wallets),  # type: ignore[attr-defined]
                              report, prestarted, connect_wallet, settings.get_bool("ipcallowwallet", False))
    node = Node(config, extension)  # type: ignore[arg-type]
    try:
        return asyncio.run(capnp.run(node.run()))
    except InitError as exc:
        return _fail(log, str(exc))
    except KeyboardInterrupt:
        return 0
    finally:
        if zygote is not None:
            zygote.stop()


def _use_running_wallet(connect: str | None, netdatadir: str) -> bool:
    """-ipcconnect: always for an address; for `auto`, when wallet.sock answers now."""
    if connect is None:
        return False
    if connect != "auto":
        return True
    import socket
    from cleancoin.components.node.multiprocess import WALLET_SOCKET
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.path.join(netdatadir, WALLET_SOCKET))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _node_variables(config: object, netdatadir: str, ipc_binds: Sequence[str]) -> dict[str, str]:
    """Values of node.toml's variables: the datadir and the ports it may bind (P2P, RPC, and
    the first -ipcbind=tcp listener's, or the RPC port again)."""
    from cleancoin.components.node.chainparams import params_for
    params = params_for(config.chain)  # type: ignore[attr-defined]
    port = config.port if config.port is not None else params.default_port  # type: ignore[attr-defined]
    rpcport = config.rpcport if config.rpcport is not None else params.rpc_port  # type: ignore[attr-defined]
    from cleancoin.components.ipc.address import parse
    tcp = [parse(b, "") for b in ipc_binds if b.startswith("tcp:")]
    ipcport = tcp[0].port if tcp else rpcport
    return {"datadir": netdatadir, "port": str(port), "rpcport": str(rpcport), "ipcport": str(ipcport)}


def _open_descriptors_to_keep(zygote: object, prestarted: object) -> set[int]:
    """What this process still needs across restrict_self: its log files and its zygote's
    sockets. Every other descriptor (libraries' leftovers, such as pycapnp's directory
    descriptors) is pointed at /dev/null by the sandbox's descriptor step."""
    keep: set[int] = set()
    for handler in logging.getLogger("cleancoin").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            with contextlib.suppress(OSError, ValueError):
                keep.add(stream.fileno())
    if zygote is not None:
        keep |= set(zygote.descriptors())  # type: ignore[attr-defined]
    if prestarted is not None:
        keep.add(prestarted.fileno())  # type: ignore[attr-defined]
    return keep


def _import_node_modules() -> None:
    """What the node imports lazily, imported before the sandbox (it could read the Python
    installation afterwards, but a failure there would come late and far from its cause)."""
    import aiohttp.web  # noqa: F401

    import cleancoin.components.ipc.specs  # noqa: F401
    import cleancoin.components.ipc.transport  # noqa: F401
    import cleancoin.components.node.rpc_methods  # noqa: F401
    import cleancoin.components.rpc.server  # noqa: F401
    from cleancoin.components.ipc import schema
    for name in ("init", "chain", "wallet", "node", "echo", "auth"):
        schema.load(name)


if __name__ == "__main__":
    sys.exit(main())
