"""Run a seccomp BPF program on a syscall, in Python: what would the kernel decide?

Used to check that two filters allow the same things (an imported profile against the file
it came from, an exported profile against our own filter) without loading either: both are
run on the same syscalls and arguments and their verdicts compared. Classic BPF as seccomp
accepts it (the instructions libseccomp emits and the rest of the classic set); the input is
`struct seccomp_data` (nr, arch, instruction pointer, six 64-bit arguments).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
_ACTION_FULL = 0xFFFF0000
_M32 = 0xFFFFFFFF


def _data(nr: int, args: Sequence[int], arch: int) -> bytes:
    full = list(args) + [0] * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in full])


def run(bpf: bytes, nr: int, args: Sequence[int] = (), arch: int = AUDIT_ARCH_X86_64) -> int:
    """The filter's return value for this syscall (action | data)."""
    data = _data(nr, args, arch)
    prog = [struct.unpack_from("<HBBI", bpf, i) for i in range(0, len(bpf), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    while pc < len(prog):
        code, jt, jf, k = prog[pc]
        cls = code & 0x07
        if cls in (0, 1):                                  # LD, LDX
            mode = code & 0xE0
            if mode == 0x00:
                value = k
            elif mode == 0x20:
                value = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x60:
                value = mem[k]
            elif mode == 0x80:
                value = len(data)
            else:
                raise ValueError(f"unsupported load mode {mode:#x}")
            if cls == 0:
                a = value
            else:
                x = value
        elif cls == 2:
            mem[k] = a
        elif cls == 3:
            mem[k] = x
        elif cls == 4:                                     # ALU
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            a = {0x00: lambda: a + operand, 0x10: lambda: a - operand, 0x20: lambda: a * operand,
                 0x30: lambda: a // operand, 0x40: lambda: a | operand, 0x50: lambda: a & operand,
                 0x60: lambda: a << operand, 0x70: lambda: a >> operand, 0x80: lambda: -a,
                 0x90: lambda: a % operand, 0xA0: lambda: a ^ operand}[op]() & _M32
        elif cls == 5:                                     # JMP
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += 1 + k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand,
                     0x40: bool(a & operand)}[op]
            pc += 1 + (jt if taken else jf)
            continue
        elif cls == 6:                                     # RET
            return (a if code & 0x18 == 0x10 else k) & _M32
        elif cls == 7:                                     # MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
        pc += 1
    raise ValueError("the program ran off its end")


def verdict(ret: int) -> str:
    """A return value in words: allow, log, kill_process, errno:N, notify, trap, trace."""
    action = ret & _ACTION_FULL
    if action == RET_ERRNO:
        return f"errno:{ret & 0xFFFF}"
    return {RET_ALLOW: "allow", RET_LOG: "log", RET_KILL_PROCESS: "kill_process",
            RET_KILL_THREAD: "kill_thread", RET_TRAP: "trap", RET_TRACE: f"trace:{ret & 0xFFFF}",
            RET_USER_NOTIF: "notify"}.get(action, f"{ret:#x}")
