"""CleanCoin-cli: send a command to CleanCoind's JSON-RPC server, like bitcoin-cli.

    CleanCoin-cli [options] <command> [params]       Send command to CleanCoin
    CleanCoin-cli [options] -named <command> [name=value]...
    CleanCoin-cli [options] help                     List commands
    CleanCoin-cli [options] help <command>           Get help for a command

Parameters are strings unless the table below says that a method's parameter is JSON (a
number, bool, array or object), as bitcoin-cli's conversion table does. A string result is
printed as it is, any other result as indented JSON, nothing for null. An RPC error goes to
stderr as "error code: N" / "error message:" and the exit status is abs(N) (the shell sees it
modulo 256), as bitcoin-cli's; anything else that fails prints "error: ..." and exits 1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from cleancoin.components.common import conf as rpcconf
from cleancoin.components.rpc import jsonfmt
from cleancoin.components.rpc.client import DEFAULT_TIMEOUT, RpcClient, RpcConnectionError, RpcTransportError
from cleancoin.components.rpc.errors import RPC_IN_WARMUP, RPC_WALLET_NOT_SPECIFIED, RpcError

PROG = "CleanCoin-cli"
DEFAULT_RPCCONNECT = "127.0.0.1"

# Which parameters are JSON rather than strings: (method, position, name), bitcoind's
# vRPCConvertParams for the methods CleanCoin has or will have.
CONVERT_PARAMS: tuple[tuple[str, int, str], ...] = (
    ("stop", 0, "wait"),
    ("getblockhash", 0, "height"),
    ("getblock", 1, "verbosity"),
    ("getblock", 1, "verbose"),
    ("getblockheader", 1, "verbose"),
    ("getblockstats", 0, "hash_or_height"),
    ("getblockstats", 1, "stats"),
    ("getchaintxstats", 0, "nblocks"),
    ("waitforblockheight", 0, "height"),
    ("waitforblockheight", 1, "timeout"),
    ("waitforblock", 1, "timeout"),
    ("waitfornewblock", 0, "timeout"),
    ("verifychain", 0, "checklevel"),
    ("verifychain", 1, "nblocks"),
    ("pruneblockchain", 0, "height"),
    ("gettxout", 1, "n"),
    ("gettxout", 2, "include_mempool"),
    ("gettxoutproof", 0, "txids"),
    ("gettxoutsetinfo", 1, "hash_or_height"),
    ("gettxoutsetinfo", 2, "use_index"),
    ("scantxoutset", 1, "scanobjects"),
    ("getrawmempool", 0, "verbose"),
    ("getrawmempool", 1, "mempool_sequence"),
    ("getmempoolancestors", 1, "verbose"),
    ("getmempooldescendants", 1, "verbose"),
    ("prioritisetransaction", 1, "dummy"),
    ("prioritisetransaction", 2, "fee_delta"),
    ("getrawtransaction", 1, "verbosity"),
    ("getrawtransaction", 1, "verbose"),
    ("createrawtransaction", 0, "inputs"),
    ("createrawtransaction", 1, "outputs"),
    ("createrawtransaction", 2, "locktime"),
    ("createrawtransaction", 3, "replaceable"),
    ("decoderawtransaction", 1, "iswitness"),
    ("sendrawtransaction", 1, "maxfeerate"),
    ("sendrawtransaction", 2, "maxburnamount"),
    ("testmempoolaccept", 0, "rawtxs"),
    ("testmempoolaccept", 1, "maxfeerate"),
    ("combinerawtransaction", 0, "txs"),
    ("signrawtransactionwithkey", 1, "privkeys"),
    ("signrawtransactionwithkey", 2, "prevtxs"),
    ("createmultisig", 0, "nrequired"),
    ("createmultisig", 1, "keys"),
    ("generatetoaddress", 0, "nblocks"),
    ("generatetoaddress", 2, "maxtries"),
    ("generatetodescriptor", 0, "num_blocks"),
    ("generatetodescriptor", 2, "maxtries"),
    ("generateblock", 1, "transactions"),
    ("generateblock", 2, "submit"),
    ("getnetworkhashps", 0, "nblocks"),
    ("getnetworkhashps", 1, "height"),
    ("getblocktemplate", 0, "template_request"),
    ("estimatesmartfee", 0, "conf_target"),
    ("addnode", 2, "v2transport"),
    ("disconnectnode", 1, "nodeid"),
    ("setban", 2, "bantime"),
    ("setban", 3, "absolute"),
    ("setnetworkactive", 0, "state"),
    ("getnodeaddresses", 0, "count"),
    ("setmocktime", 0, "timestamp"),
    ("logging", 0, "include"),
    ("logging", 1, "exclude"),
    # Wallet.
    ("createwallet", 1, "disable_private_keys"),
    ("createwallet", 2, "blank"),
    ("createwallet", 4, "avoid_reuse"),
    ("createwallet", 5, "descriptors"),
    ("createwallet", 6, "load_on_startup"),
    ("loadwallet", 1, "load_on_startup"),
    ("unloadwallet", 1, "load_on_startup"),
    ("restorewallet", 2, "load_on_startup"),
    ("getbalance", 1, "minconf"),
    ("getbalance", 2, "include_watchonly"),
    ("getbalance", 3, "avoid_reuse"),
    ("getreceivedbyaddress", 1, "minconf"),
    ("getreceivedbylabel", 1, "minconf"),
    ("listreceivedbyaddress", 0, "minconf"),
    ("listreceivedbyaddress", 1, "include_empty"),
    ("listreceivedbyaddress", 2, "include_watchonly"),
    ("listreceivedbylabel", 0, "minconf"),
    ("listreceivedbylabel", 1, "include_empty"),
    ("listreceivedbylabel", 2, "include_watchonly"),
    ("listtransactions", 1, "count"),
    ("listtransactions", 2, "skip"),
    ("listtransactions", 3, "include_watchonly"),
    ("listsinceblock", 1, "target_confirmations"),
    ("listsinceblock", 2, "include_watchonly"),
    ("listsinceblock", 3, "include_removed"),
    ("gettransaction", 1, "include_watchonly"),
    ("gettransaction", 2, "verbose"),
    ("listunspent", 0, "minconf"),
    ("listunspent", 1, "maxconf"),
    ("listunspent", 2, "addresses"),
    ("listunspent", 3, "include_unsafe"),
    ("listunspent", 4, "query_options"),
    ("lockunspent", 0, "unlock"),
    ("lockunspent", 1, "transactions"),
    ("lockunspent", 2, "persistent"),
    ("sendtoaddress", 1, "amount"),
    ("sendtoaddress", 4, "subtractfeefromamount"),
    ("sendtoaddress", 5, "replaceable"),
    ("sendtoaddress", 6, "conf_target"),
    ("sendtoaddress", 8, "avoid_reuse"),
    ("sendtoaddress", 9, "fee_rate"),
    ("sendtoaddress", 10, "verbose"),
    ("sendmany", 1, "amounts"),
    ("sendmany", 2, "minconf"),
    ("sendmany", 4, "subtractfeefrom"),
    ("sendmany", 5, "replaceable"),
    ("sendmany", 6, "conf_target"),
    ("sendmany", 8, "fee_rate"),
    ("sendmany", 9, "verbose"),
    ("settxfee", 0, "amount"),
    ("fundrawtransaction", 1, "options"),
    ("signrawtransactionwithwallet", 1, "prevtxs"),
    ("bumpfee", 1, "options"),
    ("walletpassphrase", 1, "timeout"),
    ("keypoolrefill", 0, "newsize"),
    ("rescanblockchain", 0, "start_height"),
    ("rescanblockchain", 1, "stop_height"),
    ("importprivkey", 2, "rescan"),
    ("importaddress", 2, "rescan"),
    ("importaddress", 3, "p2sh"),
    ("importpubkey", 2, "rescan"),
    ("importdescriptors", 0, "requests"),
    ("listdescriptors", 0, "private"),
    ("setwalletflag", 1, "value"),
    # Echo with conversion, for testing.
    *(("echojson", i, f"arg{i}") for i in range(10)),
)
_CONVERT_BY_INDEX = {(m, i) for m, i, _ in CONVERT_PARAMS}
_CONVERT_BY_NAME = {(m, n) for m, _, n in CONVERT_PARAMS}

# Options: name -> takes a value (False: a switch, -name or -noname).
OPTIONS: dict[str, bool] = {
    "?": False, "h": False, "help": False, "version": False,
    "conf": True, "datadir": True, "chain": True, "regtest": False, "testnet": False,
    "rpcconnect": True, "rpcport": True, "rpcuser": True, "rpcpassword": True, "rpccookiefile": True,
    "rpcwallet": True, "rpcclienttimeout": True, "rpcwait": False, "rpcwaittimeout": True,
    "named": False, "stdin": False, "stdinrpcpass": False, "stdinwalletpassphrase": False,
    "getinfo": False, "netinfo": False, "generate": False,
}

USAGE = f"""\
CleanCoin RPC client version {{version}}

