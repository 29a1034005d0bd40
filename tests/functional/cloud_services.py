"""Stand-ins for cloud providers' metadata services, reachable from this host as on a VM
(test support; needs root and iproute2's `ip`).

A network namespace of its own, joined to the host's by a veth pair, holds the providers'
service addresses on its loopback (AWS's fd00:ec2::254, Alibaba's 100.100.100.200, Azure's
168.63.129.16, Google's fd20:ce::254, Oracle's 192.0.0.192, the link-local 169.254.169.254),
the IPv6 spellings that carry some of them to a gateway (SPELLINGS: NAT64, SIIT, 6to4, Teredo)
and one ordinary peer address (203.0.113.7, TEST-NET-3); the host routes each of those single
addresses into the veth. In the namespace a small HTTP server answers every request on port 80
with a "metadata" document holding a secret, and counts the connections per address. Nothing
else on the host changes: `close` deletes the namespace, and with it the veth and its routes.
A lock file serializes users of the stand-ins (two test files at once would add the same
routes).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

#: name -> the service's address on port 80.
SERVICES = {
    "aws-ipv6-imds": "fd00:ec2::254",
    "alibaba-metadata": "100.100.100.200",
    "azure-wireserver": "168.63.129.16",
    "gcp-ipv6-metadata": "fd20:ce::254",
    "oracle-classic-metadata": "192.0.0.192",
    "link-local-imds": "169.254.169.254",
}
#: The same services spelled as IPv6 addresses that carry their IPv4 address
#: (connect_rule.embedded_ipv4): where a NAT64 gateway, a SIIT translator, a 6to4 or a
#: Teredo relay is on the way, a connection to one of these goes on to the service. The
#: namespace plays that gateway: it holds each spelling itself and answers as the service.
SPELLINGS = {
    "nat64-link-local-imds": "64:ff9b::a9fe:a9fe",
    "nat64-local-use-alibaba-metadata": "64:ff9b:1::6464:64c8",
    "siit-oracle-classic-metadata": "::ffff:0:c000:c0",
    "6to4-link-local-imds": "2002:a9fe:a9fe::1",
    "teredo-azure-wireserver": "2001:0:c633:6401::57c0:7eef",     # client 168.63.129.16, inverted
}
#: Every address the stand-ins answer on as a service.
ALL = {**SERVICES, **SPELLINGS}
#: An address of an ordinary remote host, in the same namespace: the control.
PEER = "203.0.113.7"
PORT = 80
LOCK = "/run/lock/cleancoin-cloud-services.lock" if os.path.isdir("/run/lock") else "/tmp/cleancoin-cloud-services.lock"

SERVER = r'''
import json, os, selectors, socket, sys
secret, counts_path, *addresses = sys.argv[1:]
counts = {a: 0 for a in addresses}
sel = selectors.DefaultSelector()
for address in addresses:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 80))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ, address)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        counts[key.data] += 1
        with open(counts_path + ".tmp", "w") as f:
            json.dump(counts, f)
        os.replace(counts_path + ".tmp", counts_path)
        conn.settimeout(2)
        try:
            conn.recv(4096)         # the request, or a P2P version message: answered alike
            body = json.dumps({"AccessKeyId": "ASIA-TEST", "SecretAccessKey": secret, "at": key.data}).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass
        conn.close()
'''


def skip_reason() -> str | None:
    """Why the stand-ins cannot be set up here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root for a network namespace, a veth pair and host routes"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    if not os.path.exists("/proc/net/if_inet6"):
        return "needs IPv6 (AWS's and Google's metadata addresses are IPv6)"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class CloudServices:
    """The namespace, its server and the host's routes (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.secret = "imds-secret-" + uuid.uuid4().hex
        self.counts_path = directory / "cloud-service-connections.json"
        tag = uuid.uuid4().hex[:6]
        self.netns, host_end, ns_end = f"cc-cloud-{tag}", f"cch{tag}", f"ccn{tag}"
        self._lock = open(LOCK, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.server: subprocess.Popen[str] | None = None
        try:
            _ip("netns", "add", self.netns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", self.netns)
            _ip("addr", "add", "198.18.77.1/30", "dev", host_end)
            _ip("addr", "add", "2001:db8:77::1/64", "dev", host_end, "nodad")
            _ip("link", "set", host_end, "up")
            inside = ["-n", self.netns]
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "addr", "add", "198.18.77.2/30", "dev", ns_end)
            _ip(*inside, "addr", "add", "2001:db8:77::2/64", "dev", ns_end, "nodad")
            _ip(*inside, "link", "set", ns_end, "up")
            _ip(*inside, "route", "add", "default", "via", "198.18.77.1")
            _ip(*inside, "-6", "route", "add", "default", "via", "2001:db8:77::1")
            for address in (*ALL.values(), PEER):
                v6 = ":" in address
                _ip(*inside, "addr", "add", f"{address}/{128 if v6 else 32}", "dev", "lo", *(["nodad"] if v6 else []))
                _ip(*(["-6"] if v6 else []), "route", "add", address, "via", "2001:db8:77::2" if v6 else "198.18.77.2")
            self.server = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-I", "-c", SERVER,
                                            self.secret, str(self.counts_path), *ALL.values(), PEER],
                                           stdout=subprocess.PIPE, text=True)
            assert self.server.stdout is not None
            if self.server.stdout.readline() != "ready\n":
                raise RuntimeError("the metadata server did not start")
        except BaseException:
            self.close()
            raise

    def connections(self) -> dict[str, int]:
        """Connections accepted so far, per address."""
        try:
            return json.loads(self.counts_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait_connections(self, address: str, count: int, timeout: float = 30.0) -> bool:
        """Whether `address` accepted `count` connections within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections().get(address, 0) >= count:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        self._lock.close()
