"""Linux socket address families by name, for `network.socket_families`.

Every family the kernel knows (include/linux/socket.h, AF_UNIX = 1 to AF_MCTP = 45), named as
systemd's RestrictAddressFamilies= names them without the `AF_` prefix, so that a policy can
say exactly what a profile from elsewhere (Docker's default allows all but alg and vsock)
allows. Families 0 and 46 and above do not exist: the kernel answers EAFNOSUPPORT itself.
"""

from __future__ import annotations

from collections.abc import Mapping

FAMILIES: Mapping[str, int] = {
    "unix": 1, "inet": 2, "ax25": 3, "ipx": 4, "appletalk": 5, "netrom": 6, "bridge": 7,
    "atmpvc": 8, "x25": 9, "inet6": 10, "rose": 11, "decnet": 12, "netbeui": 13,
    "security": 14, "key": 15, "netlink": 16, "packet": 17, "ash": 18, "econet": 19,
    "atmsvc": 20, "rds": 21, "sna": 22, "irda": 23, "pppox": 24, "wanpipe": 25, "llc": 26,
    "ib": 27, "mpls": 28, "can": 29, "tipc": 30, "bluetooth": 31, "iucv": 32, "rxrpc": 33,
    "isdn": 34, "phonet": 35, "ieee802154": 36, "caif": 37, "alg": 38, "nfc": 39, "vsock": 40,
    "kcm": 41, "qipcrtr": 42, "smc": 43, "xdp": 44, "mctp": 45,
}

#: One past the highest family number the kernel knows (AF_MAX).
AF_MAX = 46

BY_NUMBER: Mapping[int, str] = {number: name for name, number in FAMILIES.items()}
