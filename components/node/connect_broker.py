"""The connect broker: the only process that opens TCP connections for a confined CleanCoin-node.

The confined node may not connect TCP at all (policies/node.toml: connect_tcp holds no peer
port); Landlock (ABI <= 7) could only restrict ports, not addresses, so "any" let attacker
code in the node reach every service on the host's loopback. Instead, as Chrome's network
service does for its renderers, CleanCoin-node starts this broker before it confines itself
(`launch`): a fresh interpreter (`python -I -S`, `command`; not a fork: the node has read
its conf file's passwords by then) that holds one end of a
SOCK_SEQPACKET socketpair and nothing else. Since 12-07 a node with a zygote has the zygote
fork it instead (`forked`, `serve_forked`; a fresh interpreter that never read those
passwords, forked before it starts any wallet): it shares the zygote's image (2.6 MiB less
of its own) and confines itself the same way. Its connect rule (connect_rule.py) comes from its
command line, fixed before the node confines itself: nothing the node sends later changes it.
It builds the rule (names resolved, this host's addresses read), confines itself with
policies/connect-broker.toml, a plan the node compiled from it before it confined itself and
sent as the channel's first message (sandbox.self_restrict.apply_plan; the same steps as
restrict_self, without loading the policy loader, TOML and libseccomp here) (no filesystem beyond the base's read-only Python and the
resolver's files, no exec, no process, inet stream and datagram sockets and its socketpair),
says it is ready, and serves.

Protocol, one datagram per message (SOCK_SEQPACKET keeps the boundaries and the descriptor
with its message):
- request (node -> broker): id (u32, big-endian, not 0), port (u16), host (1-255 bytes of
  letters, digits and ".-:_"); anything else, or longer than MAX_REQUEST, is malformed;
- reply (broker -> node): id (u32), code (u8), a message (UTF-8, at most MAX_MESSAGE bytes);
  code OK carries the connected socket (SCM_RIGHTS). Id 0 is the broker's start-up word:
  OK "ready", or START_FAILED and why.
Since 12-07 it also makes the connection to a -ipcconnect=tcp wallet process (`IPC_HOST`):
the node's request names no address, the broker connects to the one its command line names
(`ipc=HOST:PORT`, fixed before the node confines itself), and checks who listens there
against the host's socket tables (common/local_listener.py, opened before it confines
itself) before the node sends its login: a listener of another uid gets no socket, so no
secret. The confined node has a network namespace of its own and cannot make that
connection, nor read the host's tables, itself. A node without `ipc=` gets REFUSED for it.
The broker resolves the host, checks every address (connect_rule.connect_checked), connects,
all of it within its timeout (the node's connect timeout), each request in a thread of its
own, at most MAX_ACTIVE at once (more: BUSY). A name's lookup has the same deadline and runs
in a thread of the broker's Resolver (at most connect_rule.MAX_LOOKUPS, those given up on
included): names whose DNS server never answers hold no slot past the deadline, and never
the slots of numeric requests, which are not looked up. A malformed request gets MALFORMED, never a crash (an
empty datagram too: it is a message, not the end of the channel). It ends when the node's end
closes (the node ended: a read of nothing on a channel that is hung up).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

TYPE_CHECKING = False     # not typing's: this program never imports typing
if TYPE_CHECKING:
    from cleancoin.components.common.local_listener import OpenTables
    from cleancoin.sandbox.zygote import Detached

# What this program imports is memory in its process for the node's whole life: the
# standard library's socket and threading, the rule, and the sandbox's apply_plan; not
# asyncio or logging (the node's side, p2p/connector.BrokerConnector, has those), not typing
# (the sandbox's modules define their own TYPE_CHECKING), not the idna codec (its names go
# to getaddrinfo as bytes, connect_rule.Resolver), and not site (`command`).
# tests/test_connect_broker.py::test_the_broker_imports_only_what_it_uses fails when one
# comes back.
from .connect_rule import ConnectRefused, ConnectRule, Resolver, connect_checked

MAX_REQUEST = 6 + 255
MAX_MESSAGE = 400
#: Connections being made at once; the node dials at most its outbound slots (10) and the
#: manual peers at a time, so more is a node that is not itself.
MAX_ACTIVE = 16
_REQUEST = struct.Struct(">IH")
_REPLY = struct.Struct(">IB")
REQUEST_SIZE, REPLY_SIZE = _REQUEST.size, _REPLY.size     # their headers
_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_")

OK, MALFORMED, REFUSED, FAILED, TIMEOUT, BUSY, START_FAILED = range(7)
CODES = {OK: "ok", MALFORMED: "malformed request", REFUSED: "refused", FAILED: "connect failed",
         TIMEOUT: "timed out", BUSY: "busy", START_FAILED: "broker did not start"}
POLICY = "connect-broker"
#: The host of a request for the -ipcconnect=tcp wallet process (its port: the one named).
IPC_HOST = "_ipcconnect"
#: The broker's command-line value naming that wallet's address: `ipc=HOST:PORT`.
IPC_ARG = "ipc="


class MalformedRequest(ValueError):
    """A request the broker cannot read; the message says what is wrong."""


@dataclass(frozen=True)
class Request:
    """One request of the node: connect to host:port; `id` matches its reply."""

    id: int
    host: str
    port: int


def encode_request(request: Request) -> bytes:
    return _REQUEST.pack(request.id, request.port) + request.host.encode("ascii")


def parse_request(data: bytes) -> Request:
    """A request from its bytes (module docstring); raises MalformedRequest."""
    if len(data) > MAX_REQUEST:
        raise MalformedRequest(f"request longer than {MAX_REQUEST} bytes")
    if not data:
        raise MalformedRequest("an empty request")
    if len(data) < _REQUEST.size + 1:
        raise MalformedRequest("request shorter than its header and a host")
    ident, port = _REQUEST.unpack_from(data)
    host = data[_REQUEST.size:]
    if ident == 0:
        raise MalformedRequest("request id 0")
    if port == 0:
        raise MalformedRequest("port 0")
    if not set(host) <= _HOST_CHARS:
        raise MalformedRequest("host holds a character that is not a letter, digit or .-:_")
    return Request(ident, host.decode("ascii"), port)


def request_id(data: bytes) -> int:
    """The id of a request, even of a malformed one (0 if it has none), for its reply."""
    return _REQUEST.unpack_from(data)[0] if len(data) >= 4 else 0


def encode_reply(ident: int, code: int, message: str) -> bytes:
    return _REPLY.pack(ident, code) + message.encode("utf-8", "replace")[:MAX_MESSAGE]


def parse_reply(data: bytes) -> tuple[int, int, str]:
    """(id, code, message); raises ValueError for a reply too short to hold its header."""
    if len(data) < _REPLY.size:
        raise ValueError("reply shorter than its header")
    ident, code = _REPLY.unpack_from(data)
    return ident, code, data[_REPLY.size:_REPLY.size + MAX_MESSAGE].decode("utf-8", "replace")


# ---------------------------------------------------------------------- the broker

class Broker:
    """The serving side on `channel` (blocking), with `rule` and the connect `timeout`."""

    def __init__(self, channel: socket.socket, rule: ConnectRule, timeout: float,
                 ipc: "IpcTarget | None" = None) -> None:
        self.channel, self.rule, self.timeout, self.ipc = channel, rule, timeout, ipc
        self._active = threading.BoundedSemaphore(MAX_ACTIVE)
        self._resolver = Resolver()
        self._send_lock = threading.Lock()

    def reply(self, ident: int, code: int, message: str, fd: int | None = None) -> None:
        data = encode_reply(ident, code, message)
        try:
            with self._send_lock:
                if fd is None:
                    self.channel.send(data)
                else:
                    socket.send_fds(self.channel, [data], [fd])
        except OSError:
            pass        # the node went away; serve() ends at the next receive

    def serve(self) -> None:
        """Answer requests until the node's end closes."""
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.channel, MAX_REQUEST + 1, 1, socket.MSG_CMSG_CLOEXEC)
            except InterruptedError:
                continue
            except OSError:
                return
            for fd in fds:
                os.close(fd)            # the node sends no descriptors
            if not data and not fds and _hung_up(self.channel):
                return                  # the node's end closed
            # An empty datagram is a message of SOCK_SEQPACKET too, not the end: until 12-07
            # one ended the broker. handle() answers it MALFORMED.
            self.handle(data, truncated=bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)) or bool(fds))

    def handle(self, data: bytes, truncated: bool = False) -> None:
        """One request's datagram: answered now (malformed, busy) or in a thread."""
        ident = request_id(data)
        try:
            if truncated:
                raise MalformedRequest(f"request longer than {MAX_REQUEST} bytes, or with descriptors")
            request = parse_request(data)
        except MalformedRequest as exc:
            self.reply(ident, MALFORMED, str(exc))
            return
        if not self._active.acquire(blocking=False):
            self.reply(ident, BUSY, f"more than {MAX_ACTIVE} connections being made")
            return
        try:
            threading.Thread(target=self._connect, args=(request,), daemon=True).start()
        except RuntimeError as exc:       # no thread to be had (nproc)
            self._active.release()
            self.reply(ident, BUSY, str(exc))

    def _connect(self, request: Request) -> None:
        try:
            code, message, sock = OK, "connected", None
            try:
                if request.host == IPC_HOST:
                    sock = self._connect_ipc(request.port)
                else:
                    sock = connect_checked(self.rule, request.host, request.port, self.timeout, self._resolver)
            except ConnectRefused as exc:
                code, message = REFUSED, str(exc)
            except TimeoutError as exc:
                code, message = TIMEOUT, str(exc) or "timed out"
            except OSError as exc:
                code, message = FAILED, exc.strerror or str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - an answer, never a dead thread and a waiting node
                code, message = FAILED, f"{type(exc).__name__}: {exc}"
            self.reply(request.id, code, message, sock.fileno() if sock is not None else None)
            if sock is not None:
                sock.close()
        finally:
            self._active.release()

    def _connect_ipc(self, port: int) -> socket.socket:
        """The connection to the -ipcconnect=tcp wallet process, its listener checked: to the
        address on the command line only, whatever else the node asks."""
        if self.ipc is None:
            raise ConnectRefused("refused: this node has no -ipcconnect=tcp address")
        if port != self.ipc.port:
            raise ConnectRefused(f"refused: the -ipcconnect=tcp port is {self.ipc.port}, not {port}")
        return self.ipc.connect(self.timeout)


