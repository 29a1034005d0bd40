"""CleanCoin-wallet: the offline wallet tool, in bitcoin-wallet's style.

    CleanCoin-wallet -regtest -wallet=alice create
    CleanCoin-wallet -regtest -wallet=alice info
    CleanCoin-wallet -regtest -wallet=alice -dumpfile=/tmp/alice.dump dump
    CleanCoin-wallet -regtest -wallet=bob -dumpfile=/tmp/alice.dump createfromdump

It works on `<netdatadir>/wallets/<name>/wallet.sqlite` directly, without a node. Exit status
0 on success, 1 on any error; errors go to stderr as "Error: ...", as bitcoin-wallet.

A running node: every opener of a wallet (CleanCoind, a CleanCoin-node wallet process, this
tool) takes the wallet's own exclusive lock, `<netdatadir>/wallets/<name>/.lock`
(components/wallet/store.py), and holds it until it closes the wallet. The tool therefore
refuses exactly a wallet that is in use ("... Wallet is already in use by another process"),
and a node cannot load the wallet while the tool works on it. A node running on the same
datadir with *other* wallets loaded is no reason to refuse.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cleancoin.cli.process_exit import run_and_exit
from cleancoin.components.common.options import Option, OptionError, help_text, load_settings, version_text, wants
from cleancoin.components.common.private_files import UnsafeFileError, open_own_input

PROG = "CleanCoin-wallet"

OPTIONS: list[Option] = [
    Option("help", "Print this help message and exit", "Options"),
    Option("?", "Print this help message and exit", "Options"),
    Option("version", "Print version and exit", "Options"),
    Option("conf", "Specify path to read-only configuration file. Relative paths are prefixed "
           "by datadir location.", "Options", "<file>", "CleanCoin.conf"),
    Option("datadir", "Specify data directory", "Options", "<dir>", "~/.cleancoin"),
    Option("wallet", "Specify wallet name (<netdatadir>/wallets/<name>)", "Options", "<name>"),
    Option("dumpfile", "When used with 'dump', writes out the records to this file (which must "
           "not exist). When used with 'createfromdump', loads the records into a new wallet.",
           "Options", "<file>"),
    Option("chain", "Use the chain <chain>: main, test, regtest", "Chain selection options",
           "<chain>", "main"),
    Option("regtest", "Use the regression test chain", "Chain selection options"),
    Option("testnet", "Use the test chain", "Chain selection options"),
]

COMMANDS_HELP = """\
Commands:

  create
       Create a new HD wallet (-wallet=<name>): a new random seed, keypool topped up,
       unencrypted (encrypt it later with the encryptwallet RPC).

  info
       Get wallet info: name, format, encryption, HD, keypool size, transactions,
       address book entries, and the database consistency check.

  dump
       Print out all of the wallet's records to -dumpfile (refuses to overwrite a file;
       created 0600). The records are written as stored: an unencrypted wallet's dump holds
       its plaintext HD seed, an encrypted wallet's holds only the encrypted seed, so no
       passphrase is needed and none is asked for.

  createfromdump
       Create a new wallet (-wallet=<name>, which must not exist yet) from the records in
       -dumpfile, after verifying the dump's checksum and network.
"""

COMMANDS = ("create", "info", "dump", "createfromdump")

PRIVATE_KEYS_WARNING = ("The dumpfile may contain private keys. To ensure the safety of your "
                        "CleanCoin, do not share the dumpfile.")


class ToolError(Exception):
    """An error to print as "Error: <message>" with exit status 1."""


def _help() -> str:
    text = help_text(PROG, "CleanCoin-wallet: an offline tool for creating and interacting "
                     "with CleanCoin wallet files, without a node.", OPTIONS)
    text = text.replace(f"Usage: {PROG} [options]", f"Usage: {PROG} [options] <command>", 1)
    return text + "\n" + COMMANDS_HELP


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options (`-x`) and the other tokens (the command)."""
    options, words = [], []
    for arg in argv:
        (options if arg.startswith("-") and arg not in ("-", "--") else words).append(arg)
    return options, words


def _option_table() -> list[Option]:
    """Ours, plus CleanCoind's names so a shared CleanCoin.conf (rpcuser=, wallet=, ...) is
    accepted; the command line is checked against our own table only."""
    from cleancoin.cli.node_main import OPTIONS as NODE_OPTIONS

    ours = {o.name for o in OPTIONS}
    return OPTIONS + [o for o in NODE_OPTIONS if o.name not in ours]


def _info_lines(name: str, store: object) -> list[str]:
    from cleancoin.components.wallet.store import WalletStore

    assert isinstance(store, WalletStore)
    labels = sum(1 for table, _ in store.rows() if table == "labels")
    problems = store.check()
    _, best = store.best_block
    lines = [
        "Wallet info",
        "===========",
        f"Name: {name}",
        "Format: sqlite",
        "Descriptors: no",
        f"Network: {store.network}",
        f"Encrypted: {'yes' if store.encrypted else 'no'}",
        "HD (hd seed available): yes",
        f"Keypool Size: {store.unused_keys(False)}",
        f"Keypool Size (change): {store.unused_keys(True)}",
        f"Keys derived: {store.next_index(False)} receive, {store.next_index(True)} change",
        f"Transactions: {len(store.transactions())}",
        f"Address Book: {labels}",
        f"Best block height: {best}",
    ]
    if problems:
        lines.append(f"Check: {len(problems)} problem(s)")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("Check: ok")
    return lines


