"""The RPC methods whose command line holds a secret, for anything that shows or keeps
command lines (the GUI's RPC console: its history, its output, its input line's undo).

One list, as Bitcoin Core keeps one (RPCConsole's history filter); it is kept in
components/common/command_line_secrets.py, which also hides these methods' parameters from
other users' `ps`.
The node's logs need none: -debug=rpc logs the method and the user of a call and never its
parameters, and the IPC call log shows no parameter or result of a forwarded call whatever
the method (components/interfaces/chain.py, RpcRequest.__repr__).
"""

from __future__ import annotations

from cleancoin.components.common.command_line_secrets import SECRET_METHODS

#: Methods with a passphrase, a private key or a seed among their parameters (or a private
#: key as their result). The list lives with the command-line hiding in components.common
#: (which may import nothing of the RPC layer), and is the same object.
SENSITIVE_METHODS = SECRET_METHODS


def is_sensitive(method: str) -> bool:
    """Whether a call of `method` carries a secret (the name as the console parsed it)."""
    return method in SENSITIVE_METHODS


def command_method(line: str) -> str:
    """The method a console line names, also when the line does not parse (an unbalanced
    quote): its first word, without quotes. A line whose first word is a sensitive method
    must be hidden whether or not the rest parses."""
    words = line.split(None, 1)
    return words[0].strip("'\"") if words else ""