Usage:  {PROG} [options] <command> [params]  Send command to CleanCoin
or:     {PROG} [options] -named <command> [name=value]...  Send command to CleanCoin (with named arguments)
or:     {PROG} [options] help                List commands
or:     {PROG} [options] help <command>      Get help for a command

Options:

  -?, -h, -help
       Print this help message and exit

  -conf=<file>
       Specify configuration file. Relative paths will be prefixed by datadir
       location. (default: {rpcconf.CONF_FILENAME})

  -datadir=<dir>
       Specify data directory (default: ~/.cleancoin)

  -generate
       Generate blocks, equivalent to RPC getnewaddress followed by RPC
       generatetoaddress. Optional positional integer arguments are number
       of blocks to generate (default: 1) and maximum iterations to try
       (default: 1000000), equivalent to RPC generatetoaddress nblocks and
       maxtries arguments. Example: {PROG} -generate 4 1000

  -getinfo
       Get general information from the remote server. Note that unlike
       server-side RPC calls, the output of -getinfo is the result of
       multiple non-atomic requests. Some entries in the output may represent
       results from different states (e.g. wallet balance may be as of a
       different block from the chain state reported)

  -named
       Pass named instead of positional arguments (default: false)

  -netinfo
       Get network peer connection information from the remote server. An
       optional integer argument from 0 to 4 can be passed for different
       peers listings (default: 0; from 1 on, one line per peer).

  -rpcclienttimeout=<n>
       Timeout in seconds during HTTP requests, or 0 for no timeout. (default: {int(DEFAULT_TIMEOUT)})

  -rpcconnect=<ip>
       Send commands to node running on <ip> (default: {DEFAULT_RPCCONNECT})

  -rpccookiefile=<loc>
       Location of the auth cookie. Relative paths will be prefixed by a
       net-specific datadir location. (default: data dir)

  -rpcpassword=<pw>
       Password for JSON-RPC connections

  -rpcport=<port>
       Connect to JSON-RPC on <port> (default: {rpcconf.DEFAULT_RPC_PORTS["main"]}, testnet: {rpcconf.DEFAULT_RPC_PORTS["test"]}, regtest: {rpcconf.DEFAULT_RPC_PORTS["regtest"]})

  -rpcuser=<user>
       Username for JSON-RPC connections

  -rpcwait
       Wait for RPC server to start

  -rpcwaittimeout=<n>
       Timeout in seconds to wait for the RPC server to start, or 0 for no
       timeout. (default: 0)

  -rpcwallet=<walletname>
       Send RPC for non-default wallet on RPC server (needs to exactly match
       corresponding -wallet option passed to CleanCoind). This changes the
       RPC endpoint used, e.g. http://127.0.0.1:{rpcconf.DEFAULT_RPC_PORTS["main"]}/wallet/<walletname>

  -stdin
       Read extra arguments from standard input, one per line until EOF/Ctrl-D
       (recommended for sensitive information such as passphrases). When
       combined with -stdinrpcpass, the first line from standard input is used
       for the RPC password.

  -stdinrpcpass
       Read RPC password from standard input as a single line. When combined
       with -stdin, the first line from standard input is used for the RPC
       password. When there is no -rpcpassword, the cookie file is used.

  -stdinwalletpassphrase
       Read wallet passphrase from standard input as a single line. When
       combined with -stdin, the first line from standard input is used for the
       wallet passphrase.

  -version
       Print version and exit

