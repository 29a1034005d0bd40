"""The connect rule: which addresses an outgoing P2P connection may go to.

Peers are somewhere else on the network. An address of this host (loopback 127/8 and ::1,
the unspecified 0.0.0.0 and ::, which the kernel takes as this host, link-local addresses,
the IPv4-mapped and IPv4-compatible forms of all those, and the addresses of this host's
interfaces) is where the host's own services listen: a Redis or PostgreSQL without a
password, a local admin API. Attacker code in the node must not use the P2P connect path to
reach them, so such an address is refused, unless the operator named that endpoint when the
node started: -connect, -addnode and -allowlocalpeer (docs/node.md). The list is fixed at
start; `addnode` at run time to a local endpoint not named then is refused. Since 12-07 the
same holds for the addresses of cloud providers' metadata and platform services
(PROVIDER_SERVICES: fd00:ec2::254, 100.100.100.200, 168.63.129.16, ...), where a VM's
credentials are anyone's who asks from inside it; before, only the link-local ones were
refused. Since 12-07 also: an IPv6 address that carries a refused IPv4 address for a NAT64
gateway, a SIIT translator, a 6to4 or a Teredo relay on the way (64:ff9b::a9fe:a9fe is the
metadata service behind a NAT64 gateway; `embedded_ipv4`), 0.0.0.0/8, and multicast and
broadcast addresses; before, those were connected to (or tried) as any remote peer.

Every address is checked in its canonical form (`parse_address`: ipaddress's, IPv4-mapped
and IPv4-compatible forms as the IPv4 address), and it is the address connected to: a name
is resolved once, by the code that connects (the broker), and each address it resolved to
is checked and then connected to as that sockaddr, never looked up again (a name that
answers a public address first and 127.0.0.1 next, DNS rebinding, gets the second checked).
Spellings libc reads as numbers (127.1, 2130706433, 0x7f.0.0.1) reach the rule as the
canonical address getaddrinfo made of them.

Both executables apply this rule to every outgoing P2P connection: CleanCoind in its own
process (connector.DirectConnector), CleanCoin-node in its connect broker (connect_broker.py),
the only process that can open a TCP connection for it. The interface addresses are read
again for each connection (InterfaceAddresses): an address the host gets after start is its
own from then on.

Name resolution has a deadline (`Resolver`): getaddrinfo cannot be interrupted, and a DNS
server that never answers (an attacker's, for a name the operator configured) holds it for
as long as glibc retries (resolv.conf's timeout x attempts x servers: up to minutes). Each
lookup runs in a daemon thread of its own; its caller waits at most until its deadline and
fails with a clear TimeoutError; a lookup given up on keeps only its thread (at most
MAX_LOOKUPS at once: more names fail at once, "being resolved already"). A numeric host is
never looked up, so a numeric connect never waits for, nor on a slot of, a name's lookup; and
nothing waits for a lookup's thread to end (a stop neither).
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: How many endpoints one rule holds (the operator's options, each resolved): a bound on
#: start-up work and on the broker's command line.
MAX_ENDPOINTS = 256
#: Names looked up at once, those whose caller gave up waiting included: a bound on the
#: threads and descriptors that unanswered DNS queries hold (see the module docstring).
MAX_LOOKUPS = 4
#: How long the names the operator named are looked up at start, all of them together.
START_RESOLVE_TIMEOUT = 5.0

AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


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


#: IPv6 prefixes whose addresses carry an IPv4 address that a translator or a tunnel on the
#: way connects to instead: NAT64 (RFC 6052's well-known prefix, and RFC 8215's local-use
#: one, whose operator chooses where in it the IPv4 address sits: every RFC 6052 place is
#: read), SIIT's IPv4-translated addresses (RFC 2765), 6to4 (RFC 3056) and Teredo (RFC 4380:
#: its server, and its client, stored inverted).
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
SIIT_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
#: Their leading bytes, compared as bytes (ipaddress's `in` costs several microseconds each,
#: for every address of every connection); 6to4's 2002::/16 and Teredo's 2001::/32 too.
_NAT64_WELL_KNOWN = NAT64_WELL_KNOWN.network_address.packed[:12]
_NAT64_LOCAL_USE = NAT64_LOCAL_USE.network_address.packed[:6]
_SIIT_TRANSLATED = SIIT_TRANSLATED.network_address.packed[:12]
_SIX_TO_FOUR, _TEREDO = b"\x20\x02", b"\x20\x01\x00\x00"
#: Where RFC 6052 puts the IPv4 address for each prefix length in NAT64_LOCAL_USE (48, 56,
#: 64, 96): the byte ranges that hold its four bytes, and where the suffix starts. Byte 8,
#: the "u" octet, and the suffix are zero in such an address: where they are not, that is no
#: reading (64:ff9b:1::808:808 is 8.8.8.8 at /96 only, not 0.0.0.0 at /48).
_RFC6052_PLACES = ((((6, 8), (9, 11)), 11), (((7, 8), (9, 12)), 12), (((9, 13),), 13), (((12, 16),), 16))


def embedded_ipv4(address: IPAddress) -> list[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 addresses an IPv6 address stands for on a network with a NAT64 gateway, a
    SIIT translator, a 6to4 or a Teredo relay, each with the name of its form; [] for one
    that carries none (and for an IPv4 address). A connection to such an address goes on,
    through the gateway or the relay, to the IPv4 address it carries."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    packed = address.packed
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    if packed[:12] in (_NAT64_WELL_KNOWN, _SIIT_TRANSLATED):
        found.append((ipaddress.IPv4Address(packed[12:]), "NAT64" if packed[:12] == _NAT64_WELL_KNOWN else "SIIT"))
    elif packed[:6] == _NAT64_LOCAL_USE:
        readings = [ipaddress.IPv4Address(b"".join(packed[a:b] for a, b in place))
                    for place, suffix in _RFC6052_PLACES
                    if suffix == 16 or (packed[8] == 0 and not any(packed[suffix:]))]
        # The /96 reading of a /48../64 form is 0.0.0.0 (its last bytes are the zero
        # suffix): an all-zero reading counts only when no reading carries an address.
        carried = [r for r in readings if int(r)] or readings
        found += [(r, "NAT64") for r in dict.fromkeys(carried)]
    elif packed[:2] == _SIX_TO_FOUR:
        found.append((ipaddress.IPv4Address(packed[2:6]), "6to4"))
    elif packed[:4] == _TEREDO:
        client = ipaddress.IPv4Address(bytes(b ^ 0xFF for b in packed[12:]))
        found += [(client, "Teredo"), (ipaddress.IPv4Address(packed[4:8]), "Teredo server")]
    return found


def parse_address(text: str) -> IPAddress:
    """A numeric address (an IPv6 scope such as fe80::1%eth0 dropped); ValueError if none."""
    return normalize(ipaddress.ip_address(text.partition("%")[0]))


_FIB_TRIE, _IF_INET6, _IPV6_ROUTE = "/proc/self/net/fib_trie", "/proc/self/net/if_inet6", "/proc/self/net/ipv6_route"
_PATHS = (_FIB_TRIE, _IF_INET6, _IPV6_ROUTE)
#: ipv6_route's flags of a route to this host (include/uapi/linux/ipv6_route.h).
_RTF_LOCAL, _RTF_ANYCAST = 0x80000000, 0x00100000

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: What is this host's own: single addresses, and the prefixes routed to it as a whole.
Own = frozenset[IPAddress | IPNetwork]


def own_addresses() -> Own:
    """This host's addresses now, and the prefixes routed to it (see InterfaceAddresses)."""
    with InterfaceAddresses() as live:
        return live.read()