def _run(command: str, chain: str, netdatadir: str, name: str | None,
         dumpfile: str | None) -> None:
    from cleancoin.components.wallet.store import (
        DB_FILENAME, WalletError, WalletStore, create_from_dump, dump_wallet, wallet_dir,
    )

    if not name:
        raise ToolError("Wallet name must be provided (-wallet=<name>).")
    if command in ("dump", "createfromdump") and not dumpfile:
        raise ToolError(f"No dump file provided. To use {command}, -dumpfile=<filename> must "
                        "be provided.")
    try:
        db = wallet_dir(netdatadir, name) / DB_FILENAME
        # Every WalletStore.create/open below takes the wallet's lock (WalletInUse).
        if command == "create":
            from cleancoin.components.wallet.wallet import Wallet

            if db.exists():
                raise ToolError(f"Failed to create database path '{db.parent}'. "
                                "Database already exists.")
            store = WalletStore.create(netdatadir, name, chain)
            try:
                print("Topping up keypool...")
                Wallet(name, store, None).top_up_keypool()  # type: ignore[arg-type]
                print("\n".join(_info_lines(name, store)))
            finally:
                store.close()
        elif command == "info":
            if not db.is_file():
                raise ToolError(f"Failed to load database path '{db.parent}'. "
                                "Path does not exist.")
            with WalletStore.open(netdatadir, name, chain) as store:
                print("\n".join(_info_lines(name, store)))
        elif command == "dump":
            assert dumpfile is not None
            path = os.path.abspath(dumpfile)
            if os.path.lexists(path):
                raise ToolError(f"Dump file {path} already exists. If you are sure this is "
                                "what you want, move it out of the way first.")
            if not db.is_file():
                raise ToolError(f"Failed to load database path '{db.parent}'. "
                                "Path does not exist.")
            with WalletStore.open(netdatadir, name, chain) as store:
                try:
                    dump_wallet(store, path)
                except FileExistsError:
                    raise ToolError(f"Dump file {path} already exists.") from None
            print(PRIVATE_KEYS_WARNING)
        elif command == "createfromdump":
            assert dumpfile is not None
            path = os.path.abspath(dumpfile)
            if not os.path.isfile(path):
                raise ToolError(f"Dump file {path} does not exist.")
            if db.exists():
                raise ToolError(f"Failed to create database path '{db.parent}'. "
                                "Database already exists.")
            _check_dump_network(path, chain)
            store = create_from_dump(netdatadir, name, path)
            try:
                print(PRIVATE_KEYS_WARNING)
                print("\n".join(_info_lines(name, store)))
            finally:
                store.close()
    except WalletError as exc:
        raise ToolError(str(exc)) from None
    except OSError as exc:
        raise ToolError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def _check_dump_network(path: str, chain: str) -> None:
    """create_from_dump creates the wallet with the dump's network: refuse one of another
    network here, or it would land in this network's wallets folder."""
    # Read as create_from_dump reads it (never a FIFO, nothing another user could have chosen).
    try:
        with open_own_input(path, "the dump file") as source:
            f = io.TextIOWrapper(source, encoding="utf-8", errors="replace")
            f.readline()
            key, _, network = f.readline().rstrip("\n").partition("=")
    except UnsafeFileError as exc:
        raise ToolError(f"Not created: {exc}") from None
    except FileNotFoundError:
        raise ToolError(f"Dump file {path} does not exist.") from None
    if key == "network" and network != chain:
        raise ToolError(f"Dump file is for network '{network}', not '{chain}'.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the CleanCoin-wallet script; returns (and exits with) the status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        # The offline tool holds every key of the wallet it creates, dumps or loads from a dump;
        # a wallet process for a node (-ipcconnect, -ipcbind) the keys and passphrases of the
        # wallets it serves, unconfined under -sandbox=0 and until it confines itself otherwise.
        from cleancoin.cli.private_memory import keep_memory_private
        keep_memory_private()
    if any(a.startswith(("-ipcconnect", "-ipcbind")) for a in args):
        # Not the offline tool: a wallet process for a node (components/init/cleancoin_wallet.py).
        from cleancoin.components.init import cleancoin_wallet
        return cleancoin_wallet.main(args)
    # A dump file's lines reach the messages: another party's text (cli/terminal.py).
    from cleancoin.cli.terminal import show_others_text_escaped
    show_others_text_escaped()
    options, words = _split(args)
    if wants(options, "help", "?", "h") or not args:
        print(_help())
        return 0
    if wants(options, "version"):
        print(version_text("CleanCoin CleanCoin-wallet utility"), end="")
        return 0
    try:
        known = {o.name for o in OPTIONS}
        for opt in options:
            name = opt.lstrip("-").partition("=")[0]
            if name not in known and not (name.startswith("no") and name[2:] in known):
                raise OptionError("Error parsing command line arguments: Invalid parameter "
                                  f"-{name}")
        settings = load_settings(options, _option_table())
        if not words:
            raise ToolError(f"No method provided. Run `{PROG} -help` for valid methods.")
        if len(words) > 1:
            raise ToolError(f"Additional arguments provided ({' '.join(words[1:])}). "
                            "Methods do not take arguments. Please refer to `-help`.")
        command = words[0]
        if command not in COMMANDS:
            raise ToolError(f"Invalid command '{command}'")
        _run(command, settings.chain, settings.netdatadir, settings.cmdline.get("wallet", [""])[-1],
             settings.cmdline.get("dumpfile", [""])[-1])
    except (OptionError, ToolError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def script() -> NoReturn:
    """The CleanCoin-wallet console script: `main`, then the process ends without the
    interpreter's teardown (cli/process_exit.py), as the node executables do."""
    run_and_exit(main)


if __name__ == "__main__":
    script()
