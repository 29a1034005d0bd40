"""The RPC methods whose command line holds a secret, for anything that shows or keeps
command lines (the GUI's RPC console: its history, its output, its input line's undo).

One list, owned by the RPC layer, as Bitcoin Core keeps one (RPCConsole's history filter).
The node's logs need none: -debug=rpc logs the method and the user of a call and never its
parameters, and the IPC call log shows no parameter or result of a forwarded call whatever
the method (components/interfaces/chain.py, RpcRequest.__repr__).
"""

from __future__ import annotations

#: Methods with a passphrase, a private key or a seed among their parameters (or a private
#: key as their result), here or in Bitcoin Core: a command that is not served here yet
#: stays hidden when it is typed (the typed line holds the secret all the same).
SENSITIVE_METHODS = frozenset({
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


def is_sensitive(method: str) -> bool:
    """Whether a call of `method` carries a secret (the name as the console parsed it)."""
    return method in SENSITIVE_METHODS


def command_method(line: str) -> str:
    """The method a console line names, also when the line does not parse (an unbalanced
    quote): its first word, without quotes. A line whose first word is a sensitive method
    must be hidden whether or not the rest parses."""
    words = line.split(None, 1)
    return words[0].strip("'\"") if words else ""
