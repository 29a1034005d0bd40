"""Command-line options in bitcoind's style, for the daemons (CleanCoind, CleanCoin-node, ...).

`-name=value`, `-name` (true), `-noname` (false; `-noname=0` is the double negative, true),
repeatable options keep every value and a negation drops the values before it; the command
line overrides CleanCoin.conf, whose network sections apply to that network only
(components/common/conf.py). As in bitcoind, an option no table knows is an error on the command
line and only a warning in the conf file ("Ignoring unknown configuration value X", logged to
debug.log), so a conf file that still holds bitcoind-only settings does not stop the node.
-help is generated from the same table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import command_line_secrets, conf
from .amount import parse_amount
from .fee_cap import DEFAULT_MAX_TX_FEE, MIN_RELAY_FEE_RATE, fee_rate_text


class OptionError(ValueError):
    """A bad command line or conf file; the message is the one to print."""


@dataclass(frozen=True)
class Option:
    """One -name option: its help text, -help category and placeholder, and default."""

    name: str
    help: str
    category: str
    value: str = ""            # placeholder in -help: "<n>", "<dir>", "" for flags
    default: str | None = None


def parse_args(argv: Sequence[str]) -> dict[str, list[str]]:
    """argv (without the program) into name -> values; `-X` is X=1, `-noX` (and `-noX=1`) is
    X negated (conf.NEGATED, which reads "0"), `-noX=0` is X=1, as bitcoind's InterpretValue."""
    values: dict[str, list[str]] = {}
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise OptionError(f"Command line contains unexpected token '{arg}', see -help for a list of options.")
        name, sep, value = arg.lstrip("-").partition("=")
        name, value = conf.interpret_negation(name, value if sep else None)
        values.setdefault(name, []).append(value)
    return values