@dataclass(frozen=True)
class IpcTarget:
    """The -ipcconnect=tcp address (`ipc=HOST:PORT` on the broker's command line) and the
    host's socket tables, opened before the broker confines itself."""

    host: str
    port: int
    tables: "OpenTables"    # imported (local_listener) only by a broker that has a wallet address

    @classmethod
    def parse(cls, value: str) -> "IpcTarget":
        """From HOST:PORT ([v6]:PORT); raises ValueError."""
        host, _, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad -ipcconnect address {value!r}")
        from ..common.local_listener import OpenTables
        return cls(host, int(port), OpenTables())

    @property
    def fds(self) -> set[int]:
        return self.tables.fds

    def connect(self, timeout: float) -> socket.socket:
        """Connected and checked (ConnectRefused for a listener of another uid, or one the
        tables do not show)."""
        from ..common.local_listener import ForeignListener, check_server
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            check_server(sock, f"tcp:{self.host}:{self.port}", tables=self.tables)
        except ForeignListener as exc:
            sock.close()
            raise ConnectRefused(str(exc)) from None
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock


def _hung_up(channel: socket.socket) -> bool:
    """Whether the node's end of the channel is closed (a read of 0 bytes is that, or an
    empty message)."""
    import select
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    return any(mask & (select.POLLHUP | select.POLLERR) for _fd, mask in poller.poll(0))


