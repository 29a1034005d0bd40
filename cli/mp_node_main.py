"""CleanCoin-node: CleanCoind's drop-in replacement that runs its wallet in another process.

Same options, conf file, RPC, files and exit codes as CleanCoind (cli/node_main.py), plus:

    -sandbox=0             run without the sandbox (a warning goes to the log)
    -sandboxlearn=DIR      a learning run: record what the node and its wallet use into DIR
                           instead of enforcing their policies (docs/audit.md)
    -ipcbind=ADDR          accept IPC clients (unix | unix:PATH | tcp:HOST:PORT), e.g. a
                           `CleanCoin-wallet -ipcconnect=unix` started on its own
    -ipcauth, -ipccert, -ipckey, -ipcmaxconnections, -ipchandshaketimeout   as in docs/ipc.md
    -ipcallowwallet=1      with -disablewallet: an IPC client may serve the wallet methods

This module parses the options and sets up the datadir and logging, as CleanCoind does; the
processes are wired by components/init/cleancoin_node.py (docs/multiprocess.md has the
start-up order).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from cleancoin.cli import node_main
from cleancoin.cli.process_exit import run_and_exit
from cleancoin.components.common.options import (
    Option, OptionError, Settings, apply_umask, help_text, load_settings, log_settings_warnings, version_text,
    wants,
)

if TYPE_CHECKING:
    from cleancoin.sandbox import Zygote

PROG = "CleanCoin-node"

OPTIONS: list[Option] = [
    *node_main.OPTIONS,
    Option("sandbox", "Confine this process and its wallet process by policies/node.toml and "
           "policies/wallet.toml (0: run unconfined, with a warning)", "Sandbox options", "", "1"),
    Option("sandboxlearn", "Learning run: record the syscalls, paths and sockets this process and "
           "its wallet process use into <dir> INSTEAD of enforcing their policies (for "
           "CleanCoin-sandbox learn --from <dir>; never on a node with real keys)",
           "Sandbox options", "<dir>"),
    Option("ipcbind", "Accept IPC connections (repeatable): unix, unix:PATH or tcp:HOST:PORT",
           "IPC options", "<address>"),
    Option("ipcconnect", "Use a running wallet process (CleanCoin-wallet -ipcbind) instead of "
           "starting one: unix (<netdatadir>/wallet.sock), unix:PATH, tcp:HOST:PORT, or auto "
           "(connect when wallet.sock answers, else start one)", "IPC options", "<address>"),
    Option("ipcauth", "Credentials USER:PASSWORD for TCP IPC clients (besides the .ipccookie)",
           "IPC options", "<userpw>"),
    Option("ipccert", "TLS certificate: served by TCP IPC listeners (with -ipckey), pinned by a client "
           "(CleanCoin-gui -ipcconnect=tcp:...)", "IPC options", "<file>"),
    Option("ipckey", "TLS key for TCP IPC listeners", "IPC options", "<file>"),
    Option("ipcmaxconnections", "Serve at most <n> IPC clients at once on each -ipcbind listener",
           "IPC options", "<n>", "16"),
    Option("ipchandshaketimeout", "Close an IPC client that has not logged in (TCP) or made a first call "
           "(unix) within <n> seconds", "IPC options", "<n>", "10"),
    Option("ipcfd", "Serve the front end that started this node (CleanCoin-gui) on this inherited "
           "socket descriptor; the node stops when that connection ends", "IPC options", "<n>"),
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
    if wants(args, "help", "?", "h"):
        print(help_text(PROG, "CleanCoin node daemon, multiprocess: the wallet runs in a "
                              "sandboxed CleanCoin-wallet process.", OPTIONS))
        return 0
    if wants(args, "version"):
        print(version_text("CleanCoin multiprocess node"), end="")
        return 0
    try:
        settings = load_settings(args, OPTIONS)     # -optionsfd's options read there
    except OptionError as exc:
        return _fail(None, str(exc))
    apply_umask(settings)          # before any file, and before the zygote and wallet are started
    from cleancoin.components.node.wallet_component import launch_zygote, uses_running_wallet, wallet_at_start
    disabled = settings.get_bool("disablewallet", False)
    # Decided once, from the options alone: -ipcconnect=auto asks wallet.sock now.
    connect_wallet = not disabled and uses_running_wallet((settings.get_all("ipcconnect") or [None])[-1],
                                                          settings.netdatadir)
    zygote = None
    # The wallet process now, or at the first call that may want a wallet (wallet_at_start;
    # since 12-08): then the zygote imports the wallet's code only for that first spawn.
    at_start = wallet_at_start([w for w in settings.get_all("wallet") if w], settings.netdatadir,
                               frontend=settings.get("ipcfd") is not None,
                               learning=bool(settings.get("sandboxlearn")))
    if not disabled and not connect_wallet:
        # Started before this process imports the node, so that the two interpreters start up
        # side by side (about 0.2 s each); run() configures it. If it cannot start now, run()
        # tries again and says why.
        with contextlib.suppress(OSError):
            zygote = launch_zygote(preload=at_start)
    try:
        return _start(settings, zygote, connect_wallet, at_start)
    finally:
        if zygote is not None:
            zygote.stop()           # a second stop (run() stops it too) does nothing


def _start(settings: Settings, zygote: Zygote | None, connect_wallet: bool, at_start: bool = True) -> int:
    """Everything after the options are read: the datadir, logging, then the processes."""
    try:
        import capnp  # noqa: F401 - only: is the multiprocess extra installed?
    except ImportError:
        from cleancoin.components.init.cleancoin_wallet import MULTIPROCESS_HINT
        return _fail(None, f"{MULTIPROCESS_HINT} (CleanCoind works without it)")
    from cleancoin.components.ipc.address import AddressError
    from cleancoin.components.ipc.settings import parse_settings
    try:
        config = node_main.build_config(settings)
        ipc = parse_settings({name: list(settings.get_all(name)) for name in
                              ("ipcbind", "ipcconnect", "ipcauth", "ipccert", "ipckey",
                               "ipcmaxconnections", "ipchandshaketimeout", "debug", "debugexclude")})
    except (OptionError, AddressError) as exc:
        return _fail(None, str(exc))
    netdatadir = settings.netdatadir
    from cleancoin.components.common.conf import ConfError, make_dirs
    try:
        make_dirs(netdatadir, "the data directory")
        # The wallet's directory: made here, so the wallet's policy has it to grant and the
        # node's has it to hide.
        make_dirs(os.path.join(netdatadir, "wallets"), "the wallet directory", 0o700)
    except ConfError as exc:
        return _fail(None, str(exc))
    from cleancoin.components.common.private_files import UnsafeFileError, conf_to_protect, sandbox_log
    try:
        node_main.setup_logging(settings, netdatadir)
        # Before the sandbox: a conf file in the datadir the node may write is made read-only
        # in its view (node.toml), and created empty if missing, so the node cannot set its
        # own options (sandbox=0) for its next start. The sandbox log likewise: the record of
        # what the node and its wallet tried, which neither can change.
        conf_to_protect(settings.conf_path, netdatadir)
        refusals = sandbox_log(netdatadir) if settings.get_bool("sandbox", True) else None
    except UnsafeFileError as exc:
        return _fail(None, str(exc))
    log = logging.getLogger("cleancoin.node")
    log.info("%s starting: chain=%s datadir=%s pid=%d", PROG, settings.chain, netdatadir, os.getpid())
    log_settings_warnings(settings, log)
    frontend_fd = settings.get("ipcfd")
    if frontend_fd is not None and not frontend_fd.isdigit():
        return _fail(log, f"-ipcfd expects a descriptor number, not '{frontend_fd}'")
    learn_dir = os.path.abspath(settings.get("sandboxlearn")) if settings.get("sandboxlearn") else None
    sandbox = settings.get_bool("sandbox", True)
    prestarted = broker_channel = None
    if zygote is not None and not config.disable_wallet:
        # The wallet's policy is fitted and its process asked for now, before this process
        # imports the rest of the node (cleancoin_node, the RPC server): the zygote builds the
        # wallet's sandbox on the other core meanwhile, and the wallet is up by the time the
        # node wants it (docs/multiprocess.md, start-up order).
        # The connect broker is forked by the zygote at the same time (its rule fixed from
        # these options now: connect_broker.forked_broker), sharing the zygote's image.
        from cleancoin.components.node.connect_broker import forked_broker
        from cleancoin.components.node.wallet_component import start_wallet
        from cleancoin.sandbox.zygote import ZygoteError
        try:
            broker_channel, detached = forked_broker(config, sandbox and not learn_dir)
            prestarted = start_wallet(zygote, netdatadir, sandbox=sandbox, learn_dir=learn_dir,
                                      verbose_denials=logging.getLogger("cleancoin.sandbox").isEnabledFor(logging.DEBUG),
                                      denial_log=refusals or "", title=f"{PROG} zygote",
                                      max_tx_fee=config.max_tx_fee,
                                      minimum_chain_work=config.minimum_chain_work, detached=detached,
                                      on_first_use=not at_start)
        except (ZygoteError, OSError) as exc:
            zygote.stop()
            if broker_channel is not None:
                broker_channel.close()
            return _fail(log, f"cannot prepare the wallet's sandbox: {exc}")
    from cleancoin.components.init import cleancoin_node
    return cleancoin_node.run(config, ipc, netdatadir, sandbox=sandbox,
                              allow_wallet=settings.get_bool("ipcallowwallet", False),
                              frontend_fd=None if frontend_fd is None else int(frontend_fd),
                              learn_dir=learn_dir, zygote=zygote, connect_wallet=connect_wallet,
                              sandbox_log=refusals, prestarted=prestarted, broker_channel=broker_channel,
                              wallet_at_start=at_start,
                              configured=zygote is not None and not config.disable_wallet)


def script() -> NoReturn:
    """The CleanCoin-node console script: `main`, then the process ends without the interpreter's
    teardown (cli/process_exit.py). The garbage collector is off while the node's code is
    imported (components/common/startup_gc.py)."""
    from cleancoin.components.common import startup_gc
    startup_gc.pause()
    # Before the zygote is forked: it, and every process it starts, inherit this (a confined
    # one's policy says so again; under -sandbox=0 nothing else would).
    from cleancoin.cli.private_memory import keep_memory_private
    keep_memory_private()
    from cleancoin.cli.terminal import show_others_text_escaped
    show_others_text_escaped()          # refusals name others' files; the console logs others' text
    run_and_exit(main)


if __name__ == "__main__":
    script()
