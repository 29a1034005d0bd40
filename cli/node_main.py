"""CleanCoind: the CleanCoin node daemon, with bitcoind's options and exit codes.

    CleanCoind -regtest -datadir=/tmp/cc -printtoconsole
    CleanCoind -help

Exit status: 0 after a clean shutdown (SIGTERM, SIGINT or the `stop` RPC), 1 for a bad
command line or conf file and for any initialisation error, as bitcoind. Errors go to stderr
as "Error: ..." (bitcoind's InitError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import logging
import os
import sys
import time
from collections.abc import Sequence

from cleancoin.cli.process_exit import run_and_exit
from cleancoin.components.common.options import (
    ALLOW_LOCAL_PEER_OPTION, MAX_TX_FEE_OPTION, MINIMUM_CHAIN_WORK_OPTION, RPC_WHITELIST_OPTIONS, SYSPERMS_OPTION, Option, OptionError, Settings, apply_umask, help_text,
    load_settings, log_settings_warnings, max_tx_fee, minimum_chain_work, positive_seconds, version_text, wants, whitelist_default,
)

PROG = "CleanCoind"

#: bitcoind's defaults: -timeout (an outgoing P2P connect, ms), -peertimeout (a peer's
#: version handshake, s).
DEFAULT_CONNECT_TIMEOUT_MS = 5000
DEFAULT_PEER_TIMEOUT = 60
# The largest -timeout (ms) and -peertimeout (s): bitcoind keeps both in an int. Above it the
# value does not fit a socket's timeout (time_t in ns): until 12-07 -timeout=10000000000000
# made every dial fail with OverflowError (CleanCoind's task keeping a -connect peer died at its
# first), and a value past a float's range stopped the start with a traceback.
MAX_TIMEOUT = 2**31 - 1

#: -debug categories -> logger names under "cleancoin". "validation" covers the chain.
DEBUG_CATEGORIES: dict[str, tuple[str, ...]] = {
    "net": ("cleancoin.net",),
    "rpc": ("cleancoin.rpc",),
    "mempool": ("cleancoin.mempool",),
    "validation": ("cleancoin.chain", "cleancoin.validation"),
    "ipc": ("cleancoin.ipc",),
    # CleanCoin-node: every refused syscall in the log, with its arguments (docs/audit.md).
    "sandbox": ("cleancoin.sandbox",),
}

OPTIONS: list[Option] = [
    Option("help", "Print this help message and exit", "Options"),
    Option("?", "Print this help message and exit", "Options"),
    Option("version", "Print version and exit", "Options"),
    Option("conf", "Specify path to read-only configuration file. Relative paths are prefixed by datadir location.",
           "Options", "<file>", "CleanCoin.conf"),
    Option("datadir", "Specify data directory", "Options", "<dir>", "~/.cleancoin"),
    Option("optionsfd", "Read more options from this inherited descriptor to its end (each followed by "
           "a NUL byte), as if given on the command line here: how CleanCoin-gui and the CleanCoin "
           "wrapper hand the secret ones (-rpcpassword, -rpcauth, -ipcauth) to the executable they "
           "start, off its command line", "Options", "<n>"),
    Option("pid", "Specify pid file. Relative paths are prefixed by the network datadir.", "Options",
           "<file>", "CleanCoind.pid"),
    Option("reindex", "Rebuild chain state and indexes from the stored blocks.", "Options"),
    Option("checkblocks", "How many blocks to check at startup (0 = all)", "Options", "<n>", "6"),
    Option("checklevel", "How thorough the block verification of -checkblocks is: 0 reads the blocks, "
           "1 checks their rules, 2 their undo data, 3 the coins they left in the UTXO set, 4 connects "
           "them again with every signature (0-4)", "Options", "<n>", "3"),
    Option("par", "Set the number of signature verification threads, this one included (0 = one per "
           "CPU this process may use, within a container's CPU quota; <0 = leave that many CPUs free; "
           "at most 8)", "Options", "<n>", "0"),
    Option("maxsigcachesize", "Limit the cache of signatures already verified (those of mempool "
           "transactions, not verified again when their block comes) to <n> MiB; 0 turns it off",
           "Options", "<n>", "32"),
    SYSPERMS_OPTION,
    Option("bind", "Bind to given address to listen for P2P connections.", "Connection options",
           "<addr>", "0.0.0.0"),
    Option("port", "Listen for P2P connections on <port>", "Connection options", "<port>",
           "27491, testnet: 27591, regtest: 27691"),
    Option("listen", "Accept connections from outside", "Connection options", "", "1 if no -connect"),
    Option("connect", "Connect only to the specified node(s); -noconnect disables automatic connections",
           "Connection options", "<ip:port>"),
    Option("addnode", "Add a node to connect to and attempt to keep the connection open", "Connection options",
           "<ip:port>"),
    ALLOW_LOCAL_PEER_OPTION,
    Option("maxconnections", "Maintain at most <n> connections to peers", "Connection options", "<n>", "125"),
    Option("maxuploadtarget", "Tries to keep outbound traffic under the given target per 24h. Limit does not "
           "apply to blocks created within the past week; peers asking for older blocks past it are "
           "disconnected. 0 = no limit. Optional suffix units [k|K|m|M|g|G|t|T] (default: M). Lowercase is "
           "1000 base while uppercase is 1024 base", "Connection options", "<n>", "0"),
    Option("timeout", "Specify socket connection timeout in milliseconds. If an initial attempt to connect "
           "is unsuccessful after this amount of time, drop it (minimum: 1)", "Connection options", "<n>",
           str(DEFAULT_CONNECT_TIMEOUT_MS)),
    Option("peertimeout", "Specify a p2p connection timeout delay in seconds. After connecting to a peer, "
           "wait this amount of time for its version handshake before disconnecting it (minimum: 1)",
           "Connection options", "<n>", str(DEFAULT_PEER_TIMEOUT)),
    Option("uacomment", "Append comment to the user agent string (repeatable)", "Connection options", "<cmt>"),
    Option("debug", "Output debug logging: net, rpc, mempool, validation, ipc, sandbox; 1 or all for every category. "
           "Repeatable.", "Debugging/Testing options", "<category>"),
    Option("debuglogfile", "Specify location of debug log file (default: debug.log). Relative paths will "
           "be prefixed by a net-specific datadir location. Pass -nodebuglogfile to disable writing "
           "the log to a file. Never followed if it is a symbolic link.", "Debugging/Testing options",
           "<file>", "debug.log"),
    Option("debugexclude", "Exclude debug logging for a category (takes priority over -debug)",
           "Debugging/Testing options", "<category>"),
    Option("printtoconsole", "Send trace/debug info to console (default: 1 when no -daemon)",
           "Debugging/Testing options", "", "1"),
    Option("chain", "Use the chain <chain>: main, test, regtest", "Chain selection options", "<chain>", "main"),
    Option("regtest", "Use the regression test chain (blocks on demand)", "Chain selection options"),
    Option("testnet", "Use the test chain", "Chain selection options"),
    Option("server", "Accept command line and JSON-RPC commands", "RPC server options", "", "1"),
    Option("rest", "Accept public REST requests on the RPC port (unauthenticated; -rpcallowip still applies)",
           "RPC server options", "", "0"),
    Option("rpcport", "Listen for JSON-RPC connections on <port>", "RPC server options", "<port>",
           "27490, testnet: 27590, regtest: 27690"),
    Option("rpcbind", "Bind to given address to listen for JSON-RPC connections (needs -rpcallowip)",
           "RPC server options", "<addr>[:port]"),
    Option("rpcallowip", "Allow JSON-RPC connections from specified source (IP, network/CIDR, network/netmask)",
           "RPC server options", "<ip>"),
    Option("rpcservertimeout", "Timeout during HTTP requests: for a request's headers (and an idle "
           "connection) and for its body", "RPC server options", "<n>", "30"),
    Option("rpcuser", "Username for JSON-RPC connections", "RPC server options", "<user>"),
    Option("rpcpassword", "Password for JSON-RPC connections", "RPC server options", "<pw>"),
    Option("rpcauth", "Username and HMAC-SHA-256 hashed password for JSON-RPC connections (USER:SALT$HASH)",
           "RPC server options", "<userpw>"),
    *RPC_WHITELIST_OPTIONS,
    Option("wallet", "Specify wallet name to load at startup. Can be used multiple times to load "
           "multiple wallets (<netdatadir>/wallets/<name>).", "Wallet options", "<name>"),
    Option("disablewallet", "Do not load the wallet and disable wallet RPC calls", "Wallet options"),
    MAX_TX_FEE_OPTION,
    MINIMUM_CHAIN_WORK_OPTION,
    Option("rpccookiefile", "Location of the auth cookie. Relative paths are prefixed by the network datadir.",
           "RPC server options", "<loc>", ".cookie"),
]


def debug_log_path(settings: Settings, netdatadir: str) -> str | None:
    """-debuglogfile, as bitcoind: default debug.log, a relative path in the network datadir,
    -nodebuglogfile for none."""
    from cleancoin.components.common.conf import Negated

    value = settings.get("debuglogfile")
    if isinstance(value, Negated):
        return None
    return os.path.join(netdatadir, os.path.expanduser(value or "debug.log"))


def setup_logging(settings: Settings, netdatadir: str) -> None:
    """The debug log (-debuglogfile, default debug.log in the network datadir) and the
    console with -printtoconsole; UTC timestamps, the logger name as category; -debug turns
    categories to DEBUG. The log is never opened through a link (UnsafeFileError): the
    confined CleanCoin-node can write its datadir and must not choose where the next,
    unconfined start writes."""
    from cleancoin.components.common.private_files import open_log

    path = debug_log_path(settings, netdatadir)
    stream = open_log(path) if path else None
    root = logging.getLogger("cleancoin")
    root.setLevel(logging.INFO)
    root.propagate = False
    # Records carry text others chose (peers, a wallet process): escaped, one record a line.
    from cleancoin.sandbox.log_format import LogFormatter
    fmt = LogFormatter("%(asctime)s.%(msecs)03dZ [%(name)s] %(levelname)s %(message)s",
                       "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    # A full disk must not turn every later log line into a traceback on stderr (log_stream.py).
    from cleancoin.components.common.log_stream import LogStreamHandler
    handlers: list[logging.Handler] = [LogStreamHandler(stream, path)] if stream and path else []
    if settings.get_bool("printtoconsole", True):
        handlers.append(LogStreamHandler(sys.stdout, "the console"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    wanted = set()
    for cat in settings.get_all("debug"):
        if cat in ("1", "all", ""):
            wanted.update(DEBUG_CATEGORIES)
        elif cat == "0" or cat == "none":
            wanted.clear()
        elif cat in DEBUG_CATEGORIES:
            wanted.add(cat)
        else:
            root.warning("Unsupported logging category -debug=%s.", cat)
    for cat in settings.get_all("debugexclude"):
        wanted.discard(cat)
    for cat in wanted:
        for name in DEBUG_CATEGORIES[cat]:
            logging.getLogger(name).setLevel(logging.DEBUG)


if TYPE_CHECKING:
    from cleancoin.components.node.node import NodeConfig


def local_peer_endpoints(settings: Settings) -> list[str]:
    """-allowlocalpeer values (host:port or host:low-high), checked now: a bad one is an init
    error. Empty values are skipped."""
    from cleancoin.components.node.connect_rule import split_endpoint

    out = []
    for raw in settings.get_all("allowlocalpeer"):
        if not raw.strip():
            continue
        try:
            split_endpoint(raw)
        except ValueError as exc:
            raise OptionError(f"Invalid -allowlocalpeer: {exc}") from None
        out.append(raw.strip())
    return out


def peer_addresses(settings: Settings, name: str) -> list[str]:
    """-connect / -addnode values, checked now so that a bad one is an init error and not a
    failure later. Empty values are skipped, as bitcoind skips them (and `-connect=0` is
    `-noconnect`)."""
    from cleancoin.components.node.p2p import P2PError, parse_host_port
    from cleancoin.components.rpc.server import split_host_port

    out = []
    for raw in settings.get_all(name):
        value = raw.strip()
        if not value or (name == "connect" and value == "0"):
            continue
        try:
            split_host_port(value, 1)
        except ValueError:
            raise OptionError(f"Invalid port specified in -{name}: '{raw}'") from None
        try:
            parse_host_port(value, 1)
        except P2PError:
            raise OptionError(f"Invalid -{name} address: '{raw}'") from None
        out.append(value)
    return out


def bind_address(settings: Settings) -> str:
    """-bind: a numeric IP address (bitcoind looks it up without DNS), brackets allowed."""
    import ipaddress

    value = settings.get("bind", "0.0.0.0") or "0.0.0.0"
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise OptionError(f"Cannot resolve -bind address: '{value}'") from None
    return host


def uacomments(settings: Settings) -> list[str]:
    """-uacomment values, checked as bitcoind checks them at start-up."""
    from cleancoin.components.node.node import InitError, user_agent

    comments = settings.get_all("uacomment")
    try:
        user_agent(comments)
    except InitError as exc:
        raise OptionError(str(exc)) from None
    return comments


def signature_threads(settings: Settings) -> int:
    """-par, as bitcoind's: the threads that verify a block's signatures, the chain's own
    included; 0 (the default) for one per usable CPU, a negative number to leave that many
    free; always 1 to sigcheck.MAX_THREADS. Counted now, before CleanCoin-node confines
    itself: a container's CPU quota is read from /sys/fs/cgroup, out of its view afterwards."""
    from cleancoin.components.common.sigcheck import MAX_THREADS, usable_cpus

    par = settings.get_int("par", 0)
    if par <= 0:
        par += usable_cpus()
    return max(1, min(par, MAX_THREADS))


