"""`CleanCoin-sandbox status PID...`: what is enforced on running processes, read from the kernel.

From /proc/PID: the seccomp mode and how many filters are stacked, no_new_privs, the five
capability sets, which namespaces differ from the caller's, the resource limits. The kernel
does not show a Landlock domain or another process's dumpable flag (only through the
ownership of the files in /proc/PID, not of the directory, which says nothing for a root
process), nor which policy the
process runs under: those come from the process's own enforcement report, which every sandbox
entry registers (`report_registry`). Where the report and the kernel disagree, that is said.

`--tree` also inspects every descendant: a CleanCoin-node, its zygote, the waiting processes of
its wallet's pid namespace and the wallet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import helpers, report_registry, stdio

#: A component's helpers: the denial monitor (its own program with its own filter and Landlock
#: domain, or a fork of the component not exec'd that applies the same before it takes the
#: listener) and the learn recorder (a fork at the seccomp step, without a filter). Known
#: from their component's report, never by the name they give themselves (helpers.py).
_HELPERS = (helpers.DENIAL_MONITOR, helpers.LEARN_RECORDER, helpers.OUTPUT_RELAY)
_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time")
_LIMITS = {"Max core file size": "core", "Max open files": "nofile", "Max processes": "nproc",
           "Max file size": "fsize", "Max address space": "as", "Max stack size": "stack",
           "Max data size": "data", "Max cpu time": "cpu", "Max locked memory": "memlock"}


@dataclass
class ProcessStatus:
    pid: int
    name: str = ""
    error: str = ""                                   # the process could not be read at all
    seccomp_mode: str = ""                            # disabled, strict, filter
    seccomp_filters: int = 0
    no_new_privs: bool = False
    capabilities: dict[str, int] = field(default_factory=dict)
    namespaces_own: list[str] = field(default_factory=list)
    namespaces_shared: list[str] = field(default_factory=list)
    namespaces_unknown: list[str] = field(default_factory=list)
    rlimits: dict[str, tuple[str, str]] = field(default_factory=dict)
    dumpable: str = "unknown"
    role: str = ""                                    # component, zygote, waiting process, ...
    report: dict[str, Any] | None = None
    findings: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    @property
    def sandboxed(self) -> bool:
        """Filtered and unable to gain privileges, or a helper the sandbox runs unconfined by
        design (the zygote, the waiting processes of a pid namespace)."""
        if self.role in ("zygote", "pid namespace waiter", *_HELPERS):
            return not self.findings
        return self.seccomp_mode == "filter" and self.no_new_privs and not self.findings

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items()}
        data["sandboxed"] = self.sandboxed
        data["rlimits"] = {k: {"soft": s, "hard": h} for k, (s, h) in self.rlimits.items()}
        data["capabilities"] = {k: f"{v:#x}" for k, v in self.capabilities.items()}
        return data

    def to_text(self) -> str:
        if self.error:
            return f"pid {self.pid}: {self.error}"
        policy = (self.report or {}).get("policy")
        # The name is the process's own choice (prctl(PR_SET_NAME)), and the kernel passes an
        # escape sequence on as it is: shown raw, a confined process could clear the screen
        # above it or retitle the terminal of the operator auditing it.
        title = f"pid {self.pid} {stdio.visible(self.name)}" + (f" (policy '{policy}')" if policy else "") + \
            (f" [{self.role}]" if self.role else "")
        mech = (self.report or {}).get("mechanisms", {})

        def said(name: str) -> str:
            m = mech.get(name)
            return f"   report: {m['status']}" if m else ""

        caps = ", ".join(f"{k} {'none' if not v else f'{v:#x}'}" for k, v in self.capabilities.items())
        lines = [title,
                 f"  seccomp        {self.seccomp_mode}" + (f", {self.seccomp_filters} filter(s)"
                                                            if self.seccomp_mode == "filter" else "") + said("seccomp"),
                 f"  no_new_privs   {'yes' if self.no_new_privs else 'no'}",
                 f"  capabilities   {caps}" + said("capabilities"),
                 f"  namespaces     own: {', '.join(self.namespaces_own) or 'none'}; shared with this "
                 f"shell: {', '.join(self.namespaces_shared) or 'none'}"
                 + (f"; unreadable: {', '.join(self.namespaces_unknown)}" if self.namespaces_unknown else "")
                 + said("namespaces"),
                 "  landlock       not shown by the kernel" + said("landlock"),
                 "  rlimits        " + ", ".join(f"{k} {s}/{h}" for k, (s, h) in self.rlimits.items()),
                 f"  dumpable       {self.dumpable}"]
        if self.report:
            for detail in mech.get("landlock", {}).get("details", [])[:1]:
                lines.append(f"      landlock: {detail}")
            if self.report.get("seccomp_sha256"):
                lines.append(f"      seccomp filter sha256: {self.report['seccomp_sha256']}")
        elif not self.role:
            lines.append("  report         none registered (not started by a CleanCoin launcher, or it "
                         "could not write one)")
        lines.extend(f"  FINDING        {f}" for f in self.findings)
        lines.append(f"  verdict        {'sandboxed' if self.sandboxed else 'NOT SANDBOXED'}"
                     + (" (unconfined by design: it builds the sandboxes)" if self.role == "zygote" else "")
                     + (" (no filter by design: no capability, no_new_privs; it copies its component's "
                        "output to the terminal, control characters shown)"
                        if self.role == helpers.OUTPUT_RELAY else ""))
        return "\n".join(lines)


def _status_fields(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    try:
        with open(f"/proc/{pid}/limits", encoding="utf-8") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        for label, name in _LIMITS.items():
            if line.startswith(label):
                parts = line[len(label):].split()
                out[name] = (parts[0], parts[1])
    return out


def _namespaces(status: ProcessStatus) -> None:
    for ns in _NAMESPACES:
        try:
            theirs = os.readlink(f"/proc/{status.pid}/ns/{ns}")
        except OSError:
            status.namespaces_unknown.append(ns)
            continue
        try:
            ours = os.readlink(f"/proc/self/ns/{ns}")
        except OSError:
            ours = ""
        (status.namespaces_shared if theirs == ours else status.namespaces_own).append(ns)


def _dumpable(status: ProcessStatus, uid: int) -> None:
    # A process that is not dumpable has its /proc/PID files owned by root: visible only when
    # the process itself does not run as root. Its files, not the /proc/PID directory, which
    # the kernel gives the process's uid whatever the flag (a world-readable directory).
    try:
        owner = os.stat(f"/proc/{status.pid}/stat").st_uid
    except OSError:
        return
    if uid != 0:
        status.dumpable = "off" if owner == 0 else "on"
    elif status.report:
        text = str(status.report)
        said = "off" if "dumpable off" in text or "not dumpable" in text else "on"
        status.dumpable = f"{said} (report; the kernel shows it only for processes not running as root)"


def _cross_check(status: ProcessStatus) -> None:
    """Where the kernel contradicts the process's own report."""
    mech = (status.report or {}).get("mechanisms", {})
    seccomp = mech.get("seccomp", {}).get("status")
    if seccomp == "fully enforced" and status.seccomp_mode != "filter":
        status.findings.append(f"the report says seccomp is enforced, the kernel says {status.seccomp_mode}")
    if mech and not status.no_new_privs:
        status.findings.append("the report says sandboxed, but no_new_privs is off")
    caps = mech.get("capabilities", {})
    if caps.get("status") == "fully enforced" and "kept: none" in " ".join(caps.get("details", [])):
        held = [k for k in ("effective", "permitted", "ambient") if status.capabilities.get(k)]
        if held:
            status.findings.append(f"the report says no capability is kept, the kernel shows {', '.join(held)}")
    said = " ".join(mech.get("process", {}).get("details", []))
    if "dumpable off" in said and status.dumpable == "on":
        status.findings.append("the report says not dumpable, the kernel says dumpable (same-user ptrace, "
                               "/proc/PID/mem)")
    namespaces = set((status.report or {}).get("namespaces", []))
    renamed = {"mount": "mnt"}
    missing = [n for n in namespaces if renamed.get(n, n) in status.namespaces_shared]
    if missing:
        status.findings.append(f"the report says it entered {', '.join(sorted(missing))}, the kernel "
                               "shows this shell's")


