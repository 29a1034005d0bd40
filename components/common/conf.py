"""The datadir layout and CleanCoin.conf, as the daemon and CleanCoin-cli both read them.

Layout: `<datadir>` (default ~/.cleancoin) holds CleanCoin.conf; each network has its own
directory below it: "" for main (the datadir itself), "testnet" for test, "regtest" for regtest.
The RPC cookie is `<datadir>/<netdir>/.cookie`.

The conf file is bitcoind's format: `name=value` lines, `#` comments, `[main]`, `[test]` and
`[regtest]` sections (or `regtest.name=value`). Options in a network's section apply to that
network only; options above every section apply to all networks, except the network-only
options (rpcport, rpcbind, port, bind, connect, addnode, wallet), which apply there to main only.
Within the file the first value wins; the command line overrides the file. `nofoo=1` negates
foo (`Negated`), as `-nofoo` does on the command line. `datadir=` in the file selects the data
directory when the command line gives none (bitcoind's rule, which client libraries that find
the cookie through the conf file rely on).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

CHAINS = ("main", "test", "regtest")
NETDIRS = {"main": "", "test": "testnet", "regtest": "regtest"}
# The node's chain parameters (components/common/chainparams.py) use the same ports; a test
# keeps the two in step without making the cli import the consensus code.
DEFAULT_RPC_PORTS = {"main": 27490, "test": 27590, "regtest": 27690}
CONF_FILENAME = "CleanCoin.conf"
COOKIE_FILE = ".cookie"
NETWORK_ONLY = frozenset({"addnode", "allowlocalpeer", "connect", "port", "bind", "rpcport", "rpcbind", "wallet"})
_SPACE = " \f\n\r\t\v"


class Negated(str):
    """The value of a negated option (`-nofoo`, `nofoo=1` in the file): it reads as "0", and in
    a list of values (-addnode, -wallet, ...) it drops every value before it, as bitcoind's
    negated settings do (`-nowallet` loads no wallet at all)."""

    __slots__ = ()


#: The one value a negation sets.
NEGATED = Negated("0")


def interpret_negation(name: str, value: str | None) -> tuple[str, str]:
    """bitcoind's InterpretKey/InterpretValue for a `no` prefix: `-nofoo` and `-nofoo=1` negate
    foo; `-nofoo=0` is the (discouraged) double negative, foo=1. Other names pass unchanged
    (`value` None: given without "=", which is true)."""
    if not name.startswith("no") or len(name) <= 2:
        return name, "1" if value is None else value
    if value is not None and not interpret_bool(value):
        return name[2:], "1"
    return name[2:], NEGATED


def effective_values(values: Iterable[str]) -> list[str]:
    """A list of values after its last negation (bitcoind's SettingsSpan)."""
    values = list(values)
    last = max((i for i, v in enumerate(values) if isinstance(v, Negated)), default=-1)
    return values[last + 1:]


class ConfError(ValueError):
    """A conf file that cannot be read or parsed; the message is the one to show."""


def default_datadir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cleancoin")


def net_datadir(datadir: str, chain: str) -> str:
    netdir = NETDIRS[chain]
    return os.path.join(datadir, netdir) if netdir else datadir


def cookie_path(datadir: str, chain: str, rpccookiefile: str | None = None) -> str:
    """`<datadir>/<netdir>/.cookie`; a relative -rpccookiefile is taken in the network datadir."""
    return os.path.join(net_datadir(datadir, chain), rpccookiefile or COOKIE_FILE)


def without_value(line: str) -> str:
    """A conf or command-line setting as an error may show it: its name, never its value.

    The lines that fail to parse are the ones whose value nobody can place, and a value may
    be a password (`rpcpassword secret`, `-rpcpassword=secret`, `rpcauth=user:password`);
    parse errors go to stderr and the log, which operators paste into bug reports. bitcoind
    repeats the line; here "-rpcpassword=secret" is shown as "-rpcpassword=…" and
    "rpcpassword secret" as "rpcpassword …"."""
    name, sep, _ = line.partition("=")
    words = name.split(None, 1)
    if len(words) > 1 or (words and words[0] != name.strip(_SPACE)):
        return f"{words[0]} …"
    return f"{name}=…" if sep else name


def parse_conf(text: str, path: str = CONF_FILENAME) -> list[tuple[str | None, str, str]]:
    """(section or None, name, value) for every setting, in file order."""
    entries: list[tuple[str | None, str, str]] = []
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        has_hash = "#" in line
        if has_hash:
            line = line[: line.index("#")]
        line = line.strip(_SPACE)
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip(_SPACE)
            continue
        if line.startswith("-"):
            raise ConfError(f"{path}: parse error on line {number}: {without_value(line)}, options in "
                            "configuration file must be specified without leading -")
        name, sep, value = line.partition("=")
        if not sep:
            hint = (f", if you intended to specify a negated option, use {line}=1 instead"
                    if line.startswith("no") and without_value(line) == line else "")
            raise ConfError(f"{path}: parse error on line {number}: {without_value(line)}{hint}")
        name, value = name.strip(_SPACE), value.strip(_SPACE)
        if has_hash and "rpcpassword" in name:
            raise ConfError(f"{path}: parse error on line {number}, using # in rpcpassword can be "
                            "ambiguous and should be avoided")
        entry_section = section
        if "." in name:
            entry_section, _, name = name.partition(".")
        name, value = interpret_negation(name, value)
        entries.append((entry_section, name, value))
    return entries


def datadir_from_file(value: str, conf_path: str) -> str:
    """A conf file's `datadir=`: absolute, `~` expanded; a relative one is taken from the conf
    file's directory (bitcoind takes it from the working directory, which nothing can rely on)."""
    path = os.path.expanduser(value)
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(os.path.dirname(conf_path), path))


