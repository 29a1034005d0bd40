"""The connect rule: which addresses an outgoing P2P connection may go to.

Peers are somewhere else on the network. An address of this host (loopback 127/8 and ::1,
the unspecified 0.0.0.0 and ::, which the kernel takes as this host, link-local addresses,
the IPv4-mapped and IPv4-compatible forms of all those, and the addresses of this host's
interfaces) is where the host's own services listen: a Redis or PostgreSQL without a
password, a local admin API. Attacker code in the node must not use the P2P connect path to
reach them, so such an address is refused, unless the operator named that endpoint when the
node started: -connect, -addnode and -allowlocalpeer (docs/node.md). The list is fixed at
start; `addnode` at run time to a local endpoint not named then is refused.

Both executables apply this rule to every outgoing P2P connection: CleanCoind in its own
process (connector.DirectConnector), CleanCoin-node in its connect broker (connect_broker.py),
the only process that can open a TCP connection for it. The interface addresses are read once,
when the rule is built: an address added to the host later is not known to it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: How many endpoints one rule holds (the operator's options, each resolved): a bound on
#: start-up work and on the broker's command line.
MAX_ENDPOINTS = 256


class ConnectRefused(OSError):
    """A connection the connect rule refuses; str() says which address and why."""


@dataclass(frozen=True)
class Endpoint:
    """An address the operator named, with the ports it may be dialled on (low..high)."""

    address: IPAddress
    low: int
    high: int

    def holds(self, address: IPAddress, port: int) -> bool:
        return address == self.address and self.low <= port <= self.high


def normalize(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form stands for (::ffff:a.b.c.d mapped, ::a.b.c.d
    compatible), else the address itself: a rule on 127.0.0.1 holds for its IPv6 spellings."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        packed = address.packed
        if packed[:12] == bytes(12) and int.from_bytes(packed[12:], "big") > 1:
            return ipaddress.IPv4Address(packed[12:])     # IPv4-compatible (deprecated) form
    return address


def parse_address(text: str) -> IPAddress:
    """A numeric address (an IPv6 scope such as fe80::1%eth0 dropped); ValueError if none."""
    return normalize(ipaddress.ip_address(text.partition("%")[0]))


def own_addresses() -> frozenset[IPAddress]:
    """The addresses of this host's interfaces, from /proc (IPv4: the LOCAL entries of
    fib_trie, every alias included; IPv6: if_inet6). Empty where /proc cannot be read."""
    found: set[IPAddress] = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as handle:
            previous = ""
            for line in handle:
                text = line.strip()
                if text.startswith("/32 host LOCAL") and previous.startswith("|-- "):
                    found.add(ipaddress.IPv4Address(previous[4:]))
                previous = text
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as handle:
            for line in handle:
                hexa = line.split()[0] if line.strip() else ""
                if len(hexa) == 32:
                    found.add(normalize(ipaddress.IPv6Address(bytes.fromhex(hexa))))
    except (OSError, ValueError):
        pass
    return frozenset(found)


def local_reason(address: IPAddress, own: frozenset[IPAddress] = frozenset()) -> str | None:
    """Why `address` (normalized) is this host's own, or None for an address elsewhere."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address (this host)"
    if address.is_link_local:
        return "a link-local address"
    if address in own:
        return "an address of this host"
    return None


def split_endpoint(text: str) -> tuple[str, int, int]:
    """-allowlocalpeer's value: host:port, [v6]:port, or a port range host:low-high.
    Raises ValueError with a message for the operator."""
    s = text.strip()
    if s.startswith("["):
        host, sep, ports = s[1:].partition("]:")
    else:
        host, sep, ports = s.rpartition(":")
    if not sep or not host or not ports:
        raise ValueError(f"'{text}' is not host:port (or host:low-high)")
    low_s, dash, high_s = ports.partition("-")
    if not low_s.isdigit() or (dash and not high_s.isdigit()):
        raise ValueError(f"'{text}': '{ports}' is not a port or a port range")
    low, high = int(low_s), int(high_s) if dash else int(low_s)
    if not 0 < low <= high < 65536:
        raise ValueError(f"'{text}': ports must lie in 1-65535, low first")
    return host, low, high


def resolve(host: str) -> list[IPAddress]:
    """Every address `host` names (numeric, /etc/hosts or DNS), normalized; [] if none."""
    try:
        return [parse_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))


@dataclass(frozen=True)
class ConnectRule:
    """The rule (module docstring): the endpoints the operator named, and this host's own
    addresses as they were when it was built."""

    allowed: tuple[Endpoint, ...] = ()
    own: frozenset[IPAddress] = field(default_factory=frozenset)

    @classmethod
    def build(cls, endpoints: Iterable[str], own: frozenset[IPAddress] | None = None) -> "ConnectRule":
        """From the operator's endpoints (host:port or host:low-high; names resolved now);
        `own` defaults to this host's interface addresses. Raises ValueError."""
        allowed: list[Endpoint] = []
        for text in endpoints:
            host, low, high = split_endpoint(text)
            allowed += [Endpoint(a, low, high) for a in resolve(host)]
            if len(allowed) > MAX_ENDPOINTS:
                raise ValueError(f"more than {MAX_ENDPOINTS} local peer endpoints")
        return cls(tuple(dict.fromkeys(allowed)), own_addresses() if own is None else own)

    def check(self, address: IPAddress | str, port: int) -> str | None:
        """None if a connection to address:port may be made, else why not."""
        addr = parse_address(address) if isinstance(address, str) else normalize(address)
        reason = local_reason(addr, self.own)
        if reason is None or any(e.holds(addr, port) for e in self.allowed):
            return None
        where = f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
        return (f"{where} is {reason}, and not an endpoint named at start "
                "(-connect, -addnode or -allowlocalpeer)")

    def to_args(self) -> list[str]:
        """The rule as command-line values (a broker's), each an address:low-high."""
        return [f"[{e.address}]:{e.low}-{e.high}" if e.address.version == 6 else f"{e.address}:{e.low}-{e.high}"
                for e in self.allowed]


def checked_addresses(rule: ConnectRule, host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    """(family, sockaddr) of every address `host` resolves to that the rule allows, in the
    resolver's order. Raises ConnectRefused when it resolves to addresses and the rule refuses
    them all, OSError when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except UnicodeError as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    allowed: list[tuple[int, tuple[object, ...]]] = []
    refusals: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        reason = rule.check(str(sockaddr[0]), port)
        if reason is None:
            allowed.append((family, sockaddr))
        elif reason not in refusals:
            refusals.append(reason)
    if not allowed:
        raise ConnectRefused(f"refused by the connect rule: {'; '.join(refusals) or 'no address'}")
    return allowed


def connect_checked(rule: ConnectRule, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port, to an address the rule allows (blocking, each attempt
    bounded by `timeout`; the first that connects wins). Raises ConnectRefused or OSError."""
    last: OSError | None = None
    for family, sockaddr in checked_addresses(rule, host, port):
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, socket.IPPROTO_TCP)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc if not isinstance(exc, TimeoutError) else TimeoutError(f"connect timed out after {timeout:g} s")
            continue
        sock.setblocking(False)
        return sock
    assert last is not None
    raise last
