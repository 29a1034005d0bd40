"""Cap'n Proto streams on asyncio transports, with one write per message and no read toggling.

pycapnp's stream protocol (`capnp.AsyncIoStream`) asks its transport for exactly what KJ asks
it for. Per message that is two writes (the 8-byte segment table, then the segments: the peer
wakes up for 8 bytes) and two reads, each bracketed by `resume_reading`/`pause_reading`, which
asyncio turns into an `epoll_ctl` ADD and DEL. Measured on an Echo call: 9 syscalls on each side
where 3 do (issue #16).

`_Gate` sits between asyncio's transport and pycapnp's protocol, using only what each side
offers publicly:

- writes are collected until a whole Cap'n Proto message (or several) is there, then go out in
  one `transport.write` (the framing is read from the segment table; a message left partial,
  because pycapnp was told to pause in the middle of it or wrote pieces of an unexpected shape,
  is written at the end of the turn, so nothing can stall);
- the socket is read whenever data comes, into a buffer of our own (64 KiB at a time), and
  handed to pycapnp when KJ asks for it, so the transport's reading is never toggled. Reading
  stops only while more than `MAX_UNREAD` bytes wait that KJ has not asked for (a peer cannot
  make us buffer more), and resumes when KJ has taken them.
- optionally, an *allowance*: the bytes the peer may send in all until it is lifted (a TCP
  listener's client before it has logged in). Past it the connection is ended before KJ sees
  the bytes: KJ reads a whole message into memory, however large its segment table says it
  is (up to the traversal limit, 64 MiB), and queues every call it is sent, so a client that
  has proven nothing could otherwise make the process hold 64 MiB per connection.

pycapnp's protocol object is made by `capnp.AsyncIoStream._connect(callback)`, as listeners
already did (transport.py); nothing of pycapnp is patched or replaced.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl      # not at run time: see transport.py's note on TLS

#: Bytes read ahead of what KJ asked for, at most, before the socket is no longer read.
MAX_UNREAD = 1 << 20
_CHUNK = 1 << 16


class _Framing:
    """Counts Cap'n Proto message bytes (standard framing: a segment table of u32 little-endian
    words, segment count minus one then each segment's size in words, padded to 8 bytes,
    then the segments) to tell where each message written ends."""

    def __init__(self) -> None:
        self._table = bytearray()   # the segment table read so far
        self._table_size = 0        # its size once its first word is there (0: not yet)
        self._left = 0              # bytes of the current message's segments still to come
        # The current message began with its whole segment table in one piece, as KJ writes
        # it (table, then the segments, in one synchronous write loop of pycapnp's).
        self.table_first = False

    def feed(self, data: bytes) -> bool:
        """Account for `data`; True when it ends exactly at a message boundary."""
        n = len(data)
        # The usual pieces, as KJ writes them: the whole segment table, then whole segments.
        if self._left and self._left >= n:   # (no table in progress while segments remain)
            self._left -= n
            return self._left == 0
        if not self._left and not self._table_size and n >= 8:
            count = struct.unpack_from("<I", data)[0] + 1
            size = (4 + 4 * count + 7) & ~7
            if n == size:
                self._left = 8 * sum(struct.unpack_from(f"<{count}I", data, 4))
                self.table_first = True
                return self._left == 0
        self.table_first = False
        return self._feed(data)

    def _feed(self, data: bytes) -> bool:
        i, n = 0, len(data)
        while i < n:
            if self._left:
                step = min(self._left, n - i)
                self._left -= step
                i += step
                continue
            if not self._table_size:
                take = min(4 - len(self._table), n - i)
                self._table += data[i:i + take]
                i += take
                if len(self._table) < 4:
                    continue
                count = struct.unpack_from("<I", self._table)[0] + 1
                self._table_size = (4 + 4 * count + 7) & ~7
            take = min(self._table_size - len(self._table), n - i)
            self._table += data[i:i + take]
            i += take
            if len(self._table) == self._table_size:
                count = (self._table_size - 4) // 4
                sizes = struct.unpack_from(f"<{count}I", self._table, 4)
                # The padding word, when there is one, is no segment.
                segments = struct.unpack_from("<I", self._table)[0] + 1
                self._left = 8 * sum(sizes[:segments])
                self._table = bytearray()
                self._table_size = 0
        return self._left == 0 and not self._table


class _GateTransport(asyncio.Transport):
    """The transport pycapnp's protocol sees."""

    def __init__(self, gate: "_Gate", real: asyncio.Transport) -> None:
        super().__init__()
        self._gate = gate
        self._real = real

    # -- writing
    def write(self, data: Any) -> None:
        self._gate.write(data)

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def write_eof(self) -> None:
        self._gate.flush()
        self._real.write_eof()

    # -- reading: what KJ wants now
    def pause_reading(self) -> None:
        self._gate.kj_reading = False

    def resume_reading(self) -> None:
        self._gate.kj_reading = True
        self._gate.deliver()

    def is_reading(self) -> bool:
        return self._gate.kj_reading

    # -- the rest as the real transport has it
    def close(self) -> None:
        self._gate.flush()
        self._real.close()

    def abort(self) -> None:
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size() + self._gate.held

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("a Cap'n Proto stream keeps its protocol")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._gate.inner