def _is_own(address: IPAddress, own: Own) -> bool:
    return address in own or any(address in n for n in own if isinstance(n, (ipaddress.IPv4Network,
                                                                              ipaddress.IPv6Network)))


class InterfaceAddresses:
    """This host's own addresses, read afresh on every read() (an address the host gets
    after start, a new interface or a DHCP renewal, is its own at once): IPv4 the LOCAL
    entries of fib_trie, every alias included, and a prefix routed to this host as a whole
    (`ip route add local 10.9.0.0/24 dev lo`, "AnyIP": every address in it answers here);
    IPv6 if_inet6, and the local and anycast routes of ipv6_route. The /proc files are opened
    once and read again from offset 0 (the kernel regenerates them), so a confined process
    (the connect broker, which has no /proc in its view) keeps them as descriptors: `fds`.
    They show the network namespace of the opener. An IPv6 file that does not exist is a
    host without IPv6; the IPv4 table that cannot be read, or reads empty, is an OSError at
    read(): the check fails closed. Until 12-07 it read as "no address of this host" and the
    host's own non-loopback addresses were anyone's (a descriptor replaced by /dev/null, as a
    careless keep list would do, let a service bound to 0.0.0.0 be reached on the host's LAN
    address), and only single addresses (/32) counted: an address in a local prefix reached
    the same service."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._errors: list[str] = []
        # One file position per descriptor, shared by the broker's dials, which run at once:
        # without the lock one dial's lseek and reads interleaved with another's, which then
        # read the table from its end, "read empty", and was refused (a flaky -connect, 12-07).
        self._reading = threading.Lock()
        for path in _PATHS:
            try:
                self._fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                self._errors.append("")
            except OSError as exc:
                self._fds.append(-1)
                self._errors.append(exc.strerror or str(exc))

    @property
    def fds(self) -> set[int]:
        return {fd for fd in self._fds if fd >= 0}

    def _text(self, which: int) -> str:
        fd, path = self._fds[which], _PATHS[which]
        if fd < 0:
            if which > 0 and not os.path.exists(path):
                return ""                   # no IPv6 on this host: no IPv6 address of its own
            raise OSError(f"cannot read this host's addresses: {path}: {self._errors[which]}")
        chunks = []
        try:
            with self._reading:
                os.lseek(fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise OSError(f"cannot read this host's addresses: {path}: {exc.strerror or exc}") from None
        text = b"".join(chunks).decode("ascii", "replace")
        if which == 0 and not text.strip():
            # The kernel's table always names itself ("Main:", "Local:"): nothing is no table.
            raise OSError(f"cannot read this host's addresses: {path} read empty")
        return text

    def read(self) -> Own:
        """The addresses and local prefixes now; raises OSError when the IPv4 table cannot be
        read."""
        found: set[IPAddress | IPNetwork] = set()
        key = ""
        for line in self._text(0).splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                key = text[4:]              # the entries below are this key's
            elif key and text.startswith("/") and text.endswith(" LOCAL"):
                # "/PREFIXLEN SCOPE LOCAL" (not re: memory in the broker for one pattern)
                try:
                    found.add(_own(ipaddress.IPv4Network(f"{key}/{text[1:].split()[0]}", strict=False)))
                except ValueError:
                    pass
            elif text.startswith("+-- "):
                key = ""
        for line in self._text(1).splitlines():
            hexa = line.split()[0] if line.strip() else ""
            if len(hexa) == 32:
                try:
                    found.add(normalize(ipaddress.IPv6Address(bytes.fromhex(hexa))))
                except ValueError:
                    pass
        for line in self._text(2).splitlines():
            fields = line.split()           # dest, its prefix length, ..., flags (the 9th)
            try:
                if len(fields) >= 9 and int(fields[8], 16) & (_RTF_LOCAL | _RTF_ANYCAST):
                    network = ipaddress.IPv6Network((bytes.fromhex(fields[0]), int(fields[1], 16)), strict=False)
                    found.add(_own(network))
            except ValueError:
                pass
        return frozenset(found)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self._fds = [-1] * len(_PATHS)

    def __enter__(self) -> "InterfaceAddresses":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _own(network: IPNetwork) -> IPAddress | IPNetwork:
    """A single address as itself (normalized), a prefix as a network."""
    if network.prefixlen == network.max_prefixlen:
        return normalize(network.network_address)
    return network


#: Cloud providers' metadata and platform services, where a VM's instance credentials, user
#: data and host agent answer whoever asks from inside it: no P2P peer is there, and attacker
#: code in the node must not reach them through the connect path (the link-local ones,
#: 169.254.169.254 of AWS, GCP, Azure, OCI and others, are refused as link-local already).
#: Each is refused unless named at start, as an address of this host is (`check`). The
#: carrier-grade NAT range 100.64.0.0/10 around Alibaba's address is not refused as a whole:
#: Tailscale and carriers' networks put peers there, and Bitcoin Core, whose IsRoutable
#: keeps such addresses out of address gossip, still connects to them when named.
PROVIDER_SERVICES: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), what) for n, what in (
    ("fd00:ec2::/64", "AWS's IPv6 instance services: metadata fd00:ec2::254, DNS, time"),
    ("fd20:ce::254/128", "Google Cloud's IPv6 metadata server"),
    ("100.100.100.200/32", "Alibaba Cloud's metadata service"),
    ("168.63.129.16/32", "Azure's WireServer: VM agent, DNS, health probes"),
    ("192.0.0.192/32", "Oracle Cloud's classic metadata service"),
))


def provider_service(address: IPAddress) -> str | None:
    """Which cloud provider service `address` (normalized) is, or None."""
    return next((what for network, what in PROVIDER_SERVICES if address in network), None)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _direct_reason(address: IPAddress, own: Own) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address (this host)"
    if address.version == 4 and address.packed[0] == 0:
        # 0.0.0.0/8, "this network" (RFC 1122): Bitcoin Core's IsLocal counts it as local.
        return "an address of 0.0.0.0/8 (this network)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast or address == _BROADCAST:
        return "a multicast or broadcast address"
    if _is_own(address, own):
        return "an address of this host"
    if (service := provider_service(address)) is not None:
        return f"a cloud provider's service ({service})"
    return None


def local_reason(address: IPAddress, own: Own = frozenset()) -> str | None:
    """Why `address` (normalized) is refused unless named: this host's own, a cloud
    provider's service (PROVIDER_SERVICES), or an IPv6 address that carries such an IPv4
    address for a translator or relay on the way (embedded_ipv4: 64:ff9b::a9fe:a9fe is
    169.254.169.254 behind a NAT64 gateway; since 12-07); None for an address elsewhere."""
    reason = _direct_reason(address, own)
    if reason is None:
        for inner, form in embedded_ipv4(address):
            if (inner_reason := _direct_reason(inner, own)) is not None:
                return f"the {form} form of {inner}, {inner_reason}"
    return reason


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


class Resolver:
    """getaddrinfo with a deadline (module docstring): at most `limit` lookups at once, each
    in a daemon thread that its caller stops waiting for at the deadline."""

    def __init__(self, limit: int = MAX_LOOKUPS) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def getaddrinfo(self, host: str, port: int | None, deadline: float, wait: bool = False) -> list[AddrInfo]:
        """TCP address infos of host:port by time.monotonic() `deadline`. A numeric host
        is answered here without a lookup. Raises TimeoutError when the lookup is not done by
        then, OSError when it fails or (unless `wait`: then until the deadline) when `limit`
        lookups are running already."""
        hints = {"type": socket.SOCK_STREAM, "proto": socket.IPPROTO_TCP}
        # An ASCII name as bytes: CPython passes a str host through the idna codec, which for
        # ASCII changes nothing but refuses empty or over-long labels (libc refuses those
        # too), and costs the connect broker, whose names are all ASCII, 0.3 MiB of imports.
        query: str | bytes = host.encode("ascii") if host.isascii() else host
        try:
            return socket.getaddrinfo(query, port, flags=socket.AI_NUMERICHOST, **hints)
        except (OSError, UnicodeError):
            pass                            # a name: looked up below
        if wait:
            got = self._slots.acquire(timeout=max(0.0, deadline - time.monotonic()))
        else:
            got = self._slots.acquire(blocking=False)
        if not got:
            raise OSError(f"cannot resolve {host}: {self.limit} names are being resolved already")
        done = threading.Event()
        outcome: list[list[AddrInfo] | BaseException] = []

        def lookup() -> None:
            try:
                outcome.append(socket.getaddrinfo(query, port, **hints))
            except (OSError, UnicodeError) as exc:
                outcome.append(exc)
            finally:
                self._slots.release()
                done.set()
        try:
            threading.Thread(target=lookup, name="getaddrinfo", daemon=True).start()
        except RuntimeError as exc:         # no thread to be had (nproc)
            self._slots.release()
            raise OSError(f"cannot resolve {host}: {exc}") from None
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"resolving {host} took longer than its deadline")
        result = outcome[0]
        if isinstance(result, UnicodeError):
            raise OSError(f"cannot resolve {host!r}: {result}")
        if isinstance(result, BaseException):
            raise OSError(f"cannot resolve {host}: {getattr(result, 'strerror', None) or result}")
        return result


def resolve_all(hosts: Iterable[str], timeout: float = START_RESOLVE_TIMEOUT) -> dict[str, list[IPAddress]]:
    """Every address each host names (numeric, /etc/hosts or DNS), normalized; [] for one
    that does not resolve, or not within `timeout` (all of them together, looked up in
    parallel, MAX_LOOKUPS at a time)."""
    resolver = Resolver()
    deadline = time.monotonic() + timeout
    found: dict[str, list[IPAddress]] = {}
    results: dict[str, list[AddrInfo]] = {}

    def one(host: str) -> None:
        try:
            results[host] = resolver.getaddrinfo(host, None, deadline, wait=True)
        except OSError:
            pass
    threads = []
    for host in dict.fromkeys(hosts):
        try:
            found[host] = [parse_address(host)]
            continue
        except ValueError:
            pass
        found[host] = []
        thread = threading.Thread(target=one, args=(host,), name="resolve", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for host, infos in list(results.items()):
        found[host] = list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))
    return found


def resolve_all_apart(hosts: Iterable[str], timeout: float = START_RESOLVE_TIMEOUT) -> dict[str, list[IPAddress]]:
    """resolve_all in a forked child, killed at the deadline: for a process that must be
    single-threaded next (the connect broker confines itself right after, and restrict_self
    refuses a second thread, which would stay unconfined): a lookup given up on leaves no
    thread behind here. Call it while this process has no other thread."""
    names = list(dict.fromkeys(hosts))
    found: dict[str, list[IPAddress]] = {h: [] for h in names}
    if all(_numeric(h) for h in names):
        return resolve_all(names, timeout)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: look up, write, end
        try:
            os.close(read_end)
            result = {h: [str(a) for a in addrs] for h, addrs in resolve_all(names, timeout).items()}
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout + 1.0
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                break                               # past the deadline: what came so far
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks) or b"{}")
        for host in names:
            found[host] = [parse_address(a) for a in result.get(host, [])]
    except (ValueError, TypeError, AttributeError):
        pass                                        # cut short: nothing resolved
    return found


def _numeric(host: str) -> bool:
    try:
        parse_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ConnectRule:
    """The rule (module docstring): the endpoints the operator named, and this host's own
    addresses: `live`, read afresh for each check, or a fixed set `own` (tests)."""

    allowed: tuple[Endpoint, ...] = ()
    own: Own = field(default_factory=frozenset)
    live: InterfaceAddresses | None = field(default=None, compare=False)

    @classmethod
    def build(cls, endpoints: Iterable[str], own: Own | None = None,
              apart: bool = False) -> "ConnectRule":
        """From the operator's endpoints (host:port or host:low-high; names resolved now,
        within START_RESOLVE_TIMEOUT: one that does not resolve by then allows nothing; in a
        child process if `apart`, see resolve_all_apart); this host's interface addresses
        are read at each check, unless `own` fixes them. Raises ValueError."""
        split = [split_endpoint(text) for text in endpoints]
        if len(split) > MAX_ENDPOINTS:
            raise ValueError(f"more than {MAX_ENDPOINTS} local peer endpoints")
        addresses = (resolve_all_apart if apart else resolve_all)(host for host, _, _ in split)
        allowed: list[Endpoint] = []
        for host, low, high in split:
            allowed += [Endpoint(a, low, high) for a in addresses[host]]
            if len(allowed) > MAX_ENDPOINTS:
                raise ValueError(f"more than {MAX_ENDPOINTS} local peer endpoints")
        if own is not None:
            return cls(tuple(dict.fromkeys(allowed)), own)
        return cls(tuple(dict.fromkeys(allowed)), live=InterfaceAddresses())

    def own_now(self) -> Own:
        """This host's addresses as they are now (or the fixed set)."""
        return self.own | self.live.read() if self.live is not None else self.own

    def check(self, address: IPAddress | str, port: int, own: Own | None = None) -> str | None:
        """None if a connection to address:port may be made, else why not. `own`: this
        host's addresses if the caller read them already (own_now), for several checks."""
        addr = parse_address(address) if isinstance(address, str) else normalize(address)
        reason = local_reason(addr, self.own_now() if own is None else own)
        if reason is None or any(e.holds(addr, port) for e in self.allowed):
            return None
        where = f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
        return (f"{where} is {reason}, and not an endpoint named at start "
                "(-connect, -addnode or -allowlocalpeer)")

    def to_args(self) -> list[str]:
        """The rule as command-line values (a broker's), each an address:low-high."""
        return [f"[{e.address}]:{e.low}-{e.high}" if e.address.version == 6 else f"{e.address}:{e.low}-{e.high}"
                for e in self.allowed]


