"""The capability step: bounding, ambient, inheritable, permitted and effective sets, and
securebits locked so that neither setuid nor a capable file can give anything back."""

from __future__ import annotations

import prctl

from . import syscalls
from .errors import EnforcementError

# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (off) and NO_CAP_AMBIENT_RAISE, each with its lock bit.
# python-prctl names the first three pairs only, so securebits and the ambient set go through
# syscalls.prctl; the capability sets through python-prctl.
SECUREBITS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7)


def capability_number(name: str) -> int:
    """The number of a capability given by its lower-case name without `cap_`."""
    return prctl.ALL_CAPS[prctl.ALL_CAP_NAMES.index(name)]


def drop(keep: tuple[int, ...]) -> list[str]:
    """Drop every capability not in `keep` from every set; returns notes for the report."""
    notes: list[str] = []
    permitted = prctl.get_caps(*[(cap, prctl.CAP_PERMITTED) for cap in prctl.ALL_CAPS])
    has_setpcap = permitted[prctl.CAP_PERMITTED].get(prctl.CAP_SETPCAP, False)
    if has_setpcap:
        try:
            syscalls.prctl(syscalls.PR_SET_SECUREBITS, SECUREBITS)
        except OSError as exc:
            raise EnforcementError("capabilities", f"locking securebits: {exc.strerror}") from None
        for cap in prctl.ALL_CAPS:
            if cap not in keep and prctl.capbset_read(cap):
                try:
                    prctl.capbset_drop(cap)
                except OSError as exc:
                    raise EnforcementError("capabilities", f"dropping {cap} from the bounding set: "
                                                           f"{exc.strerror}") from None
    else:
        # Without CAP_SETPCAP neither is possible; with an empty permitted set and
        # no_new_privs, neither the bounding set nor securebits can hand anything back.
        notes.append("no CAP_SETPCAP: bounding set and securebits left as they were")
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        raise EnforcementError("capabilities", f"clearing ambient set: {exc.strerror}") from None
    try:
        prctl.cap_inheritable.limit(*keep)
        prctl.cap_effective.limit(*keep)
        prctl.cap_permitted.limit(*keep)
    except OSError as exc:
        raise EnforcementError("capabilities", f"setting capability sets: {exc.strerror}") from None
    left = prctl.get_caps(*[(cap, flag) for cap in prctl.ALL_CAPS
                            for flag in (prctl.CAP_PERMITTED, prctl.CAP_EFFECTIVE)])
    extra = sorted({cap for flag in left.values() for cap, on in flag.items() if on and cap not in keep})
    if extra:
        raise EnforcementError("capabilities", f"capabilities still held after dropping: {extra}")
    return notes