Chain selection options:

  -chain=<chain>
       Use the chain <chain> (default: main). Allowed values: {", ".join(rpcconf.CHAINS)}

  -regtest
       Enter regression test mode, which uses a special chain in which blocks
       can be solved instantly.

  -testnet
       Use the test chain. Equivalent to -chain=test.
"""


class CliError(Exception):
    """A failure printed as "error: <message>" (exit 1)."""


class UsageError(Exception):
    """A failure printed as the message itself (exit 1)."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return "v" + version("cleancoin")
    except Exception:  # noqa: BLE001 - only for -version
        return "unknown"


def parse_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """bitcoind-style options up to the first argument without a leading '-'.

    -name=value, -name (a switch: true), -noname (false), --name as -name. The last value given
    wins. Unknown options are an error, as in bitcoin-cli.
    """
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and len(argv[i]) > 1:
        raw = argv[i]
        key, sep, value = raw.lstrip("-").partition("=") if raw.startswith("--") else raw[1:].partition("=")
        negated = False
        if key not in OPTIONS and key.startswith("no") and key[2:] in OPTIONS:
            key, negated = key[2:], True
        if key not in OPTIONS:
            # The name only, as bitcoin-cli: the value of a mistyped -rpcpassword is a password.
            raise UsageError(f"Error parsing command line arguments: Invalid parameter {raw.partition('=')[0]}")
        if negated:
            value = "0" if rpcconf.interpret_bool(value) else "1"
        elif not sep and OPTIONS[key]:
            value = ""
        options[key] = value
        i += 1
    return options, list(argv[i:])


