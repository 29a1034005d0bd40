"""Network attempts: TCP and UDP to the parent's ports, raw, packet and netlink sockets, the
parent's abstract unix socket, and an abstract name of the parent's network namespace (taken
with a socket of its own or with one of a socket pair)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from .. import landlock
from .judge import _Judge, _Why
from .runner import Outcome, Runner, _Ctx, _ok, _Out
from .targets import _Targets


def _socket(family: int, kind: int, proto: int, ctx: _Ctx) -> tuple[socket.socket | None, Outcome | None]:
    try:
        return socket.socket(family, kind, proto), None
    except OSError as exc:
        return None, ctx.denied(exc, EAFNOSUPPORT="seccomp: socket family not allowed",
                                EPERM="kernel: no CAP_NET_RAW",
                                EACCES="kernel: no CAP_NET_RAW")


#: A stream protocol other than TCP that the kernel gives an inet socket: Landlock's TCP port
#: rules do not hold for it (IPPROTO_TCP sockets only), and it falls back to plain TCP.
IPPROTO_MPTCP = 262


def _run_tcp_connect(ctx: _Ctx, out: _Out, proto: int = 0) -> Outcome:
    port = ctx.targets.mptcp_port if proto == IPPROTO_MPTCP else ctx.targets.tcp_port
    sock, fail = _socket(socket.AF_INET, socket.SOCK_STREAM, proto, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    sock.settimeout(3)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError as exc:
        if isinstance(exc, TimeoutError) or exc.errno is None:
            return "denied", "connect timed out"
        return ctx.denied(exc, EACCES="landlock: TCP port not granted",
                          ENETUNREACH="network namespace: no route to the host's loopback",
                          ECONNREFUSED="network namespace: the parent's port is not there")
    finally:
        sock.close()
    return _ok(f"connected to the parent's 127.0.0.1:{port}")


def _run_connect_loopback(ctx: _Ctx, out: _Out) -> Outcome:
    """The parent's 127.0.0.1 port by the host's other spellings of itself: 0.0.0.0 (which
    the kernel takes as this host) and the IPv4-mapped ::ffff:127.0.0.1 over an inet6 socket.
    A policy that keeps TCP connect from the loopback must hold for every form (CleanCoin-node
    connects through its connect broker, and not at all by itself: found 12-06, h35)."""
    port = ctx.targets.tcp_port
    refusals: list[Outcome] = []
    for family, address in ((socket.AF_INET, ("0.0.0.0", port)), (socket.AF_INET6, ("::ffff:127.0.0.1", port, 0, 0))):
        sock, fail = _socket(family, socket.SOCK_STREAM, 0, ctx)
        if sock is None:
            refusals.append(fail)  # type: ignore[arg-type]
            continue
        sock.settimeout(3)
        try:
            sock.connect(address)
        except OSError as exc:
            if isinstance(exc, TimeoutError) or exc.errno is None:
                refusals.append(("denied", "connect timed out"))
            else:
                refusals.append(ctx.denied(exc, EACCES="landlock: TCP port not granted",
                                           ENETUNREACH="network namespace: no route to the host's loopback",
                                           ECONNREFUSED="network namespace: the parent's port is not there"))
            continue
        finally:
            sock.close()
        return _ok(f"connected to the parent's port {port} as {address[0]}")
    return refusals[0]


def _run_tcp_bind(ctx: _Ctx, out: _Out, proto: int = 0) -> Outcome:
    sock, fail = _socket(socket.AF_INET, socket.SOCK_STREAM, proto, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    try:
        sock.bind(("0.0.0.0", ctx.targets.bind_port))
        sock.listen(1)
    except OSError as exc:
        return ctx.denied(exc, EACCES="landlock: TCP port not granted",
                          EADDRINUSE="kernel: port in use")
    finally:
        sock.close()
    return _ok(f"bound and listened on 0.0.0.0:{ctx.targets.bind_port}")


def _run_mptcp_connect(ctx: _Ctx, out: _Out) -> Outcome:
    return _run_tcp_connect(ctx, out, IPPROTO_MPTCP)


def _run_mptcp_bind(ctx: _Ctx, out: _Out) -> Outcome:
    return _run_tcp_bind(ctx, out, IPPROTO_MPTCP)


def _run_udp_send(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_INET, socket.SOCK_DGRAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    try:
        sock.sendto(ctx.targets.token.encode(), ("127.0.0.1", ctx.targets.udp_port))
    except OSError as exc:
        return ctx.denied(exc, ENETUNREACH="network namespace: no route to the host's loopback")
    finally:
        sock.close()
    return _ok(f"sent a datagram to the parent's 127.0.0.1:{ctx.targets.udp_port}")


def _make_socket_runner(family: int, kind: int, proto: int, what: str) -> Runner:
    def run(ctx: _Ctx, out: _Out) -> Outcome:
        sock, fail = _socket(family, kind, proto, ctx)
        if sock is None:
            return fail  # type: ignore[return-value]
        sock.close()
        return _ok(f"created {what}")
    return run


def _run_abstract_connect(ctx: _Ctx, out: _Out) -> Outcome:
    sock, fail = _socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    sock.settimeout(3)
    try:
        sock.connect(ctx.targets.abstract_name)
    except OSError as exc:
        return ctx.denied(exc, EPERM="landlock: abstract unix socket scope",
                          ECONNREFUSED="network namespace: abstract names are per namespace")
    finally:
        sock.close()
    return _ok(f"connected to the parent's abstract socket @{ctx.targets.abstract_name[1:]}")


def _outside_parents_namespace(sock: socket.socket, ctx: _Ctx, out: _Out) -> Outcome | None:
    """None when binding `sock` to the parent's own abstract name finds it taken (this is the
    parent's network namespace: the attempt goes on); else the attempt's outcome (the name
    was free: a namespace of its own; or the bind was refused)."""
    try:
        sock.bind(ctx.targets.abstract_name)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return ctx.denied(exc)
        out.note("the parent's abstract name is taken here: this is the parent's network namespace")
        return None
    return "denied", "network namespace: abstract names are per namespace (the parent's name was free here)"


def _run_abstract_bind(ctx: _Ctx, out: _Out) -> Outcome:
    """Claim an abstract name where the parent's clients would look for it. Landlock's scope
    refuses connect and send to abstract sockets made outside the sandbox, not bind: in the
    parent's network namespace a name bound here is taken for every process of the host (a
    display's @/tmp/.X11-unix/X<n> before its server starts), whose clients then connect to
    the sandbox. Whether this is the parent's namespace: the parent's own name is taken there."""
    sock, fail = _socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, ctx)
    if sock is None:
        return fail  # type: ignore[return-value]
    try:
        elsewhere = _outside_parents_namespace(sock, ctx, out)
        if elsewhere is not None:
            return elsewhere
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(ctx.targets.abstract_name + "-claimed")
        except OSError as exc:
            return ctx.denied(exc)
        finally:
            claim.close()
    finally:
        sock.close()
    return _ok(f"bound @{ctx.targets.abstract_name[1:]}-claimed in the parent's network namespace")


def _run_abstract_bind_pair(ctx: _Ctx, out: _Out) -> Outcome:
    """Take an abstract name of the parent's network namespace with one end of a socket
    pair: a process that may make no unix socket of its own (socketpair only) still holds
    two, and bind needs no new one. Nothing reaches a pair's socket, but the name is taken for
    every process of the host: a service started later cannot have it (found 12-07 on
    CleanCoin-node, whose event loop needs socketpair)."""
    try:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        return ctx.denied(exc, EAFNOSUPPORT="seccomp: socket family not allowed")
    try:
        elsewhere = _outside_parents_namespace(mine, ctx, out)
        if elsewhere is not None:
            return elsewhere
        try:
            theirs.bind(ctx.targets.abstract_name + "-paired")
        except OSError as exc:
            return ctx.denied(exc)
    finally:
        mine.close()
        theirs.close()
    return _ok(f"bound @{ctx.targets.abstract_name[1:]}-paired in the parent's network namespace "
               "with a socket of a pair")


# expectations ------------------------------------------------------------------------------

def _inet_socket(j: _Judge, w: _Why, kind: int, proto: int = 0) -> _Why:
    return j.sc(w, "socket", {0: socket.AF_INET, 1: kind, 2: proto})


def _exp_tcp_connect(j: _Judge, t: _Targets, proto: int = 0) -> _Why:
    port = t.mptcp_port if proto == IPPROTO_MPTCP else t.tcp_port
    w = _Why()
    _inet_socket(j, w, socket.SOCK_STREAM, proto)
    j.sc(w, "connect")
    w.need(j.ll_port(port, landlock.ACCESS_NET_CONNECT_TCP),
           f"landlock: TCP connect to port {port} not granted")
    return w.need("net" not in j.ns, "network namespace: the host's loopback is not there")


def _exp_tcp_bind(j: _Judge, t: _Targets, proto: int = 0) -> _Why:
    w = _Why()
    _inet_socket(j, w, socket.SOCK_STREAM, proto)
    j.sc(w, "bind")
    return w.need(j.ll_port(t.bind_port, landlock.ACCESS_NET_BIND_TCP),
                  f"landlock: TCP bind to port {t.bind_port} not granted")


# The policy's TCP port rules are its promise for every stream socket: the filter keeps inet
# stream sockets to TCP, since Landlock's rules do not reach MPTCP (found 12-06, h33).
def _exp_mptcp_connect(j: _Judge, t: _Targets) -> _Why:
    return _exp_tcp_connect(j, t, IPPROTO_MPTCP)


def _exp_mptcp_bind(j: _Judge, t: _Targets) -> _Why:
    return _exp_tcp_bind(j, t, IPPROTO_MPTCP)


def _exp_udp(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    _inet_socket(j, w, socket.SOCK_DGRAM)
    j.sc(w, "sendto")
    return w.need("net" not in j.ns, "network namespace (Landlock has no UDP rules)")


def _exp_socket(family: int, kind: int, cap: int | None) -> Callable[[_Judge, _Targets], _Why]:
    def expect(j: _Judge, t: _Targets) -> _Why:
        w = _Why()
        j.sc(w, "socket", {0: family, 1: kind})
        if cap is not None:
            w.need(j.has_cap(cap), "capabilities: CAP_NET_RAW dropped")
        return w
    return expect


def _exp_abstract(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    j.sc(w, "connect")
    w.need(not j.scoped(landlock.SCOPE_ABSTRACT_UNIX_SOCKET), "landlock: abstract unix socket scope")
    return w.need("net" not in j.ns, "network namespace: abstract names are per namespace")


def _exp_abstract_bind(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socket", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    j.sc(w, "bind")
    return w.need("net" not in j.ns, "network namespace: abstract names are per namespace")


def _exp_abstract_bind_pair(j: _Judge, t: _Targets) -> _Why:
    w = _Why()
    j.sc(w, "socketpair", {0: socket.AF_UNIX, 1: socket.SOCK_STREAM})
    j.sc(w, "bind")
    return w.need("net" not in j.ns, "network namespace: abstract names are per namespace")