def signature_cache_mib(settings: Settings) -> int:
    """-maxsigcachesize, in MiB as bitcoind's (default 32; 0 for none; at most 16384)."""
    from cleancoin.components.common.sigcheck import DEFAULT_CACHE_MIB

    mib = settings.get_int("maxsigcachesize", DEFAULT_CACHE_MIB)
    if not 0 <= mib <= 16384:
        raise OptionError(f"Invalid value for -maxsigcachesize: '{mib}' (0 to 16384 MiB)")
    return mib


def check_blocks_level(settings: Settings) -> tuple[int, int]:
    """-checkblocks (0 or less: all) and -checklevel (0-4), as bitcoind's."""
    from cleancoin.components.node.verify_chain import (
        DEFAULT_CHECK_BLOCKS, DEFAULT_CHECK_LEVEL, MAX_CHECK_LEVEL,
    )

    level = settings.get_int("checklevel", DEFAULT_CHECK_LEVEL)
    if not 0 <= level <= MAX_CHECK_LEVEL:
        raise OptionError(f"Invalid value for -checklevel: '{level}' (0 to {MAX_CHECK_LEVEL})")
    return settings.get_int("checkblocks", DEFAULT_CHECK_BLOCKS), level


def connect_timeout(settings: Settings) -> float:
    """-timeout=<ms> in seconds. As bitcoind, a value of 0 or less means the default."""
    ms = settings.get_int("timeout", DEFAULT_CONNECT_TIMEOUT_MS)
    if ms > MAX_TIMEOUT:
        raise OptionError(f"Invalid value for -timeout: '{ms}' (at most {MAX_TIMEOUT} milliseconds)")
    return (ms if ms > 0 else DEFAULT_CONNECT_TIMEOUT_MS) / 1000.0


