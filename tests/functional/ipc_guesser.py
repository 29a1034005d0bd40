"""A client without credentials guessing logins on a TCP IPC listener (not a test module):

    python ipc_guesser.py PORT SOURCE_ADDRESS SECONDS

connects from SOURCE_ADDRESS and tries a wrong cookie login, again and again for SECONDS,
each try on a connection of its own; prints how many tries it made."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import capnp

from cleancoin.components.interfaces.init import IpcPeer
from cleancoin.components.ipc.address import parse
from cleancoin.components.ipc.auth import Credentials
from cleancoin.components.ipc.errors import IpcError
from cleancoin.components.ipc.transport import connect


async def guess(port: int, source: str) -> None:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 3)
        connection = await asyncio.wait_for(connect(parse(f"tcp:127.0.0.1:{port}", ""), IpcPeer("guesser", os.getpid()),
                                                    False, Credentials("__cookie__", "a-guess"), sock=sock), 3)
        connection.close()
    except (IpcError, OSError, asyncio.TimeoutError):
        sock.close()


def main() -> None:
    port, source, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    tries = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        # A fresh event loop for each try: pycapnp's client does not take a second
        # connection on a loop whose first one failed its login.
        asyncio.run(capnp.run(guess(port, source)))
        tries += 1
    print(tries, flush=True)


if __name__ == "__main__":
    main()