def _name_self() -> None:
    """Its short name (/proc/PID/comm, `ps -e`, `top`); `ps -f` shows its command line, which
    names it too (_BOOTSTRAP). Not setproctitle, which imports logging (0.5 MiB here)."""
    from cleancoin.sandbox.syscalls import set_name
    try:
        set_name(NAME)
    except OSError:
        pass                # a name only


#: The broker's short name.
NAME = "connect-broker"


#: The first message on the channel: the broker's sandbox plan, b"P" and Plan.to_json as
#: JSON, or b"E" and why the node could not make it. Bounded (the plan is about 8 KiB).
MAX_PLAN = 1 << 18


def _read_plan(channel: socket.socket) -> object:
    """The plan the node made from policies/connect-broker.toml before it confined itself
    (launch sends it before it returns, so it is the first message, ahead of anything code
    that took over the node could send); raises ValueError."""
    import json
    data = channel.recv(MAX_PLAN)
    if data[:1] == b"E":
        raise ValueError(data[1:].decode("utf-8", "replace"))
    if data[:1] != b"P":
        raise ValueError("no sandbox plan came first")
    from cleancoin.sandbox.plan import Plan
    try:
        return Plan.from_json(json.loads(data[1:]))
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"unreadable sandbox plan: {exc}") from None