def _bool(options: dict[str, str], name: str) -> bool:
    return name in options and rpcconf.interpret_bool(options[name])


def convert_args(method: str, args: Sequence[str], named: bool) -> Any:
    """Command line strings -> JSON-RPC params, by the conversion table."""

    def value(text: str, convert: bool) -> Any:
        if not convert:
            return text
        try:
            return jsonfmt.loads_decimal(text)
        except ValueError:
            raise CliError(f"Error parsing JSON: {text}") from None

    if not named:
        return [value(a, (method, i) in _CONVERT_BY_INDEX) for i, a in enumerate(args)]
    params: dict[str, Any] = {}
    positional: list[Any] = []
    for arg in args:
        name, sep, text = arg.partition("=")
        if not sep:
            positional.append(value(arg, (method, len(positional)) in _CONVERT_BY_INDEX))
            continue
        params[name] = value(text, (method, name) in _CONVERT_BY_NAME)
    if positional:
        params.setdefault("args", positional)
    return params


def format_result(result: Any) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    return jsonfmt.dumps(result, indent=2)


def format_error(error: RpcError) -> str:
    text = f"error code: {error.code}\nerror message:\n{error.message}"
    if error.code == RPC_WALLET_NOT_SPECIFIED:
        text += (f' Or for the CLI, specify the "-rpcwallet=<walletname>" option before the command'
                 f' (run "{PROG} -h" for help or "{PROG} listwallets" to see which wallets are currently loaded).')
    return text


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise CliError(f"Invalid port provided in {what}: {text}")
    return int(text)


