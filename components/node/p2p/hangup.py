"""Which connections the remote end has closed, told by the kernel without reading them.

A peer the node is not reading (its CPU budget paused it, or it still owes it data: peer.py)
does not see its stream's end: the bytes before it wait unread, and once more than the
stream's buffer (128 KiB) waits, the event loop stops reading the socket at all. Before
12-08 such a connection, closed by an attacker right after it was paused, held its inbound
slot and counted as a connected address group (cutting every other group's CPU share) until
the pause ended, up to ~14 s with 115 groups connected. poll(2)'s POLLRDHUP says the remote
end shut its side down (FIN) however much unread data is still queued before it, POLLHUP and
POLLERR that the connection is gone (RST): bitcoind drops a peer as soon as recv() says the
connection is closed, and so does the node now for one it is not reading. (A FIN the far
end's kernel still holds behind data our window does not take has not arrived: until it
does, that connection is an open one, and eviction deals with it as with any other.)
"""

from __future__ import annotations

import select
from collections.abc import Iterable

#: The events that mean the remote end will send nothing more.
_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


def hung_up(fds: Iterable[int]) -> set[int]:
    """The descriptors among `fds` (connected stream sockets) whose remote end closed its side
    or reset the connection; one poll(2) call that does not wait."""
    poller = select.poll()
    for fd in fds:
        if fd >= 0:
            poller.register(fd, select.POLLRDHUP)
    return {fd for fd, events in poller.poll(0) if events & _GONE}
