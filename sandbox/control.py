"""The control channel between a launcher and its sandboxed child: length-prefixed JSON.

The parent sends the plan; the child answers once, with its enforcement report or with the
step that failed. Raw os.read/os.write on the descriptor, so a child needs no extra imports.
"""

from __future__ import annotations

import json
import os
import struct

MAX_MESSAGE = 16 * 1024 * 1024
SANDBOX_FD_ENV = "CLEANCOIN_SANDBOX_FD"   # names the control descriptor of an exec'd component
EXIT_SETUP_FAILED = 126                   # a sandbox step failed before component code ran
_HEADER = struct.Struct(">I")


def send(fd: int, message: object) -> None:
    """Write one message; blocks until it is all written."""
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        try:
            chunk = os.read(fd, min(size, 1 << 20))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv(fd: int) -> object | None:
    """Read one message; None at end of file (the other side is gone)."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError(f"control message of {size} bytes is too large")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)