class _Gate(asyncio.BufferedProtocol):
    """The protocol asyncio drives; pycapnp's protocol (`inner`) behind it.

    `allowance`: bytes the peer may send until `lift_allowance()` (None: no bound); past it,
    the connection is aborted, `on_exceeded()` is called, and nothing more is handed to KJ."""

    def __init__(self, inner: Any, *, allowance: int | None = None,
                 on_exceeded: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self._allowance = allowance
        self._on_exceeded = on_exceeded
        self._exceeded = False
        self.kj_reading = False
        self.held = 0
        self._real: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._framing = _Framing()
        self._flush_handle: asyncio.Handle | None = None
        self._buffer = bytearray(_CHUNK)
        self._unread = bytearray()   # read, not yet handed to KJ: from self._taken on
        self._taken = 0
        self._eof = False
        self._eof_delivered = False
        self._stopped = False      # the real transport paused: MAX_UNREAD bytes wait

    # -- asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._real = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self.inner.connection_made(_GateTransport(self, transport))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        # pycapnp stops writing a message's pieces when paused: what we hold of it goes out
        # at the end of this turn (see write).
        if self._out and self._flush_handle is None and self._real is not None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    @property
    def unread(self) -> int:
        """Bytes read from the socket that KJ has not taken yet."""
        return len(self._unread) - self._taken

    def lift_allowance(self) -> None:
        """No bound from now on (the peer has authenticated)."""
        self._allowance = None

    def buffer_updated(self, nbytes: int) -> None:
        if self._exceeded:
            return
        if self._allowance is not None:
            self._allowance -= nbytes
            if self._allowance < 0:
                # Checked before KJ sees any of it: not one byte past the allowance is parsed.
                self._exceeded = True
                self._unread.clear()
                self._taken = 0
                if self._real is not None:
                    self._real.abort()
                if self._on_exceeded is not None:
                    self._on_exceeded()
                return
        if self._taken and self._taken * 2 >= len(self._unread):
            del self._unread[:self._taken]     # what KJ took: once it is half (amortised)
            self._taken = 0
        self._unread += memoryview(self._buffer)[:nbytes]
        if self.kj_reading:
            self.deliver()
        if self.unread > MAX_UNREAD and not self._stopped and self._real is not None:
            self._stopped = True
            self._real.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        if not self.unread and self.kj_reading:
            return self._deliver_eof()
        return True   # keep the transport until KJ has read what came before the end

    # -- pycapnp's side
    def deliver(self) -> None:
        """Hand KJ what it asked for from what was read (called when KJ asks, and when data
        comes while it waits)."""
        while self.kj_reading and self.unread:
            target = self.inner.get_buffer(self.unread)
            step = min(len(target), self.unread)
            # An offset, not a deletion at the front: many small messages in one read would
            # otherwise move the rest of the buffer once per message.
            target[:step] = memoryview(self._unread)[self._taken:self._taken + step]
            self._taken += step
            if self._taken == len(self._unread):
                self._unread.clear()
                self._taken = 0
            self.inner.buffer_updated(step)      # may fulfil KJ's read and pause it
        if self._stopped and self.unread <= MAX_UNREAD // 2 and self._real is not None:
            self._stopped = False
            self._real.resume_reading()
        if self._eof and not self.unread and self.kj_reading and not self._eof_delivered:
            if not self._deliver_eof() and self._real is not None:
                self._real.close()

    def _deliver_eof(self) -> bool | None:
        self._eof_delivered = True
        return self.inner.eof_received()

    def write(self, data: Any) -> None:
        data = bytes(data)
        self._out.append(data)
        self.held += len(data)
        if self._framing.feed(data):
            self.flush()
        elif self._flush_handle is None and self._real is not None and not self._framing.table_first:
            # A message in pieces of another shape than KJ's: whatever is here goes out at
            # the end of this turn at the latest, so that nothing can stall. KJ's shape (the
            # whole segment table, then the segments) needs no such turn: pycapnp writes
            # every piece of a message in one loop, stopping early only when told to pause,
            # and only a flush (at a message's end) can make the real transport say so. An
            # end-of-turn flush per message cost a loop turn on each side of every call
            # (the handle, cancelled by the flush, still made the loop turn once more).
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        out, self._out = self._out, []      # emptied first: the write may pause us (see pause_writing)
        self.held = 0
        if out and self._real is not None and not self._real.is_closing():
            self._real.write(out[0] if len(out) == 1 else b"".join(out))


def _gate(callback: Callable[[Any], Any], *, allowance: int | None = None,
          on_exceeded: Callable[[], None] | None = None) -> _Gate:
    import capnp
    return _Gate(capnp.AsyncIoStream._connect(callback),  # noqa: SLF001 - pycapnp's stream factory
                 allowance=allowance, on_exceeded=on_exceeded)


async def _open(make: Callable[[Callable[[], _Gate]], Any]) -> Any:
    """A pycapnp stream on the transport `make(protocol_factory)` creates."""
    made: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def connected(stream: Any) -> None:
        if not made.done():
            made.set_result(stream)

    await make(lambda: _gate(connected))
    return await made


async def stream_on_socket(sock: socket.socket, *, tls: ssl.SSLContext | None = None,
                           server_hostname: str | None = None) -> Any:
    """A pycapnp stream on a connected socket (TLS as a client when `tls` is given)."""
    loop = asyncio.get_running_loop()
    if sock.family == socket.AF_UNIX:
        return await _open(lambda factory: loop.create_unix_connection(factory, sock=sock))
    return await _open(lambda factory: loop.create_connection(
        factory, sock=sock, ssl=tls, server_hostname=server_hostname))


def accepted_protocol(callback: Callable[[Any], Any], *, allowance: int | None = None,
                      on_exceeded: Callable[[], None] | None = None) -> _Gate:
    """The protocol for an accepted connection: `callback(stream)` runs (a coroutine as a
    task, whose end closes the connection) once it is connected, as with pycapnp's own
    `AsyncIoStream.create_server`. `allowance`, `on_exceeded`: see `_Gate`."""
    return _gate(callback, allowance=allowance, on_exceeded=on_exceeded)
