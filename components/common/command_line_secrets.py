"""Secrets on a process's own command line, hidden from other local users.

Every local user may read a process's command line (`ps`, /proc/PID/cmdline; no hidepid on
most hosts). An option such as -rpcpassword=... or a wallet passphrase given to CleanCoin-cli
as a parameter is there from exec on; setproctitle overwrites the argv area the kernel shows,
after which the value reads `***`. The time in between is the window: this module imports
nothing but the standard library so that the executables' entry points (cli/entry.py) can
call it before they import anything else. bitcoind and bitcoin-cli never hide them at all.

A program of ours that starts another with such options (CleanCoin-gui its CleanCoin-node)
has no window to accept: it keeps them off the child's command line altogether and hands them
over through an inherited pipe instead (`options_pipe`, read by the child's -optionsfd:
`read_options_fd`). The `CleanCoin` wrapper hands CleanCoin-cli a SECRET_METHODS method with
its parameters the same way (since 12-07: `CleanCoin rpc walletpassphrase PASS 60`). A
pipe's descriptor is reachable only by the processes that hold it and by the same user's
(/proc/PID/fd needs ptrace rights); a command line is every user's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

#: Options whose value is a secret.
SECRET_OPTIONS = frozenset({"rpcpassword", "rpcauth", "ipcauth"})

#: RPC methods with a passphrase, a private key or a seed among their parameters (or a
#: private key as their result), here or in Bitcoin Core: a command that is not served here
#: yet stays hidden all the same. Also the GUI's RPC console's list (components/rpc/sensitive.py).
SECRET_METHODS = frozenset({
    "createwallet",             # passphrase
    "dumpprivkey",              # the result is a private key
    "encryptwallet",
    "importmulti",
    "importprivkey",
    "sethdseed",
    "signmessagewithprivkey",
    "signrawtransactionwithkey",
    "walletpassphrase",
    "walletpassphrasechange",
})


def _secret_option(arg: str) -> bool:
    if not arg.startswith("-"):
        return False
    name, sep, _ = arg.lstrip("-").partition("=")
    if name.startswith("no") and len(name) > 2:        # -norpcpassword=...: the same option
        name = name[2:]
    return bool(sep) and name in SECRET_OPTIONS


def _is_option(arg: str) -> bool:
    """Whether `arg` is an option, as CleanCoin-cli's parser reads one ("-" alone is not)."""
    return arg.startswith("-") and len(arg) > 1


def split_secret(argv: Sequence[str], arguments: bool = False) -> tuple[list[str], list[str]]:
    """`argv` without its SECRET_OPTIONS options, and those options, each list in order. Only
    the options before the first argument that is not one count: after it come a method's
    parameters (CleanCoin-cli), which are not options whatever they look like. With
    `arguments` (a CleanCoin-cli command line), a method of SECRET_METHODS and all its
    parameters are secret too: they end the secret list, and the public one holds options
    only (read_options_fd with arguments=True puts them back)."""
    first = next((i for i, arg in enumerate(argv) if not _is_option(arg)), len(argv))
    secret = [arg for arg in argv[:first] if _secret_option(arg)]
    public = [arg for arg in argv[:first] if not _secret_option(arg)]
    if arguments and first < len(argv) and argv[first] in SECRET_METHODS:
        return public, secret + list(argv[first:])
    return public + list(argv[first:]), secret


#: The option naming an inherited descriptor with more options on it (CleanCoin-node's).
OPTIONS_FD = "optionsfd"
#: Bytes a pipe holds without a reader (Linux's default): options_pipe writes them all at once.
PIPE_CAPACITY = 65536


