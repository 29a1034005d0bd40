"""CleanCoin-qt and CleanCoin-gui: the graphical wallet, classic and multiprocess.

    CleanCoin-qt  -regtest -datadir=DIR      node, wallet and window in one process
    CleanCoin-gui -regtest -datadir=DIR      the window sandboxed; the node (and its wallet
                                             process) in CleanCoin-node, spawned or attached

Both take CleanCoind's options (cli/node_main.py; CleanCoin-gui also CleanCoin-node's
-sandbox and -ipc* ones, passed on to the node it starts) and bitcoin-qt's:

    -min                 start minimized
    -resetguisettings    forget the window's settings (geometry, selected wallet, datadir)
    -choosedatadir       ask for the data directory at start (remembered in the settings)

CleanCoin-gui's -ipcconnect names the node to attach to, as bitcoin-gui's: `auto` (the
default) uses `<netdatadir>/node.sock` when a node answers there and starts one otherwise,
-noipcconnect always starts one, an address (unix, unix:PATH, tcp:HOST:PORT) must connect.
This module parses the options only; components/init/cleancoin_qt.py and cleancoin_gui.py
wire the processes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from cleancoin.cli import mp_node_main, node_main
from cleancoin.components.common.options import (
    Option, OptionError, Settings, apply_umask, help_text, load_settings, log_settings_warnings, version_text,
    wants,
)

GUI_OPTIONS: list[Option] = [
    Option("min", "Start minimized", "UI Options"),
    Option("resetguisettings", "Reset all settings changed in the GUI", "UI Options"),
    Option("choosedatadir", "Choose data directory on startup", "UI Options", "", "0"),
    Option("guiplatform", "Display server of the window: auto (Wayland when its socket is there, else "
           "X11), wayland (must be there) or x11. CleanCoin-gui's confined window on Wayland cannot "
           "reach X11 at all", "UI Options", "<auto|wayland|x11>", "auto"),
]
#: Options of the GUI itself, never passed to a node it starts.
GUI_ONLY = {"min", "resetguisettings", "choosedatadir", "ipcconnect", "printtoconsole", "guiplatform"}

QT_OPTIONS: list[Option] = [*node_main.OPTIONS, *GUI_OPTIONS]
GUI_PROCESS_OPTIONS: list[Option] = [
    *[o for o in mp_node_main.OPTIONS if o.name != "ipcconnect" and o.name != "ipcfd"],
    Option("ipcconnect", "Attach to a running CleanCoin-node: auto (<netdatadir>/node.sock when a node "
           "answers, else start one), unix, unix:PATH or tcp:HOST:PORT (must connect); -noipcconnect "
           "always starts one", "IPC options", "<address>", "auto"),
    *GUI_OPTIONS,
]


def _fail(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _datadir_args(args: list[str]) -> list[str]:
    """-choosedatadir and the datadir remembered in the settings: as a -datadir argument,
    unless the command line names one."""
    if any(a.lstrip("-").startswith("datadir=") for a in args):
        return args
    from cleancoin.components.init.cleancoin_qt import choose_datadir, remembered_datadir
    if any(a.lstrip("-") in ("choosedatadir", "choosedatadir=1") for a in args):
        chosen = choose_datadir()
        if chosen is None:
            raise OptionError("no data directory chosen")
        return [*args, f"-datadir={chosen}"]
    remembered = remembered_datadir()
    return [*args, f"-datadir={remembered}"] if remembered else args


def _prepare(prog: str, summary: str, table: list[Option], argv: Sequence[str] | None) -> Settings | int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants(args, "help", "?", "h"):
        print(help_text(prog, summary, table))
        return 0
    if wants(args, "version"):
        print(version_text(prog), end="")
        return 0
    try:
        import PySide6  # noqa: F401 - is the gui extra installed?
    except ImportError:
        return _fail(f"{prog} needs PySide6, the package's 'gui' extra: pip install 'cleancoin[gui]'")
    from cleancoin.components.common.conf import ConfError, make_dirs
    from cleancoin.components.init.cleancoin_qt import check_qt
    broken = check_qt()
    if broken is not None:
        return _fail(broken)
    try:
        # Before anything reads it: what lies there chooses the data directory (and so the
        # conf file, and whether the node is confined), and CleanCoin-qt reads it unconfined.
        from cleancoin.components.init.cleancoin_qt import check_settings_dir
        check_settings_dir()
        if any(a.lstrip("-").startswith("resetguisettings") for a in args):
            from cleancoin.components.init.cleancoin_qt import forget_datadir
            forget_datadir()
        args = _datadir_args(args)
        settings = load_settings(args, table)
    except (OptionError, ConfError) as exc:
        return _fail(str(exc))
    apply_umask(settings)
    try:
        # As CleanCoind: made and checked on descriptors, never a directory another user
        # made or may write (its conf, cookie, node.sock and wallets would be theirs).
        make_dirs(settings.netdatadir, "the data directory")
    except ConfError as exc:
        return _fail(str(exc))
    return settings


def _options(settings: Settings) -> "object":
    from cleancoin.components.init.cleancoin_qt import GuiOptions
    return GuiOptions(minimized=settings.get_bool("min", False),
                      reset_settings=settings.get_bool("resetguisettings", False),
                      platform=settings.get("guiplatform", "auto") or "auto")


def main_qt(argv: Sequence[str] | None = None) -> int:
    """Entry point of CleanCoin-qt."""
    started = time.monotonic()
    if argv is None:
        # Node, wallets and window unconfined in one process: passphrases and keys.
        from cleancoin.cli.private_memory import keep_memory_private
        keep_memory_private()
        from cleancoin.cli.terminal import show_others_text_escaped
        show_others_text_escaped()      # refusals name others' files; the console logs others' text
    settings = _prepare("CleanCoin-qt", "CleanCoin's graphical wallet: node, wallet and window in one "
                        "process.", QT_OPTIONS, argv)
    if isinstance(settings, int):
        return settings
    try:
        config = node_main.build_config(settings)
    except OptionError as exc:
        return _fail(str(exc))
    from cleancoin.components.common.private_files import UnsafeFileError
    try:
        node_main.setup_logging(_quiet(settings), settings.netdatadir)
    except UnsafeFileError as exc:
        return _fail(str(exc))
    log = logging.getLogger("cleancoin.gui")
    log.info("CleanCoin-qt starting: chain=%s datadir=%s pid=%d", settings.chain, settings.netdatadir, os.getpid())
    log_settings_warnings(settings, log)
    from cleancoin.components.init import cleancoin_qt
    code = cleancoin_qt.run(config, _options(settings), [sys.argv[0]])  # type: ignore[arg-type]
    log.info("CleanCoin-qt exiting after %.1f s", time.monotonic() - started)
    return code


def main_gui(argv: Sequence[str] | None = None) -> int:
    """Entry point of CleanCoin-gui."""
    if argv is None:
        # The window holds what is typed into it (passphrases) and the node's options
        # (-rpcpassword): unconfined under -sandbox=0, and until it confines itself otherwise.
        from cleancoin.cli.private_memory import keep_memory_private
        keep_memory_private()
        from cleancoin.cli.terminal import show_others_text_escaped
        show_others_text_escaped()      # refusals name others' files; the console logs others' text
    from cleancoin.components.common.command_line_secrets import read_options_fd
    try:
        # Read once, here: the node it starts gets them in a pipe of its own (spawn_node).
        args = read_options_fd(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        return _fail(str(exc))
    settings = _prepare("CleanCoin-gui", "CleanCoin's graphical wallet, multiprocess: the window in a "
                        "sandboxed process of its own, the node in CleanCoin-node.", GUI_PROCESS_OPTIONS, args)
    if isinstance(settings, int):
        return settings
    try:
        import capnp  # noqa: F401
    except ImportError:
        return _fail("CleanCoin-gui needs pycapnp, the package's 'multiprocess' extra")
    from cleancoin.components.ipc.address import AddressError
    from cleancoin.components.ipc.settings import parse_settings
    try:
        node_main.build_config(settings)            # the node would refuse these: say so now
        connect = settings.get("ipcconnect", "auto")
        values = {name: list(settings.get_all(name)) for name in
                  ("ipcauth", "ipccert", "ipckey", "debug", "debugexclude")}
        values["ipcconnect"] = [] if connect in ("0", None) or settings.negated_on_cmdline("ipcconnect") \
            else [connect if connect not in ("1", "") else "unix"]
        ipc = parse_settings(values)
    except (OptionError, AddressError) as exc:
        return _fail(str(exc))
    from cleancoin.components.common.private_files import UnsafeFileError
    from cleancoin.components.init.cleancoin_gui import setup_logging
    try:
        setup_logging(settings.chain, settings.get_bool("printtoconsole", False), list(settings.get_all("debug")))
    except UnsafeFileError as exc:
        return _fail(str(exc))
    log = logging.getLogger("cleancoin.gui")
    log.info("CleanCoin-gui starting: chain=%s datadir=%s pid=%d", settings.chain, settings.netdatadir, os.getpid())
    node_args = [a for a in _all_args(args) if a.lstrip("-").split("=")[0].removeprefix("no") not in GUI_ONLY]
    node_args.append("-printtoconsole=0")
    from cleancoin.components.init import cleancoin_gui
    return cleancoin_gui.run(node_args, ipc, settings.netdatadir, settings.chain, _options(settings),  # type: ignore[arg-type]
                             [sys.argv[0]], sandbox=settings.get_bool("sandbox", True),
                             learn_dir=os.path.abspath(learn) if (learn := settings.get("sandboxlearn")) else None)


def _all_args(args: list[str]) -> list[str]:
    """The command line as a started node gets it, the datadir remembered by the GUI included."""
    try:
        return _datadir_args([a for a in args if a.lstrip("-") not in ("choosedatadir", "choosedatadir=1")])
    except OptionError:
        return args


def _quiet(settings: Settings) -> Settings:
    """CleanCoin-qt prints nothing to the console unless -printtoconsole (as bitcoin-qt)."""
    if settings.get("printtoconsole") is not None:
        return settings
    file = dict(settings.file)
    file["printtoconsole"] = ["0"]
    return Settings(settings.chain, settings.datadir, settings.cmdline, file, settings.warnings)


if __name__ == "__main__":
    sys.exit(main_gui())
