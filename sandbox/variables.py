"""Launch-time variables of policy files: `${datadir}`, `${walletdir}`, `${prefix}` ...

A policy names variables; the launcher gives their values. A name this module does not know
is an error when the policy is checked; a known name without a value is an error at launch.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

from .errors import PolicyError, SourceRef

KNOWN: Mapping[str, str] = {
    "datadir": "the component's data directory (-datadir, or the network datadir)",
    "walletdir": "the wallet directory of a wallet component",
    "prefix": "the Python installation running the component (sys.prefix, the venv)",
    "base_prefix": "the Python installation the venv was made from (sys.base_prefix)",
    "tmpdir": "the temporary directory (TMPDIR): a fresh tmpfs there, seen only by the sandbox "
              "(base/python lists it under filesystem.tmpfs); /tmp unless the launcher says otherwise",
    "port": "the P2P port",
    "rpcport": "the JSON-RPC port",
    "ipcport": "the TCP port of an -ipcbind=tcp listener (the JSON-RPC port again when there is none)",
    "ipcconnectport": "the TCP port of a -ipcconnect=tcp wallet process; 0 (no connection can be made "
                      "to port 0) when there is none, the default",
    "xauthority": "the X11 authority file of a GUI component ($XAUTHORITY, or ~/.Xauthority)",
    "wayland_socket": "the Wayland compositor's socket of a GUI component ($XDG_RUNTIME_DIR/$WAYLAND_DISPLAY)",
}

# One pass over "$$" escapes and "${name}" references, so that "$${name}" is a literal.
_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def referenced(text: str) -> list[str]:
    """Names of the variables `text` refers to, in order."""
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(0) != "$$"]


def check_references(text: str, where: SourceRef) -> None:
    """Raise a PolicyError if `text` refers to a variable no launcher provides."""
    if "$" in _TOKEN.sub("", text):
        raise PolicyError(where, f"stray '$' in {text!r}: write ${{name}} for a variable, $$ for '$'")
    for name in referenced(text):
        if not _NAME.match(name) or name not in KNOWN:
            known = ", ".join("${" + k + "}" for k in KNOWN)
            raise PolicyError(where, f"undefined variable ${{{name}}} (known: {known})")


#: What a bind rule for port 0 grants: bind(2) to port 0 asks the kernel for an ephemeral port,
#: and Landlock checks the port asked for, so the rule lets the component listen on whichever
#: port it is given (measured 12-07: `bind_tcp = [0]` bound and listened on 127.0.0.1:38177).
#: A variable whose value may be 0 (`${ipcconnectport}` by default) grants the same.
EPHEMERAL_BIND = "any ephemeral port the kernel picks"


def bind_port_text(value: str) -> str:
    """A bind_tcp entry for a reviewer: port 0, or a variable that is 0 by default, is any
    ephemeral port (EPHEMERAL_BIND), not "no port"."""
    if value.isdigit() and int(value) == 0:
        return f"0 ({EPHEMERAL_BIND})"
    names = referenced(value)
    if names and default_values().get(names[0]) == "0":
        return f"{value} (0 by default: {EPHEMERAL_BIND})"
    return value


def default_values() -> dict[str, str]:
    """Values every launch has without being told: the Python installation, /tmp, and no
    -ipcconnect=tcp port (0)."""
    return {"prefix": sys.prefix, "base_prefix": sys.base_prefix, "tmpdir": "/tmp", "ipcconnectport": "0"}


def substitute(text: str, values: Mapping[str, str], where: SourceRef) -> str:
    """Fill the variables of `text`; a variable without a value at launch is an error."""

    def fill(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in values or values[name] == "":
            raise PolicyError(where, f"variable ${{{name}}} has no value at this launch "
                                     f"(give it with --var {name}=VALUE)")
        return values[name]

    return _TOKEN.sub(fill, text)