def build_client(options: dict[str, str], stdin_lines: list[str]) -> tuple[RpcClient, str]:
    """The client the options describe, and the conf file path (for messages)."""
    from cleancoin.components.common.options import hide_secrets_from_ps
    hide_secrets_from_ps()
    datadir = options.get("datadir")
    if datadir is not None:
        if not os.path.isdir(datadir):
            raise UsageError(f'Error: Specified data directory "{datadir}" does not exist.')
        datadir = os.path.abspath(datadir)
    else:
        datadir = rpcconf.default_datadir()
    conf_path = options.get("conf") or rpcconf.CONF_FILENAME
    if not os.path.isabs(conf_path):
        conf_path = os.path.join(datadir, conf_path)
    try:
        entries = rpcconf.read_conf(conf_path, required="conf" in options)
    except rpcconf.ConfError as exc:
        raise UsageError(f"Error reading configuration file: {exc}"
                         if not str(exc).startswith("Error") else str(exc)) from None
    try:
        chain = rpcconf.chain_from({k: [v] for k, v in options.items()})
        if chain is None:
            top = {}
            for section, name, val in entries:
                if section is None:
                    top.setdefault(name, []).append(val)
            chain = rpcconf.chain_from(top) or "main"
    except ValueError as exc:
        raise UsageError(f"Error: {exc}") from None
    from_conf = rpcconf.conf_values(entries, chain)
    if options.get("datadir") is None and from_conf.get("datadir"):
        # bitcoind's rule, which client libraries that read the conf file follow too.
        datadir = rpcconf.datadir_from_file(from_conf["datadir"][0], conf_path)
        if not os.path.isdir(datadir):
            raise UsageError(f'Error: Specified data directory "{datadir}" does not exist.')
    try:
        # Its conf file and cookie are believed: not when another user could have put them there.
        rpcconf.refuse_others(datadir, "the data directory")
    except rpcconf.ConfError as exc:
        raise UsageError(f"Error: {exc}") from None

    def setting(name: str, default: str | None = None) -> str | None:
        if name in options:
            return options[name]
        if name in from_conf:
            return from_conf[name][0]
        return default

    connect = setting("rpcconnect", DEFAULT_RPCCONNECT) or DEFAULT_RPCCONNECT
    host, port = _split(connect)
    if port is None:
        port = rpcconf.DEFAULT_RPC_PORTS[chain]
    rpcport = setting("rpcport")
    if rpcport is not None:
        port = _port(rpcport, "-rpcport")
    password = setting("rpcpassword", "") or ""
    if _bool(options, "stdinrpcpass"):
        if not stdin_lines:
            raise CliError("-stdinrpcpass specified but failed to read from standard input")
        password = stdin_lines.pop(0)
    timeout_text = setting("rpcclienttimeout", str(int(DEFAULT_TIMEOUT))) or "0"
    try:
        timeout = float(timeout_text)
    except ValueError:
        raise CliError(f"Invalid -rpcclienttimeout: {timeout_text}") from None
    cookie = rpcconf.cookie_path(datadir, chain, setting("rpccookiefile"))
    try:
        _refuse_planted_cookie(datadir, rpcconf.net_datadir(datadir, chain), cookie)
    except rpcconf.ConfError as exc:
        raise UsageError(f"Error: {exc}") from None
    wallet = setting("rpcwallet")      # set, even to "", means the /wallet/<name> endpoint
    client = RpcClient(host, port, user=setting("rpcuser", "") or "", password=password or None,
                       cookie_path=cookie, wallet=wallet, timeout=timeout)
    client.conf_path_hint = conf_path
    return client, conf_path


def _refuse_planted_cookie(datadir: str, netdatadir: str, cookie: str) -> None:
    """ConfError when another user could have chosen the cookie the CLI sends: the network
    datadir (or a directory or link on the way from the datadir to a cookie in it) is theirs or
    writable by others, or so is the cookie file. Why: the port comes from the datadir's conf
    and the cookie from the network datadir; an attacker who planted `<datadir>/regtest` (a
    link to another node's directory, or a directory of theirs) while they could write the
    datadir has the CLI send that cookie to a port where they listen. Since 12-07 a cookie
    outside the network datadir (-rpccookiefile=/abs/path) is held to the same rule (the node
    writes none where another user could replace it): before, one another user had put in a
    directory their group may write was read, the CLI trusted a listener of its owner on the
    RPC port, and sent them the request (`walletpassphrase` with the passphrase)."""
    rpcconf.refuse_others(netdatadir, "the network data directory")
    # refuse_others also checks who owns each link on the way (a dangling one included).
    if os.path.lexists(cookie):
        rpcconf.refuse_others(os.path.abspath(cookie), "the cookie file")