def main(argv: Sequence[str]) -> int:
    """`connect_broker CHANNEL TIMEOUT [ENDPOINT ...]`: build the rule, confine with the plan
    the node sent, serve."""
    _name_self()
    return _serve(int(argv[0]), argv[1:])


def serve_forked(channel: int, *argv: str) -> int:
    """The broker as a fork of CleanCoin-node's zygote (`forked`; sandbox.zygote.Detached),
    with `TIMEOUT [ENDPOINT ...]`: the zygote closed everything but `channel` and stdio (on
    /dev/null); its environment becomes the fresh broker's, its title says what it is. Then
    exactly as `main`."""
    from cleancoin.sandbox.syscalls import set_title
    os.environ.clear()
    os.environ.update(_ENVIRONMENT)
    try:
        set_title(f"{FORKED_TITLE} {' '.join(argv)}"[:512], NAME)
    except OSError:
        pass                # a name only
    return _serve(channel, argv)


def _serve(channel_fd: int, argv: Sequence[str]) -> int:
    """`TIMEOUT [ENDPOINT ...]` on `channel_fd`: build the rule, confine with the plan the
    node sent, serve."""
    channel = socket.socket(fileno=channel_fd)
    def fail(message: str) -> int:
        try:
            channel.send(encode_reply(0, START_FAILED, message))
        except OSError:
            pass
        return 1
    try:
        timeout = float(argv[0])
        ipc_args = [a for a in argv[1:] if a.startswith(IPC_ARG)]
        if len(ipc_args) > 1:
            raise ValueError("more than one ipc= address")
        ipc = IpcTarget.parse(ipc_args[0][len(IPC_ARG):]) if ipc_args else None
        rule = ConnectRule.build([a for a in argv[1:] if not a.startswith(IPC_ARG)],
                                 apart=True)      # no lookup thread left to confine
    except (ValueError, IndexError) as exc:
        return fail(f"bad configuration: {exc}")
    # Everything the serving code uses is imported and set up before the sandbox goes up
    # (a host as bytes, as the Resolver passes it: a str would load the idna codec).
    socket.getaddrinfo(b"127.0.0.1", 1, type=socket.SOCK_STREAM)
    from cleancoin.sandbox.errors import EnforcementError
    from cleancoin.sandbox.self_restrict import apply_plan
    try:
        plan = _read_plan(channel)
        # The rule's /proc/net descriptors: its view of the host's addresses at each check.
        live = rule.live.fds if rule.live is not None else set()
        # The host's socket tables, for the -ipcconnect=tcp wallet's owner check.
        tables = ipc.fds if ipc is not None else set()
        apply_plan(plan, keep_fds={channel.fileno(), *live, *tables})           # type: ignore[arg-type]
    except (EnforcementError, ValueError, OSError) as exc:
        return fail(f"cannot confine itself: {exc}")
    channel.send(encode_reply(0, OK, "ready"))
    Broker(channel, rule, timeout, ipc).serve()
    return 0


def _plan_message() -> bytes:
    """The first message for a broker (_read_plan): its plan made here, in the node, which
    has the sandbox's policy loader and compiler loaded already, so the broker need not."""
    import json
    from cleancoin.sandbox.errors import EnforcementError
    from cleancoin.sandbox.self_restrict import prepare_self
    try:
        plan = prepare_self(POLICY, {})
    except EnforcementError as exc:      # the broker says so at start: START_FAILED, fail closed
        return b"E" + str(exc).encode("utf-8", "replace")[:MAX_MESSAGE]
    return b"P" + json.dumps(plan.to_json()).encode()


#: The broker's whole environment: nothing of the node's. LC_ALL fixes the resolver's and
#: strerror's language.
_ENVIRONMENT = {"LC_ALL": "C"}


#: The broker's first lines, for `python -I -S -c`: without site (no .pth file runs, no
#: sitecustomize, 0.3 MiB less) its import path is the standard library's, to which it adds
#: the directories `command` names first on its command line (where cleancoin and the
#: packages it uses are installed), after the standard library as site would. Its first
#: line is what `ps -f` shows first.
_BOOTSTRAP = ("# CleanCoin-node connect-broker\n"
              "import sys; n = int(sys.argv[1]); sys.path += sys.argv[2:2 + n]\n"
              "from cleancoin.components.node.connect_broker import main\n"
              "sys.exit(main(sys.argv[2 + n:]))\n")


