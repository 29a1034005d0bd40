"""Keep a process's memory from the same user's other processes and from core files.

The confined processes (CleanCoin-node, its wallet process, CleanCoin-gui's window) are not
dumpable by their policies (policies/base/python.toml, step "dumpable" of the sandbox). The
ones that run unconfined hold secrets as well: CleanCoind and CleanCoin-qt the wallets'
passphrases, keys and seeds, CleanCoin-cli the RPC password and a -stdinwalletpassphrase
line, the offline CleanCoin-wallet tool every key of the wallet it dumps or creates. Any
process of the same user could read them through /proc/PID/mem or ptrace, and a crash
(SIGQUIT, SIGABRT, SIGSEGV) under `ulimit -c unlimited` or systemd-coredump wrote them to a
core file. Bitcoin Core keeps only its key pool out of core files (MADV_DONTDUMP);
components/wallet/locked_memory.py does that too, which leaves the passphrase, the JSON-RPC
bodies and an unencrypted wallet's keys.
"""

from __future__ import annotations

import resource

from cleancoin.sandbox import syscalls


def keep_memory_private() -> None:
    """Not dumpable (no ptrace attach, no /proc/PID/mem for the same user, no core file) and
    a core size of 0 that cannot be raised again (the hard limit too; children inherit it).

    Call it at the start of an executable's script, before it reads a secret: never from a
    function tests call in their own process (the test process would lose core files and
    same-user ptrace for the rest of its life). Root keeps /proc/PID/mem (CAP_SYS_PTRACE)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