@dataclass(frozen=True)
class Settings:
    """The options in force: the command line over the conf file, for one network."""

    chain: str
    datadir: str
    cmdline: Mapping[str, Sequence[str]]
    file: Mapping[str, Sequence[str]]
    #: Conf-file settings no table knows: logged as warnings once logging is set up.
    warnings: Sequence[str] = ()
    #: The conf file's path (read or not: -noconf, or absent), as resolved at start-up.
    conf_path: str = ""

    @property
    def netdatadir(self) -> str:
        return conf.net_datadir(self.datadir, self.chain)

    def get(self, name: str, default: str | None = None) -> str | None:
        """As bitcoind: the command line's last value, else the conf file's first."""
        if self.cmdline.get(name):
            return self.cmdline[name][-1]
        if self.file.get(name):
            return self.file[name][0]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a repeatable option (-addnode, -debug): the command line's if any,
        those after the last negation (`-nowallet` leaves none)."""
        return conf.effective_values(self.cmdline.get(name) or self.file.get(name) or ())

    def negated_on_cmdline(self, name: str) -> bool:
        """Whether the command line negates `name` anywhere (`-nowallet`): bitcoind then ignores
        lower-priority sources of that list, such as the wallets' settings.json."""
        return any(isinstance(v, conf.Negated) for v in self.cmdline.get(name, ()))

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.get(name)
        return default if value is None else conf.interpret_bool(value)

    def get_int(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise OptionError(f"Invalid value for -{name}: '{value}' is not a number") from None


#: The -sysperms option, in the table of every executable that writes into a datadir.
SYSPERMS_OPTION = Option(
    "sysperms", "Create new files with system default permissions, instead of umask 077 (wallets, "
    "cookies and sockets stay private either way)", "Options")


#: -rpcwhitelist and -rpcwhitelistdefault in bitcoind's words, for every executable with a
#: JSON-RPC server (CleanCoind, CleanCoin-node, the standalone CleanCoin-wallet's -server);
#: here, not beside RpcWhitelist, so that parsing options imports nothing of the RPC server.
RPC_WHITELIST_OPTIONS: tuple[Option, ...] = (
    Option("rpcwhitelist", "Set a whitelist to filter incoming RPC calls for a specific user. The field "
           "<whitelist> comes in the format: <USERNAME>:<rpc 1>,<rpc 2>,...,<rpc n>. If multiple "
           "whitelists are set for a given user, they are set-intersected. See -rpcwhitelistdefault "
           "documentation for information on default whitelist behavior.", "RPC server options",
           "<whitelist>"),
    Option("rpcwhitelistdefault", "Sets default behavior for rpc whitelisting. Unless rpcwhitelistdefault "
           "is set to 0, if any -rpcwhitelist is set, the rpc server acts as if all rpc users are subject "
           "to empty-unless-otherwise-specified whitelists. If rpcwhitelistdefault is set to 1 and no "
           "-rpcwhitelist is set, rpc server acts as if all rpc users are subject to empty whitelists.",
           "RPC server options"),
)


#: -allowlocalpeer: a peer endpoint on this host that the node may connect to. Outgoing P2P
#: connections to this host's own addresses (loopback, 0.0.0.0, link-local, its interfaces')
#: are refused unless named at start by -connect, -addnode or this option, and so (since
#: 12-07) are cloud providers' metadata services (components/node/connect_rule.py, docs/node.md).
ALLOW_LOCAL_PEER_OPTION = Option(
    "allowlocalpeer", "Allow outgoing P2P connections to <host:port> on this host (loopback, link-local or "
    "an address of this host) or at a cloud provider's metadata service address (fd00:ec2::254, "
    "100.100.100.200, 168.63.129.16, ...), for nodes added later with the addnode RPC; a port range "
    "host:<low>-<high> names several. -connect and -addnode endpoints are allowed already; every other "
    "such address is refused by the connect rule. Repeatable; fixed at start.",
    "Connection options", "<host:port>")


MAX_TX_FEE_OPTION = Option(
    "maxtxfee", "Maximum total fees (in coins) to use in a single wallet transaction; setting this too low "
    "may abort large transactions. A wallet process of CleanCoin-node takes it from the node's options "
    "as the node starts, never later from the node.", "Wallet options", "<amt>", "0.10")


def max_tx_fee(settings: Settings) -> int:
    """-maxtxfee in units (default fee_cap.DEFAULT_MAX_TX_FEE); OptionError with bitcoind's
    messages for a value that is not an amount or is below the minimum relay fee rate."""
    value = settings.get("maxtxfee")
    if value is None:
        return DEFAULT_MAX_TX_FEE
    try:
        units = parse_amount(value)
    except ValueError:
        raise OptionError(f"Invalid amount for -maxtxfee=<amount>: '{value}'") from None
    if units < MIN_RELAY_FEE_RATE:
        raise OptionError(f"Invalid amount for -maxtxfee=<amount>: '{value}' (must be at least the minrelay "
                          f"fee of {fee_rate_text(MIN_RELAY_FEE_RATE)} to prevent stuck transactions)")
    return units


MINIMUM_CHAIN_WORK_OPTION = Option(
    "minimumchainwork", "Minimum work assumed to exist on a valid chain in hex: below it the node is in "
    "initial block download, stores no branch's headers and downloads no block of a chain below it "
    "(headers first), and a wallet takes no anchor from the "
    "chain (default: the network's, 0 on regtest; docs/node.md). A wallet process of CleanCoin-node "
    "takes it from the node's options as the node starts, never later from the node.",
    "Debugging/Testing options", "<hex>")


def minimum_chain_work(settings: Settings) -> int | None:
    """-minimumchainwork as a number (None when not given: the network's value); OptionError
    with bitcoind's message for a value that is not hex."""
    from .chainparams import parse_minimum_chain_work
    value = settings.get("minimumchainwork")
    if value is None:
        return None
    try:
        return parse_minimum_chain_work(value)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def whitelist_default(settings: Settings) -> bool | None:
    """-rpcwhitelistdefault as given (None when it is not: on with any -rpcwhitelist)."""
    return None if settings.get("rpcwhitelistdefault") is None else settings.get_bool("rpcwhitelistdefault", False)


def apply_umask(settings: Settings) -> None:
    """bitcoind's rule: whatever this process creates (logs, databases, pid file, directories)
    is private to its user (umask 077), unless -sysperms. Called before anything is created;
    processes forked later (the zygote, the wallet process) inherit it."""
    if not settings.get_bool("sysperms", False):
        os.umask(0o077)


def positive_seconds(settings: Settings, name: str, default: float) -> float:
    """-name=<seconds>: a number above 0 (OptionError otherwise)."""
    value = settings.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise OptionError(f"Invalid value for -{name}: '{value}' is not a number") from None
    if not 0 < seconds < float("inf"):
        raise OptionError(f"Invalid value for -{name}: '{value}' (it must be more than 0 seconds)")
    return seconds


#: Options whose value is a secret (command_line_secrets.py hides them from ps).
SECRET_OPTIONS = command_line_secrets.SECRET_OPTIONS


def hide_secrets_from_ps() -> None:
    """Rewrite this process's command line with each secret as *** (command_line_secrets.masked:
    SECRET_OPTIONS' values, a wallet passphrase method's parameters). The executables' entry points (cli/entry.py) have done so before their first import;
    this covers the other ways in (`python -m`, a test calling `main`)."""
    command_line_secrets.hide_from_ps()


def load_settings(argv: Sequence[str], table: Iterable[Option]) -> Settings:
    """Parse the command line, read the conf file, check every name against `table`.

    An -optionsfd=N among `argv` is replaced by the options read from descriptor N
    (command_line_secrets.read_options_fd: how the GUI and the `CleanCoin` wrapper hand over
    the secret ones). The conf file is `-conf` (default CleanCoin.conf), a relative path taken in the command
    line's datadir (or the default one). A `datadir=` in it selects the data directory when
    the command line gives none, as bitcoind's ReadConfigFiles does."""
    known = {o.name for o in table}
    hide_secrets_from_ps()
    try:
        argv = command_line_secrets.read_options_fd(argv)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    cmdline = parse_args(argv)
    _check_known(cmdline, known)
    datadir = os.path.abspath(os.path.expanduser(cmdline.get("datadir", [conf.default_datadir()])[-1]))
    if "datadir" in cmdline and not os.path.isdir(datadir):
        raise OptionError(f'Specified data directory "{datadir}" does not exist.')
    conf_name = os.path.expanduser(cmdline.get("conf", [conf.CONF_FILENAME])[-1])
    conf_path = conf_name if os.path.isabs(conf_name) else os.path.join(datadir, conf_name)
    try:
        # -noconf: no configuration file at all, as bitcoind.
        no_conf = isinstance(cmdline.get("conf", [""])[-1], conf.Negated)
        entries = [] if no_conf else conf.read_conf(conf_path, required="conf" in cmdline)
    except conf.ConfError as exc:
        raise OptionError(str(exc)) from None
    try:
        chain = conf.chain_from(cmdline) or conf.chain_from(conf.conf_values(entries, "main")) or "main"
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    from_file = conf.conf_values(entries, chain)
    if "datadir" not in cmdline and from_file.get("datadir"):
        datadir = conf.datadir_from_file(from_file["datadir"][0], conf_path)
        if not os.path.isdir(datadir):
            raise OptionError(f'Specified data directory "{datadir}" does not exist.')
    # Every unknown key of the file, in any section, named as written (bitcoind's wording).
    warnings = list(dict.fromkeys(f"Ignoring unknown configuration value {f'{section}.' if section else ''}{name}"
                                  for section, name, _ in entries if name not in known))
    from_file = {name: values for name, values in from_file.items() if name in known}
    try:
        conf.refuse_others(datadir, "the data directory")
    except conf.ConfError as exc:
        raise OptionError(str(exc)) from None
    # Used by its real path: a sandbox's view holds real paths only, so a datadir reached
    # through the operator's link (~/.cleancoin -> /mnt/disk/cleancoin) would not be found
    # by its linked path once a process is confined.
    return Settings(chain, os.path.realpath(datadir), cmdline, from_file, warnings, conf_path)


def _check_known(values: Mapping[str, object], known: set[str]) -> None:
    for name in values:
        if name not in known:
            raise OptionError(f"Error parsing command line arguments: Invalid parameter -{name}")


def log_settings_warnings(settings: Settings, log: logging.Logger) -> None:
    """The conf-file warnings of load_settings, to the log (once logging is set up)."""
    for warning in settings.warnings:
        log.warning("%s", warning)


def version_text(title: str) -> str:
    """-version: "<title> version v<version>" and the licence lines, as bitcoind prints them."""
    return (f"{title} version v{package_version()}\n"
            "Copyright (C) The CleanCoin developers\n\n"
            "Please contribute if you find CleanCoin useful.\n\n"
            "Distributed under the MIT software license.\n")


def package_version() -> str:
    """The installed cleancoin package's version ("unknown" when not installed)."""
    try:
        from importlib.metadata import version
        return version("cleancoin")
    except Exception:  # noqa: BLE001 - only for messages
        return "unknown"


def wants(args: Sequence[str], *names: str) -> bool:
    """Whether the command line asks for one of the informational options (-help, -version)."""
    return any(a.startswith("-") and a.lstrip("-").split("=")[0] in names for a in args)


def help_text(program: str, summary: str, table: Iterable[Option]) -> str:
    """-help: the options grouped by category, in table order."""
    lines = [f"{program}\n\n{summary}\n\nUsage: {program} [options]\n"]
    categories: dict[str, list[Option]] = {}
    for option in table:
        categories.setdefault(option.category, []).append(option)
    for category, options in categories.items():
        lines.append(f"{category}:\n")
        for option in options:
            head = f"  -{option.name}" + (f"={option.value}" if option.value else "")
            default = f" (default: {option.default})" if option.default is not None else ""
            lines.append(f"{head}\n       {option.help}{default}\n")
    return "\n".join(lines)