def _split(text: str) -> tuple[str, int | None]:
    """-rpcconnect: host, host:port, [v6]:port or bare v6; the port None if none was given."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return text, None
        rest = text[end + 1:]
        if rest.startswith(":"):
            return text[1:end], _port(rest[1:], "-rpcconnect")
        return text[1:end], None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, "-rpcconnect")
    return text, None


def call_with_wait(client: RpcClient, method: str, params: Any, wait: bool, wait_timeout: float) -> dict[str, Any]:
    """One request; with -rpcwait, retry every second while the server is down or warming up."""
    deadline = time.monotonic() + wait_timeout if wait_timeout > 0 else None
    while True:
        try:
            reply = client.request(method, params)
            error = reply.get("error")
            if wait and isinstance(error, dict) and error.get("code") == RPC_IN_WARMUP:
                raise RpcConnectionError(client.host, client.port, "server in warmup")
            return reply
        except RpcConnectionError as exc:
            if not wait:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise RpcTransportError(f"timeout on transient error: {exc}") from None
            time.sleep(1.0)


def _amount(value: Any) -> str:
    return f"{value:.8f}"


def getinfo_text(client: RpcClient) -> str:
    """-getinfo: bitcoin-cli's human-readable summary from getblockchaininfo, getnetworkinfo and
    (when the server has a wallet) getwalletinfo / getbalances."""
    chain = client.call("getblockchaininfo")
    net = client.call("getnetworkinfo")
    lines = [f"Chain: {chain['chain']}", f"Blocks: {chain['blocks']}", f"Headers: {chain['headers']}",
             f"Verification progress: {float(chain['verificationprogress']) * 100:.4f}%",
             f"Difficulty: {chain['difficulty']}", "",
             f"Network: in {net['connections_in']}, out {net['connections_out']}, total {net['connections']}",
             f"Version: {net['version']}", f"Time offset (s): {net['timeoffset']}", "Proxies: n/a",
             f"Min tx relay fee rate (coins/kvB): {_amount(net['relayfee'])}", ""]
    try:
        wallets = client.call("listwallets", wallet=None) if client.wallet is None else [client.wallet]
    except RpcError:
        wallets = []       # -disablewallet: no wallet section, as bitcoin-cli
    if len(wallets) == 1:
        info = client.call("getwalletinfo", wallet=wallets[0])
        lines += [f'Wallet: "{info["walletname"]}"', f"Keypool size: {info['keypoolsize']}"]
        if "unlocked_until" in info:
            lines.append(f"Unlocked until: {info['unlocked_until']}")
        lines += [f"Transaction fee rate (-paytxfee) (coins/kvB): {_amount(info['paytxfee'])}", "",
                  f"Balance: {_amount(info['balance'])}", ""]
    elif len(wallets) > 1:
        lines.append("Balances")
        balances = [(client.call("getbalances", wallet=w)["mine"]["trusted"], w) for w in wallets]
        width = max(len(_amount(b)) for b, _ in balances)
        lines += [f"{_amount(b).rjust(width)} {w}" for b, w in balances] + [""]
    warnings = chain.get("warnings") or []
    if isinstance(warnings, str):
        warnings = [warnings] if warnings else []
    lines.append("Warnings: " + ("(none)" if not warnings else "; ".join(warnings)))
    return "\n".join(lines)


def netinfo_text(client: RpcClient, level: int) -> str:
    """-netinfo [level]: bitcoin-cli's peer dashboard: counts by direction and network, and
    from level 1 on one line per peer."""
    net = client.call("getnetworkinfo")
    chain = client.call("getblockchaininfo")["chain"]
    peers = client.call("getpeerinfo")
    networks = ("ipv4", "ipv6")
    lines = [f"CleanCoin client v{_version().lstrip('v')} {chain} - server {net['protocolversion']}"
             f"{net['subversion']}", ""]
    if level >= 1:
        lines.append("<->   type   net  mping   ping send recv  age  id  address  version")
        now = int(time.time())
        for p in peers:
            lines.append(f"{'in' if p['inbound'] else 'out':>3} {p['connection_type']:>6} {p['network']:>5} "
                         f"{1000 * float(p.get('minping', 0)):>6.0f} {1000 * float(p.get('pingtime', 0)):>6.0f} "
                         f"{max(0, now - p['lastsend']):>4} {max(0, now - p['lastrecv']):>4} "
                         f"{max(0, now - p['conntime']) // 60:>4} {p['id']:>3}  {p['addr']}  {p['version']}{p['subver']}")
        lines.append("")
    counts = {(d, n): 0 for d in ("in", "out") for n in networks}
    manual = 0
    for p in peers:
        counts[("in" if p["inbound"] else "out", p["network"] if p["network"] in networks else "ipv4")] += 1
        manual += 1 if p["connection_type"] == "manual" else 0
    lines.append("        ipv4    ipv6   total   block  manual")
    for direction in ("in", "out"):
        total = sum(counts[(direction, n)] for n in networks)
        row = f"{direction:<5}" + "".join(f"{counts[(direction, n)]:>8}" for n in networks) + f"{total:>8}"
        if direction == "out":
            row += f"{0:>8}{manual:>8}"
        lines.append(row)
    lines.append("total" + "".join(f"{counts[('in', n)] + counts[('out', n)]:>8}" for n in networks)
                 + f"{len(peers):>8}")
    lines += ["", "Local addresses: n/a"]
    return "\n".join(lines)


def generate(client: RpcClient, args: Sequence[str]) -> dict[str, Any]:
    """-generate [nblocks] [maxtries]: getnewaddress, then generatetoaddress to it."""
    if len(args) > 2:
        raise CliError("too many arguments (maximum 2 for nblocks and maxtries)")
    numbers = []
    for name, text in zip(("nblocks", "maxtries"), args):
        try:
            numbers.append(int(text))
        except ValueError:
            raise CliError(f"Error parsing JSON: {text} ({name} must be an integer)") from None
    address = client.call("getnewaddress")
    return {"address": address, "blocks": client.call("generatetoaddress", numbers[0] if numbers else 1,
                                                      address, *numbers[1:])}


def run_helper(options: dict[str, str], client: RpcClient, args: Sequence[str]) -> tuple[int, str, str]:
    """-getinfo, -netinfo, -generate (bitcoin-cli's request handlers over several calls)."""
    try:
        if _bool(options, "getinfo"):
            if args:
                raise CliError("-getinfo takes no arguments")
            return 0, getinfo_text(client) + "\n", ""
        if _bool(options, "netinfo"):
            if len(args) > 1 or (args and not args[0].isdigit()):
                raise CliError("-netinfo takes one optional argument, the level (0 to 4)")
            return 0, netinfo_text(client, min(4, int(args[0]) if args else 0)) + "\n", ""
        return 0, format_result(generate(client, args)) + "\n", ""
    except RpcError as err:
        return abs(err.code), "", format_error(err) + "\n"
    except (CliError, RpcTransportError) as exc:
        return 1, "", f"error: {exc}\n"


def run(argv: Sequence[str], stdin: Any = None) -> tuple[int, str, str]:
    """The whole command: (exit status, stdout text, stderr text)."""
    from cleancoin.components.common.command_line_secrets import read_options_fd
    try:
        # -optionsfd=N: the `CleanCoin` wrapper's secret options, off the command line, and
        # a method that takes a passphrase or a key with its parameters.
        argv = read_options_fd(argv, arguments=True)
    except ValueError as exc:
        return 1, "", f"Error: {exc}\n"
    try:
        options, args = parse_options(argv)
    except UsageError as exc:
        return 1, "", f"{exc}\n"
    if any(k in options for k in ("?", "h", "help")) or "version" in options:
        text = USAGE.format(version=_version())
        if "version" in options and not any(k in options for k in ("?", "h", "help")):
            text = text.split("\n", 1)[0] + "\n"
        return 0, text, ""
    helper = any(_bool(options, name) for name in ("getinfo", "netinfo", "generate"))
    if helper:
        try:
            client, _ = build_client(options, [])
        except UsageError as exc:
            return 1, "", f"{exc}\n"
        except CliError as exc:
            return 1, "", f"error: {exc}\n"
        return run_helper(options, client, args)
    if not args and not _bool(options, "stdin") and not _bool(options, "stdinrpcpass"):
        return 1, USAGE.format(version=_version()), "Error: too few parameters\n"
    try:
        # bitcoin-cli's order: the RPC password's line, then the wallet passphrase's, then
        # -stdin's arguments. Secrets typed at a terminal are not echoed.
        stream = stdin if stdin is not None else sys.stdin
        password: list[str] = []
        if _bool(options, "stdinrpcpass"):
            password = [_secret_line(stream, "RPC password> ", "-stdinrpcpass")]
        args = list(args)
        if _bool(options, "stdinwalletpassphrase"):
            if not args or not args[0].startswith("walletpassphrase"):
                raise CliError("-stdinwalletpassphrase is only applicable for walletpassphrase(change)")
            args.insert(1, _secret_line(stream, "Wallet passphrase> ", "-stdinwalletpassphrase"))
        if _bool(options, "stdin"):
            args += [line.rstrip("\n").rstrip("\r") for line in stream]
        client, _ = build_client(options, password)
        if not args:
            raise CliError("too few parameters (need at least command)")
        method, method_args = args[0], args[1:]
        params = convert_args(method, method_args, _bool(options, "named"))
        try:
            wait_timeout = float(options.get("rpcwaittimeout") or 0)
        except ValueError:
            raise CliError(f"Invalid -rpcwaittimeout: {options['rpcwaittimeout']}") from None
        reply = call_with_wait(client, method, params, _bool(options, "rpcwait"), wait_timeout)
    except UsageError as exc:
        return 1, "", f"{exc}\n"
    except (CliError, RpcTransportError) as exc:
        return 1, "", f"error: {exc}\n"
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            err = RpcError.from_json(error)
            return abs(err.code), "", format_error(err) + "\n"
        return 1, "", f"error: {jsonfmt.dumps(error)}\n"
    text = format_result(reply.get("result"))
    return 0, (text + "\n") if text else "", ""


def _secret_line(stream: Any, prompt: str, option: str) -> str:
    """One line of `stream`: at a terminal after `prompt` on stderr and without echo, as
    bitcoin-cli reads -stdinrpcpass and -stdinwalletpassphrase (a passphrase given as an
    argument is in the shell's history and, while the call runs, in every local user's
    /proc/PID/cmdline). CliError at end of input."""
    fd = _terminal_fd(stream)
    if fd is None:
        line = stream.readline()
    else:
        import termios
        # Echo off before the prompt: what is typed once the prompt shows is never echoed.
        # TCSANOW, as bitcoin-cli: a flush would drop a line typed ahead (and race a caller
        # that answers the prompt at once).
        saved = termios.tcgetattr(fd)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            sys.stderr.write(prompt)
            sys.stderr.flush()
            line = stream.readline()
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
            sys.stdout.write("\n")
            sys.stdout.flush()
    if not line:
        raise CliError(f"{option} specified but failed to read from standard input")
    return str(line).rstrip("\n").rstrip("\r")


def _terminal_fd(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


def main(argv: Sequence[str] | None = None) -> int:
    """The CleanCoin-cli script. What the server answered is written with its control
    characters shown as \\xNN (newlines and tabs kept): the node may be compromised, and an
    escape sequence in a string result or an error message would otherwise reach the
    operator's terminal (retitle it, clear it, rewrite what was printed before)."""
    from cleancoin.sandbox.stdio import visible
    if argv is None:
        # The RPC password and a -stdinwalletpassphrase line are in this process's memory.
        from cleancoin.cli.private_memory import keep_memory_private
        keep_memory_private()
    status, out, err = run(sys.argv[1:] if argv is None else argv)
    if out:
        sys.stdout.write(visible(out, lines=True))
        sys.stdout.flush()
    if err:
        sys.stderr.write(visible(err, lines=True))
        sys.stderr.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
