"""CleanCoin: one entry point for the other executables, as Bitcoin Core's `bitcoin` command.

    CleanCoin node -regtest ...        CleanCoind (or CleanCoin-node, see below)
    CleanCoin -m node -regtest ...     CleanCoin-node, the multiprocess node
    CleanCoin rpc -regtest getblockcount   CleanCoin-cli -named ...
    CleanCoin wallet -wallet=w info    CleanCoin-wallet ...
    CleanCoin gui                      CleanCoin-gui / CleanCoin-qt (not part of CleanCoin yet)

The command is replaced (exec) by the executable, so its exit status, output and signals are
the executable's own. The executable is looked up next to this one (the venv's bin/, or where
pip put the scripts); on PATH only when this one was itself found on PATH, as Core's
ExecCommand does, so a checkout's wrapper never starts a system-wide node by accident.

Which node: `-m`/`--multiprocess` or `-M`/`--monolithic` decide; without either, the node's
own options (command line, then the conf file they name) decide: any -ipcbind, -ipcconnect or
-ipcfd needs the multiprocess executable, as in Core's UseMultiprocess. `rpc` adds -named, as
Core's does (`CleanCoin rpc getblock blockhash=... verbosity=2`; -nonamed turns it off).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from cleancoin.components.common.options import OptionError, package_version, parse_args, version_text
from cleancoin.components.common import conf

PROG = "CleanCoin"

HELP_USAGE = """\
Usage: {exe} [OPTIONS] COMMAND...

Options:
  -m, --multiprocess     Run multiprocess binaries CleanCoin-node, CleanCoin-gui.
  -M, --monolithic       Run monolithic binaries CleanCoind, CleanCoin-qt. (Default behavior)
  -v, --version          Show version information
  -h, --help             Show full help message

Commands:
  gui [ARGS]     Start GUI, equivalent to running 'CleanCoin-qt [ARGS]' or 'CleanCoin-gui [ARGS]'.
  node [ARGS]    Start node, equivalent to running 'CleanCoind [ARGS]' or 'CleanCoin-node [ARGS]'.
  rpc [ARGS]     Call RPC method, equivalent to running 'CleanCoin-cli -named [ARGS]'.
  wallet [ARGS]  Call wallet command, equivalent to running 'CleanCoin-wallet [ARGS]'.
  help           Show full help message.
"""

HELP_FULL = """
Without -m or -M, 'node' and 'gui' run the multiprocess executable when the options (or the
conf file they name) hold -ipcbind, -ipcconnect or -ipcfd, and the monolithic one otherwise.
Bitcoin Core's other commands (tx, util, bench, chainstate, test, test-gui) have no CleanCoin
executable.
"""

HELP_SHORT = "\nRun '{exe} help' to see additional information.\n"

#: Core's commands that have no CleanCoin executable.
NOT_IN_CLEANCOIN = ("tx", "util", "bench", "chainstate", "test", "test-gui")
IPC_OPTIONS = ("ipcbind", "ipcconnect", "ipcfd")


class WrapperError(Exception):
    """Printed as "Error: <message>" with a pointer to --help; exit status 1."""


@dataclass
class CommandLine:
    use_multiprocess: bool | None = None
    show_version: bool = False
    show_help: bool = False
    command: str = ""
    args: list[str] = field(default_factory=list)


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """Core's ParseCommandLine: wrapper options up to the command, the rest is the command's."""
    cmd = CommandLine()
    for arg in argv:
        if cmd.command:
            cmd.args.append(arg)
        elif arg in ("-m", "--multiprocess"):
            cmd.use_multiprocess = True
        elif arg in ("-M", "--monolithic"):
            cmd.use_multiprocess = False
        elif arg in ("-v", "--version"):
            cmd.show_version = True
        elif arg in ("-h", "--help", "help"):
            cmd.show_help = True
        elif arg.startswith("-"):
            raise WrapperError(f"Unknown option: {arg}")
        elif arg:
            cmd.command = arg
    return cmd


def use_multiprocess(cmd: CommandLine) -> bool:
    """-m/-M if given; else whether the command's options or its conf file set an IPC option."""
    if cmd.use_multiprocess is not None:
        return cmd.use_multiprocess
    try:
        cmdline = parse_args([a for a in cmd.args if a.startswith("-")])
    except OptionError as exc:
        print(f"Warning: failed to parse subcommand command line options: {exc}", file=sys.stderr)
        return False
    if any(conf.effective_values(cmdline.get(name, ())) for name in IPC_OPTIONS):
        return True
    datadir = os.path.expanduser(cmdline.get("datadir", [conf.default_datadir()])[-1])
    conf_name = os.path.expanduser(cmdline.get("conf", [conf.CONF_FILENAME])[-1])
    conf_path = conf_name if os.path.isabs(conf_name) else os.path.join(datadir, conf_name)
    try:
        entries = conf.read_conf(conf_path)
        chain = conf.chain_from(cmdline) or conf.chain_from(conf.conf_values(entries, "main")) or "main"
    except (conf.ConfError, ValueError) as exc:
        print(f"Warning: failed to parse subcommand config: {exc}", file=sys.stderr)
        return False
    from_file = conf.conf_values(entries, chain)
    return any(conf.effective_values(from_file.get(name, ())) for name in IPC_OPTIONS)