def refuse_others(path: str, what: str) -> None:
    """ConfError when a user other than us (and root) could have chosen what `path` holds: it,
    or a directory on the way to it, belongs to another user, or others may write it. A
    directory on the way that others may write is fine when it is sticky (/tmp): they cannot
    rename or remove what we own in it; `path` itself may not be writable by others at all
    (they could plant a file in it before we make ours). A path that does not exist yet is
    checked from its nearest existing directory (`make_dirs` creates and checks it).

    "Others" includes a group: a group-writable directory is refused unless every member of
    its group is us or root (Debian's OpenSSH StrictModes rule: usergroups' umask 002 makes a
    user's directories group-writable for a private group of one, which is fine; a group with
    another member, or none that the system knows, is not).

    Why: a data directory another user made before the first start (in a shared, sticky
    directory) holds the conf file they wrote (RPC credentials, rpcport for CleanCoin-cli
    with the operator's cookie file as rpccookiefile) and whatever they plant later.
    """
    _check_existing_path(path, what, _Groups())


def make_dirs(path: str, what: str, mode: int = 0o777) -> None:
    """Create `path` and its missing parents (`mode`, less the umask, never writable by group or
    others: under -sysperms with umask 002 a shared group could otherwise plant files in the
    directory, and it would be refused at the next start) and check them in one
    walk on descriptors: the nearest existing directory is checked as `refuse_others` does,
    opened, and each missing directory is made in the directory opened before it (mkdirat),
    opened without following a link and checked on its descriptor (our own, not writable by
    others). What was checked is what is used: no other user can have made a directory, or
    a link, between a check and our mkdir. An existing `path` is checked whole (a network
    datadir or wallets/ another user planted while they could write the directory around
    it). ConfError names the directory and why."""
    groups = _Groups()
    absolute = os.path.abspath(path)
    missing: list[str] = []
    existing = absolute
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        missing.append(os.path.basename(existing))
        existing = parent
    checked = _check_existing_path(existing, what, groups, shown=path)
    try:
        fd = os.open(os.path.realpath(existing), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfError(f"Cannot create {what} {path}: {existing}: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise ConfError(f"{what.capitalize()} {path} is not safe: {existing} was replaced while "
                            "it was being checked")
        current = existing
        for name in reversed(missing):
            current = os.path.join(current, name)
            try:
                os.mkdir(name, mode & ~0o022, dir_fd=fd)
            except FileExistsError:
                pass        # ours from a concurrent start, or not: the descriptor's owner says
            except OSError as exc:
                raise ConfError(f"Cannot create {what} {path}: {current}: {exc.strerror}") from None
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise ConfError(f"{what.capitalize()} {path} is not safe: {current} is not a directory "
                                f"of ours ({exc.strerror}): another user may have put it there") from None
            os.close(fd)
            fd = child
            _check_stat(os.fstat(fd), current, path, what, groups, own=True, where=fd)
    finally:
        os.close(fd)


class _Groups:
    """Whose a group is, looked up once per check (the user and group databases are read)."""

    def __init__(self) -> None:
        self._private: dict[int, bool] = {}

    def private(self, gid: int) -> bool:
        """Every member of group `gid` (by primary group or by the group's list) is us or root,
        and it has one at least: a group with no member the system knows is a setgid
        program's (games, mail), whose users are others."""
        if gid not in self._private:
            self._private[gid] = self._members_are_ours(gid)
        return self._private[gid]

    @staticmethod
    def _members_are_ours(gid: int) -> bool:
        import grp
        import pwd
        ours = {os.geteuid(), 0}
        try:
            group = grp.getgrgid(gid)
        except KeyError:
            return False
        members: set[int] = {user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid}
        for name in group.gr_mem:
            try:
                members.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                return False
        return bool(members) and members <= ours


def _check_stat(st: os.stat_result, current: str, path: str, what: str, groups: _Groups, *, own: bool,
                where: str | int | None = None) -> None:
    """ConfError unless `st` (of `current`, on the way to `path`) is safe: owned by us or root,
    not writable by others or a group with another member (on the way: unless sticky), nor
    by another user or such a group through an ACL entry of `where` (the path or descriptor
    `st` is of; `current` when None)."""
    title = what.capitalize()
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfError(f"{title} {path} is not safe: {current} is owned by uid {st.st_uid}, "
                        "another user, who could choose what it holds; use a directory of your own")
    mode = stat.S_IMODE(st.st_mode)
    open_to_all = own or not st.st_mode & stat.S_ISVTX
    if st.st_mode & stat.S_IWOTH and open_to_all:
        raise ConfError(f"{title} {path} is not safe: {current} is writable by other users "
                        f"(mode {mode:04o}); make it private (chmod o-w {current})")
    if st.st_mode & stat.S_IWGRP and open_to_all and not groups.private(st.st_gid):
        raise ConfError(f"{title} {path} is not safe: {current} is writable by group {_group_name(st.st_gid)}, "
                        f"which is not a group of you alone (another member, or none the system knows; "
                        f"mode {mode:04o}); make it private (chmod g-w {current})")
    if open_to_all and st.st_mode & stat.S_IWGRP:
        # With an ACL the group bits are its mask: a named entry under a mask with w writes.
        other = _acl_writer(current if where is None else where, groups)
        if other:
            raise ConfError(f"{title} {path} is not safe: {current} is writable by {other} through its "
                            f"ACL (getfacl {current}); remove the entry (setfacl -x) or chmod g-w {current}")


def _acl_writer(where: str | int, groups: _Groups) -> str:
    """Who else may write `where` (a path or a descriptor) through a named entry of its POSIX
    access ACL: "uid N" or "group G", "" when no one. The mode cannot show them: a named
    user's or group's entry counts only through the mask, which the group bits display."""
    import struct
    try:
        acl = os.getxattr(where, "system.posix_acl_access")
    except OSError:
        return ""       # no ACL (ENODATA) or a file system without them (ENOTSUP)
    ours = {os.geteuid(), 0}
    for offset in range(4, len(acl) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", acl, offset)
        if not perm & 2:
            continue
        if tag == 0x02 and ident not in ours:              # ACL_USER
            return f"uid {ident}"
        if tag == 0x08 and not groups.private(ident):       # ACL_GROUP
            return f"group {_group_name(ident)}"
    return ""


def _group_name(gid: int) -> str:
    import grp
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _check_existing_path(path: str, what: str, groups: _Groups, shown: str | None = None) -> os.stat_result:
    """`refuse_others`'s walk; the stat of the nearest existing directory (or of `path`)."""
    shown = path if shown is None else shown
    _check_links(path, what, shown)
    current = os.path.realpath(path)
    own = True
    first: os.stat_result | None = None
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                return os.stat(current)
            current, own = parent, True
            continue
        except OSError as exc:
            raise ConfError(f"Cannot check {what} {shown}: {current}: {exc.strerror}") from None
        _check_stat(st, current, shown, what, groups, own=own)
        if first is None:
            first = st
        parent = os.path.dirname(current)
        if parent == current:
            return first
        current, own = parent, False


#: Links followed while resolving one path before giving up (the kernel's own limit).
_MAX_LINKS = 40


def _check_links(path: str, what: str, shown: str) -> None:
    """ConfError when a symbolic link met on the way to `path` (in it, or in a link's target,
    followed as the kernel follows them) belongs to another user: they chose where it leads.
    The walk after this one checks the directories of the resolved path, which may all be
    ours: a `regtest` link another user planted while they could write the datadir, leading
    into the operator's mainnet datadir, passed. The same walk as sandbox/paths.resolve's, not
    that function: components.common imports nothing of the sandbox (tests/test_layout.py)."""
    pending = [part for part in os.path.abspath(path).split("/") if part]
    current = "/"
    followed = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return                      # what does not exist yet: make_dirs makes it
        except OSError as exc:
            raise ConfError(f"Cannot check {what} {shown}: {candidate}: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        if st.st_uid not in (os.geteuid(), 0):
            raise ConfError(f"{what.capitalize()} {shown} is not safe: {candidate} is a symbolic link "
                            f"owned by uid {st.st_uid}, another user, who chose where it leads; "
                            "use a directory of your own")
        followed += 1
        if followed > _MAX_LINKS:
            raise ConfError(f"Cannot check {what} {shown}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = "/"
        pending = [p for p in target.split("/") if p and p != "."] + pending


def read_conf(path: str, *, required: bool = False) -> list[tuple[str | None, str, str]]:
    """The entries of a conf file; a missing file is empty unless `required` (given by -conf).
    A conf file another user could have written is a ConfError (`refuse_others`)."""
    if os.path.lexists(path):
        refuse_others(path, "the configuration file")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if required:
            raise ConfError(f'Error reading configuration file: specified config file "{path}" '
                            "could not be opened.") from None
        return []
    except OSError as exc:
        raise ConfError(f"Error reading configuration file {path}: {exc.strerror}") from None
    return parse_conf(text, path)


def conf_values(entries: Iterable[tuple[str | None, str, str]], chain: str) -> dict[str, list[str]]:
    """Every value that applies to `chain`, the network's section first, each in file order."""
    entries = list(entries)
    values: dict[str, list[str]] = {}
    for section, name, value in entries:
        if section == chain:
            values.setdefault(name, []).append(value)
    for section, name, value in entries:
        if section is None and (chain == "main" or name not in NETWORK_ONLY):
            values.setdefault(name, []).append(value)
    return values


def interpret_bool(value: str) -> bool:
    """bitcoind's InterpretBool: empty is true, otherwise the leading integer is non-zero."""
    if value == "":
        return True
    digits = ""
    for i, c in enumerate(value.strip()):
        if c.isdigit() or (i == 0 and c in "+-"):
            digits += c
        else:
            break
    try:
        return int(digits) != 0
    except ValueError:
        return False


def chain_from(values: dict[str, list[str]]) -> str | None:
    """The network chosen by chain= / regtest= / testnet= (top-level settings); None if none.

    ValueError for a contradiction or an unknown chain, with bitcoind's message.
    """
    chosen: list[str] = []
    if "chain" in values:
        chosen.append(values["chain"][0])
    if "regtest" in values and interpret_bool(values["regtest"][0]):
        chosen.append("regtest")
    if "testnet" in values and interpret_bool(values["testnet"][0]):
        chosen.append("test")
    if len(chosen) > 1:
        raise ValueError("Invalid combination of -regtest, -testnet and -chain. Can use at most one.")
    if chosen and chosen[0] not in CHAINS:
        raise ValueError(f"Unknown chain {chosen[0]}. Valid values are: {', '.join(CHAINS)}")
    return chosen[0] if chosen else None
