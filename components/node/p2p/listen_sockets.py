"""The P2P listening sockets, bound apart from serving on them.

CleanCoin-node binds them before it confines itself: it then enters a network namespace of
its own, where nothing of the host's network is (and bind(2) is refused), and a socket keeps
the namespace it was made in. `P2PNode(sockets=...)` serves on them. The binding is
asyncio's `create_server(host, port, reuse_address=True)`, done synchronously, so that a
node that binds in `start` (CleanCoind, the tests) listens on exactly the same addresses.
"""

from __future__ import annotations

import socket

#: asyncio's create_server default backlog.
BACKLOG = 100


def bind_listeners(host: str | None, port: int) -> list[socket.socket]:
    """Listening, non-blocking sockets on every address `host` resolves to (None or "": all
    interfaces), on `port` (0: a free one, the first socket's for the others). Raises
    OSError (closing what it bound) when one cannot be bound, as asyncio does."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                         f"{(exc.strerror or '').lower()}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
