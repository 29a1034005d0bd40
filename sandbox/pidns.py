"""The pid namespace step's processes: a waiter outside, PID 1 inside, and the component.

unshare(CLONE_NEWPID) moves only the caller's future children into the new namespace, so the
launched child forks twice: its first child is PID 1 of the namespace (a small init that
reaps every orphan and forwards termination signals to the component, and once the component
is gone gives what is left at most GRACE_SECONDS to end by itself), and PID 1's child is the
component, which goes on with the remaining steps. The first process stays outside as the
one the launcher waits for and ends exactly as the component ended (same status, same signal).

Both waiting processes are forks of the launcher's code, in the namespaces but not under
Landlock or seccomp; once their set-up is done they give up every capability (they hold all of
them in the component's user namespace), set no_new_privs and stop being dumpable, and keep
no descriptor but their status pipe: the launcher learns that the component is gone from the
end of file on the component's sockets.

They stay forks, unlike the denial log's monitor (a program of its own): a fork that only
waits keeps about 1.4 MiB of private pages (what the fork itself and these few calls write),
while a fresh `python -I -S` starts with 2.6 MiB of its own (libpython's relocated data, the
start-up heap) before it does anything; the zygote's pages they share cost nothing extra, since
the zygote and the component keep them mapped anyway. Measured with
tests/bench/bench_multiprocess.py (its USS column).

Nor do they exec a small compiled program (issue #16, 12-07): one exec'd here, inside the
component's user namespace, would belong to that namespace, which the launching uid owns, so
any process of that uid could attach to it and open its namespace files; these forks' memory
belongs to the namespace their program started in, where it cannot
(tests/test_pidns_same_user.py). docs/sandbox.md ("The waiting processes") has the figures
and the way a compiled waiter could keep that guarantee.
"""

from __future__ import annotations

import os
import resource
import signal
import time

from . import capabilities, descriptors, syscalls
from .control import EXIT_SETUP_FAILED
from .errors import EnforcementError

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


def split(title: str = "") -> None:
    """Fork PID 1 and the component; returns only in the component. `title` names the
    component for `ps`; the waiting processes show it with "(waiter)" and "(init)"."""
    status_in, status_out = os.pipe()
    # The waiting processes learn of their children's ends by SIGCHLD at its default: a
    # launcher that ignores it (SIG_IGN, or a toolkit's handler with SA_NOCLDWAIT) would have
    # them reaped by the kernel, and the component's status lost. The component gets the
    # launcher's disposition back.
    inherited = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    init = os.fork()
    if init:
        os.close(status_out)
        if title:
            syscalls.set_title(f"{title} (waiter)")
        _retire({status_in})
        _wait_forwarding(init, status_in=status_in)
    os.close(status_in)
    _die_with_parent_quietly()
    component = os.fork()
    if component:
        if title:
            syscalls.set_title(f"{title} (init)")
        _retire({status_out})
        _wait_forwarding(component, status_out=status_out)
    os.close(status_out)
    _die_with_parent_quietly()
    if inherited is not None:          # None: a handler not set from Python; the default stays
        signal.signal(signal.SIGCHLD, inherited)


def _retire(keep: set[int]) -> None:
    descriptors.keep_only({0, 1, 2} | keep)
    try:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    except OSError as exc:
        raise EnforcementError("pid namespace", f"a waiting process: {exc.strerror}") from None
    capabilities.drop(())


def _die_with_parent_quietly() -> None:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


def run_init(child: int) -> int:
    """PID 1 of a pid namespace: reap every child, forward signals to the component.

    Returns the wait status of `child`, the component; what is left in the namespace then gets
    a short grace (`_grace_for_the_rest`) before the namespace ends and the kernel kills it.
    """
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == child:
            return status


def _wait_forwarding(child: int, status_out: int | None = None, status_in: int | None = None) -> None:
    """Wait for `child` while passing termination signals on, then end as it ended. Never returns.

    PID 1 of a pid namespace cannot kill itself with a signal (the kernel ignores signals to
    an init from inside its namespace), so it sends the component's exact wait status up a
    pipe (`status_out`) to the waiter outside, which reads it (`status_in`) and re-raises.
    """
    status = run_init(child)
    if status_out is not None:
        _grace_for_the_rest()
        os.write(status_out, status.to_bytes(4, "little"))
        os._exit(0)
    if status_in is not None:
        data = os.read(status_in, 4)
        if len(data) == 4:
            status = int.from_bytes(data, "little")
    exit_like(status)


#: How long PID 1 lets what is left in the namespace end by itself once the component is gone.
GRACE_SECONDS = 0.25


def _grace_for_the_rest() -> None:
    """PID 1, the component reaped: let the processes left in the namespace end by themselves
    for at most GRACE_SECONDS before the namespace's end kills them. The learn recorder hears
    that the component is gone only once it is reaped (its listener hangs up then) and writes
    its last counts after that: ended at once, it lost them. A stray of the component's is
    killed after the grace, as before, only later."""
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_IGN)      # nothing left to forward them to
    # A child's end is waited for, not polled: with SIGCHLD blocked the kernel keeps it
    # pending (a blocked signal is never discarded), and sigtimedwait returns as it comes.
    # Polling every 5 ms made each stop of a component with a denial monitor (CleanCoin-node's
    # wallet process) wait up to 5 ms for a monitor that ends at once.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return                              # nothing left (a denial monitor ends at once)
        if pid:
            continue                            # one reaped: look for the next at once
        left = deadline - time.monotonic()
        if left <= 0:
            return
        signal.sigtimedwait({signal.SIGCHLD}, left)


def exit_like(status: int) -> None:
    """End this process the way the component ended: same signal or same exit status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # This process is a fork of the launcher: dying by SIGSYS or SIGSEGV must not write a
        # core file of the launcher's memory.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):     # these two take no disposition
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else EXIT_SETUP_FAILED)
