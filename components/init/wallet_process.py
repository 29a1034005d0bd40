"""The wallet process as CleanCoin-node's zygote starts it: the zygote's preload and target.

Kept apart from cleancoin_wallet.py (the CleanCoin-wallet executable started on its own, with
its option table and its RPC server) because the zygote imports this module once and every
wallet process it forks shares that image: what it imports and the wallet does not use costs
memory and start-up time in each node (issue #16). Only what serving a node needs is
imported here: logging and, in `import_everything`, asyncio, Cap'n Proto, the schemas, the
IPC runtime, SQLite and the wallet; not `ssl` (`zygote_preload`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

PROG = "CleanCoin-wallet"


def zygote_preload() -> None:
    """The zygote's preload: `import_everything` without `ssl`, which asyncio imports if it can.

    A wallet process of CleanCoin-node talks to its node over a unix socket pair only (the
    zygote accepts nothing else as its IPC descriptor) and never makes a TLS context, so the
    module, its enums and OpenSSL's libssl are left out of the zygote's image, which every
    wallet process, waiter and pid-namespace init shares: 0.85 MiB of private pages in the
    zygote (measured in a fresh interpreter, issue #16). None in sys.modules is the import
    system's own way to say a module is not there; asyncio then runs without TLS, as on a
    Python built without OpenSSL. The standalone CleanCoin-wallet (TCP IPC with TLS) calls
    `import_everything`, not this. This module imports asyncio in its functions for the same
    reason: the zygote imports it before it calls this."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import_everything()


def import_everything() -> None:
    """Import, and load the schemas of, all this process will use: once the sandbox is up it
    may read the Python installation still, but should not need to (and it is faster)."""
    from cleancoin.components.ipc import specs
    specs.all_specs()   # loads every schema file and builds the method tables
    import cleancoin.components.wallet.service  # noqa: F401
    import cleancoin.components.wallet.rpc  # noqa: F401
    import cleancoin.components.ipc.connection  # noqa: F401
    import cleancoin.components.ipc.transport  # noqa: F401
    import sqlite3  # noqa: F401
    # Not `cryptography` (ChaCha20-Poly1305 of an encrypted wallet): its Rust extension and
    # OpenSSL bindings are some 6 MiB of mapped pages and 1.3 MiB of objects, which every
    # node's zygote and wallet process held for the few wallets that are encrypted. The wallet
    # imports it at its first encryption or unlock (components/wallet/crypto.py), from the
    # read-only Python installation its policy grants (scrypt itself is hashlib's).


def log_format() -> logging.Formatter:
    from cleancoin.sandbox.log_format import LogFormatter   # the node's and its callers' text, escaped
    fmt = LogFormatter(f"%(asctime)s.%(msecs)03dZ [{PROG}:%(process)d] [%(name)s] %(levelname)s %(message)s",
                       "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    return fmt


def setup_logging(netdatadir: str | None, console: bool, debug: Sequence[str]) -> None:
    root = logging.getLogger("cleancoin")
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        # In a child forked from the node its file descriptor may be closed already.
        with contextlib.suppress(OSError, ValueError):
            handler.close()
    handlers: list[logging.Handler] = []
    if netdatadir is not None:
        # wallet.store.WALLET_LOG_FILENAME, not imported this early: no wallet may take the name.
        path = os.path.join(netdatadir, "wallets", "debug.log")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Never through a link: the directory is the confined wallet's (private_files).
        from cleancoin.components.common.log_stream import LogStreamHandler
        from cleancoin.components.common.private_files import open_log
        handlers.append(LogStreamHandler(open_log(path), path))
    if console or netdatadir is None:
        stream = logging.StreamHandler(sys.stderr)
        if not console:
            stream.setLevel(logging.WARNING)       # before the node says where to log
        handlers.append(stream)
    for h in handlers:
        h.setFormatter(log_format())
        root.addHandler(h)
    for category in debug:
        if category in ("1", "all", "ipc"):
            logging.getLogger("cleancoin.ipc").setLevel(logging.DEBUG)
        if category in ("1", "all", "rpc"):
            logging.getLogger("cleancoin.rpc").setLevel(logging.DEBUG)


# ---------------------------------------------------------------------- started by a node

def serve_node(fd: int, max_tx_fee: str = "", minimum_chain_work: str = "") -> int:
    """The zygote's target for CleanCoin-wallet: serve the node on the socket `fd`.

    `max_tx_fee` (-maxtxfee, in units) is the one the node fixed in the zygote's configuration
    before it confined itself (wallet_component.wallet_spec); nothing the node sends over IPC
    changes it. Empty: the default. `minimum_chain_work` (-minimumchainwork, hex) likewise:
    the anchor's bar (wallet/headers.py) is never the node's word.

    Runs in a child the zygote forked, after every sandbox step of policies/wallet.toml: the
    zygote imported this module (and ran `zygote_preload`) once, at its own start, from a fresh
    interpreter, so nothing of the node's memory is here. Returns the exit status.
    """
    import asyncio

    import capnp
    from cleancoin.sandbox import syscalls
    syscalls.set_name("wallet")          # a fork keeps the zygote's name; ps should tell them apart
    setup_logging(None, False, ())
    from cleancoin.components.common.fee_cap import DEFAULT_MAX_TX_FEE
    return asyncio.run(capnp.run(_serve_child(fd, int(max_tx_fee) if max_tx_fee else DEFAULT_MAX_TX_FEE,
                                              int(minimum_chain_work, 16) if minimum_chain_work else None)))


async def _serve_child(fd: int, max_tx_fee: int, minimum_chain_work: int | None) -> int:
    import asyncio
    from cleancoin.components.ipc.connection import serve_init
    from cleancoin.components.ipc.init_impl import ProcessInit
    from cleancoin.components.interfaces.init import IpcPeer
    from cleancoin.components.ipc.transport import stream_from_fd
    from cleancoin.components.wallet.service import make_wallet_service

    async def make_loader(chain, options):  # type: ignore[no-untyped-def]
        from cleancoin.sandbox import syscalls
        debug = ["ipc"] if logging.getLogger("cleancoin.ipc").isEnabledFor(logging.DEBUG) else []
        setup_logging(options.netdatadir, False, debug)
        # The zygote titled this process "CleanCoin-wallet (sandboxed, policy wallet)"; `ps`
        # tells the wallet processes of several nodes apart by their datadir.
        syscalls.set_title(f"{syscalls.get_title() or PROG} -datadir={options.netdatadir}")
        log = logging.getLogger("cleancoin.wallet")
        log.info("%s (pid %d) serving the wallets of %s (%s)", PROG, os.getpid(), options.netdatadir,
                 options.network)
        return await make_wallet_service(chain, options, max_tx_fee=max_tx_fee,
                                         minimum_chain_work=minimum_chain_work)

    # The node ends us by closing the connection; a stray SIGTERM (the operator's kill) ends
    # the serve loop the same way, so the wallets close cleanly.
    loop = asyncio.get_running_loop()
    stream = await stream_from_fd(fd)
    serving = asyncio.ensure_future(serve_init(
        stream, functools.partial(ProcessInit, wallet_loader_factory=make_loader),
        IpcPeer(PROG, os.getpid()), False, from_parent=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    logging.getLogger("cleancoin.wallet").info("%s (pid %d) exiting", PROG, os.getpid())
    return 0


