"""Command-line options in bitcoind's style, for the daemons (CleanCoind, CleanCoin-node, ...).

`-name=value`, `-name` (true), `-noname` (false), repeatable options keep every value; the
command line overrides CleanCoin.conf, whose network sections apply to that network only
(components/rpc/conf.py). An option no table knows is an error, as in bitcoind, and -help is
generated from the same table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cleancoin.components.rpc import conf


class OptionError(ValueError):
    """A bad command line or conf file; the message is the one to print."""


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    category: str
    value: str = ""            # placeholder in -help: "<n>", "<dir>", "" for flags
    default: str | None = None


def parse_args(argv: Sequence[str]) -> dict[str, list[str]]:
    """argv (without the program) into name -> values; `-noX` is X=0, `-X` is X=1."""
    values: dict[str, list[str]] = {}
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise OptionError(f"Command line contains unexpected token '{arg}', see -help for a list of options.")
        name, sep, value = arg.lstrip("-").partition("=")
        if not sep:
            value = "1"
        if name.startswith("no") and not sep:
            name, value = name[2:], "0"
        values.setdefault(name, []).append(value)
    return values


@dataclass(frozen=True)
class Settings:
    """The options in force: the command line over the conf file, for one network."""

    chain: str
    datadir: str
    cmdline: Mapping[str, Sequence[str]]
    file: Mapping[str, Sequence[str]]

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
        """Every value of a repeatable option (-addnode, -debug): the command line's if any."""
        return list(self.cmdline.get(name) or self.file.get(name) or ())

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


def load_settings(argv: Sequence[str], table: Iterable[Option]) -> Settings:
    """Parse the command line, read the conf file, check every name against `table`."""
    known = {o.name for o in table}
    cmdline = parse_args(argv)
    _check_known(cmdline, known, "")
    datadir = os.path.abspath(os.path.expanduser(cmdline.get("datadir", [conf.default_datadir()])[-1]))
    if "datadir" in cmdline and not os.path.isdir(datadir):
        raise OptionError(f'Specified data directory "{datadir}" does not exist.')
    conf_name = cmdline.get("conf", [conf.CONF_FILENAME])[-1]
    conf_path = conf_name if os.path.isabs(conf_name) else os.path.join(datadir, conf_name)
    try:
        entries = conf.read_conf(conf_path, required="conf" in cmdline)
    except conf.ConfError as exc:
        raise OptionError(str(exc)) from None
    try:
        chain = conf.chain_from(cmdline) or conf.chain_from(conf.conf_values(entries, "main")) or "main"
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    from_file = conf.conf_values(entries, chain)
    _check_known(from_file, known, f" in {conf_path}")
    return Settings(chain, datadir, cmdline, from_file)


def _check_known(values: Mapping[str, object], known: set[str], where: str) -> None:
    for name in values:
        if name not in known:
            raise OptionError(f"Error parsing command line arguments: Invalid parameter -{name}{where}")


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
