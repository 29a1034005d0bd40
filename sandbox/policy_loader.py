"""Policy files to the validated `Policy` model: parse, follow `extends`, merge, cross-check.

Every error names the file, the line and the key, in the manner of minijail's policy parser,
and all errors of a file are collected so an author can fix them in one go.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import dangerous, policy_trust, seccomp, syscall_groups
from .errors import PolicyError, PolicyErrors, PolicyFileError, SourceRef
from .model import (Compatibility, Filesystem, Grant, Level, Namespaces, Network, Policy, Process,
                    Rlimit, Scopes, Seccomp, SeccompRule, SocketFamily, MECHANISMS)
from .policy_files import extended_path, shipped_names, shipped_policy  # noqa: F401 - where they were
from .policy_spec import SECTIONS, TOP_LEVEL, Key
from .printable import ascii_shown, char_name, non_ascii, printable, visible
from .rule_precedence import effective_rules
from .toml_locate import key_lines, line_for


@dataclass
class _Fragment:
    """The validated values of one file, before `extends` merges files together."""

    file: str
    values: dict[str, Any] = field(default_factory=dict)   # "section.key" -> parsed value
    sha256: str = ""        # of the bytes parsed: what the policy cache stores (12-08)
    refs: dict[str, SourceRef] = field(default_factory=dict)


#: Larger files are refused before parsing: a policy is a few kilobytes, and the parser and
#: the line scanner should not be handed megabytes by mistake (or by a fuzzer).
MAX_POLICY_BYTES: int = 1 << 20
#: Arrays, inline tables and dotted keys nested deeper than this are refused. A policy needs
#: five levels at most (seccomp.rules[i].args[j].value); tomllib recurses once per level and
#: would end in a RecursionError at about 500.
MAX_NESTING: int = 32
#: `extends` chains longer than this are refused (each level is a file; a cycle is caught
#: separately).
MAX_EXTENDS_DEPTH: int = 16


def _line_at(data: bytes | str, offset: int) -> int:
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1     # type: ignore[arg-type]


def _read_bytes(path: str, included_at: SourceRef | None = None) -> bytes:
    """The file's bytes, read from the descriptor that the trust walk opened and checked
    (policy_trust.open_checked: the path is not opened a second time, since 12-08); a
    PolicyError when others may have changed it, PolicyFileError for anything that is not a
    readable regular file of sane size. O_NONBLOCK so that a FIFO named as a policy cannot
    hang the check."""
    where = SourceRef(path, 0, "")
    try:
        fd = policy_trust.open_checked(path)
    except policy_trust.Untrusted as exc:
        raise PolicyError(included_at or where,
                          f"policy {path} may not be what was reviewed: {exc}; a policy file and "
                          "every directory and link above it must be writable by its owner alone "
                          "(you or root)") from None
    except OSError as exc:
        raise PolicyFileError(where, f"cannot read policy: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PolicyFileError(where, "cannot read policy: it is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise PolicyFileError(where, "cannot read policy: not a regular file")
        chunks, size = [], 0
        while size <= MAX_POLICY_BYTES:
            chunk = os.read(fd, MAX_POLICY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PolicyFileError(where, f"cannot read policy: {exc.strerror}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyFileError(where, f"larger than {MAX_POLICY_BYTES} bytes: not a policy file")
    return raw


def _nesting_error(path: str, text: str) -> PolicyError | None:
    """An error at the first place where arrays and inline tables nest deeper than
    MAX_NESTING, found without recursion (before tomllib recurses into them). Strings and
    comments are skipped; the text need not be valid TOML."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in "\"'":
            triple = text.startswith(ch * 3, i)
            quote = ch * 3 if triple else ch
            j = i + len(quote)
            while True:
                end = text.find(quote, j)
                if end < 0:
                    return None         # unterminated: tomllib reports it
                if ch == '"':       # basic strings have escapes: \" does not end them
                    before = end
                    while before > j and text[before - 1] == "\\":
                        before -= 1
                    if (end - before) % 2:
                        j = end + 1
                        continue
                if not triple and "\n" in text[i:end]:
                    return None         # a one-line string across lines: tomllib reports it
                break
            i = end + len(quote)
            continue
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return PolicyError(SourceRef(path, _line_at(text, i), ""),
                                   f"arrays and tables nested more than {MAX_NESTING} deep")
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _deep_key(data: dict[str, Any]) -> str | None:
    """The dotted path of a value nested deeper than MAX_NESTING (dotted keys and table
    headers nest without brackets), found without recursion; None when there is none."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_NESTING:
            return path
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value))
    return None


def _first_text(data: dict[str, Any], bad: Callable[[str], bool],
                skip: Callable[[str], bool] = lambda dotted: False) -> tuple[str, str] | None:
    """The dotted key of the first key or string for which `bad` holds (the values beneath a
    key for which `skip` holds are not looked at), and that text; None when there is none.
    Iterative, as _deep_key."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                dotted = f"{path}.{k}" if path else str(k)
                if bad(str(k)):
                    return path, str(k)
                if not skip(dotted):
                    stack.append((dotted, v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str) and bad(value):
            return path, value
    return None


def _unprintable(data: dict[str, Any]) -> tuple[str, str] | None:
    """The dotted key of a key or string that is not `printable` (a policy's strings reach
    the auditor's terminal and exported units: sandbox/printable.py), and that text; None when
    there is none. A NUL is left to the value types, which name it."""
    return _first_text(data, lambda text: not printable(text.replace("\0", "")))


def _prose(dotted: str) -> bool:
    """A key whose text only a reader reads (a reason, the description): the launcher enforces
    nothing from it, so it may be in any language. An environment variable named `reason` is
    a value, not prose."""
    return dotted == "policy.description" or (dotted.endswith(".reason")
                                              and not dotted.startswith("process.set_environment."))


def _lookalike(data: dict[str, Any]) -> tuple[str, str] | None:
    """The dotted key of the first key or string (prose aside) with a character outside ASCII,
    and that text; None when there is none.

    Why: until 12-07 a path such as `${datadir}/k\u0435ys` (a Cyrillic e) was accepted, and
    `check`, `explain` and `diff` printed it as `${datadir}/keys`: a reviewed `hide` (or
    `read`, an environment name) of one path that the launcher applied to another."""
    return _first_text(data, lambda text: non_ascii(text) >= 0, skip=_prose)


def _read(path: str, included_at: SourceRef | None = None) -> tuple[dict[str, Any], dict[str, int], str]:
    raw = _read_bytes(path, included_at)
    where = SourceRef(path, 0, "")
    if b"\0" in raw:
        raise PolicyFileError(SourceRef(path, _line_at(raw, raw.index(b"\0")), ""),
                              "binary file (a NUL byte): not a TOML policy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFileError(SourceRef(path, _line_at(raw, exc.start), ""),
                              f"not UTF-8: {exc.reason}") from None
    if (nested := _nesting_error(path, text)) is not None:
        raise nested
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts the position at the end of its message: "... (at line 3, column 7)".
        message = str(exc)
        line = 0
        if "(at line " in message:
            line = int(message.rsplit("(at line ", 1)[1].split(",")[0].rstrip(")"))
            message = message.rsplit(" (at line", 1)[0]
        raise PolicyError(SourceRef(path, line, ""), f"TOML syntax error: {message}") from None
    except ValueError:
        # Python refuses to convert integers of more than sys.get_int_max_str_digits() digits.
        long_number = re.search(r"[0-9][0-9_]{%d,}" % 999, text)
        line = _line_at(text, long_number.start()) if long_number else 0
        raise PolicyError(SourceRef(path, line, ""), "a number with too many digits") from None
    except RecursionError:
        raise PolicyError(where, f"arrays and tables nested more than {MAX_NESTING} deep") from None
    if not data:
        raise PolicyFileError(where, "empty policy: no section and no key")
    lines = key_lines(text)
    if (deep := _deep_key(data)) is not None:
        # The header or key that wrote it may be longer than the path found (`[a.b.c....]`).
        line = line_for(lines, deep) or min(
            (n for key, n in lines.items() if key.startswith(deep)), default=0)
        raise PolicyError(SourceRef(path, line, deep.split(".")[0]),
                          f"keys and tables nested more than {MAX_NESTING} deep")
    if (bad := _unprintable(data)) is not None:
        key, text = bad
        shown = visible(text)
        base = key.split("[")[0]
        raise PolicyError(SourceRef(path, line_for(lines, base) if base else 0, visible(key)),
                          f"a control or format character in '{shown[:200]}': no key or string "
                          "of a policy may hold one (escape sequences, newlines, bidi overrides)")
    if (odd := _lookalike(data)) is not None:
        key, text = odd
        base = key.split("[")[0]
        raise PolicyError(SourceRef(path, line_for(lines, base) if base else 0, ascii_shown(key)),
                          f"non-ASCII character {char_name(text[non_ascii(text)])} in "
                          f"'{ascii_shown(text)[:200]}': a policy's paths, names and values are "
                          "ASCII, so that each prints as itself (a Cyrillic letter, a no-break "
                          "space or a combining mark prints as another text); only a reason and "
                          "the description may use other characters, and a non-ASCII path is "
                          "given at launch with --var")
    from .filter_cache import _sha256    # noqa: PLC2701 - the cache's own hash of a file
    return data, lines, _sha256(raw)


def _unknown(where: SourceRef, name: str, known: list[str], what: str) -> PolicyError:
    import difflib  # only for an error message
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return PolicyError(where, f"unknown {what} '{name}'{hint}")


def _parse_file(path: str, errors: list[PolicyError],
                included_at: SourceRef | None = None) -> tuple[_Fragment, list[tuple[str, SourceRef]]]:
    """Validate one file against the format; returns its values and its `extends` list."""
    data, lines, digest = _read(path, included_at)
    frag = _Fragment(path, sha256=digest)

    def ref(key: str) -> SourceRef:
        return SourceRef(path, line_for(lines, key), key)

    extends: list[tuple[str, SourceRef]] = []
    for section, body in data.items():
        if section in TOP_LEVEL:
            try:
                names = TOP_LEVEL[section].type.parse(body, section, ref)
                extends = [(n, ref(f"{section}[{i}]")) for i, n in enumerate(names)]
            except PolicyError as exc:
                errors.append(exc)
            continue
        if section not in SECTIONS:
            errors.append(_unknown(ref(section), section, [*SECTIONS, *TOP_LEVEL], "section"))
            continue
        if not isinstance(body, dict):
            errors.append(PolicyError(ref(section), f"'{section}' must be a table ([{section}])"))
            continue
        keys: Mapping[str, Key] = SECTIONS[section]
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if key not in keys:
                errors.append(_unknown(ref(dotted), key, list(keys), f"key in [{section}]"))
                continue
            try:
                frag.values[dotted] = keys[key].type.parse(value, dotted, ref)
                frag.refs[dotted] = ref(dotted)
            except PolicyError as exc:
                errors.append(exc)
    return frag, extends


def _collect(path: str, stack: tuple[str, ...], seen: set[str], order: list[_Fragment],
             errors: list[PolicyError], included_at: SourceRef | None,
             edges: list[tuple[str, str, str]] | None = None) -> None:
    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join(os.path.basename(p) for p in (*stack, real))
        raise PolicyError(included_at or SourceRef(path, 0, "extends"), f"extends cycle: {chain}")
    if len(stack) >= MAX_EXTENDS_DEPTH:
        raise PolicyError(included_at or SourceRef(path, 0, "extends"),
                          f"extends chain longer than {MAX_EXTENDS_DEPTH} files")
    if real in seen:
        return   # a diamond: the shared base is merged once, where it first appears
    if not os.path.isfile(path) and included_at is not None:
        shown = path if len(path) <= 80 else f"{path[:60]}... ({len(path)} characters)"
        # The shipped names help with a mistyped name; a value that cannot be one (brackets,
        # spaces, a long string) is not followed by a list that grows with every policy.
        named = re.fullmatch(r"[A-Za-z0-9_./-]{1,80}", os.path.basename(path)) is not None
        raise PolicyError(included_at, f"extended policy {shown} does not exist or is not a file, "
                                       "and no shipped policy has that name"
                                       + (f" (shipped: {', '.join(shipped_names())})" if named else ""))
    frag, extends = _parse_file(path, errors, included_at)     # read as checked (_read_bytes)
    for name, where in extends:
        target = extended_path(name, path)
        if edges is not None:
            edges.append((name, path, target))
        _collect(target, (*stack, real), seen, order, errors, where, edges)
    seen.add(real)
    order.append(frag)


def _merge(fragments: list[_Fragment]) -> tuple[dict[str, Any], dict[str, SourceRef]]:
    """Bases first, the named file last: lists add up, tables update, scalars are replaced."""
    values: dict[str, Any] = {}
    refs: dict[str, SourceRef] = {}
    for frag in fragments:
        for dotted, value in frag.values.items():
            section, key = dotted.split(".", 1)
            if section == "policy" and frag is not fragments[-1]:
                continue   # a name and description describe one file, not those extending it
            merge = SECTIONS[section][key].merge
            old = values.get(dotted)
            if merge == "append" and old is not None and value is not None:
                value = (*old, *value)
            elif merge == "update" and old is not None:
                by_name = {(v[0] if isinstance(v, tuple) else v.name): v for v in old}
                by_name.update({(v[0] if isinstance(v, tuple) else v.name): v for v in value})
                value = tuple(by_name.values())
            values[dotted] = value
            refs[dotted] = frag.refs[dotted]
    return values, refs


def _expand_syscalls(grants: tuple[Grant, ...], errors: list[PolicyError]) -> dict[str, Grant]:
    """Syscall names granted, each mapped to the grant (name or @group) that brought it."""
    out: dict[str, Grant] = {}
    for grant in grants:
        if syscall_groups.is_group(grant.value):
            try:
                members = syscall_groups.expand_group(grant.value)
            except KeyError:
                errors.append(_unknown(grant.where, grant.value, list(syscall_groups.GROUPS),
                                       "syscall group"))
                continue
            for name in members:
                out.setdefault(name, grant)
        elif seccomp.syscall_number(grant.value) is None:
            err = _unknown(grant.where, grant.value, list(_all_syscall_names()), "syscall")
            errors.append(PolicyError(err.where, f"{err.message} (libseccomp "
                                                 f"{seccomp.libseccomp_version()} does not know it)"))
        else:
            out[grant.value] = grant
    return out


def _allowed_syscalls(files: tuple[str, ...], allow: tuple[Grant, ...], deny: tuple[Grant, ...],
                      errors: list[PolicyError]) -> dict[str, Grant]:
    """The allowed syscalls, file by file: later files win, and in a file deny beats allow.

    So a component's policy may allow `execve` (with a reason) that its base denies, and a
    base's group can be narrowed by a `deny` further down.
    """
    granted: dict[str, Grant] = {}
    for file in files:
        granted.update(_expand_syscalls(tuple(g for g in allow if g.where.file == file), errors))
        for name in _expand_syscalls(tuple(g for g in deny if g.where.file == file), errors):
            granted.pop(name, None)
    return granted


def _all_syscall_names() -> frozenset[str]:
    names: set[str] = set()
    for group in syscall_groups.GROUPS:
        names |= syscall_groups.expand_group(group)
    return frozenset(names | dangerous.DANGEROUS_SYSCALLS)


def _check_dangers(policy: Policy, granted: dict[str, Grant], errors: list[PolicyError]) -> None:
    """Dangerous grants need a reason beside them (see `dangerous`)."""
    for name in sorted(policy.allowed_syscalls & dangerous.DANGEROUS_SYSCALLS):
        grant = granted[name]
        if grant.reason is None:
            via = f"'{grant.value}' grants '{name}'" if grant.value != name else f"'{name}'"
            errors.append(PolicyError(grant.where, f"{via} is a dangerous grant and needs a reason: "
                                                   f'write {{ syscall = "{grant.value}", reason = "..." }}'
                                                   + (f" or deny '{name}'" if grant.value != name else "")))
    for rule in policy.seccomp.rules:
        # "log" lets the syscall run too.
        if rule.action in ("allow", "log") and rule.syscall in dangerous.DANGEROUS_SYSCALLS and not rule.reason:
            errors.append(PolicyError(rule.where, f"a rule allowing '{rule.syscall}' is a dangerous "
                                                  "grant and needs a reason"))
    for fam in policy.network.socket_families:
        if (fam.name in dangerous.DANGEROUS_FAMILIES or fam.raw) and not fam.reason:
            what = "raw sockets" if fam.raw else f"'{fam.name}' sockets"
            errors.append(PolicyError(fam.where, f"{what} are a dangerous grant and need a reason"))
    for grant in policy.filesystem.write:
        if dangerous.is_dangerous_write(grant.value) and not grant.reason:
            errors.append(PolicyError(grant.where, f"write access to '{grant.value}' is a dangerous "
                                                   "grant and needs a reason"))
    for grant in policy.process.capabilities:
        if not grant.reason:
            errors.append(PolicyError(grant.where, f"keeping capability '{grant.value}' needs a reason"))


def _check_switched_off(policy: Policy, refs: dict[str, SourceRef], errors: list[PolicyError]) -> None:
    """Turning a mechanism off is a dangerous grant like any other: it needs a reason."""
    main = policy.files[-1]

    def where(key: str) -> SourceRef:
        return refs.get(key, SourceRef(main, 0, key))

    if not policy.seccomp.enabled and not policy.seccomp.reason:
        errors.append(PolicyError(where("seccomp.enabled"), "turning the syscall filter off is a "
                                                            "dangerous choice and needs seccomp.reason"))
    # A log default lets every syscall the policy does not allow run (it is only written to
    # the audit log): as wide as `allow = ["ptrace", "mount", "bpf", ...]`, each of which
    # needs a reason. Until 12-07 it needed none, and `check` passed it silently.
    if policy.seccomp.enabled and policy.seccomp.default_action == "log" and not policy.seccomp.reason:
        errors.append(PolicyError(where("seccomp.default_action"), 'default_action = "log" lets every '
                                  "syscall not allowed run (it is only logged): a dangerous choice "
                                  "that needs seccomp.reason"))
    proc = policy.process
    for key, off, what in (("process.dumpable", proc.dumpable, "a dumpable process can be traced "
                                                                "and read by the same user"),
                           ("process.memory_deny_write_execute", not proc.memory_deny_write_execute,
                            "W+X memory lets injected code run"),
                           ("process.stdio", proc.stdio == "inherit",
                            "inherited descriptors may be the user's terminal"),
                           ("process.new_session", not proc.new_session,
                            "a process left in the launcher's session keeps its controlling "
                            "terminal: it can take the foreground from the operator's shell (job "
                            "control) and read what is typed next")):
        if off and not proc.reason:
            errors.append(PolicyError(where(key), f"{what}: a dangerous choice that needs "
                                                  "process.reason"))
    # Since 12-08: left in the launcher's process group (for the shell's job control), the
    # program's kill(0) reached every process of the operator's job outside the sandbox where
    # the signal scope was off (the launcher, its waiter, a pipeline's other programs:
    # tests/test_cli_sandbox.py). A reason does not make that safe; the scope does.
    if not proc.new_session and not policy.scopes.signal:
        errors.append(PolicyError(where("process.new_session"),
                                  "new_session = false needs [scopes] signal = true: the program stays "
                                  "in the launcher's process group, and without the scope its kill(0) "
                                  "reaches every process of the operator's job outside the sandbox "
                                  "(the launcher, its waiter, the other programs of a pipeline)"))


def _capability_names() -> list[str]:
    import prctl  # parent side only: names for validation
    return list(prctl.ALL_CAP_NAMES)


def _build(values: dict[str, Any], refs: dict[str, SourceRef], files: tuple[str, ...],
           errors: list[PolicyError]) -> Policy:
    def get(key: str, default: Any) -> Any:
        return values.get(key, default)

    main = files[-1]
    name = get("policy.name", os.path.splitext(os.path.basename(main))[0])
    ns = Namespaces(**{k: get(f"namespaces.{k}", getattr(Namespaces(), k))
                       for k in Namespaces.__dataclass_fields__})
    if ns.private_tmp and not ns.mount:
        errors.append(PolicyError(refs["namespaces.private_tmp"], "private_tmp needs mount = true"))
    if get("filesystem.tmpfs", ()) and not ns.mount:
        errors.append(PolicyError(refs["filesystem.tmpfs"], "tmpfs needs namespaces.mount = true"))
    if not ns.entered() and not ns.reason:
        errors.append(PolicyError(refs.get("namespaces.user", SourceRef(main, 0, "namespaces")),
                                  "no namespace at all leaves the host's mounts, processes and "
                                  "network in view: that is a dangerous choice and needs "
                                  "namespaces.reason"))
    if get("filesystem.hide", ()) and not ns.mount:
        # The covering tmpfs is mounted in the component's own mount namespace; without one it
        # would either change the host's mounts or not exist at all.
        errors.append(PolicyError(refs["filesystem.hide"], "hide needs namespaces.mount = true "
                                                           "(the covering tmpfs lives in the "
                                                           "component's mount namespace)"))
    if not get("process.no_new_privs", True):
        errors.append(PolicyError(refs["process.no_new_privs"],
                                  "no_new_privs is always on; false is not allowed"))
    caps = []
    known_caps = _capability_names()
    for grant in get("process.capabilities", ()):
        cap = grant.value.lower().removeprefix("cap_")
        if cap not in known_caps:
            err = _unknown(grant.where, cap, known_caps, "capability")
            errors.append(PolicyError(grant.where, err.message.replace(f"'{cap}'", f"'{grant.value}'", 1)))
        caps.append(Grant(cap, grant.where, grant.reason))
    rlimits: dict[str, Rlimit] = {r.name: r for r in get("process.rlimits", ())}
    rlimits.setdefault("core", Rlimit("core", 0, 0, SourceRef(main, 0, "process.rlimits.core")))
    levels = tuple((m, Level(get(f"compatibility.{m}", "hard"))) for m in MECHANISMS)

    rules: tuple[SeccompRule, ...] = effective_rules(get("seccomp.rules", ()), errors)
    for rule in rules:
        if seccomp.syscall_number(rule.syscall) is None:
            errors.append(_unknown(rule.where, rule.syscall, list(_all_syscall_names()), "syscall"))
        elif rule.syscall in ("socket", "socketpair") and rule.action != "errno:EAFNOSUPPORT":
            # These carry the socket-family filter; a rule would silently replace it.
            errors.append(PolicyError(rule.where, f"{rule.syscall} is governed by "
                                                  "network.socket_families; write the family there"))
    granted = _allowed_syscalls(files, get("seccomp.allow", ()), get("seccomp.deny", ()), errors)
    allowed = frozenset(granted)

    policy = Policy(
        name=name,
        description=get("policy.description", ""),
        files=files,
        namespaces=ns,
        filesystem=Filesystem(get("filesystem.read", ()), get("filesystem.write", ()),
                              get("filesystem.execute", ()), get("filesystem.hide", ()),
                              get("filesystem.tmpfs", ())),
        network=Network(get("network.bind_tcp", ()), get("network.connect_tcp", ()),
                        _unique_families(get("network.socket_families", ()))),
        scopes=Scopes(get("scopes.abstract_unix_socket", True), get("scopes.signal", True)),
        process=Process(
            capabilities=tuple(caps),
            dumpable=get("process.dumpable", False),
            no_new_privs=True,
            new_session=get("process.new_session", True),
            die_with_parent=get("process.die_with_parent", True),
            environment=get("process.environment", ()),
            set_environment=get("process.set_environment", ()),
            fds=get("process.fds", (0, 1, 2)),
            rlimits=tuple(rlimits.values()),
            stdio=get("process.stdio", "pipe"),
            memory_deny_write_execute=get("process.memory_deny_write_execute", True),
            reason=get("process.reason", None),
        ),
        seccomp=Seccomp(get("seccomp.default_action", "kill_process"), get("seccomp.allow", ()),
                        get("seccomp.deny", ()), rules, get("seccomp.enabled", True),
                        get("seccomp.reason", None)),
        compatibility=Compatibility(levels, get("compatibility.landlock_min_abi", 1)),
        allowed_syscalls=allowed,
    )
    _check_dangers(policy, granted, errors)
    _check_switched_off(policy, refs, errors)
    return policy


def _unique_families(families: tuple[SocketFamily, ...]) -> tuple[SocketFamily, ...]:
    # A later file may widen a family (raw = true); the last word on each family counts.
    return tuple({f.name: f for f in families}.values())


def load_policy(path: str, edges: list[tuple[str, str, str]] | None = None,
                digests: dict[str, str] | None = None) -> Policy:
    """Load, merge and validate a policy file; raises PolicyErrors listing every problem.
    `edges`, if given, receives each `extends` entry followed: (as written, the file that
    names it, the path it led to), for policy_cache to check the same resolution later;
    `digests` each file's SHA-256 of the very bytes parsed (not the file read again later)."""
    errors: list[PolicyError] = []
    order: list[_Fragment] = []
    try:
        _collect(os.path.abspath(path) if not os.path.isabs(path) else path, (), set(), order,
                 errors, None, edges)
    except PolicyError as exc:
        raise PolicyErrors([*errors, exc]) from None
    if errors:
        raise PolicyErrors(errors)
    values, refs = _merge(order)
    policy = _build(values, refs, tuple(f.file for f in order), errors)
    if errors:
        raise PolicyErrors(errors)
    if digests is not None:
        digests.update((f.file, f.sha256) for f in order)
    return policy
