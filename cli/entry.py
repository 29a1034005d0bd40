"""The executables' entry points (pyproject's [project.scripts]).

Each one first hides the secrets on its own command line from other local users
(components/common/command_line_secrets.py: -rpcpassword=..., -rpcauth=..., -ipcauth=..., the
parameters of a wallet passphrase or key method given to CleanCoin-cli or `CleanCoin rpc`),
and only then imports its executable's module. Those imports (the node, the RPC client, the
sandbox) took 20 to 80 ms of CPU during which the secret stayed readable in
/proc/PID/cmdline; now the window is the interpreter's own start and setproctitle's import
(docs/node.md, "Secrets on the command line"). Nothing here imports typing: 15 ms more.
Before that, PYTHONPATH's relative entries leave the import path (sandbox/import_path.py: its .pth
file did already, where the installation has it), so that nothing imported from here on can
come from the working directory.
"""

from __future__ import annotations


def _hide() -> None:
    from cleancoin.sandbox.import_path import drop_relative
    drop_relative()
    from cleancoin.components.common.command_line_secrets import hide_from_ps
    hide_from_ps()


def cleancoind() -> None:
    """CleanCoind."""
    _hide()
    from cleancoin.cli.node_main import script
    script()


def cleancoin_node() -> None:
    """CleanCoin-node."""
    _hide()
    from cleancoin.cli.mp_node_main import script
    script()


def cleancoin_wallet() -> None:
    """CleanCoin-wallet."""
    _hide()
    from cleancoin.cli.wallet_main import script
    script()


def cleancoin_cli() -> int:
    """CleanCoin-cli."""
    _hide()
    from cleancoin.cli.cli_main import main
    return main()


def cleancoin() -> int:
    """CleanCoin, the wrapper (it execs the executable, which hides its own)."""
    _hide()
    from cleancoin.cli.wrapper_main import main
    return main()


def cleancoin_qt() -> int:
    """CleanCoin-qt."""
    _hide()
    from cleancoin.cli.gui_main import main_qt
    return main_qt()


def cleancoin_gui() -> int:
    """CleanCoin-gui."""
    _hide()
    from cleancoin.cli.gui_main import main_gui
    return main_gui()