def _import_dirs() -> list[str]:
    """The directories holding the packages the broker imports beyond the standard library:
    cleancoin itself and python-prctl (the capabilities step), each where this interpreter
    finds it; usually both in one site-packages."""
    import importlib.util
    dirs: list[str] = []
    for name in ("cleancoin", "prctl", "_prctl"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue            # without prctl the broker's capabilities step fails: START_FAILED
        where = os.path.dirname(spec.origin)
        if spec.submodule_search_locations is not None:     # a package: its parent directory
            where = os.path.dirname(where)
        if where not in dirs:
            dirs.append(where)
    return dirs


def command(channel: int, timeout: float, endpoints: Sequence[str]) -> list[str]:
    """The broker's command line: this interpreter, isolated and without site, on `channel`."""
    dirs = _import_dirs()
    return [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, str(len(dirs)), *dirs,
            str(channel), repr(float(timeout)), *endpoints]


#: What `ps -f` shows for a broker forked from the zygote (the bench finds it by this; not
#: "zygote", by which tools and tests tell the zygote).
FORKED_TITLE = "CleanCoin-node connect-broker (forked)"
#: What the zygote runs in the fork (`forked`).
FORKED_TARGET = "cleancoin.components.node.connect_broker:serve_forked"


def forked(endpoints: Sequence[str], timeout: float) -> tuple[socket.socket, "Detached"]:
    """A broker for the zygote to fork when it is configured (CleanCoin-node's zygote, before
    the node confines itself): the node's end of its channel, and what the zygote is told
    (`Zygote.configure(detached=...)`; its end of the channel, which the caller closes once
    the zygote has it). The node then sends the plan (`send_plan`), as for `launch`. A fork
    of the zygote, a fresh interpreter that never read the node's conf file, holds none of
    its passwords; it shares the zygote's image (docs/multiprocess.md, "Memory")."""
    from cleancoin.sandbox.zygote import Detached
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    return ours, Detached(NAME, FORKED_TARGET, (repr(float(timeout)), *endpoints), theirs.detach())


def forked_broker(config: object, wanted: bool) -> tuple[socket.socket | None, list[Detached]]:
    """`forked` for a node's configuration (cli/node_main.NodeConfig: its -connect, -addnode,
    -allowlocalpeer and -timeout), when `wanted` (a node that confines itself): the node's end
    of the channel and the zygote's entry; else (None, [])."""
    if not wanted:
        return None, []
    from .p2p.connector import broker_endpoints       # the node's side (asyncio): not the broker's
    channel, spec = forked(broker_endpoints(config), config.connect_timeout)     # type: ignore[attr-defined]
    return channel, [spec]


def send_plan(channel: socket.socket) -> None:
    """The broker's first message (its sandbox plan, `_read_plan`), made and sent now, before
    this process confines itself."""
    try:
        channel.send(_plan_message())
    except OSError:
        pass            # the broker is gone already: the node learns it from the channel


def launch(endpoints: Sequence[str], timeout: float) -> tuple[socket.socket, int]:
    """Start a broker with these allowed local endpoints (host:port or host:low-high) and
    connect timeout; returns the node's end of its channel and its pid. Called by
    CleanCoin-node before it confines itself; the broker is nobody's child here
    (helpers.detached) and ends when this end closes."""
    from cleancoin.sandbox import descriptors, helpers
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    argv = command(theirs.fileno(), timeout, endpoints)      # here: the fork only execs

    def grandchild() -> None:
        try:
            fd = theirs.fileno()
            null = os.open("/dev/null", os.O_RDWR)
            for std in (0, 1, 2):
                os.dup2(null, std)
            descriptors.keep_only({0, 1, 2, fd})
            os.set_inheritable(fd, True)
            os.execve(sys.executable, argv, _ENVIRONMENT)
        finally:
            os._exit(127)
    plan = _plan_message()
    pid = helpers.detached(grandchild)
    theirs.close()
    try:
        ours.send(plan)
    except OSError:
        pass            # the broker is gone already: the node learns it from the channel
    return ours, pid


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