def options_pipe(args: Sequence[str]) -> int:
    """The read end of a pipe holding `args` (each followed by a NUL; its write end closed), for
    a child's -optionsfd; not inheritable (the caller passes it on explicitly). Raises OSError
    when they do not fit into the pipe (the writer never waits for a reader that may not come)."""
    data = b"".join(arg.encode() + b"\0" for arg in args)
    read_end, write_end = os.pipe()
    try:
        if len(data) > PIPE_CAPACITY:
            raise OSError(f"the options to hand over take {len(data)} bytes, more than a pipe's {PIPE_CAPACITY}")
        os.set_blocking(write_end, False)
        if os.write(write_end, data) != len(data):
            raise OSError("the options to hand over did not fit into the pipe")
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def read_options_fd(argv: Sequence[str], arguments: bool = False) -> list[str]:
    """`argv` with each -optionsfd=N replaced by the options read from descriptor N to its end
    (NUL-separated, as options_pipe writes them; the descriptor is closed then). With
    `arguments` (CleanCoin-cli: split_secret's arguments=True), the options may be followed
    by a method and its parameters, taken as they are; the -optionsfd that holds them must
    end `argv` (arguments come after every option). Raises ValueError naming the option and
    the reason: a descriptor that cannot be read, an entry that is not an option (where no
    arguments may be), an -optionsfd among them, or arguments followed by more."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        name, sep, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name != OPTIONS_FD:
            out.append(arg)
            continue
        if not sep or not value.isdigit():
            raise ValueError(f"-{OPTIONS_FD}: '{value}' is not a descriptor number")
        fd = int(value)
        chunks = []
        try:
            while chunk := os.read(fd, PIPE_CAPACITY):
                chunks.append(chunk)
        except OSError as exc:
            raise ValueError(f"-{OPTIONS_FD}={fd}: cannot read it: {exc.strerror or exc}") from None
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            text = b"".join(chunks).decode()
        except UnicodeDecodeError:
            raise ValueError(f"-{OPTIONS_FD}={fd}: not UTF-8 text") from None
        if text and not text.endswith("\0"):
            raise ValueError(f"-{OPTIONS_FD}={fd}: the last option is not terminated (cut short?)")
        entries = text.split("\0")[:-1]
        for number, option in enumerate(entries, 1):
            if arguments and not _is_option(option):
                if index != len(argv) - 1:
                    raise ValueError(f"-{OPTIONS_FD}={fd} holds a method and its parameters: it must come last")
                out += entries[number - 1:]         # the method and its parameters, as they are
                break
            # Not echoed: it may be a secret.
            if not option.startswith("-") or option.lstrip("-").partition("=")[0] == OPTIONS_FD:
                raise ValueError(f"-{OPTIONS_FD}={fd}: its entry {number} is not an option it may hold")
            out.append(option)
    return out


def masked(argv: Sequence[str]) -> list[str]:
    """`argv` with each SECRET_OPTIONS value as *** and, after any argument that is not an
    option and names one of SECRET_METHODS, every argument as ***: the method stays readable,
    its parameters do not (CleanCoin-cli walletpassphrase PASS 60, CleanCoin rpc ...)."""
    out: list[str] = []
    hiding = False
    for arg in argv:
        if hiding:
            out.append("***")
        elif _secret_option(arg):
            out.append(f"{arg.split('=', 1)[0]}=***")
        else:
            out.append(arg)
            hiding = not arg.startswith("-") and arg in SECRET_METHODS
    return out


def hide_from_ps() -> bool:
    """Rewrite this process's command line (`masked` of the argv the interpreter was started
    with) when it holds a secret; True when it did. Only the process's own argv is touched: a
    caller that parses another list changes nothing. Without setproctitle nothing is hidden."""
    shown = list(getattr(sys, "orig_argv", sys.argv))
    hidden = masked(shown)
    if hidden == shown:
        return False
    set_title = _setproctitle()
    if set_title is None:
        return False
    set_title(" ".join(hidden))
    return True


def _setproctitle() -> Callable[[str], None] | None:
    """setproctitle's C function, loaded without the package's __init__: that imports logging
    (with threading, traceback, tokenize ...) for a fallback message, about 14 ms of CPU, a
    third of the window. The module is registered under its own name, so a later
    `import setproctitle` uses this one. Any surprise falls back to the plain import."""
    import importlib.machinery
    try:
        package = importlib.machinery.PathFinder.find_spec("setproctitle")
        spec = importlib.machinery.PathFinder.find_spec("setproctitle._setproctitle",
                                                        package.submodule_search_locations if package else None)
        if spec is None or spec.loader is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            raise ImportError("no C module")
        module = sys.modules.get(spec.name) or spec.loader.create_module(spec)
        spec.loader.exec_module(module)       # type: ignore[arg-type]
        sys.modules[spec.name] = module
        return module.setproctitle            # type: ignore[no-any-return]
    except (ImportError, AttributeError, OSError):
        try:
            import setproctitle
        except ImportError:
            return None
        return setproctitle.setproctitle