def target(cmd: CommandLine) -> list[str]:
    """The executable (by name) and its first arguments for `cmd`."""
    if cmd.command == "gui":
        return ["CleanCoin-gui" if use_multiprocess(cmd) else "CleanCoin-qt"]
    if cmd.command == "node":
        return ["CleanCoin-node" if use_multiprocess(cmd) else "CleanCoind"]
    if cmd.command == "rpc":
        return ["CleanCoin-cli", "-named"]
    if cmd.command == "wallet":
        return ["CleanCoin-wallet"]
    if cmd.command in NOT_IN_CLEANCOIN:
        raise WrapperError(f"'{cmd.command}' has no CleanCoin executable (Bitcoin Core's command is not "
                           "part of CleanCoin)")
    raise WrapperError(f"Unrecognized command: '{cmd.command}'")


def find_executable(name: str, wrapper_argv0: str) -> str | None:
    """Next to the wrapper (symlinks resolved), else on PATH if the wrapper was found on PATH."""
    wrapper = wrapper_argv0 if os.sep in wrapper_argv0 else (shutil.which(wrapper_argv0) or wrapper_argv0)
    for directory in dict.fromkeys([os.path.dirname(os.path.abspath(wrapper)),
                                    os.path.dirname(os.path.realpath(wrapper))]):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    if os.sep not in wrapper_argv0:
        return shutil.which(name)
    return None


def _hand_over_secrets(args: list[str], arguments: bool = False) -> list[str]:
    """`args` for the executable, its secret options (-rpcpassword, -rpcauth, -ipcauth) in an
    inherited pipe (-optionsfd, first) instead: the exec would show them on the command line
    again, to every local user, until the executable's entry point hides them (since 12-07;
    this process hid them already, docs/node.md). With `arguments` (CleanCoin-cli's), a
    method that takes a passphrase or a key goes into the pipe too, with its parameters
    (walletpassphrase PASS 60; since 12-07): the -optionsfd then comes last, after the
    options, where the method stood."""
    from cleancoin.components.common.command_line_secrets import OPTIONS_FD, options_pipe, split_secret
    public, secret = split_secret(args, arguments)
    if not secret:
        return args
    try:
        fd = options_pipe(secret)
    except OSError as exc:
        raise WrapperError(f"cannot hand the secret options over: {exc}") from None
    os.set_inheritable(fd, True)
    if any(not arg.startswith("-") for arg in secret):      # a method: its parameters follow
        return [*public, f"-{OPTIONS_FD}={fd}"]
    return [f"-{OPTIONS_FD}={fd}", *public]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the CleanCoin script: replaces itself with the executable, or returns
    the status of what it printed instead (help, version, an error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    exe = os.path.basename(sys.argv[0]) or PROG
    try:
        cmd = parse_command_line(args)
        if cmd.show_version:
            print(version_text("CleanCoin"), end="")
            return 0
        if cmd.show_help or not cmd.command:
            print(HELP_USAGE.format(exe=exe), end="")
            if cmd.show_help:
                print(HELP_FULL, end="")
                return 0
            print(HELP_SHORT.format(exe=exe), end="")
            return 1
        command = target(cmd)
        path = find_executable(command[0], sys.argv[0])
        if path is None:
            if command[0] in ("CleanCoin-gui", "CleanCoin-qt"):
                raise WrapperError(f"{command[0]} is not installed (CleanCoin {package_version()}; "
                                   "the GUI is the package's 'gui' extra)")
            raise WrapperError(f"{command[0]} not found next to {exe}")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(path, [path, *command[1:], *_hand_over_secrets(cmd.args, arguments=cmd.command == "rpc")])
    except WrapperError as exc:
        print(f"Error: {exc}\nTry '{exe} --help' for more information.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: cannot run {exc.filename}: {exc.strerror}\nTry '{exe} --help' for more information.",
              file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
