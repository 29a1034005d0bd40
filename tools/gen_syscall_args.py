"""Write sandbox/syscall_args.py: how many bits of each syscall argument the kernel reads.

Usage: python tools/gen_syscall_args.py LINUX_HEADERS_DIR > sandbox/syscall_args.py
(LINUX_HEADERS_DIR: e.g. /usr/src/linux-headers-6.1.0-53-common, from Debian's
linux-headers-*-common package). The prototypes in include/linux/syscalls.h give each
argument's type; on x86_64 the syscall wrapper casts the 64-bit register to that type, so an
`int` argument is its low 32 bits and a `umode_t` its low 16.
"""

from __future__ import annotations

import re
import sys

_BITS = {
    "int": 32, "unsigned int": 32, "unsigned": 32, "u32": 32, "__u32": 32, "__s32": 32, "s32": 32,
    "uid_t": 32, "gid_t": 32, "pid_t": 32, "clockid_t": 32, "timer_t": 32, "mqd_t": 32,
    "key_serial_t": 32, "qid_t": 32, "rwf_t": 32, "key_perm_t": 32, "key_t": 32, "uint32_t": 32,
    "umode_t": 16, "old_uid_t": 16, "old_gid_t": 16, "unsigned short": 16, "short": 16, "u16": 16, "__u16": 16,
    "long": 64, "unsigned long": 64, "size_t": 64, "ssize_t": 64, "off_t": 64, "loff_t": 64,
    "u64": 64, "__u64": 64, "s64": 64, "__s64": 64, "aio_context_t": 64, "long long": 64,
    "unsigned long long": 64, "__kernel_old_time_t": 64, "cap_user_header_t": 64,
    "cap_user_data_t": 64, "__sighandler_t": 64, "old_sigset_t": 64,
}
#: Defined in arch/x86 (not in syscalls.h), written out by hand from arch/x86/kernel.
_X86 = {"arch_prctl": (32, 64), "iopl": (32,), "ioperm": (64, 64, 32), "modify_ldt": (32, 64, 64),
        "mmap": (64, 64, 64, 64, 64, 64)}
#: x86_64 names whose kernel function is called otherwise.
_ALIASES = {"stat": "newstat", "fstat": "newfstat", "lstat": "newlstat", "uname": "newuname",
            "umount2": "umount", "sendfile": "sendfile64", "fstatfs": "fstatfs", "newfstatat": "newfstatat"}


def _width(param: str) -> int | None:
    if re.search(r"\benum\b", param) and "*" not in param:
        return 32                                    # an enum is an int
    param = re.sub(r"\b(const|__user|volatile|struct|union|enum)\b", " ", param)
    if "*" in param or "[" in param:
        return 64
    words = param.split()
    if not words:
        return None
    for n in (len(words), len(words) - 1):          # with or without a parameter name
        name = " ".join(words[:n])
        if name in _BITS:
            return _BITS[name]
    return None


def main(root: str) -> None:
    text = open(f"{root}/include/linux/syscalls.h", encoding="utf-8").read()
    table: dict[str, tuple[int, ...]] = {}
    unknown: set[str] = set()
    for name, params in re.findall(r"asmlinkage long sys_(\w+)\((.*?)\);", text, re.S):
        params = " ".join(params.split())
        if params in ("void", ""):
            continue
        widths = []
        for param in params.split(","):
            width = _width(param)
            if width is None:
                unknown.add(param.strip())
                width = 64
            widths.append(width)
        table.setdefault(name, tuple(widths))
    table.update(_X86)
    for name, target in _ALIASES.items():
        if target in table:
            table[name] = table[target]
    narrow = {n: w for n, w in sorted(table.items()) if any(b < 64 for b in w)}
    print('"""How many bits of each syscall argument the x86_64 kernel reads (generated: do not edit).\n')
    print("Written by tools/gen_syscall_args.py from the prototypes of include/linux/syscalls.h")
    print("(Linux 6.1 headers) and the x86 syscalls beside them. Only syscalls with an argument")
    print("narrower than 64 bits are listed; a syscall not listed is read in full (or unknown to")
    print('those headers: newer than 6.1).\n"""\n')
    print("from __future__ import annotations\n")
    print("ARG_BITS: dict[str, tuple[int, ...]] = {")
    for name, widths in narrow.items():
        print(f"    {name!r}: {widths!r},")
    print("}")
    if unknown:
        print(f"# types read as 64 bits: {sorted(unknown)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
