"""The smallest IPC process: serves an Init (hello, makeEcho) and nothing else.

For tests, benchmarks and third-party client examples (docs/ipc.md); the node and the wallet
serve the same Init with more factories. Options, bitcoind style:

  -ipcbind=ADDR           unix | unix:PATH | tcp:HOST:PORT; repeatable
  -datadir=DIR            where `unix` puts echo.sock and TCP listeners put .ipccookie
  -ipcauth=USER:PASSWORD  TCP credentials besides the cookie
  -ipccert=FILE -ipckey=FILE   TLS for TCP listeners
  -ipcmaxconnections=N    at most N clients at once on each listener (default 16)
  -ipchandshaketimeout=S  close a client that has not logged in (TCP) or called (unix) in S s
  -debug=ipc              log every request and response
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import capnp

from . import schema
from .address import AddressError, parse
from .auth import write_cookie
from .connection import serve_init
from .init_impl import ProcessInit
from ..interfaces.init import IpcPeer
from .settings import parse_settings
from .transport import listen, stream_from_fd

NAME = "CleanCoin-echo"


def parse_args(argv: list[str]) -> dict[str, list[str]]:
    """-name=value options into lists of values; anything else is an error."""
    opts: dict[str, list[str]] = {}
    for arg in argv:
        if not arg.startswith("-") or "=" not in arg and arg not in ("-debug",):
            raise SystemExit(f"{NAME}: unexpected argument '{arg}'")
        name, _, value = arg.lstrip("-").partition("=")
        opts.setdefault(name, []).append(value)
    known = {"ipcbind", "datadir", "ipcauth", "ipccert", "ipckey", "ipcmaxconnections", "ipchandshaketimeout",
             "debug"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise SystemExit(f"{NAME}: unknown option -{unknown[0]}")
    return opts


async def run(opts: dict[str, list[str]]) -> int:
    local = IpcPeer(NAME, os.getpid())
    settings = parse_settings(opts)
    for name in ("init", "echo", "auth"):
        schema.load(name)
    if not settings.binds:
        raise AddressError("nothing to serve: give at least one -ipcbind")
    datadir = opts.get("datadir", [os.getcwd()])[0]
    cookie = write_cookie(datadir) if any(b.startswith("tcp:") for b in settings.binds) else None
    options = settings.listen_options(cookie)
    listeners = [await listen(parse(b, os.path.join(datadir, "echo.sock")), ProcessInit, local, options)
                 for b in settings.binds]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for listener in listeners:
        listener.close()
    return 0


def serve_fd(fd: int) -> int:
    """A zygote's target: serve the Init on the socket `fd` (a socket pair with the process
    that asked for this component, which may turn -debug=ipc on in hello)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {NAME}[{os.getpid()}] %(message)s",
                        stream=sys.stderr)

    async def serve() -> None:
        for name in ("init", "echo", "auth"):
            schema.load(name)
        stream = await stream_from_fd(fd)
        await serve_init(stream, ProcessInit, IpcPeer(NAME, os.getpid()), False, from_parent=True)

    asyncio.run(capnp.run(serve()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m cleancoin.components.ipc.echo_process [options]`."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {NAME}[{os.getpid()}] %(message)s",
                        stream=sys.stderr)
    if "-debug=ipc" in (sys.argv[1:] if argv is None else argv):
        logging.getLogger("cleancoin.ipc").setLevel(logging.DEBUG)   # this category only
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        return asyncio.run(capnp.run(run(opts)))
    except AddressError as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
