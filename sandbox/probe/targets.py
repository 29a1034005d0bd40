"""Targets outside the sandbox, set up by the parent before fork and removed afterwards."""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import secrets
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from .judge import _Judge
from .kernel_abi import _MAKE_REG, _MNT_DETACH, _READ_FILE, _WRITE_FILE


@dataclass
class _Targets:
    """Everything the battery aims at; made by the parent before fork."""

    token: str
    parent_pid: int
    outside_dir: str
    canary: str
    secret: bytes
    secret_addr: int              # address of `secret` in the parent (same in a fork)
    writable_dir: str | None
    tcp_port: int
    udp_port: int
    bind_port: int
    abstract_name: str
    true_path: str = "/bin/true"
    hidden_file: str | None = None   # a file the parent put in a `filesystem.hide` directory
    unix_socket: str = ""            # a named unix socket listening outside every grant
    memory_addr: int = 0             # where the parent holds a second secret in its memory
    memory_hash: str = ""            # and its SHA-256 (the secret itself is never sent)
    # Files granted read-only inside a writable grant (node.toml's CleanCoin.conf and
    # sandbox.log in the datadir): what the next, unconfined start reads, and the record of
    # refusals, which the component must not change. Each one is tried.
    protected_files: tuple[str, ...] = ()
    # A second TCP listener, for the MPTCP attempt: the parent tells the two connections apart.
    mptcp_port: int = 0

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["secret"] = self.secret.hex()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "_Targets":
        values = dict(data)
        values["secret"] = bytes.fromhex(str(values["secret"]))
        values["protected_files"] = tuple(values.get("protected_files", ()))  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    @property
    def created(self) -> str:
        return os.path.join(self.outside_dir, "created-by-sandbox")

    def probe_file(self, what: str) -> str:
        assert self.writable_dir is not None
        return os.path.join(self.writable_dir, f".cleancoin-probe-{self.token}-{what}")


def _choose_outside(judge: _Judge) -> str:
    """A fresh directory outside every granted path (not /tmp: a private /tmp hides it)."""
    candidates = ["/var/tmp", "/root", os.path.expanduser("~"), "/var/lib", "/tmp"]
    for base in candidates:
        if not os.path.isdir(base) or not os.access(base, os.W_OK):
            continue
        if judge.plan.landlock is None or not judge.ll_allows(
                os.path.join(base, "cleancoin-probe-x", "canary"), _READ_FILE):
            return base
    return "/var/tmp"


def _protected_files(judge: _Judge) -> tuple[str, ...]:
    """Every existing file the view binds read-only inside a writable bind."""
    if judge.view is None:
        return ()
    writable = [m.path for m in judge.view if m.kind == "bind" and m.writable]
    return tuple(mount.path for mount in judge.view
                 if mount.kind == "bind" and not mount.writable and os.path.isfile(mount.path)
                 and any(mount.path.startswith(w.rstrip("/") + "/") for w in writable))


def _writable_dir(judge: _Judge, variables: Mapping[str, str]) -> str | None:
    """A granted writable directory for the control attempt: the datadir if it is one."""
    candidates = [variables[k] for k in ("datadir", "walletdir", "tmpdir") if variables.get(k)]
    if judge.plan.landlock is not None:
        candidates += [p for p, rights, _ in judge.plan.landlock.paths if rights & _MAKE_REG]
    for path in candidates:
        if os.path.isdir(path) and judge.ll_allows(os.path.join(path, "x"), _MAKE_REG | _WRITE_FILE):
            return path
    return None


@contextmanager
def _outside_targets(judge: _Judge, variables: Mapping[str, str]) -> Iterator[tuple[_Targets, dict[str, socket.socket]]]:
    token = secrets.token_hex(6)
    outside = os.path.realpath(os.path.join(_choose_outside(judge), f"cleancoin-probe-{token}"))
    os.mkdir(outside, 0o755)
    secret = f"cleancoin-probe-canary-{secrets.token_hex(8)}".encode()
    secret_buf = ctypes.create_string_buffer(secret, len(secret))
    # Held in this process's memory only, like a password a launcher read from its conf
    # file: a child that starts as a copy of this process would hold it at the same address.
    memory_secret = secrets.token_bytes(32)
    memory_buf = ctypes.create_string_buffer(memory_secret, len(memory_secret))
    listeners: dict[str, socket.socket] = {}
    targets: _Targets | None = None
    try:
        canary = os.path.join(outside, "canary")
        with open(canary, "wb") as handle:
            handle.write(secret)
        os.chmod(canary, 0o644)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listeners["tcp"] = tcp
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listeners["mptcp"] = mptcp
        mptcp.bind(("127.0.0.1", 0))
        mptcp.listen(8)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listeners["udp"] = udp
        udp.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
            free.bind(("127.0.0.1", 0))
            bind_port = free.getsockname()[1]
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listeners["abstract"] = unix
        abstract = f"\0cleancoin-probe-{token}"
        unix.bind(abstract)
        unix.listen(8)
        named = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listeners["named"] = named
        named_path = os.path.join(outside, "probe.sock")
        named.bind(named_path)
        named.listen(8)
        targets = _Targets(token, os.getpid(), outside, canary, secret,
                           ctypes.addressof(secret_buf), _writable_dir(judge, variables),
                           tcp.getsockname()[1], udp.getsockname()[1], bind_port, abstract,
                           hidden_file=_plant_hidden(judge, token, secret), unix_socket=named_path,
                           memory_addr=ctypes.addressof(memory_buf),
                           memory_hash=hashlib.sha256(memory_secret).hexdigest(),
                           protected_files=_protected_files(judge), mptcp_port=mptcp.getsockname()[1])
        yield targets, listeners
    finally:
        for sock in listeners.values():
            sock.close()
        del secret_buf, memory_buf
        _umount_quietly(outside)
        shutil.rmtree(outside, ignore_errors=True)
        if targets is not None and targets.hidden_file is not None:
            try:
                os.unlink(targets.hidden_file)
            except OSError:
                pass
        if targets is not None and targets.writable_dir is not None:
            for what in ("granted", "symlink", "hardlink", "mknod"):
                try:
                    os.unlink(targets.probe_file(what))
                except OSError:
                    pass


def _plant_hidden(judge: _Judge, token: str, secret: bytes) -> str | None:
    """A canary file in the first hidden directory of the plan, for `fs-read-hidden`.

    None when the plan hides nothing, or the parent cannot write there (the attempt is then
    left out of the battery, as the writable-directory attempts are without a writable one).
    """
    for directory in judge.hidden:
        path = os.path.join(directory, f".cleancoin-probe-{token}-hidden")
        try:
            with open(path, "xb") as handle:
                handle.write(secret)
        except OSError:
            continue
        return path
    return None


def _umount_quietly(path: str) -> None:
    # Only ever needed if a (weak) policy let the mount attempt through and the attempt could
    # not undo it; a failure here is the normal case.
    try:
        from .. import syscalls
        syscalls.umount2(path, _MNT_DETACH)
    except OSError:
        pass