def checked_addresses(rule: ConnectRule, host: str, port: int, resolver: Resolver,
                      deadline: float) -> list[tuple[int, tuple[object, ...]]]:
    """(family, sockaddr) of every address `host` resolves to (by `deadline`) that the rule
    allows, in the resolver's order. Raises ConnectRefused when it resolves to addresses and
    the rule refuses them all, TimeoutError or OSError when it does not resolve."""
    infos = resolver.getaddrinfo(host, port, deadline)
    own = rule.own_now()            # after the lookup: as the host is when it connects
    allowed: list[tuple[int, tuple[object, ...]]] = []
    refusals: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        reason = rule.check(str(sockaddr[0]), port, own)
        if reason is None:
            allowed.append((family, sockaddr))
        elif reason not in refusals:
            refusals.append(reason)
    if not allowed:
        raise ConnectRefused(f"refused by the connect rule: {'; '.join(refusals) or 'no address'}")
    return allowed


def connect_checked(rule: ConnectRule, host: str, port: int, timeout: float, resolver: Resolver) -> socket.socket:
    """A TCP connection to host:port, to an address the rule allows (blocking; the first
    that connects wins). The whole of it, the name's lookup and every attempt, ends within
    `timeout`: an unanswered lookup or a name with many blackholed addresses cannot hold the
    caller longer. Raises ConnectRefused, TimeoutError or OSError."""
    deadline = time.monotonic() + timeout
    try:
        addresses = checked_addresses(rule, host, port, resolver, deadline)
    except TimeoutError:
        raise TimeoutError(f"resolving {host} took longer than {timeout:g} s") from None
    last: OSError | None = None
    for family, sockaddr in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, socket.IPPROTO_TCP)
        sock.settimeout(left)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc if not isinstance(exc, TimeoutError) else None
            continue
        sock.setblocking(False)
        return sock
    if last is None:
        raise TimeoutError(f"connect timed out after {timeout:g} s")
    raise last