def inspect(pid: int, registered: list[dict[str, object]] | None = None) -> ProcessStatus:
    """Everything `status` shows about one process. `registered`: the registry's entries
    (`report_registry.entries`), read once for a whole tree; read here when None."""
    status = ProcessStatus(pid)
    try:
        fields = _status_fields(pid)
    except OSError as exc:
        status.error = f"cannot read /proc/{pid}/status: {exc.strerror}"
        return status
    status.name = fields.get("Name", "")
    mode = fields.get("Seccomp", "0")
    status.seccomp_mode = {"0": "disabled", "1": "strict", "2": "filter"}.get(mode, mode)
    status.seccomp_filters = int(fields.get("Seccomp_filters", "0") or 0)
    status.no_new_privs = fields.get("NoNewPrivs", "0") == "1"
    status.capabilities = {name: int(fields.get(key, "0"), 16) for name, key in
                           (("effective", "CapEff"), ("permitted", "CapPrm"), ("inheritable", "CapInh"),
                            ("bounding", "CapBnd"), ("ambient", "CapAmb"))}
    _namespaces(status)
    status.rlimits = _limits(pid)
    status.children = helpers.children(pid)
    entry = report_registry.lookup(pid)
    if entry is not None:
        if entry.get("kind") == "zygote":
            status.role = "zygote"
        else:
            status.role = "component"
            status.report = entry.get("report")  # type: ignore[assignment]
    elif (status.no_new_privs and not status.capabilities["effective"]
          and (role := helpers.role_of(pid, report_registry.entries() if registered is None else registered))):
        # The denial monitor has a filter of its own (a fork not exec'd too); a learn recorder
        # has none. Which process is one, its component's report
        # says (its name is anybody's to take).
        status.role = role
    elif (status.no_new_privs and status.seccomp_mode == "disabled" and not status.capabilities["effective"]
          and len(status.children) >= 1):
        status.role = "pid namespace waiter"
    uid = int(fields.get("Uid", "0").split()[0])
    _dumpable(status, uid)
    _cross_check(status)
    return status


def inspect_tree(pid: int) -> list[ProcessStatus]:
    """The process and all its descendants, parents first."""
    out: list[ProcessStatus] = []
    pending = [pid]
    registered = report_registry.entries()
    while pending:
        current = pending.pop(0)
        status = inspect(current, registered)
        out.append(status)
        pending.extend(status.children)
    return out