def peer_timeout(settings: Settings) -> float:
    """-peertimeout=<seconds> (bitcoind's wording for a value below 1)."""
    seconds = settings.get_int("peertimeout", DEFAULT_PEER_TIMEOUT)
    if seconds <= 0:
        raise OptionError("peertimeout must be a positive integer.")
    if seconds > MAX_TIMEOUT:
        raise OptionError(f"Invalid value for -peertimeout: '{seconds}' (at most {MAX_TIMEOUT} seconds)")
    return float(seconds)


def max_upload_target(settings: Settings) -> int:
    """-maxuploadtarget=<n>[unit] in bytes (0: none), as bitcoind parses it (MiB by default)."""
    from cleancoin.components.node.p2p.upload_target import parse_byte_units

    text = settings.get("maxuploadtarget", "0") or "0"
    value = parse_byte_units(text)
    if value is None:
        raise OptionError(f"Unable to parse -maxuploadtarget: '{text}'")
    return value


def build_config(settings: Settings) -> "NodeConfig":
    """Settings -> NodeConfig (OptionError for bad values)."""
    from cleancoin.components.node.node import NodeConfig

    listen_value = settings.get("listen")
    port = settings.get("port")
    rpcport = settings.get("rpcport")
    connect = peer_addresses(settings, "connect")
    for name, value in (("port", port), ("rpcport", rpcport)):
        if value is not None and (not value.isdigit() or int(value) > 65535):
            raise OptionError(f"Invalid port specified in -{name}: '{value}'")
    check_blocks, check_level = check_blocks_level(settings)
    return NodeConfig(
        chain=settings.chain,
        netdatadir=settings.netdatadir,
        reindex=settings.get_bool("reindex", False),
        listen=None if listen_value is None else settings.get_bool("listen", True),
        bind=bind_address(settings),
        port=None if port is None else int(port),
        connect=connect,
        addnode=peer_addresses(settings, "addnode"),
        allow_local_peers=local_peer_endpoints(settings),
        max_connections=settings.get_int("maxconnections", 125),
        max_upload_target=max_upload_target(settings),
        connect_timeout=connect_timeout(settings),
        peer_timeout=peer_timeout(settings),
        uacomment=uacomments(settings),
        server=settings.get_bool("server", True),
        rpcport=None if rpcport is None else int(rpcport),
        rpcbind=settings.get_all("rpcbind"),
        rpcallowip=settings.get_all("rpcallowip"),
        rpcuser=settings.get("rpcuser", "") or "",
        rpcpassword=settings.get("rpcpassword", "") or "",
        rpcauth=settings.get_all("rpcauth"),
        rpcwhitelist=settings.get_all("rpcwhitelist"),
        rpcwhitelistdefault=whitelist_default(settings),
        rpccookiefile=settings.get("rpccookiefile"),
        rpcservertimeout=positive_seconds(settings, "rpcservertimeout", 30.0),
        rest=settings.get_bool("rest", False),
        pid_file=settings.get("pid"),
        disable_wallet=settings.get_bool("disablewallet", False),
        wallets=[w for w in settings.get_all("wallet") if w],
        ignore_startup_wallets=settings.negated_on_cmdline("wallet"),
        sig_threads=signature_threads(settings),
        sig_cache_mib=signature_cache_mib(settings),
        check_blocks=check_blocks,
        check_level=check_level,
        max_tx_fee=max_tx_fee(settings),
        minimum_chain_work=minimum_chain_work(settings),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the CleanCoind script; returns (and exits with) the status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if wants(args, "help", "?", "h"):
        print(help_text(PROG, "CleanCoin node daemon: chain, mempool, P2P and JSON-RPC.", OPTIONS))
        return 0
    if wants(args, "version"):
        print(version_text("CleanCoin daemon"), end="")
        return 0
    try:
        settings = load_settings(args, OPTIONS)
        config = build_config(settings)
    except OptionError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    apply_umask(settings)
    netdatadir = settings.netdatadir
    from cleancoin.components.common.conf import ConfError, make_dirs
    try:
        make_dirs(netdatadir, "the data directory")
    except ConfError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    from cleancoin.components.common.private_files import UnsafeFileError
    try:
        setup_logging(settings, netdatadir)
    except UnsafeFileError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    log = logging.getLogger("cleancoin.node")
    log.info("CleanCoind starting: chain=%s datadir=%s pid=%d", settings.chain, netdatadir, os.getpid())
    log_settings_warnings(settings, log)

    from cleancoin.components.init import cleancoind
    return cleancoind.run(config)


def script() -> NoReturn:
    """The CleanCoind console script: `main`, then the process ends without the interpreter's
    teardown (cli/process_exit.py). The garbage collector is off while the node's code is
    imported (components/common/startup_gc.py)."""
    from cleancoin.components.common import startup_gc
    startup_gc.pause()
    # Unconfined, and its memory holds the wallets' passphrases and keys: before anything is read.
    from cleancoin.cli.private_memory import keep_memory_private
    keep_memory_private()
    from cleancoin.cli.terminal import show_others_text_escaped
    show_others_text_escaped()          # refusals name others' files; the console logs others' text
    run_and_exit(main)


if __name__ == "__main__":
    script()
