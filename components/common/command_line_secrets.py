"""Secrets on a process's own command line, hidden from other local users.

Every local user may read a process's command line (`ps`, /proc/PID/cmdline; no hidepid on
most hosts). An option such as -rpcpassword=... or a wallet passphrase given to CleanCoin-cli
as a parameter is there from exec on; setproctitle overwrites the argv area the kernel shows,
after which the value reads `***`. The time in between is the window: this module imports
nothing but the standard library so that the executables' entry points (cli/entry.py) can
call it before they import anything else. bitcoind and bitcoin-cli never hide them at all.
"""

from __future__ import annotations

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
